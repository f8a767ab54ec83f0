//! The chain against a reference model, under arbitrary operation sequences.
#![no_main]

#[path = "../../tests/support/fuzz_checks/mod.rs"]
mod fuzz_checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::chain_model::run(data));
