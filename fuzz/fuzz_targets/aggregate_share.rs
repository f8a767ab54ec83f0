//! Aggregate shares (feature `research-queries`): round trip; unsharding never panics and
//! refuses what does not fit.
#![no_main]

#[path = "../../tests/support/alloc_meter.rs"]
mod alloc_meter;
#[path = "../../tests/support/fuzz_checks/mod.rs"]
mod fuzz_checks;

#[global_allocator]
static METER: alloc_meter::Meter = alloc_meter::Meter;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let ((), peak) = alloc_meter::peak_during(|| fuzz_checks::research::aggregate_share(data));
    fuzz_checks::assert_within_budget("aggregate_share", data.len(), peak);
});
