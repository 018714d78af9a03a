//! Glue between warden-pgtable's traits and warden-archmodel: the engine's
//! tables live in the model's physical memory, every descriptor write,
//! barrier and TLBI goes to the model, whose break-before-make checker is
//! always on.

extern crate std;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::{assert, assert_eq, assert_ne};

use crate::{desc, Barrier, MmOps, PageTable, Regime, Scope, TlbOps, Tlbi};
use warden_archmodel::machine::{Dsb, Machine, TableId, Tlbi as MTlbi};
use warden_archmodel::mem::PhysMem;
use warden_archmodel::walk as mwalk;

/// The shared model.
pub type Shared = Rc<RefCell<Machine>>;

/// Physical window where table pages are allocated.
pub const MEM_BASE: u64 = 0x40_0000_0000;
/// Size of that window.
pub const MEM_SIZE: u64 = 1 << 32;

/// A fresh machine with `cpus` CPUs.
pub fn machine(cpus: usize) -> Shared {
    Rc::new(RefCell::new(Machine::new(PhysMem::new(MEM_BASE, MEM_SIZE), cpus)))
}

/// MmOps over the model's memory; the refcounts live here (they are the
/// engine's bookkeeping, not the hardware's).
pub struct ModelMm {
    /// The machine whose memory holds the tables.
    pub m: Shared,
    /// Reference count of each live table page.
    pub refs: HashMap<u64, u32>,
    /// CPU that performs the writes.
    pub cpu: usize,
}

impl MmOps for ModelMm {
    fn zalloc_pages(&mut self, count: usize) -> Option<u64> {
        let pa = self.m.borrow_mut().mem.alloc_pages(count, count)?;
        for i in 0..count as u64 {
            self.refs.insert(pa + i * 4096, 1);
        }
        Some(pa)
    }
    fn can_allocate(&self, pages: usize) -> bool {
        // Both the test's limit and the simulated memory's own size.
        let m = self.m.borrow();
        let wanted = m.mem.allocated_pages() + pages;
        wanted as u64 <= m.mem.size() / 4096 && m.mem.alloc_limit().is_none_or(|l| wanted <= l)
    }
    fn get_page(&mut self, pa: u64) {
        let r = self
            .refs
            .get_mut(&pa)
            .expect("get_page on a page that is not a table page");
        *r += 1;
    }
    fn put_page(&mut self, pa: u64) {
        let r = self
            .refs
            .get_mut(&pa)
            .expect("put_page on a page that is not a table page");
        *r -= 1;
        if *r == 0 {
            self.refs.remove(&pa);
            self.m.borrow_mut().free_pages(pa, 1);
        }
    }
    fn page_count(&self, pa: u64) -> u32 {
        self.refs.get(&pa).copied().unwrap_or(0)
    }
    fn read_desc(&self, pa: u64) -> u64 {
        self.m.borrow().read_desc(pa)
    }
    fn write_desc(&mut self, pa: u64, val: u64) {
        self.m.borrow_mut().write_desc(self.cpu, pa, val)
    }
}

/// TlbOps forwarding to the model as CPU `cpu`.
pub struct ModelTlb {
    /// The machine.
    pub m: Shared,
    /// The CPU that issues barriers and TLBIs.
    pub cpu: usize,
}

impl TlbOps for ModelTlb {
    fn barrier(&mut self, b: Barrier) {
        let mut m = self.m.borrow_mut();
        match b {
            Barrier::DsbIshSt => m.dsb(self.cpu, Dsb::IshSt),
            Barrier::DsbIsh => m.dsb(self.cpu, Dsb::Ish),
            Barrier::DsbNsh => m.dsb(self.cpu, Dsb::Nsh),
            Barrier::Isb => m.isb(self.cpu),
        }
    }
    fn tlbi(&mut self, op: Tlbi) {
        let b = |s: Scope| s == Scope::Broadcast;
        let op = match op {
            Tlbi::Stage2Ipa {
                vmid,
                ipa,
                level,
                last_level,
                scope,
            } => MTlbi::Stage2Ipa {
                vmid,
                ipa,
                level: Some(level),
                last_level,
                broadcast: b(scope),
            },
            Tlbi::Stage2Vmid { vmid, scope } => MTlbi::Stage2Vmid {
                vmid,
                broadcast: b(scope),
            },
            Tlbi::El2Va {
                va,
                level,
                last_level,
                scope,
            } => MTlbi::El2Va {
                va,
                level: Some(level),
                last_level,
                broadcast: b(scope),
            },
            Tlbi::El2All { scope } => MTlbi::El2All { broadcast: b(scope) },
        };
        self.m.borrow_mut().tlbi(self.cpu, op);
    }
}

/// An engine table in the model.
pub type ModelTable = PageTable<ModelMm, ModelTlb>;

/// The model's view of an engine regime.
pub fn model_regime(pt: &ModelTable) -> mwalk::Regime {
    match *pt.regime() {
        Regime::El2Stage1 { va_bits } => mwalk::Regime::El2Stage1 {
            va_bits,
            mair: desc::MAIR_EL2,
        },
        Regime::Stage2 { ipa_bits, fwb, .. } => mwalk::Regime::Stage2 {
            ipa_bits,
            start_level: pt.geometry().start_level,
            fwb,
        },
    }
}

/// Create an engine table in `m` and register it with the model as live
/// on every CPU. Returns the table and its model id.
pub fn new_table(m: &Shared, regime: Regime) -> (ModelTable, TableId) {
    let mm = ModelMm {
        m: m.clone(),
        refs: HashMap::new(),
        cpu: 0,
    };
    let tlb = ModelTlb { m: m.clone(), cpu: 0 };
    let pt = PageTable::new(regime, mm, tlb).expect("table creation");
    let vmid = match regime {
        Regime::Stage2 { vmid, .. } => Some(vmid),
        Regime::El2Stage1 { .. } => None,
    };
    let id = m.borrow_mut().register_table(pt.root(), model_regime(&pt), vmid);
    (pt, id)
}

/// Panic with the model's break-before-make violations, if any.
pub fn assert_no_violations(m: &Shared) {
    let v = m.borrow().violations().to_vec();
    assert!(v.is_empty(), "break-before-make violations: {v:#?}");
}

/// Check the refcount rule on every table page reachable from the root:
/// count = 1 + non-zero entries (the LOCKED marker never survives an
/// operation), and no table but the root is empty (tables drop when they
/// empty). Returns the number of table pages.
pub fn assert_refcounts(pt: &ModelTable) -> usize {
    fn visit(pt: &ModelTable, page: u64, level: u8, root: bool) -> usize {
        let mut nonzero = 0;
        let mut pages = 1;
        for i in 0..512u64 {
            let d = pt.mm().read_desc(page + i * 8);
            if d == 0 {
                continue;
            }
            assert_ne!(d, desc::LOCKED, "LOCKED entry left at {:#x}", page + i * 8);
            nonzero += 1;
            if level < 3 && d & 3 == 3 {
                pages += visit(pt, d & desc::OA_MASK, level + 1, false);
            }
        }
        assert_eq!(
            pt.mm().page_count(page),
            1 + nonzero,
            "refcount of table page {page:#x} (level {level})"
        );
        assert!(root || nonzero > 0, "empty table {page:#x} (level {level}) left linked");
        pages
    }
    let g = *pt.geometry();
    (0..g.root_pages as u64)
        .map(|p| visit(pt, pt.root() + p * 4096, g.start_level, true))
        .sum()
}
