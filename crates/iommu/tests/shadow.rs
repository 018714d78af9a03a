//! The host stage-2 shadow against the ownership spec, on the architecture
//! model: after every step of warden-memprotect's hostile call sequences,
//! the shadow (walked by the model) grants DMA exactly what the spec says
//! the host may reach, RAM cacheable and MMIO as device memory, never
//! executable; a second CPU's TLB (standing in for the IOMMU's) never
//! grants more, so a missing invalidation would show; break-before-make is
//! checked on every shadow write.

use proptest::prelude::*;
use warden_archmodel::{MemType as MType, TableId};
use warden_iommu::{HostShadow, IommuError, IommuHook};
use warden_memprotect::harness::{decode_ops, probe_pfns, replay, run, ArenaTables as Tables, GuestTables, Op, RAM};
use warden_memprotect::spec::Spec;
use warden_memprotect::*;
use warden_pgtable::testutil::model::{assert_no_violations, machine, new_table, ModelMm, ModelTlb, Shared};
use warden_pgtable::testutil::{ArenaMm, CountingTlb};
use warden_pgtable::{PageTable, Regime};

/// A 1 TiB physical address space: the whole of it is mapped by every
/// snapshot, so it is kept small enough for the model to write quickly.
const PA_BITS: u32 = 40;

struct NoPoison;

impl Poison for NoPoison {
    fn poison(&mut self, _: u64) {}
}

struct Dma;

impl Platform for Dma {
    type Lock = spin::mutex::SpinMutex<()>;
    type HostMm = ArenaMm;
    type HostTlb = CountingTlb;
    type HypMm = ArenaMm;
    type HypTlb = CountingTlb;
    type Hook = IommuHook<HostShadow<ModelMm, ModelTlb>>;
    type GuestMm = ArenaMm;
    type GuestTlb = CountingTlb;
    type Poison = NoPoison;
}

struct Rig {
    m: Shared,
    shadow: TableId,
    mp: MemProtect<'static, Dma>,
}

fn rig() -> Rig {
    let m = machine(2);
    let (s2, shadow) = new_table(
        &m,
        Regime::Stage2 {
            ipa_bits: PA_BITS as u8,
            vmid: 0,
            fwb: false,
        },
    );
    let meta: &'static [PageMeta] = Box::leak((0..RamMap::pages_of(&RAM)).map(|_| PageMeta::default()).collect());
    let ram = RamMap::new(&RAM, meta, PA_BITS).unwrap();
    let host = Regime::Stage2 {
        ipa_bits: PA_BITS as u8,
        vmid: 0,
        fwb: true,
    };
    let host_s2 = PageTable::new(host, ArenaMm::new(0x10_0000_0000, 4096), CountingTlb::default()).unwrap();
    let hyp = Regime::El2Stage1 { va_bits: 48 };
    let hyp_s1 = PageTable::new(hyp, ArenaMm::new(0x20_0000_0000, 4096), CountingTlb::default()).unwrap();
    let shadow_hook = IommuHook::new(HostShadow::new(s2, &RAM, PA_BITS).unwrap());
    let mp = MemProtect::new(ram, host_s2, hyp_s1, shadow_hook, NoPoison);
    Rig { m, shadow, mp }
}

impl Rig {
    fn snapshot(&self) {
        self.mp.with_host(|h| h.hook.driver_mut().snapshot(&mut h.s2)).unwrap();
    }

    /// What DMA reaches at `pfn`: (read, write, exec, memory type), through
    /// the tables (`cpu` None) or CPU `cpu`'s TLB.
    fn dma(&self, cpu: Option<usize>, pfn: u64) -> Option<(bool, bool, bool, MType)> {
        let mut m = self.m.borrow_mut();
        let t = match cpu {
            None => m.walk(self.shadow, pfn << 12),
            Some(c) => m.translate(c, self.shadow, pfn << 12),
        };
        t.ok().map(|t| {
            assert_eq!(t.oa, pfn << 12, "identity");
            (t.read, t.write, t.exec, t.mem)
        })
    }

    fn check(&self, spec: &Spec, pfn: u64, what: &str) {
        let want = match spec.host_access(pfn) {
            HostAccess::None => None,
            HostAccess::Mem => Some((true, true, false, MType::NormalWb)),
            HostAccess::Mmio => Some((true, true, false, MType::DeviceNGnRE)),
        };
        assert_eq!(self.dma(None, pfn), want, "DMA at pfn {pfn:#x} after {what}");
        if want.is_none() {
            assert_eq!(
                self.dma(Some(1), pfn),
                None,
                "a stale IOMMU TLB entry at {pfn:#x} after {what}"
            );
        }
    }
}

fn samples(spec: &Spec, op: Option<&Op>) -> Vec<u64> {
    probe_pfns(spec, op, PA_BITS)
}

fn run_sequence(data: &[u8], snapshot_after: usize) {
    let r = rig();
    let mut spec = Spec::new(&RAM, PA_BITS);
    let mut tables = Tables(0);
    let ops = decode_ops(data);
    // Ownership changes before the snapshot are followed too; the snapshot
    // then rebuilds from the host stage-2 and must agree.
    for (i, op) in ops.iter().enumerate() {
        if i == snapshot_after.min(ops.len()) {
            r.snapshot();
        }
        assert_eq!(run(&r.mp, &mut tables, *op), replay(&mut spec, *op), "{op:?}");
        spec.take_hook_events();
        spec.take_poisoned();
        if i >= snapshot_after {
            for pfn in samples(&spec, Some(op)) {
                r.check(&spec, pfn, &format!("{op:?}"));
            }
        }
    }
    if snapshot_after >= ops.len() {
        r.snapshot();
    }
    for pfn in samples(&spec, None) {
        r.check(&spec, pfn, "the sequence");
    }
    assert_no_violations(&r.m);
    assert_eq!(r.m.borrow().unclean_count(), 0, "a shadow entry awaits invalidation");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn shadow_follows_the_host(data in prop::collection::vec(any::<u8>(), 0..600), at in 0usize..8) {
        run_sequence(&data, at);
    }
}

#[test]
fn snapshot_maps_ram_cacheable_and_mmio_as_device_in_blocks() {
    let r = rig();
    let spec = Spec::new(&RAM, PA_BITS);
    r.snapshot();
    for pfn in samples(&spec, None) {
        r.check(&spec, pfn, "the snapshot");
    }
    // 32 MiB of RAM at 1 GiB: 2 MiB blocks; the first GiB of MMIO: a 1 GiB
    // block. The whole 1 TiB takes the two concatenated root pages and one
    // level-2 table per RAM region.
    assert_eq!(r.m.borrow().walk(r.shadow, RAM[0].base).unwrap().level, 2);
    assert_eq!(r.m.borrow().walk(r.shadow, 0x0905_0000).unwrap().level, 1);
    let tables = r.mp.with_host(|h| h.hook.driver_mut().table().mm().refs.len());
    assert!(tables <= 4, "{tables} table pages");
}

#[test]
fn donation_takes_one_page_out_of_a_block_at_once() {
    let r = rig();
    let mut spec = Spec::new(&RAM, PA_BITS);
    r.snapshot();
    let pfn = (RAM[0].base >> 12) + 700;
    // The IOMMU's TLB (CPU 1 here) caches the 2 MiB block.
    assert!(r.dma(Some(1), pfn).is_some());
    r.mp.host_donate_hyp(pfn, 1).unwrap();
    spec.host_donate_hyp(pfn, 1).unwrap();
    assert_eq!(r.dma(Some(1), pfn), None, "blocked the moment the donation returns");
    assert_eq!(r.dma(None, pfn), None);
    assert_eq!(
        r.m.borrow().walk(r.shadow, (pfn + 1) << 12).unwrap().level,
        3,
        "the block split"
    );
    for p in [pfn - 1, pfn + 1, pfn + 300] {
        r.check(&spec, p, "the donation");
    }
    // Back to the host: DMA works again.
    r.mp.hyp_donate_host(pfn, 1).unwrap();
    assert_eq!(r.dma(Some(1), pfn), Some((true, true, false, MType::NormalWb)));
    // A guest's page and donated MMIO are out of reach too.
    let h =
        r.mp.init_vm(
            GuestTables::<Dma>::new_s2(&mut Tables(7), 40, 1),
            true,
            (RAM[1].end() >> 12) - 1,
            1,
        )
        .unwrap();
    r.mp.host_donate_guest(h, pfn + 2, 0).unwrap();
    assert_eq!(r.dma(Some(1), pfn + 2), None);
    let mmio = 0x0905_0000 >> 12;
    assert!(r.dma(Some(1), mmio).is_some());
    r.mp.host_donate_hyp_mmio(mmio, 2).unwrap();
    assert_eq!(
        r.dma(Some(1), mmio + 1),
        None,
        "the IOMMU's own registers are out of DMA's reach"
    );
    r.mp.hyp_donate_host_mmio(mmio, 2).unwrap();
    assert_eq!(r.dma(Some(1), mmio), Some((true, true, false, MType::DeviceNGnRE)));
    assert_no_violations(&r.m);
}

#[test]
fn a_failed_update_blocks_all_dma() {
    let r = rig();
    r.snapshot();
    let pfn = (RAM[0].base >> 12) + 700;
    assert!(r.dma(Some(1), pfn).is_some());
    // The shadow's pool is dry: taking a page out of a block cannot split
    // it. The donation itself stands; DMA stops everywhere.
    let used = r.m.borrow().mem.allocated_pages();
    r.m.borrow_mut().mem.set_alloc_limit(Some(used));
    r.mp.host_donate_hyp(pfn, 1).unwrap();
    assert_eq!(r.mp.with_host(|h| h.hook.failure()), Some(IommuError::NoMem));
    for p in [pfn, pfn + 1, RAM[1].base >> 12, 0x0905_0000 >> 12, 0] {
        assert_eq!(r.dma(None, p), None, "pfn {p:#x} in the tables");
        assert_eq!(r.dma(Some(1), p), None, "pfn {p:#x} in a TLB");
    }
    // Later changes are not applied (nothing could be trusted).
    r.m.borrow_mut().mem.set_alloc_limit(None);
    r.mp.hyp_donate_host(pfn, 1).unwrap();
    assert_eq!(r.dma(None, pfn), None);
    assert_no_violations(&r.m);
}
