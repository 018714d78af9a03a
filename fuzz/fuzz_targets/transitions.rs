//! Differential fuzzing of the ownership transitions: every input is a
//! sequence of transitions and host aborts with hostile arguments, run on
//! the implementation and on the executable spec (see
//! `warden_memprotect::harness`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    warden_memprotect::harness::run_bytes(data);
});
