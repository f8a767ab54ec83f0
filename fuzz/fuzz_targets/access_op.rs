//! Access-control operations: whatever a transaction carries, executed on a chain with a
//! provider, a doctor and a patient set up, keeps the chain consistent (included operations are
//! accepted in a block and replay; refused ones are refused in a block too).
#![no_main]

#[path = "../../tests/support/fuzz_checks/mod.rs"]
mod fuzz_checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::access::access_op(data));
