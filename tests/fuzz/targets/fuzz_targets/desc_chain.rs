#![no_main]
//! Fuzz target `desc_chain`: see vswitch_fuzz::desc.
libfuzzer_sys::fuzz_target!(|data: &[u8]| vswitch_fuzz::desc::run(data));
