//! Research reports (feature `research-queries`): round trip; committing one, and both
//! aggregators preparing and verifying it, never panic, and they agree on its validity.
#![no_main]

#[path = "../../tests/support/fuzz_checks/mod.rs"]
mod fuzz_checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::research::research_report(data));
