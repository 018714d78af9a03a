//! The shadow seen through the SMMU model, after every step of
//! warden-memprotect's hostile call sequences: DMA probes from sampled
//! streams at sampled and boundary addresses reach exactly what the
//! ownership spec says the host may reach (RAM cacheable, MMIO device),
//! through the SMMU's TLB, so a missing invalidation or a missing sync
//! shows; no cached entry anywhere grants more than the tables.

mod support;

use proptest::prelude::*;
use support::*;
use warden_archmodel::smmu::SmmuConfig as ModelConfig;
use warden_archmodel::MemType as MType;
use warden_memprotect::harness::{decode_ops, probe_pfns, replay, run, ArenaTables as Tables, Op, RAM};
use warden_memprotect::spec::Spec;
use warden_memprotect::HostAccess;

fn samples(spec: &Spec, op: Option<&Op>) -> Vec<u64> {
    probe_pfns(spec, op, u32::from(PA_BITS))
}

fn check(r: &Rig, spec: &Spec, sid: u32, pfn: u64, what: &str) {
    let want = match spec.host_access(pfn) {
        HostAccess::None => None,
        HostAccess::Mem => Some(MType::NormalWb),
        HostAccess::Mmio => Some(MType::DeviceNGnRE),
    };
    assert_eq!(r.hw.reach(sid, pfn), want, "stream {sid}, pfn {pfn:#x}, after {what}");
}

fn run_sequence(data: &[u8], takeover_after: usize, cfg: ModelConfig) {
    let r = Rig::new(cfg);
    let mut spec = Spec::new(&RAM, u32::from(PA_BITS));
    let mut tables = Tables(0);
    let ops = decode_ops(data);
    for (i, op) in ops.iter().enumerate() {
        if i == takeover_after.min(ops.len()) {
            r.takeover();
        }
        assert_eq!(run(&r.mp, &mut tables, *op), replay(&mut spec, *op), "{op:?}");
        spec.take_hook_events();
        spec.take_poisoned();
        if i >= takeover_after {
            // Two streams per step, rotating: every stream's TLB entries
            // get exercised over a sequence.
            for sid in [i as u32 % STREAMS, (i as u32 + 3) % STREAMS] {
                for pfn in samples(&spec, Some(op)) {
                    check(&r, &spec, sid, pfn, &format!("{op:?}"));
                }
            }
            r.hw.assert_clean();
        }
    }
    if takeover_after >= ops.len() {
        r.takeover();
    }
    for sid in 0..STREAMS {
        for pfn in samples(&spec, None) {
            check(&r, &spec, sid, pfn, "the sequence");
        }
    }
    r.hw.assert_clean();
    assert_eq!(r.mp.with_host(|h| h.hook.failure()), None);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn dma_follows_the_host(data in prop::collection::vec(any::<u8>(), 0..500), at in 0usize..6,
                            ril in any::<bool>(), coherent in any::<bool>()) {
        let cfg = ModelConfig { ril, coherent, ..ModelConfig::default() };
        run_sequence(&data, at, cfg);
    }
}
