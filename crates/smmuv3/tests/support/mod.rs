//! Glue between the driver and warden-archmodel's SMMUv3 model: registers
//! go to the model, structures and the shadow's tables live in the model's
//! physical memory, and memprotect runs with the driver as its ownership
//! hook.

#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use warden_archmodel::smmu::{DmaDir, DmaErr, DmaOk, Smmu as ModelSmmu, SmmuConfig as ModelConfig};
use warden_archmodel::MemType as MType;
use warden_iommu::{IommuDriver, IommuHook};
use warden_memprotect::harness::RAM;
use warden_memprotect::*;
use warden_pgtable::testutil::model::{machine, ModelMm, Shared};
use warden_pgtable::testutil::{ArenaMm, CountingTlb};
use warden_pgtable::{PageTable, Regime};
use warden_smmuv3::{CacheMaint, Mmio, Smmu, SmmuConfig, SmmuMem};

/// Physical address size of the test machine.
pub const PA_BITS: u8 = 40;
/// Streams Warden configures.
pub const STREAMS: u32 = 8;
/// Poll bound: the model answers at once, so a small bound suffices and a
/// stalled queue fails fast.
pub const POLL_LIMIT: u32 = 1000;

/// The shared SMMU model.
pub type SharedSmmu = Rc<RefCell<ModelSmmu>>;

/// Registers of the model.
pub struct Regs {
    pub m: Shared,
    pub smmu: SharedSmmu,
}

impl Mmio for Regs {
    fn read32(&mut self, off: u64) -> u32 {
        let m = self.m.borrow();
        self.smmu.borrow_mut().read32(&m.mem, off)
    }
    fn write32(&mut self, off: u64, val: u32) {
        let mut m = self.m.borrow_mut();
        self.smmu.borrow_mut().write32(&mut m.mem, off, val)
    }
    fn read64(&mut self, off: u64) -> u64 {
        let m = self.m.borrow();
        self.smmu.borrow_mut().read64(&m.mem, off)
    }
    fn write64(&mut self, off: u64, val: u64) {
        let mut m = self.m.borrow_mut();
        self.smmu.borrow_mut().write64(&mut m.mem, off, val)
    }
}

/// Cache maintenance in the model: cleaning clears the dirty marks a
/// non-coherent SMMU model checks. `skip` sabotages it (negative tests).
#[derive(Clone)]
pub struct Cache {
    pub m: Shared,
    pub skip: bool,
}

impl CacheMaint for Cache {
    fn clean(&mut self, pa: u64, len: u64) {
        if !self.skip {
            self.m.borrow_mut().mem.clean(pa, len);
        }
    }
    fn invalidate(&mut self, _pa: u64, _len: u64) {}
}

/// Structure memory in the model.
pub struct Mem {
    pub cache: Cache,
}

impl CacheMaint for Mem {
    fn clean(&mut self, pa: u64, len: u64) {
        self.cache.clean(pa, len)
    }
    fn invalidate(&mut self, pa: u64, len: u64) {
        self.cache.invalidate(pa, len)
    }
}

impl SmmuMem for Mem {
    fn alloc(&mut self, pages: usize) -> Option<u64> {
        // Zeroed with CPU stores, as Warden's allocator does at EL2: with
        // a non-coherent SMMU those lines are dirty until cleaned.
        let mut m = self.cache.m.borrow_mut();
        let pa = m.mem.alloc_pages(pages, pages)?;
        for off in (0..pages as u64 * 4096).step_by(8) {
            m.mem.write_u64(pa + off, 0);
        }
        Some(pa)
    }
    fn read64(&self, pa: u64) -> u64 {
        self.cache.m.borrow().mem.read_u64(pa)
    }
    fn write64(&mut self, pa: u64, val: u64) {
        self.cache.m.borrow_mut().mem.write_u64(pa, val)
    }
    fn publish(&mut self) {}
}

/// The driver on the model.
pub type Driver = Smmu<Regs, Mem, ModelMm, Cache>;

/// A machine with an SMMU model, and the driver probed on it (nothing
/// written yet).
pub struct Hw {
    pub m: Shared,
    pub smmu: SharedSmmu,
}

impl Hw {
    pub fn new(cfg: ModelConfig) -> Hw {
        let m = machine(1);
        if !cfg.coherent {
            m.borrow_mut().mem.set_track_dirty(true);
        }
        Hw {
            m,
            smmu: Rc::new(RefCell::new(ModelSmmu::new(cfg))),
        }
    }

    pub fn regs(&self) -> Regs {
        Regs {
            m: self.m.clone(),
            smmu: self.smmu.clone(),
        }
    }

    pub fn cache(&self) -> Cache {
        Cache {
            m: self.m.clone(),
            skip: false,
        }
    }

    pub fn config() -> SmmuConfig {
        SmmuConfig {
            pa_bits: PA_BITS,
            streams: STREAMS,
            vmid: 1,
            poll_limit: POLL_LIMIT,
        }
    }

    /// Probe and prepare a driver with `cfg`.
    pub fn driver_with(&self, cfg: SmmuConfig, cache: Cache) -> Result<Driver, warden_iommu::IommuError> {
        let mm = ModelMm {
            m: self.m.clone(),
            refs: HashMap::new(),
            cpu: 0,
        };
        Smmu::new(self.regs(), Mem { cache: cache.clone() }, mm, cache, &RAM, cfg)
    }

    pub fn driver(&self) -> Driver {
        self.driver_with(Hw::config(), self.cache()).expect("probe")
    }

    /// DMA from `sid` to page `pfn`: what it reaches (read, write, memory
    /// type) or the error.
    pub fn dma(&self, sid: u32, pfn: u64, dir: DmaDir) -> Result<DmaOk, DmaErr> {
        let mut m = self.m.borrow_mut();
        self.smmu.borrow_mut().dma(&mut m.mem, sid, pfn << 12, dir)
    }

    /// What both directions give at `pfn` for `sid`: None if either faults.
    pub fn reach(&self, sid: u32, pfn: u64) -> Option<MType> {
        let r = self.dma(sid, pfn, DmaDir::Read);
        let w = self.dma(sid, pfn, DmaDir::Write);
        match (r, w) {
            (Ok(r), Ok(w)) => {
                assert_eq!(r.pa, pfn << 12, "identity");
                assert_eq!(w.pa, pfn << 12, "identity");
                assert_eq!(r.mem, w.mem);
                Some(r.mem)
            }
            (Err(_), Err(_)) => None,
            (r, w) => panic!("read {r:?} and write {w:?} disagree at pfn {pfn:#x}"),
        }
    }

    /// Panic on anything the model found wrong in the driver's use of it.
    pub fn assert_clean(&self) {
        let s = self.smmu.borrow();
        assert!(
            s.violations().is_empty(),
            "SMMU model violations: {:#?}",
            s.violations()
        );
        let stale = s.stale_entries(&self.m.borrow().mem);
        assert!(stale.is_empty(), "stale SMMU TLB entries: {stale:#?}");
    }
}

pub struct NoPoison;

impl Poison for NoPoison {
    fn poison(&mut self, _: u64) {}
}

/// memprotect with the SMMU driver as its ownership hook.
pub struct Dma;

impl Platform for Dma {
    type Lock = spin::mutex::SpinMutex<()>;
    type HostMm = ArenaMm;
    type HostTlb = CountingTlb;
    type HypMm = ArenaMm;
    type HypTlb = CountingTlb;
    type Hook = IommuHook<Driver>;
    type GuestMm = ArenaMm;
    type GuestTlb = CountingTlb;
    type Poison = NoPoison;
}

/// A host with memprotect and an SMMU taken over by the driver.
pub struct Rig {
    pub hw: Hw,
    pub mp: MemProtect<'static, Dma>,
}

impl Rig {
    /// Build, optionally change ownership before the snapshot (`before`),
    /// then snapshot and take the SMMU over.
    pub fn new(cfg: ModelConfig) -> Rig {
        let hw = Hw::new(cfg);
        let driver = hw.driver();
        let meta: &'static [PageMeta] = Box::leak((0..RamMap::pages_of(&RAM)).map(|_| PageMeta::default()).collect());
        let ram = RamMap::new(&RAM, meta, u32::from(PA_BITS)).unwrap();
        let host = Regime::Stage2 {
            ipa_bits: PA_BITS,
            vmid: 0,
            fwb: true,
        };
        let host_s2 = PageTable::new(host, ArenaMm::new(0x10_0000_0000, 4096), CountingTlb::default()).unwrap();
        let hyp = Regime::El2Stage1 { va_bits: 48 };
        let hyp_s1 = PageTable::new(hyp, ArenaMm::new(0x20_0000_0000, 4096), CountingTlb::default()).unwrap();
        let mp = MemProtect::new(ram, host_s2, hyp_s1, IommuHook::new(driver), NoPoison);
        Rig { hw, mp }
    }

    /// Snapshot the host stage-2 into the shadow and take the SMMU over.
    pub fn takeover(&self) {
        self.mp
            .with_host(|h| {
                let d = h.hook.driver_mut();
                d.snapshot(&mut h.s2)?;
                d.init()
            })
            .expect("takeover");
    }

    pub fn with_driver<T>(&self, f: impl FnOnce(&mut Driver) -> T) -> T {
        self.mp.with_host(|h| f(h.hook.driver_mut()))
    }
}
