//! The page table and its operations.

use crate::attrs::{Annotation, Attrs, Perms};
use crate::config::{level_size, Geometry, Regime, ENTRIES_PER_TABLE, LAST_LEVEL, PAGE_SIZE};
use crate::desc::{self, Desc, Kind};
use crate::ops::{Barrier, MmOps, Scope, Tlbi, TlbOps};
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
}

/// TLB invalidations deferred to the end of an operation: a run of
/// invalidating writes needs only one DSB before its TLBIs and one after.
struct Pending {
    addrs: [(u64, u8); Pending::CAP],
    len: usize,
    /// Too many, or a table entry was cleared: invalidate the whole VMID
    /// (or all of EL2).
    all: bool,
}

impl Pending {
    const CAP: usize = 16;

    fn new() -> Self {
        Pending {
            addrs: [(0, 0); Pending::CAP],
            len: 0,
            all: false,
        }
    }

    fn add(&mut self, addr: u64, level: u8) {
        if self.len < Self::CAP {
            self.addrs[self.len] = (addr, level);
            self.len += 1;
        } else {
            self.all = true;
        }
    }

    fn is_empty(&self) -> bool {
        self.len == 0 && !self.all
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

    /// Map `[ia, ia + size)` to `[oa, oa + size)` with `attrs`, using the
    /// largest blocks `policy` and alignment allow. Existing mappings in the
    /// range are replaced (with break-before-make where needed); blocks that
    /// stick out of the range are split so that what lies outside keeps its
    /// translation.
    ///
    /// Refused without any change: unaligned or out-of-range arguments,
    /// attributes the regime forbids, an annotation in the range (unless the
    /// policy allows replacing it), a LOCKED entry. `NoMemory` may leave the
    /// range partly mapped: every entry then holds its old or its new value.
    pub fn map(&mut self, ia: u64, size: u64, oa: u64, attrs: Attrs, policy: MapPolicy) -> Result<(), Error> {
        let end = self.check_range(ia, size)?;
        if oa % PAGE_SIZE != 0 {
            return Err(Error::Unaligned);
        }
        match oa.checked_add(size) {
            Some(oa_end) if oa_end <= 1 << 48 => {}
            _ => return Err(Error::OutOfRange),
        }
        // Encode once: validates the attributes for this regime and gives
        // the bits every leaf shares.
        let page = Desc::leaf(&self.regime, LAST_LEVEL, 0, attrs)?;
        let block = Desc(page.0 & !desc::TABLE_OR_PAGE);
        if size == 0 {
            return Ok(());
        }
        self.precheck(ia, size, !policy.replace_annotations)?;
        self.split_boundaries(ia, end)?;

        let min_level = policy.min_leaf_level.clamp(1, LAST_LEVEL);
        let mut pending = Pending::new();
        let flags = WalkFlags {
            table_pre: true,
            leaf: true,
            table_post: false,
        };
        let res = self.walk(ia, size, flags, &mut |pt, ctx, visit| {
            let level = ctx.level;
            let target = oa + (ctx.entry_start.wrapping_sub(ia));
            let fits = level >= min_level && ctx.fully_covered() && target % level_size(level) == 0;
            let template = if level == LAST_LEVEL { page } else { block };
            let new = Desc(template.0 | target);
            match visit {
                Visit::TablePre => {
                    if fits {
                        // A whole table's range maps as one block now.
                        let child = ctx.old.oa();
                        pt.replace(ctx, new);
                        pt.free_unlinked(child, level + 1);
                    }
                    Ok(())
                }
                Visit::Leaf if fits => {
                    pt.install_leaf(ctx, new, &mut pending);
                    Ok(())
                }
                Visit::Leaf => match ctx.old.kind(level) {
                    // A block only partly covered was split by
                    // split_boundaries; one fully covered that may not stay
                    // a block (policy, alignment) is split here.
                    Kind::Leaf => pt.split_entry(ctx),
                    Kind::Locked => Err(Error::Locked),
                    _ => pt.link_new_table(ctx),
                },
                Visit::TablePost => Ok(()),
            }
        });
        self.flush(&mut pending, Scope::Broadcast);
        self.tlb.barrier(Barrier::DsbIshSt);
        if !self.regime.is_stage2() {
            self.tlb.barrier(Barrier::Isb);
        }
        res
    }

    /// Unmap `[ia, ia + size)` and return how many bytes were mapped there.
    /// Tables that empty are freed. Blocks that stick out of the range are
    /// split first so that what lies outside keeps its translation.
    ///
    /// Refuses (`Annotated`) a range holding an ownership annotation, and
    /// a LOCKED entry, without any change. `NoMemory` (a boundary block
    /// could not be split) also leaves the translation unchanged.
    pub fn unmap(&mut self, ia: u64, size: u64) -> Result<u64, Error> {
        let end = self.check_range(ia, size)?;
        if size == 0 {
            return Ok(0);
        }
        self.precheck(ia, size, true)?;
        self.split_boundaries(ia, end)?;

        let mut unmapped = 0u64;
        let mut pending = Pending::new();
        let flags = WalkFlags {
            table_pre: false,
            leaf: true,
            table_post: true,
        };
        let res = self.walk(ia, size, flags, &mut |pt, ctx, visit| {
            match visit {
                Visit::Leaf if ctx.old.kind(ctx.level) == Kind::Leaf => {
                    unmapped += ctx.entry_size();
                    pt.clear_deferred(ctx, &mut pending);
                }
                Visit::TablePost => {
                    let child = ctx.old.oa();
                    if pt.mm.page_count(child) == 1 {
                        // Empty: unlink, invalidate everything it may have
                        // fed into walk caches, then free it.
                        pending.all = true;
                        pt.clear_deferred(ctx, &mut pending);
                        pt.flush(&mut pending, Scope::Broadcast);
                        pt.mm.put_page(child);
                    }
                }
                _ => {}
            }
            Ok(())
        });
        self.flush(&mut pending, Scope::Broadcast);
        res.map(|()| unmapped)
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
        self.precheck(ia, size, false)?;
        self.split_boundaries(ia, end)?;
        let mut pending = Pending::new();
        let flags = WalkFlags {
            table_pre: false,
            leaf: true,
            table_post: false,
        };
        let res = self.walk(ia, size, flags, &mut |pt, ctx, _| {
            if ctx.level < LAST_LEVEL {
                return match ctx.old.kind(ctx.level) {
                    Kind::Leaf => pt.split_entry(ctx),
                    _ => pt.link_new_table(ctx),
                };
            }
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
        self.split_boundaries(ia, end)?;
        self.walk(ia, size, WalkFlags::LEAF, &mut |pt, ctx, _| {
            if ctx.level < LAST_LEVEL && ctx.old.kind(ctx.level) == Kind::Leaf {
                pt.split_entry(ctx)?;
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
    fn check_range(&self, ia: u64, size: u64) -> Result<u64, Error> {
        if ia % PAGE_SIZE != 0 || size % PAGE_SIZE != 0 {
            return Err(Error::Unaligned);
        }
        match ia.checked_add(size) {
            Some(end) if end <= self.geo.ia_end() => Ok(end),
            _ => Err(Error::OutOfRange),
        }
    }

    /// Refuse a range with a LOCKED entry or (if `annotations`) an
    /// annotation, before anything changes.
    fn precheck(&mut self, ia: u64, size: u64, annotations: bool) -> Result<(), Error> {
        self.walk(ia, size, WalkFlags::LEAF, &mut |_, ctx, _| match ctx.old.kind(ctx.level) {
            Kind::Locked => Err(Error::Locked),
            Kind::Annotation(_) if annotations => Err(Error::Annotated),
            _ => Ok(()),
        })
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
    fn split_boundaries(&mut self, start: u64, end: u64) -> Result<(), Error> {
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
                self.split_entry(&ctx)?;
            }
        }
        Ok(())
    }

    /// Replace the block at `ctx` by a table of next-level entries with the
    /// same translation (break-before-make on the block).
    fn split_entry(&mut self, ctx: &Ctx) -> Result<(), Error> {
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
            self.mm.get_page(child);
        }
        self.replace(ctx, Desc::table(child));
        Ok(())
    }

    /// Install a fresh empty table at an invalid entry (empty or stray).
    fn link_new_table(&mut self, ctx: &Ctx) -> Result<(), Error> {
        let child = self.mm.zalloc_pages(1).ok_or(Error::NoMemory)?;
        self.set_entry(ctx, Desc::table(child));
        Ok(())
    }

    /// Put a leaf where `fits` said one belongs.
    fn install_leaf(&mut self, ctx: &Ctx, new: Desc, pending: &mut Pending) {
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
    fn set_entry(&mut self, ctx: &Ctx, new: Desc) {
        let page = ctx.table_page();
        if new.is_counted() && !ctx.old.is_counted() {
            self.mm.get_page(page);
        }
        self.mm.write_desc(ctx.entry_pa, new.0);
        if ctx.old.is_counted() && !new.is_counted() {
            self.mm.put_page(page);
        }
    }

    /// Clear a valid entry and defer its invalidation to the next flush.
    fn clear_deferred(&mut self, ctx: &Ctx, pending: &mut Pending) {
        self.set_entry(ctx, Desc::EMPTY);
        if ctx.old.kind(ctx.level) == Kind::Table {
            pending.all = true;
        } else {
            pending.add(ctx.entry_start, ctx.level);
        }
    }

    /// Break-before-make: if the entry is valid, lock it, make the lock
    /// visible, invalidate it on every CPU and wait; then write `new`.
    fn replace(&mut self, ctx: &Ctx, new: Desc) {
        if !ctx.old.is_valid() {
            self.set_entry(ctx, new);
            return;
        }
        self.mm.write_desc(ctx.entry_pa, desc::LOCKED);
        self.tlb.barrier(Barrier::DsbIshSt);
        let op = self.tlbi_for(ctx.entry_start, ctx.level, ctx.old.kind(ctx.level) == Kind::Table, Scope::Broadcast);
        self.tlb.tlbi(op);
        self.tlb.barrier(Barrier::DsbIsh);
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
    fn flush(&mut self, pending: &mut Pending, scope: Scope) {
        if pending.is_empty() {
            return;
        }
        self.tlb.barrier(Barrier::DsbIshSt);
        if pending.all {
            let op = self.tlbi_for(0, 0, true, scope);
            self.tlb.tlbi(op);
        } else {
            for &(addr, level) in &pending.addrs[..pending.len] {
                let op = self.tlbi_for(addr, level, false, scope);
                self.tlb.tlbi(op);
            }
        }
        self.tlb.barrier(match scope {
            Scope::Broadcast => Barrier::DsbIsh,
            Scope::Local => Barrier::DsbNsh,
        });
        *pending = Pending::new();
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
    /// (splitting blocks that stick out), then invalidate with `scope`.
    fn update_leaves(&mut self, ia: u64, size: u64, set: u64, clear: u64, scope: Option<Scope>) -> Result<(), Error> {
        let end = self.check_range(ia, size)?;
        if size == 0 {
            return Ok(());
        }
        // Refuse up front what the regime forbids (W+X at stage 1,
        // executable device memory), so nothing changes on refusal.
        let regime = self.regime;
        self.walk(ia, size, WalkFlags::LEAF, &mut |_, ctx, _| match ctx.old.kind(ctx.level) {
            Kind::Locked => Err(Error::Locked),
            Kind::Leaf => {
                let new = Desc((ctx.old.0 | set) & !clear);
                let a = new.attrs(&regime);
                let sw = matches!(regime, Regime::El2Stage1 { .. });
                if (a.perms.x && a.mem == crate::MemType::Device) || (sw && a.perms.w && a.perms.x) {
                    Err(Error::InvalidAttrs)
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        })?;
        self.split_boundaries(ia, end)?;
        let mut pending = Pending::new();
        let res = self.walk(ia, size, WalkFlags::LEAF, &mut |pt, ctx, _| {
            if ctx.old.kind(ctx.level) == Kind::Leaf {
                let new = Desc((ctx.old.0 | set) & !clear);
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

    /// Free a table that is no longer linked: drop the reference of every
    /// counted entry (recursing into child tables), then the table's own.
    fn free_unlinked(&mut self, table: u64, level: u8) {
        for i in 0..ENTRIES_PER_TABLE as u64 {
            let d = Desc(self.mm.read_desc(table + i * 8));
            if !d.is_counted() {
                continue;
            }
            if level < LAST_LEVEL && d.kind(level) == Kind::Table {
                self.free_unlinked(d.oa(), level + 1);
            }
            self.mm.put_page(table);
        }
        self.mm.put_page(table);
    }
}

fn config_shift(level: u8) -> u32 {
    crate::config::level_shift(level)
}
