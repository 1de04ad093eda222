//! Arbitrary payloads at every schema version through the bank's upcasters.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| eslab_fuzz::upcast_payload(data));
