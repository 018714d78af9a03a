//! Test platform: both tables live in warden-archmodel (break-before-make
//! checked on every write), the locks are spin locks, and the ownership
//! hook records its calls. Plus the abstraction function that reads the
//! concrete state back in the spec's terms.
#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use warden_archmodel::machine::TableId;
use warden_memprotect::harness::GuestTables;
use warden_memprotect::spec::Annotation as SpecAnnotation;
use warden_memprotect::*;
use warden_pgtable::testutil::model::{assert_no_violations, machine, new_table, ModelMm, ModelTlb, Shared};
use warden_pgtable::Regime;

/// The recorded hook calls.
pub type Events = Rc<RefCell<Vec<(u64, u64, HostAccess)>>>;

/// A hook that records.
pub struct Recorder(pub Events);

impl OwnershipHook for Recorder {
    fn host_ownership_changed(&mut self, base: u64, size: u64, access: HostAccess) {
        self.0.borrow_mut().push((base, size, access));
    }
}

/// The recorded poisoned pages (pfns), in order.
pub type Poisoned = Rc<RefCell<Vec<u64>>>;

/// A poisoner that records.
pub struct PoisonRecorder(pub Poisoned);

impl Poison for PoisonRecorder {
    fn poison(&mut self, pa: u64) {
        self.0.borrow_mut().push(pa >> 12);
    }
}

/// The test platform.
pub struct ModelPlatform;

impl Platform for ModelPlatform {
    type Lock = spin::mutex::SpinMutex<()>;
    type HostMm = ModelMm;
    type HostTlb = ModelTlb;
    type HypMm = ModelMm;
    type HypTlb = ModelTlb;
    type Hook = Recorder;
    type GuestMm = ModelMm;
    type GuestTlb = ModelTlb;
    type Poison = PoisonRecorder;
}

/// RAM: two regions with an MMIO hole between them and below.
pub const RAM: [Region; 2] = [
    Region {
        base: 0x4000_0000,
        size: 256 << 20,
    },
    Region {
        base: 0x8000_0000,
        size: 64 << 20,
    },
];
/// A page of MMIO (like QEMU's SMMU) below RAM.
pub const MMIO_PFN: u64 = 0x0905_0000 >> 12;

/// Everything a test needs.
pub struct World {
    /// The model.
    pub m: Shared,
    /// Page ownership.
    pub mp: MemProtect<'static, ModelPlatform>,
    /// The host stage-2 in the model.
    pub host_id: TableId,
    /// The EL2 stage-1 in the model.
    pub hyp_id: TableId,
    /// Hook calls.
    pub events: Events,
    /// Poisoned pages.
    pub poisoned: Poisoned,
    /// The model table of each guest, by handle.
    pub guests: RefCell<BTreeMap<Handle, TableId>>,
}

/// A fresh machine with `ram`, 2 CPUs, a 48-bit host stage-2 with FWB.
pub fn world(ram: &[Region]) -> World {
    let m = machine(2);
    let n = RamMap::pages_of(ram);
    let meta: &'static [PageMeta] = Box::leak(
        (0..n)
            .map(|_| PageMeta::default())
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    );
    let map = RamMap::new(ram, meta, 48).expect("RAM layout");
    let (host_s2, host_id) = new_table(
        &m,
        Regime::Stage2 {
            ipa_bits: 48,
            vmid: 0,
            fwb: true,
        },
    );
    let (hyp_s1, hyp_id) = new_table(&m, Regime::El2Stage1 { va_bits: 48 });
    let events = Events::default();
    let poisoned = Poisoned::default();
    let mp = MemProtect::new(
        map,
        host_s2,
        hyp_s1,
        Recorder(events.clone()),
        PoisonRecorder(poisoned.clone()),
    );
    World {
        m,
        mp,
        host_id,
        hyp_id,
        events,
        poisoned,
        guests: RefCell::default(),
    }
}

/// The concrete state of one page, in the spec's terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Abstract {
    /// Host state, hyp state, pins, guest shares (RAM only).
    pub page: Option<(PageState, PageState, u32, u32)>,
    /// The host stage-2 annotation.
    pub annotation: Option<SpecAnnotation>,
    /// Mapped at EL2.
    pub hyp_mapped: bool,
}

impl World {
    /// Read page `pfn`'s concrete state back.
    pub fn abstract_page(&self, pfn: u64) -> Abstract {
        let page = self
            .mp
            .ram()
            .meta(pfn)
            .map(|m| (m.host(), m.hyp(), m.pins() as u32, m.guest_shares()));
        let annotation = self
            .mp
            .host_s2_entry(pfn)
            .and_then(|(d, _)| d.annotation())
            .map(|a| SpecAnnotation {
                owner: a.owner,
                meta: a.meta,
            });
        Abstract {
            page,
            annotation,
            hyp_mapped: self.mp.hyp_mapped(pfn),
        }
    }

    /// The spec's view of page `pfn`.
    pub fn spec_page(spec: &warden_memprotect::spec::Spec, pfn: u64) -> Abstract {
        let page = spec.is_ram(pfn).then(|| {
            let p = spec.page(pfn);
            (p.host, p.hyp, p.pins, p.guest_shares)
        });
        Abstract {
            page,
            annotation: spec.annotation(pfn),
            hyp_mapped: spec.hyp_mapped(pfn),
        }
    }

    /// What the host stage-2 lets the host do at `pfn` right now (through
    /// the model's walk): `None` if nothing is mapped.
    pub fn host_mapping(&self, pfn: u64) -> Option<(bool, bool, bool)> {
        self.m
            .borrow()
            .walk(self.host_id, pfn << 12)
            .ok()
            .map(|t| (t.read, t.write, t.exec))
    }

    /// No break-before-make violation and nothing left to invalidate.
    pub fn assert_clean(&self) {
        assert_no_violations(&self.m);
        assert_eq!(self.m.borrow().unclean_count(), 0, "an entry awaits invalidation");
    }
}

/// IPA size of the guests the tests create.
pub const GUEST_IPA_BITS: u8 = 40;

/// Guest tables in the model for the harness's `Op::InitVm`, registered
/// with the world by handle.
pub struct WorldTables<'w>(pub &'w World, Option<TableId>);

impl<'w> WorldTables<'w> {
    /// Tables for `w`.
    pub fn new(w: &'w World) -> Self {
        WorldTables(w, None)
    }
}

impl GuestTables<ModelPlatform> for WorldTables<'_> {
    fn new_s2(&mut self, ipa_bits: u8, vmid: u16) -> warden_pgtable::testutil::model::ModelTable {
        let regime = Regime::Stage2 {
            ipa_bits,
            vmid,
            fwb: true,
        };
        let (s2, id) = new_table(&self.0.m, regime);
        self.1 = Some(id);
        s2
    }

    fn created(&mut self, h: Handle) {
        let id = self.1.take().expect("a table was made");
        self.0.guests.borrow_mut().insert(h, id);
    }

    fn refused(&mut self) {
        let id = self.1.take().expect("a table was made");
        self.0.m.borrow_mut().unregister_table(id);
    }

    fn finalized(&mut self, h: Handle, mm: ModelMm) {
        assert!(mm.refs.is_empty(), "guest table pages left: {:?}", mm.refs);
        if let Some(id) = self.0.guests.borrow_mut().remove(&h) {
            self.0.m.borrow_mut().unregister_table(id);
        }
    }
}

/// What a guest reaches at one IPA: output address and R/W/X.
pub type GuestAccess = (u64, bool, bool, bool);

impl World {
    /// Create a guest with a fresh 40-bit stage-2 in the model, VMID
    /// `vmid`, donating `meta_nr` pages at `meta_pfn` as its metadata.
    pub fn init_vm(&self, protected: bool, vmid: u16, meta_pfn: u64, meta_nr: u64) -> Result<Handle, Error> {
        let regime = Regime::Stage2 {
            ipa_bits: GUEST_IPA_BITS,
            vmid,
            fwb: true,
        };
        let (s2, id) = new_table(&self.m, regime);
        match self.mp.init_vm(s2, protected, meta_pfn, meta_nr) {
            Ok(h) => {
                self.guests.borrow_mut().insert(h, id);
                Ok(h)
            }
            Err(e) => {
                // The refused table was destroyed: the model forgets it.
                self.m.borrow_mut().unregister_table(id);
                Err(e)
            }
        }
    }

    /// Finish tearing down guest `h`; its model table is gone on success
    /// and every one of its table pages was freed. Returns how many table
    /// pages it had.
    pub fn finalize(&self, h: Handle) -> Result<usize, Error> {
        let pages = self.mp.with_guest(h, |g| g.s2.mm().refs.len()).unwrap_or(0);
        let (mm, _) = self.mp.finalize_teardown_vm(h)?;
        assert!(mm.refs.is_empty(), "guest table pages left: {:?}", mm.refs);
        if let Some(id) = self.guests.borrow_mut().remove(&h) {
            self.m.borrow_mut().unregister_table(id);
        }
        Ok(pages)
    }

    /// What guest `h` reaches at `gfn` through its stage-2 as CPU `cpu`
    /// sees it (TLB included): `None` on a fault.
    pub fn guest_access(&self, cpu: usize, h: Handle, gfn: u64) -> Option<GuestAccess> {
        let id = *self.guests.borrow().get(&h)?;
        self.m
            .borrow_mut()
            .translate(cpu, id, gfn << 12)
            .ok()
            .map(|t| (t.oa, t.read, t.write, t.exec))
    }

    /// What guest `h`'s stage-2 grants at `gfn` (the tables, no TLB).
    pub fn guest_walk(&self, h: Handle, gfn: u64) -> Option<GuestAccess> {
        let id = *self.guests.borrow().get(&h)?;
        self.m
            .borrow()
            .walk(id, gfn << 12)
            .ok()
            .map(|t| (t.oa, t.read, t.write, t.exec))
    }

    /// What the host reaches at `pfn` as CPU `cpu` sees it (TLB included).
    pub fn host_access_on(&self, cpu: usize, pfn: u64) -> Option<(bool, bool, bool)> {
        self.m
            .borrow_mut()
            .translate(cpu, self.host_id, pfn << 12)
            .ok()
            .map(|t| (t.read, t.write, t.exec))
    }

    /// Table pages the model has allocated (all tables).
    pub fn allocated_pages(&self) -> usize {
        self.m.borrow().mem.allocated_pages()
    }
}
