#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| nself_realtime::fuzzing::token(data));
