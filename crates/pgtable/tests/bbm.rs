//! The engine's TLB maintenance, operation by operation, on the model with
//! two CPUs: which invalidations each change issues, that the model's
//! break-before-make checker stays silent, that no CPU keeps a stale
//! translation, and (negative) that the checker does fire when the TLB
//! operations the engine relies on are sabotaged.

mod support;

use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;

use support::*;
use warden_archmodel::machine::Violation;
use warden_pgtable::{Annotation, Attrs, Barrier, MapPolicy, MemType, PageTable, Perms, Regime, Scope, TlbOps, Tlbi};

const MIB2: u64 = 2 << 20;
const S2: Regime = Regime::Stage2 {
    ipa_bits: 40,
    vmid: 7,
    fwb: true,
};
const RW: Attrs = Attrs::new(Perms::RW, MemType::NormalWb);

/// Fill CPU 1's TLB with the translation of `a` (so a missing broadcast
/// invalidation would leave it stale).
fn warm(m: &Shared, id: warden_archmodel::machine::TableId, a: u64) {
    m.borrow_mut().translate(1, id, a).expect("warm-up translation");
}

#[test]
fn remapping_a_block_breaks_before_making_with_a_broadcast_tlbi() {
    let m = machine(2);
    let (mut pt, id) = new_table(&m, S2);
    pt.map(0, MIB2, 0x8000_0000, RW, MapPolicy::BLOCKS).unwrap();
    warm(&m, id, 0x1000);
    m.borrow_mut().reset_stats();
    pt.map(0, MIB2, 0x9000_0000, RW, MapPolicy::BLOCKS).unwrap();
    assert_no_violations(&m);
    let st = m.borrow().stats();
    assert_eq!(st.tlbi_s2_ipa, 1, "one TLBI by IPA for the broken block");
    assert_eq!(st.tlbi_local, 0, "no local TLBI for a change of output address");
    assert_eq!(m.borrow_mut().translate(1, id, 0x1000).unwrap().oa, 0x9000_1000);
}

#[test]
fn splitting_and_collapsing_keep_the_checker_silent() {
    let m = machine(2);
    let (mut pt, id) = new_table(&m, S2);
    pt.map(0, MIB2, 0x8000_0000, RW, MapPolicy::BLOCKS).unwrap();
    warm(&m, id, 0x5000);
    pt.split(0, MIB2).unwrap();
    assert_eq!(pt.get_leaf(0x5000).unwrap().1, 3);
    assert_eq!(m.borrow_mut().translate(1, id, 0x5000).unwrap().oa, 0x8000_5000);
    warm(&m, id, 0x6000);
    m.borrow_mut().reset_stats();
    // Mapping the whole 2 MiB again replaces the table by a block: the
    // table entry's whole range must be invalidated.
    pt.map(0, MIB2, 0xa000_0000, RW, MapPolicy::BLOCKS).unwrap();
    assert_eq!(pt.get_leaf(0x5000).unwrap().1, 2);
    assert_eq!(m.borrow().stats().tlbi_s2_vmid, 1);
    assert_eq!(m.borrow_mut().translate(1, id, 0x6000).unwrap().oa, 0xa000_6000);
    assert_no_violations(&m);
}

#[test]
fn unmap_and_annotate_invalidate_everywhere() {
    let m = machine(2);
    let (mut pt, id) = new_table(&m, S2);
    pt.map(0, 4 * MIB2, 0, RW, MapPolicy::PAGES).unwrap();
    warm(&m, id, 0x3000);
    warm(&m, id, 0x20_0000);
    assert_eq!(pt.unmap(0x3000, 0x1000), Ok(0x1000));
    assert!(m.borrow_mut().translate(1, id, 0x3000).is_err());
    pt.annotate(0x20_0000, 0x1000, Annotation { owner: 2, meta: 5 })
        .unwrap();
    assert!(m.borrow_mut().translate(1, id, 0x20_0000).is_err());
    assert!(pt.unmap(0, 4 * MIB2 - 0x1000).is_err(), "annotation in range");
    // Emptying the first level-3 table frees it: the walk now ends at an
    // empty level-2 entry. 2 root pages + level 2 + 3 level-3 tables stay.
    let before = assert_refcounts(&pt);
    assert_eq!(pt.unmap(0, 0x20_0000), Ok(0x20_0000 - 0x1000));
    assert_eq!(pt.get_leaf(0).unwrap(), (warden_pgtable::Desc::EMPTY, 2));
    assert_eq!(assert_refcounts(&pt), before - 1);
    assert_eq!(assert_refcounts(&pt), 6);
    assert_no_violations(&m);
}

#[test]
fn relaxing_is_local_and_tightening_is_broadcast() {
    let m = machine(2);
    let (mut pt, id) = new_table(&m, S2);
    pt.map(0, 0x1000, 0, Attrs::new(Perms::R, MemType::NormalWb), MapPolicy::PAGES)
        .unwrap();
    m.borrow_mut().reset_stats();
    pt.relax_perms(0, 0x1000, Perms::RW).unwrap();
    let st = m.borrow().stats();
    assert_eq!((st.tlbi_local, st.tlbi_broadcast), (1, 0));
    warm(&m, id, 0);
    m.borrow_mut().reset_stats();
    pt.wrprotect(0, 0x1000).unwrap();
    let st = m.borrow().stats();
    assert_eq!((st.tlbi_local, st.tlbi_broadcast), (0, 1));
    assert!(
        !m.borrow_mut().translate(1, id, 0).unwrap().write,
        "CPU 1 must lose write access"
    );
    assert_no_violations(&m);
}

#[test]
fn el2_stage1_remap_uses_va_invalidation() {
    let m = machine(2);
    let (mut pt, id) = new_table(&m, Regime::El2Stage1 { va_bits: 48 });
    let ro = Attrs::new(Perms::R, MemType::NormalWb);
    pt.map(0x4000_0000, 0x1000, 0x4000_0000, ro, MapPolicy::PAGES).unwrap();
    warm(&m, id, 0x4000_0000);
    m.borrow_mut().reset_stats();
    // A fixmap-style slot reuse: same VA, another page.
    pt.map(0x4000_0000, 0x1000, 0x5000_0000, ro, MapPolicy::PAGES).unwrap();
    assert_eq!(m.borrow().stats().tlbi_el2_va, 1);
    assert_eq!(m.borrow_mut().translate(1, id, 0x4000_0000).unwrap().oa, 0x5000_0000);
    assert_no_violations(&m);
}

/// TlbOps that sabotage the engine's maintenance.
struct Saboteur {
    inner: ModelTlb,
    /// Turn broadcast invalidations into local ones (seed 002's bug).
    localise: bool,
    /// Drop TLBIs entirely.
    drop: Rc<Cell<bool>>,
    /// Drop only whole-VMID invalidations (those for unlinked tables).
    drop_vmid: bool,
}

impl TlbOps for Saboteur {
    fn barrier(&mut self, b: Barrier) {
        self.inner.barrier(b);
    }
    fn tlbi(&mut self, op: Tlbi) {
        if self.drop.get() || (self.drop_vmid && matches!(op, Tlbi::Stage2Vmid { .. })) {
            return;
        }
        let op = match op {
            Tlbi::Stage2Ipa {
                vmid,
                ipa,
                level,
                last_level,
                ..
            } if self.localise => Tlbi::Stage2Ipa {
                vmid,
                ipa,
                level,
                last_level,
                scope: Scope::Local,
            },
            other => other,
        };
        self.inner.tlbi(op);
    }
}

fn sabotaged(localise: bool, drop: bool) -> Vec<Violation> {
    sabotaged_with(localise, drop, false, |pt| {
        pt.map(0, MIB2, 0x9000_0000, RW, MapPolicy::BLOCKS).unwrap();
    })
}

fn sabotaged_with(
    localise: bool,
    drop: bool,
    drop_vmid: bool,
    then: impl FnOnce(&mut PageTable<ModelMm, Saboteur>),
) -> Vec<Violation> {
    let m = machine(2);
    let mm = ModelMm {
        m: m.clone(),
        refs: HashMap::new(),
        cpu: 0,
    };
    let dropping = Rc::new(Cell::new(false));
    let tlb = Saboteur {
        inner: ModelTlb { m: m.clone(), cpu: 0 },
        localise,
        drop: dropping.clone(),
        drop_vmid,
    };
    let mut pt = PageTable::new(S2, mm, tlb).unwrap();
    let regime = warden_archmodel::walk::Regime::Stage2 {
        ipa_bits: 40,
        start_level: pt.geometry().start_level,
        fwb: true,
    };
    m.borrow_mut().register_table(pt.root(), regime, Some(7));
    pt.map(0, MIB2, 0x8000_0000, RW, MapPolicy::BLOCKS).unwrap();
    dropping.set(drop);
    then(&mut pt);
    let v = m.borrow_mut().take_violations();
    v
}

#[test]
fn the_checker_catches_a_table_freed_before_its_invalidation() {
    let unmap_pages = |pt: &mut PageTable<ModelMm, Saboteur>| {
        pt.map(4 * MIB2, MIB2, 0, RW, MapPolicy::PAGES).unwrap();
        // Emptying the level-3 table unlinks and frees it.
        assert_eq!(pt.unmap(4 * MIB2, MIB2), Ok(MIB2));
    };
    let v = sabotaged_with(false, false, true, unmap_pages);
    assert!(
        v.iter().any(|v| matches!(v, Violation::FreedBeforeInvalidation { .. })),
        "{v:?}"
    );
    assert!(sabotaged_with(false, false, false, unmap_pages).is_empty());
}

#[test]
fn the_checker_catches_a_dropped_tlbi_in_the_engine_path() {
    let v = sabotaged(false, true);
    assert!(
        v.iter().any(|v| matches!(v, Violation::InvalidUncleanToValid { .. })),
        "{v:?}"
    );
}

#[test]
fn the_checker_catches_a_local_tlbi_where_broadcast_is_needed() {
    let v = sabotaged(true, false);
    assert!(
        v.iter().any(|v| matches!(v, Violation::InvalidUncleanToValid { .. })),
        "{v:?}"
    );
    assert!(sabotaged(false, false).is_empty(), "the honest sequence is clean");
}
