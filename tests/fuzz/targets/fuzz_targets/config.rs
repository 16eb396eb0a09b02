#![no_main]
//! Fuzz target `config`: see vswitch_fuzz::config_file.
libfuzzer_sys::fuzz_target!(|data: &[u8]| vswitch_fuzz::config_file::run(data));
