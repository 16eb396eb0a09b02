#![no_main]
//! Fuzz target `ctl_request`: see vswitch_fuzz::ctl_request.
libfuzzer_sys::fuzz_target!(|data: &[u8]| vswitch_fuzz::ctl_request::run(data));
