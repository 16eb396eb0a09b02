#![no_main]
//! Fuzz target `frame`: see vswitch_fuzz::frame.
libfuzzer_sys::fuzz_target!(|data: &[u8]| vswitch_fuzz::frame::run(data));
