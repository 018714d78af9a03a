//! The fuzz target's differential harness on random inputs, so that CI
//! runs it without a fuzzer (`fuzz/` runs it with libFuzzer).

use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn harness_finds_no_difference(data in prop::collection::vec(any::<u8>(), 0..800)) {
        warden_memprotect::harness::run_bytes(&data);
    }
}
