//! The page table and its operations.

use crate::attrs::{Annotation, Attrs, Perms};
use crate::config::{level_size, Geometry, Regime, ENTRIES_PER_TABLE, LAST_LEVEL, PAGE_SIZE};
use crate::desc::{self, Desc, Kind};
use crate::ops::{Barrier, MmOps, Scope, TlbOps, Tlbi};
use crate::walk::{Ctx, Visit, WalkFlags};
use crate::Error;

/// How `map` may lay out a range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapPolicy {
    /// The shallowest level a leaf may sit at: 1 allows 1 GiB blocks, 2 at
    /// most 2 MiB blocks, 3 forces pages.
    pub min_leaf_level: u8,
    /// Whether mapping over an ownership annotation is allowed. Only an
    /// ownership transition (giving a page back to the table's owner) sets it.
    pub replace_annotations: bool,
}

impl MapPolicy {
    /// The largest block that alignment and range allow.
    pub const BLOCKS: MapPolicy = MapPolicy {
        min_leaf_level: 1,
        replace_annotations: false,
    };
    /// At most 2 MiB blocks.
    pub const MAX_2M: MapPolicy = MapPolicy {
        min_leaf_level: 2,
        replace_annotations: false,
    };
    /// Pages only.
    pub const PAGES: MapPolicy = MapPolicy {
        min_leaf_level: 3,
        replace_annotations: false,
    };
}

/// A translation table: its regime, its root, and the memory and TLB
/// operations it works through.
pub struct PageTable<M: MmOps, T: TlbOps> {
    pub(crate) mm: M,
    pub(crate) tlb: T,
    pub(crate) regime: Regime,
    pub(crate) geo: Geometry,
    pub(crate) root: u64,
    /// The last attributes `map` encoded and their page descriptor (without
    /// output address): faults map with the same attributes again and again.
    pub(crate) leaf_memo: Option<(Attrs, Desc)>,
}

/// TLB invalidations deferred to the end of an operation: a run of
/// invalidating writes needs only one DSB before its TLBIs and one after.
pub(crate) struct Pending {
    /// Page-aligned input address with the entry's level in the low bits.
    addrs: [u64; Pending::CAP],
    len: usize,
    /// Too many, or a table entry was cleared: invalidate the whole VMID
    /// (or all of EL2).
    pub(crate) all: bool,
}

impl Pending {
    const CAP: usize = 8;

    pub(crate) fn new() -> Self {
        Pending {
            addrs: [0; Pending::CAP],
            len: 0,
            all: false,
        }
    }

    pub(crate) fn add(&mut self, addr: u64, level: u8) {
        if self.len < Self::CAP {
            self.addrs[self.len] = addr | level as u64;
            self.len += 1;
        } else {
            self.all = true;
        }
    }

    fn is_empty(&self) -> bool {
        self.len == 0 && !self.all
    }

    fn entries(&self) -> impl Iterator<Item = (u64, u8)> + '_ {
        self.addrs[..self.len]
            .iter()
            .map(|&e| (e & !(PAGE_SIZE - 1), (e & 7) as u8))
    }
}

impl<M: MmOps, T: TlbOps> PageTable<M, T> {
    /// Create an empty table for `regime`, allocating its (possibly
    /// concatenated) root.
    pub fn new(regime: Regime, mut mm: M, mut tlb: T) -> Result<Self, Error> {
        let geo = regime.geometry()?;
        let root = mm.zalloc_pages(geo.root_pages).ok_or(Error::NoMemory)?;
        // The zeroed root must be visible to walkers before anyone installs it.
        tlb.barrier(Barrier::DsbIshSt);
        Ok(PageTable {
            mm,
            tlb,
            regime,
            geo,
            root,
            leaf_memo: None,
        })
    }

    /// Physical address of the root table (for TTBR0_EL2 / VTTBR_EL2).
    pub fn root(&self) -> u64 {
        self.root
    }

    /// The table's regime.
    pub fn regime(&self) -> &Regime {
        &self.regime
    }

    /// Start level, input size and root size.
    pub fn geometry(&self) -> &Geometry {
        &self.geo
    }

    /// The memory operations.
    pub fn mm(&self) -> &M {
        &self.mm
    }

    /// The memory operations, mutably.
    pub fn mm_mut(&mut self) -> &mut M {
        &mut self.mm
    }

    /// The TLB operations.
    pub fn tlb(&self) -> &T {
        &self.tlb
    }

    /// The TLB operations, mutably.
    pub fn tlb_mut(&mut self) -> &mut T {
        &mut self.tlb
    }

    /// Record `annotation` in every page of `[ia, ia + size)`, replacing
    /// whatever was mapped or recorded there (with TLB invalidation of the
    /// old mappings). Annotations always sit at page level.
    pub fn annotate(&mut self, ia: u64, size: u64, annotation: Annotation) -> Result<(), Error> {
        let end = self.check_range(ia, size)?;
        let new = Desc::annotated(annotation).ok_or(Error::InvalidAnnotation)?;
        if size == 0 {
            return Ok(());
        }
        if self.scan(ia, end, false)? {
            self.split_boundaries(ia, end)?;
        }
        // Prepare: page-level tables across the range, marked as possibly
        // annotated on the way down. No translation changes; the only
        // fallible pass.
        let flags = WalkFlags {
            table_pre: true,
            leaf: true,
            table_post: false,
        };
        let prepared = self.walk(ia, size, flags, &mut |pt, ctx, visit| {
            if visit == Visit::TablePre {
                // An ignored bit: no break needed.
                if !ctx.old.may_annotate() {
                    pt.mm.write_desc(ctx.entry_pa, ctx.old.0 | desc::TABLE_MAY_ANNOTATE);
                }
                return Ok(());
            }
            match (ctx.level < LAST_LEVEL, ctx.old.kind(ctx.level)) {
                (false, _) => Ok(()),
                (true, Kind::Leaf) => pt.split_entry(ctx, desc::TABLE_MAY_ANNOTATE),
                (true, Kind::Locked) => Err(Error::Locked),
                (true, _) => pt.link_new_table(ctx, desc::TABLE_MAY_ANNOTATE),
            }
        });
        if let Err(e) = prepared {
            self.prune(ia, end);
            return Err(e);
        }
        // Commit: every entry of the range is now a page-level entry.
        let mut pending = Pending::new();
        let res = self.walk(ia, size, WalkFlags::LEAF, &mut |pt, ctx, _| {
            if ctx.old.is_valid() {
                // Valid to invalid: no break needed, only invalidation.
                pt.set_entry(ctx, new);
                pending.add(ctx.entry_start, ctx.level);
            } else if ctx.old != new {
                pt.set_entry(ctx, new);
            }
            Ok(())
        });
        self.flush(&mut pending, Scope::Broadcast);
        res
    }

    /// Free the empty tables in `[start, end)`: those a preparation linked
    /// before it ran out of memory. Each is unlinked and invalidated before
    /// its page is freed.
    pub(crate) fn prune(&mut self, start: u64, end: u64) {
        let flags = WalkFlags {
            table_pre: false,
            leaf: false,
            table_post: true,
        };
        let _ = self.walk(start, end - start, flags, &mut |pt, ctx, _| {
            let child = ctx.old.oa();
            if pt.mm.page_count(child) == 1 {
                pt.set_entry(ctx, Desc::EMPTY);
                let mut pending = Pending::new();
                pending.all = true;
                pt.flush(&mut pending, Scope::Broadcast);
                pt.mm.put_page(child);
            }
            Ok(())
        });
    }

    /// The deepest entry covering `ia` and its level: a leaf, an invalid
    /// entry (maybe an annotation), possibly at a level above 3.
    pub fn get_leaf(&self, ia: u64) -> Result<(Desc, u8), Error> {
        self.lookup(ia).map(|(_, d, l)| (d, l))
    }

    /// Grant `perms` in addition to what the valid leaves in the range
    /// already allow. Relaxation needs only local invalidation: another CPU
    /// holding the stricter entry at worst takes a spurious fault.
    pub fn relax_perms(&mut self, ia: u64, size: u64, perms: Perms) -> Result<(), Error> {
        let (set, clear) = Desc::perm_bits(&self.regime, perms);
        self.update_leaves(ia, size, set, clear, Some(Scope::Local))
    }

    /// Remove write permission from the valid leaves in the range, with
    /// broadcast invalidation (a tightening must reach every CPU).
    pub fn wrprotect(&mut self, ia: u64, size: u64) -> Result<(), Error> {
        let (set, clear) = match self.regime {
            Regime::Stage2 { .. } => (0, desc::S2AP_W),
            Regime::El2Stage1 { .. } => (desc::S1_AP2_RO, 0),
        };
        self.update_leaves(ia, size, set, clear, Some(Scope::Broadcast))
    }

    /// Set the access flag on the valid leaves in the range. No
    /// invalidation: an entry without AF is never cached.
    pub fn mkyoung(&mut self, ia: u64, size: u64) -> Result<(), Error> {
        self.update_leaves(ia, size, desc::AF, 0, None)
    }

    /// Set the software bits (58:55) of the valid leaves in the range to
    /// `sw` (`InvalidAttrs` above 0xf). No invalidation: the hardware
    /// ignores these bits, so a cached copy of the old value is harmless.
    pub fn set_sw(&mut self, ia: u64, size: u64, sw: u8) -> Result<(), Error> {
        if sw > 0xf {
            return Err(Error::InvalidAttrs);
        }
        self.update_leaves(ia, size, (sw as u64) << desc::SW_SHIFT, desc::SW_MASK, None)
    }

    /// Clear the access flag on the valid leaves in the range and say
    /// whether any had it. No invalidation, as in KVM: a stale "young" TLB
    /// entry only delays ageing.
    pub fn test_clear_young(&mut self, ia: u64, size: u64) -> Result<bool, Error> {
        let mut young = false;
        self.check_range(ia, size)?;
        self.walk(ia, size, WalkFlags::LEAF, &mut |_, ctx, _| {
            if ctx.old.kind(ctx.level) == Kind::Leaf && ctx.old.af() {
                young = true;
            }
            Ok(())
        })?;
        self.update_leaves(ia, size, 0, desc::AF, None)?;
        Ok(young)
    }

    /// Split every block in the range down to pages, keeping the
    /// translation. `NoMemory` may leave some blocks split and others not;
    /// the translation is unchanged either way.
    pub fn split(&mut self, ia: u64, size: u64) -> Result<(), Error> {
        let end = self.check_range(ia, size)?;
        if size == 0 {
            return Ok(());
        }
        self.split_boundaries(ia, end)?;
        self.walk(ia, size, WalkFlags::LEAF, &mut |pt, ctx, _| {
            if ctx.level < LAST_LEVEL && ctx.old.kind(ctx.level) == Kind::Leaf {
                pt.split_entry(ctx, 0)?;
            }
            Ok(())
        })
    }

    /// Free every table page, root included, and give back the memory and
    /// TLB operations. The caller must have taken the table out of use and
    /// invalidated its VMID (or EL2's TLB entries) first.
    pub fn destroy(mut self) -> (M, T) {
        for i in 0..self.geo.root_pages {
            let page = self.root + i as u64 * PAGE_SIZE;
            self.free_unlinked(page, self.geo.start_level);
        }
        (self.mm, self.tlb)
    }

    // ---- internals -------------------------------------------------------

    /// Validate `[ia, ia + size)`: page-aligned, inside the input space.
    /// Returns the end.
    pub(crate) fn check_range(&self, ia: u64, size: u64) -> Result<u64, Error> {
        if !ia.is_multiple_of(PAGE_SIZE) || !size.is_multiple_of(PAGE_SIZE) {
            return Err(Error::Unaligned);
        }
        match ia.checked_add(size) {
            Some(end) if end <= self.geo.ia_end() => Ok(end),
            _ => Err(Error::OutOfRange),
        }
    }

    /// The root table: address, level, and entries (concatenated pages
    /// form one table). For read-only walks.
    pub(crate) fn root_table(&self) -> (u64, u8, usize) {
        (self.root, self.geo.start_level, self.geo.root_pages * ENTRIES_PER_TABLE)
    }

    /// The root page holding the entry for `ia`. Paths that count a run of
    /// entries once per table page go through the root page by page, since
    /// each concatenated root page has its own count.
    pub(crate) fn root_page_for(&self, ia: u64) -> u64 {
        let index = ia >> crate::config::level_shift(self.geo.start_level);
        self.root + (index / ENTRIES_PER_TABLE as u64) * PAGE_SIZE
    }

    /// Find the deepest entry for `ia`: (its address, value, level).
    fn lookup(&self, ia: u64) -> Result<(u64, Desc, u8), Error> {
        if ia >= self.geo.ia_end() {
            return Err(Error::OutOfRange);
        }
        let mut level = self.geo.start_level;
        let mut table = self.root;
        let mut idx = (ia >> config_shift(level)) as usize;
        loop {
            let entry_pa = table + idx as u64 * 8;
            let d = Desc(self.mm.read_desc(entry_pa));
            if level == LAST_LEVEL || d.kind(level) != Kind::Table {
                return Ok((entry_pa, d, level));
            }
            table = d.oa();
            level += 1;
            idx = ((ia >> config_shift(level)) as usize) & (ENTRIES_PER_TABLE - 1);
        }
    }

    /// Make `addr` a leaf boundary by splitting the valid block around it,
    /// level by level, keeping the translation.
    pub(crate) fn split_boundaries(&mut self, start: u64, end: u64) -> Result<(), Error> {
        for addr in [start, end] {
            if addr >= self.geo.ia_end() {
                continue;
            }
            loop {
                let (entry_pa, old, level) = self.lookup(addr)?;
                let entry_start = addr & !(level_size(level) - 1);
                if level == LAST_LEVEL || entry_start == addr || old.kind(level) != Kind::Leaf {
                    break;
                }
                let ctx = Ctx {
                    entry_pa,
                    old,
                    level,
                    entry_start,
                    start: entry_start,
                    end: entry_start + level_size(level),
                };
                self.split_entry(&ctx, 0)?;
            }
        }
        Ok(())
    }

    /// Replace the block at `ctx` by a table of next-level entries with the
    /// same translation (break-before-make on the block).
    /// `flags` are software bits for the new table descriptor.
    pub(crate) fn split_entry(&mut self, ctx: &Ctx, flags: u64) -> Result<(), Error> {
        let child = self.mm.zalloc_pages(1).ok_or(Error::NoMemory)?;
        let level = ctx.level + 1;
        let step = level_size(level);
        let base = ctx.old.oa() & !(ctx.entry_size() - 1);
        let mut bits = ctx.old.0 & !desc::OA_MASK & !desc::TABLE_OR_PAGE;
        if level == LAST_LEVEL {
            bits |= desc::TABLE_OR_PAGE;
        }
        // The child is not reachable yet: plain writes, no maintenance.
        for i in 0..ENTRIES_PER_TABLE as u64 {
            self.mm.write_desc(child + i * 8, bits | (base + i * step));
        }
        self.mm.get_pages(child, ENTRIES_PER_TABLE as u32);
        self.replace(ctx, Desc(Desc::table(child).0 | flags));
        Ok(())
    }

    /// Install a fresh empty table at an invalid entry (empty or stray).
    /// `flags` are software bits for the new table descriptor.
    pub(crate) fn link_new_table(&mut self, ctx: &Ctx, flags: u64) -> Result<(), Error> {
        let child = self.mm.zalloc_pages(1).ok_or(Error::NoMemory)?;
        self.set_entry(ctx, Desc(Desc::table(child).0 | flags));
        Ok(())
    }

    /// Put a leaf where `fits` said one belongs.
    pub(crate) fn install_leaf(&mut self, ctx: &Ctx, new: Desc, pending: &mut Pending) {
        let old = ctx.old;
        if old == new {
            return;
        }
        if old.kind(ctx.level) == Kind::Leaf {
            if old.only_perms_differ(new) {
                // Same output and type: no break needed, but a tightening
                // must be invalidated everywhere.
                self.set_entry(ctx, new);
                pending.add(ctx.entry_start, ctx.level);
            } else {
                self.replace(ctx, new);
            }
        } else {
            self.set_entry(ctx, new);
        }
    }

    /// Write `new` over an entry without break-before-make, keeping the
    /// table page's count (valid-to-invalid, invalid-to-anything,
    /// permission-only changes).
    pub(crate) fn set_entry(&mut self, ctx: &Ctx, new: Desc) {
        let page = ctx.table_page();
        if new.is_counted() && !ctx.old.is_counted() {
            self.mm.get_page(page);
        }
        self.mm.write_desc(ctx.entry_pa, new.0);
        if ctx.old.is_counted() && !new.is_counted() {
            self.mm.put_page(page);
        }
    }

    /// Break-before-make: if the entry is valid, lock it, make the lock
    /// visible, invalidate it on every CPU and wait; then write `new`.
    pub(crate) fn replace(&mut self, ctx: &Ctx, new: Desc) {
        if !ctx.old.is_valid() {
            self.set_entry(ctx, new);
            return;
        }
        self.mm.write_desc(ctx.entry_pa, desc::LOCKED);
        self.tlb.barrier(Barrier::DsbIshSt);
        let op = self.tlbi_for(
            ctx.entry_start,
            ctx.level,
            ctx.old.kind(ctx.level) == Kind::Table,
            Scope::Broadcast,
        );
        self.tlb.tlbi(op);
        self.tlb.barrier(Barrier::DsbIsh);
        self.sync_el2();
        let page = ctx.table_page();
        // The count follows the entry: the old value's reference goes, the
        // new value's comes (LOCKED in between is not counted).
        if new.is_counted() {
            self.mm.get_page(page);
        }
        self.mm.write_desc(ctx.entry_pa, new.0);
        if ctx.old.is_counted() {
            self.mm.put_page(page);
        }
    }

    /// Issue the deferred invalidations: one DSB to publish the writes,
    /// the TLBIs, one DSB to complete them.
    pub(crate) fn flush(&mut self, pending: &mut Pending, scope: Scope) {
        if pending.is_empty() {
            return;
        }
        self.tlb.barrier(Barrier::DsbIshSt);
        if pending.all {
            let op = self.tlbi_for(0, 0, true, scope);
            self.tlb.tlbi(op);
        } else {
            for (addr, level) in pending.entries() {
                let op = self.tlbi_for(addr, level, false, scope);
                self.tlb.tlbi(op);
            }
        }
        self.tlb.barrier(match scope {
            Scope::Broadcast => Barrier::DsbIsh,
            Scope::Local => Barrier::DsbNsh,
        });
        self.sync_el2();
        *pending = Pending::new();
    }

    /// After completed TLB maintenance of Warden's own stage 1, a context
    /// synchronisation event so that this CPU's next instructions see it.
    /// (Stage-2 changes take effect at the next entry to the guest.)
    fn sync_el2(&mut self) {
        if !self.regime.is_stage2() {
            self.tlb.barrier(Barrier::Isb);
        }
    }

    /// The invalidation for an entry at `level` covering `addr`: by address
    /// for a leaf, everything for a table (its subtree fed walk caches and
    /// leaf entries across its whole range).
    fn tlbi_for(&self, addr: u64, level: u8, table: bool, scope: Scope) -> Tlbi {
        match (self.regime, table) {
            (Regime::Stage2 { vmid, .. }, false) => Tlbi::Stage2Ipa {
                vmid,
                ipa: addr,
                level,
                last_level: true,
                scope,
            },
            (Regime::Stage2 { vmid, .. }, true) => Tlbi::Stage2Vmid { vmid, scope },
            (Regime::El2Stage1 { .. }, false) => Tlbi::El2Va {
                va: addr,
                level,
                last_level: true,
                scope,
            },
            (Regime::El2Stage1 { .. }, true) => Tlbi::El2All { scope },
        }
    }

    /// Set and clear descriptor bits on the valid leaves in the range
    /// (clear first, so `set` may rewrite a cleared field; splitting blocks that
    /// stick out), then invalidate with `scope`.
    fn update_leaves(&mut self, ia: u64, size: u64, set: u64, clear: u64, scope: Option<Scope>) -> Result<(), Error> {
        let end = self.check_range(ia, size)?;
        if size == 0 {
            return Ok(());
        }
        // Refuse up front what the regime forbids (W+X at stage 1,
        // executable device memory), so nothing changes on refusal.
        let regime = self.regime;
        self.walk(
            ia,
            size,
            WalkFlags::LEAF,
            &mut |_, ctx, _| match ctx.old.kind(ctx.level) {
                Kind::Locked => Err(Error::Locked),
                Kind::Leaf => {
                    let new = Desc((ctx.old.0 & !clear) | set);
                    let a = new.attrs(&regime);
                    let stage1 = matches!(regime, Regime::El2Stage1 { .. });
                    if (a.perms.x && a.mem == crate::MemType::Device) || (stage1 && a.perms.w && a.perms.x) {
                        Err(Error::InvalidAttrs)
                    } else {
                        Ok(())
                    }
                }
                _ => Ok(()),
            },
        )?;
        self.split_boundaries(ia, end)?;
        let mut pending = Pending::new();
        let res = self.walk(ia, size, WalkFlags::LEAF, &mut |pt, ctx, _| {
            if ctx.old.kind(ctx.level) == Kind::Leaf {
                let new = Desc((ctx.old.0 & !clear) | set);
                if new != ctx.old {
                    pt.mm.write_desc(ctx.entry_pa, new.0);
                    if scope.is_some() {
                        pending.add(ctx.entry_start, ctx.level);
                    }
                }
            }
            Ok(())
        });
        if let Some(scope) = scope {
            self.flush(&mut pending, scope);
        }
        res
    }
}

fn config_shift(level: u8) -> u32 {
    crate::config::level_shift(level)
}
