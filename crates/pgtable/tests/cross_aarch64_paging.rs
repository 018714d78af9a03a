//! Cross-check against the `aarch64-paging` crate's stage-2 regime: the same
//! mappings built by both libraries, both table images walked by
//! warden-archmodel, must translate every sampled address identically and
//! pick the same block sizes. aarch64-paging has no VMID, no concatenated
//! roots and no FWB encodings, so the comparison uses a 39-bit IPA space
//! (single level-1 root) without FWB.

mod support;

use aarch64_paging::descriptor::{PhysicalAddress, Stage2Attributes as S2};
use aarch64_paging::paging::{Constraints, MemoryRegion, RootTable, Stage2};
use aarch64_paging::target::TargetAllocator;
use proptest::prelude::*;
use support::*;
use warden_archmodel::mem::PhysMem;
use warden_archmodel::walk::{walk, Regime as MRegime};
use warden_pgtable::{Attrs, MapPolicy, MemType, Perms, Regime};

const THEIR_BASE: u64 = 0x80_0000_0000;
const IPA_BITS: u8 = 39;

#[derive(Clone, Debug)]
struct Mapping {
    ia: u64,
    size: u64,
    oa: u64,
    perms: Perms,
    device: bool,
    pages: bool,
}

fn their_flags(m: &Mapping) -> S2 {
    let mut f = S2::VALID | S2::ACCESS_FLAG | S2::SH_INNER;
    f |= if m.device {
        S2::MEMATTR_DEVICE_nGnRE
    } else {
        S2::MEMATTR_NORMAL_INNER_WB | S2::MEMATTR_NORMAL_OUTER_WB
    };
    if m.perms.r {
        f |= S2::S2AP_ACCESS_RO;
    }
    if m.perms.w {
        f |= S2::S2AP_ACCESS_WO;
    }
    if !m.perms.x {
        f |= S2::XN;
    }
    f
}

/// Non-overlapping mappings: slot `i` of 1 GiB holds at most one mapping.
fn mappings() -> impl Strategy<Value = Vec<Mapping>> {
    let one = (
        0..512u64,
        1..=1536u64,
        0..8192u64,
        0..8u8,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    );
    prop::collection::vec(one, 1..12).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(slot, (off, pages, oa_blk, p, device, pages_only, big))| {
                let perms = Perms::new(p & 1 != 0, p & 2 != 0, p & 4 != 0 && !device);
                let base = slot as u64 * (1 << 30);
                // Either a page-granular range or a 2 MiB-aligned larger one.
                let (ia, size) = if big && !pages_only {
                    (base + (off % 4) * (2 << 20), (pages % 256 + 1) * (2 << 20))
                } else {
                    (base + off * 4096, pages * 4096)
                };
                let oa = if big {
                    ia + (1 << 36)
                } else {
                    oa_blk * (2 << 20) + off * 4096
                };
                Mapping {
                    ia,
                    size,
                    oa,
                    perms,
                    device,
                    pages: pages_only,
                }
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn same_mappings_translate_the_same(maps in mappings(), samples in prop::collection::vec(0..(1u64 << 33), 64)) {
        // Warden, in the model.
        let m = machine(1);
        let (mut pt, id) = new_table(&m, Regime::Stage2 { ipa_bits: IPA_BITS, vmid: 0, fwb: false });
        // aarch64-paging, laid out for THEIR_BASE and loaded into a
        // second memory.
        let mut theirs = RootTable::new(TargetAllocator::new(THEIR_BASE), 1, Stage2);
        for mp in &maps {
            let mem = if mp.device { MemType::Device } else { MemType::NormalWb };
            let policy = if mp.pages { MapPolicy::PAGES } else { MapPolicy::BLOCKS };
            pt.map(mp.ia, mp.size, mp.oa, Attrs::new(mp.perms, mem), policy).unwrap();
            let constraints = if mp.pages { Constraints::NO_BLOCK_MAPPINGS } else { Constraints::empty() };
            let region = MemoryRegion::new(mp.ia as usize, (mp.ia + mp.size) as usize);
            theirs.map_range(&region, PhysicalAddress(mp.oa as usize), their_flags(mp), constraints).unwrap();
        }
        assert_no_violations(&m);
        let image = theirs.translation().as_bytes();
        let mut their_mem = PhysMem::new(THEIR_BASE, 1 << 32);
        their_mem.load_bytes(THEIR_BASE, &image);
        let their_root = theirs.to_physical().0 as u64;
        let regime = MRegime::Stage2 { ipa_bits: IPA_BITS, start_level: 1, fwb: false };

        let points = maps
            .iter()
            .flat_map(|mp| [mp.ia, mp.ia + mp.size - 4096, mp.ia + mp.size, mp.ia.saturating_sub(4096)])
            .chain(samples.iter().map(|s| s & !4095));
        for a in points {
            let ours = m.borrow().walk(id, a);
            let their = walk(&their_mem, their_root, &regime, a);
            match (&ours, &their) {
                (Ok(o), Ok(t)) => {
                    prop_assert_eq!(o.oa, t.oa, "output address at {:#x}", a);
                    prop_assert_eq!((o.read, o.write, o.exec), (t.read, t.write, t.exec), "perms at {:#x}", a);
                    prop_assert_eq!(o.mem, t.mem, "memory type at {:#x}", a);
                    prop_assert_eq!(o.level, t.level, "block size at {:#x}", a);
                }
                (Err(o), Err(t)) => prop_assert_eq!(o.kind, t.kind),
                _ => prop_assert!(false, "disagree at {:#x}: warden {:?} aarch64-paging {:?}", a, ours, their),
            }
        }
    }
}
