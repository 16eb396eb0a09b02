#![no_main]
//! Fuzz target `vhost_user`: see vswitch_fuzz::vhost_user.
libfuzzer_sys::fuzz_target!(|data: &[u8]| vswitch_fuzz::vhost_user::run(data));
