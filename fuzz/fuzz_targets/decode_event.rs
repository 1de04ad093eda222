//! Stored event rows from untrusted bytes: parse, upcast, decode.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| eslab_fuzz::decode_event(data));
