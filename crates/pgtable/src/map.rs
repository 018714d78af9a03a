//! `map`, and the scan that checks a range before anything changes.
//!
//! These are the hot paths (a host stage-2 fault, a 1 GiB identity map), so
//! they are written as tight loops over one table at a time rather than
//! through the generic visitor: a run of empty level-3 entries costs one
//! read and one write each, and the table page's count is updated once.

use crate::config::{level_shift, level_size, ENTRIES_PER_TABLE, LAST_LEVEL, PAGE_SHIFT, PAGE_SIZE};
use crate::desc::{self, Desc, Kind};
use crate::ops::{Barrier, MmOps, Scope, TlbOps};
use crate::table::{MapPolicy, Pending};
use crate::walk::Ctx;
use crate::{Attrs, Error, PageTable};

/// The fixed arguments of one `map` pass.
#[derive(Clone, Copy)]
struct MapArgs {
    /// The preparing pass: create every table the range needs (linking
    /// empty tables, splitting blocks: no translation changes), write no
    /// leaf. The committing pass that follows then cannot fail.
    prepare: bool,
    start: u64,
    end: u64,
    oa: u64,
    page: Desc,
    block: Desc,
    min_level: u8,
}

impl<M: MmOps, T: TlbOps> PageTable<M, T> {
    /// Map `[ia, ia + size)` to `[oa, oa + size)` with `attrs`, using the
    /// largest blocks `policy` and alignment allow. Existing mappings in the
    /// range are replaced (with break-before-make where needed); blocks that
    /// stick out of the range are split so that what lies outside keeps its
    /// translation.
    ///
    /// Refused without any change to the translation: unaligned or
    /// out-of-range arguments, attributes the regime forbids, an annotation
    /// in the range (unless the policy allows replacing it), and `NoMemory`:
    /// every table the range needs is created (or split off a block) in a
    /// first pass that changes no translation, and tables it linked are
    /// freed again if it runs out of memory; only then are leaves written.
    pub fn map(&mut self, ia: u64, size: u64, oa: u64, attrs: Attrs, policy: MapPolicy) -> Result<(), Error> {
        let end = self.check_range(ia, size)?;
        if !oa.is_multiple_of(PAGE_SIZE) {
            return Err(Error::Unaligned);
        }
        match oa.checked_add(size) {
            Some(oa_end) if oa_end <= 1 << 48 => {}
            _ => return Err(Error::OutOfRange),
        }
        // Encode once: validates the attributes for this regime and gives
        // the bits every leaf shares.
        let page = match self.leaf_memo {
            Some((memo, page)) if memo == attrs => page,
            _ => {
                let page = Desc::leaf(&self.regime, LAST_LEVEL, 0, attrs)?;
                self.leaf_memo = Some((attrs, page));
                page
            }
        };
        if size == 0 {
            return Ok(());
        }
        let args = MapArgs {
            prepare: false,
            start: ia,
            end,
            oa,
            page,
            block: Desc(page.0 & !desc::TABLE_OR_PAGE),
            min_level: policy.min_leaf_level.clamp(1, LAST_LEVEL),
        };
        let mut pending = Pending::new();
        let res = match self.map_within_leaf_table(&args, !policy.replace_annotations, &mut pending) {
            Some(res) => res,
            None => self.map_checked(&args, !policy.replace_annotations, &mut pending),
        };
        if res == Err(Error::NoMemory) {
            // Only the preparation allocates: the translation is unchanged,
            // but tables it linked may be empty.
            self.prune(ia, end);
        }
        self.flush(&mut pending, Scope::Broadcast);
        self.tlb.barrier(Barrier::DsbIshSt);
        if !self.regime.is_stage2() {
            self.tlb.barrier(Barrier::Isb);
        }
        res
    }

    /// The general path: check the range, split blocks sticking out of
    /// it, prepare every table, then commit.
    fn map_checked(&mut self, a: &MapArgs, refuse_annotations: bool, pending: &mut Pending) -> Result<(), Error> {
        if self.scan(a.start, a.end, refuse_annotations)? {
            self.split_boundaries(a.start, a.end)?;
        }
        self.map_pass(&MapArgs { prepare: true, ..*a }, pending)?;
        self.map_pass(a, pending)
    }

    /// One pass of `map` over the whole range, root page by root page.
    fn map_pass(&mut self, a: &MapArgs, pending: &mut Pending) -> Result<(), Error> {
        let mut addr = a.start;
        let level = self.geo.start_level;
        while addr < a.end {
            let page = self.root_page_for(addr);
            self.map_table(page, level, ENTRIES_PER_TABLE, &mut addr, a, pending)?;
        }
        Ok(())
    }

    /// Map the part of `[*addr, a.end)` that falls in `table`.
    fn map_table(
        &mut self,
        table: u64,
        level: u8,
        entries: usize,
        addr: &mut u64,
        a: &MapArgs,
        pending: &mut Pending,
    ) -> Result<(), Error> {
        // New entries in this table are counted once, on every exit.
        let mut added = 0u32;
        let res = self.map_entries(table, level, entries, addr, a, pending, &mut added);
        self.mm.get_pages(table, added);
        res
    }

    /// The loop of [`Self::map_table`].
    #[allow(clippy::too_many_arguments)]
    fn map_entries(
        &mut self,
        table: u64,
        level: u8,
        entries: usize,
        addr: &mut u64,
        a: &MapArgs,
        pending: &mut Pending,
        added: &mut u32,
    ) -> Result<(), Error> {
        let shift = level_shift(level);
        let size = level_size(level);
        let mut idx = ((*addr >> shift) as usize) & (entries - 1);
        while *addr < a.end && idx < entries {
            let entry_pa = table + idx as u64 * 8;
            let entry_start = (*addr >> shift) << shift;
            let covered = entry_start >= a.start && entry_start + size <= a.end;
            let target = a.oa.wrapping_add(entry_start.wrapping_sub(a.start));
            let fits = covered && level >= a.min_level && target & (size - 1) == 0;
            if fits && (a.prepare || level == LAST_LEVEL) {
                // From here to the end of the range or of this table every
                // entry holds a leaf (the targets stay aligned): the
                // preparation skips the run, the commit maps a run of pages
                // in one go.
                let n = (entries - idx).min(((a.end - entry_start) >> shift) as usize);
                let res = match a.prepare {
                    true => Ok(()),
                    false => self.map_pages(entry_pa, entry_start, target, n, a, pending, added),
                };
                *addr = entry_start + ((n as u64) << shift);
                idx += n;
                res?;
                continue;
            }
            let old = Desc(self.mm.read_desc(entry_pa));
            if fits && old.0 == 0 {
                // The common case of a block: nothing there yet.
                self.mm.write_desc(entry_pa, a.block.0 | target);
                *added += 1;
            } else {
                let ctx = Ctx {
                    entry_pa,
                    old,
                    level,
                    entry_start,
                    start: a.start,
                    end: a.end,
                };
                match old.kind(level) {
                    Kind::Locked => return Err(Error::Locked),
                    Kind::Table if fits => {
                        // The whole table's range becomes one block.
                        self.replace(&ctx, Desc(a.block.0 | target));
                        self.free_unlinked(old.oa(), level + 1);
                    }
                    Kind::Table => self.map_table(old.oa(), level + 1, ENTRIES_PER_TABLE, addr, a, pending)?,
                    _ if fits => self.install_leaf(&ctx, Desc(a.block.0 | target), pending),
                    kind => {
                        if kind == Kind::Leaf {
                            // A block that may not stay one (policy or
                            // alignment): split it, keeping its translation.
                            self.split_entry(&ctx, 0)?;
                        } else {
                            self.link_new_table(&ctx, 0)?;
                        }
                        let child = Desc(self.mm.read_desc(entry_pa)).oa();
                        self.map_table(child, level + 1, ENTRIES_PER_TABLE, addr, a, pending)?;
                    }
                }
            }
            *addr = entry_start + size;
            idx += 1;
        }
        Ok(())
    }

    /// The fast path for a range inside one level-3 table (a host stage-2
    /// fault, a fixmap slot): one descent, a check of the entries, then the
    /// writes. `None` when the range is not of that shape or a block is in
    /// the way; the general path then takes over.
    fn map_within_leaf_table(
        &mut self,
        a: &MapArgs,
        refuse_annotations: bool,
        pending: &mut Pending,
    ) -> Option<Result<(), Error>> {
        let block = level_size(LAST_LEVEL - 1);
        let first_block = a.start & !(block - 1);
        if a.end - first_block > block || (a.min_level < LAST_LEVEL && a.end - a.start == block) {
            return None;
        }
        let table = match self.leaf_table_for(a.start) {
            Ok(Some(table)) => table,
            Ok(None) => return None,
            Err(e) => return Some(Err(e)),
        };
        let first = table + ((a.start >> PAGE_SHIFT) & (ENTRIES_PER_TABLE as u64 - 1)) * 8;
        let n = ((a.end - a.start) >> PAGE_SHIFT) as usize;
        for k in 0..n as u64 {
            let d = Desc(self.mm.read_desc(first + k * 8));
            if d.0 == 0 || d.is_valid() {
                continue;
            }
            match d.kind(LAST_LEVEL) {
                Kind::Locked => return Some(Err(Error::Locked)),
                Kind::Annotation(_) if refuse_annotations => return Some(Err(Error::Annotated)),
                _ => {}
            }
        }
        let mut added = 0;
        let res = self.map_pages(first, a.start, a.oa, n, a, pending, &mut added);
        self.mm.get_pages(table, added);
        Some(res)
    }

    /// The level-3 table for `ia`, creating missing tables on the way.
    /// `None` if a block or a stray invalid entry is in the way. Tables
    /// created here are empty, so a later refusal changes no translation.
    fn leaf_table_for(&mut self, ia: u64) -> Result<Option<u64>, Error> {
        let (mut table, mut level, entries) = self.root_table();
        let mut idx = ((ia >> level_shift(level)) as usize) & (entries - 1);
        while level < LAST_LEVEL {
            let entry_pa = table + idx as u64 * 8;
            let old = Desc(self.mm.read_desc(entry_pa));
            if old.0 & (desc::VALID | desc::TABLE_OR_PAGE) == desc::VALID | desc::TABLE_OR_PAGE {
                table = old.oa();
            } else if old.0 == 0 {
                let ctx = Ctx {
                    entry_pa,
                    old,
                    level,
                    entry_start: ia & !(level_size(level) - 1),
                    start: ia,
                    end: ia + PAGE_SIZE,
                };
                self.link_new_table(&ctx, 0)?;
                table = Desc(self.mm.read_desc(entry_pa)).oa();
            } else if old.0 == desc::LOCKED {
                return Err(Error::Locked);
            } else {
                return Ok(None);
            }
            level += 1;
            idx = ((ia >> level_shift(level)) as usize) & (ENTRIES_PER_TABLE - 1);
        }
        Ok(Some(table))
    }

    /// Map `n` consecutive pages of one level-3 table starting at
    /// `entry_pa`, the first translating to `target`. Empty entries (the
    /// common case) cost a read and a write; they are added to `added` for
    /// the caller to count once.
    #[allow(clippy::too_many_arguments)]
    fn map_pages(
        &mut self,
        entry_pa: u64,
        entry_start: u64,
        target: u64,
        n: usize,
        a: &MapArgs,
        pending: &mut Pending,
        added: &mut u32,
    ) -> Result<(), Error> {
        for k in 0..n as u64 {
            let pa = entry_pa + k * 8;
            let old = Desc(self.mm.read_desc(pa));
            let new = Desc(a.page.0 | (target + (k << PAGE_SHIFT)));
            if old.0 == 0 {
                self.mm.write_desc(pa, new.0);
                *added += 1;
                continue;
            }
            if old.kind(LAST_LEVEL) == Kind::Locked {
                return Err(Error::Locked);
            }
            let ctx = Ctx {
                entry_pa: pa,
                old,
                level: LAST_LEVEL,
                entry_start: entry_start + (k << PAGE_SHIFT),
                start: a.start,
                end: a.end,
            };
            self.install_leaf(&ctx, new, pending);
        }
        Ok(())
    }

    /// Check `[start, end)` before changing it: refuse a LOCKED entry or
    /// (if `annotations`) an ownership annotation. Returns whether a valid
    /// block sticks out of the range (and must be split first).
    ///
    /// Fully covered subtrees whose table descriptor lacks
    /// [`desc::TABLE_MAY_ANNOTATE`] hold no annotation and are skipped.
    /// LOCKED entries only exist inside one operation (the engine has
    /// exclusive access); one found elsewhere is also refused when met.
    pub(crate) fn scan(&self, start: u64, end: u64, annotations: bool) -> Result<bool, Error> {
        let (root, level, entries) = self.root_table();
        let mut addr = start;
        self.scan_table(root, level, entries, &mut addr, start, end, annotations)
    }

    #[allow(clippy::too_many_arguments)]
    fn scan_table(
        &self,
        table: u64,
        level: u8,
        entries: usize,
        addr: &mut u64,
        start: u64,
        end: u64,
        annotations: bool,
    ) -> Result<bool, Error> {
        let shift = level_shift(level);
        let size = level_size(level);
        let mut idx = ((*addr >> shift) as usize) & (entries - 1);
        let mut sticks_out = false;
        while *addr < end && idx < entries {
            let entry_start = (*addr >> shift) << shift;
            let covered = entry_start >= start && entry_start + size <= end;
            let d = Desc(self.mm.read_desc(table + idx as u64 * 8));
            if d.0 == 0 {
                *addr = entry_start + size;
                idx += 1;
                continue;
            }
            match d.kind(level) {
                Kind::Table if !covered || d.may_annotate() => {
                    sticks_out |=
                        self.scan_table(d.oa(), level + 1, ENTRIES_PER_TABLE, addr, start, end, annotations)?;
                }
                Kind::Leaf if !covered => sticks_out = true,
                Kind::Locked => return Err(Error::Locked),
                Kind::Annotation(_) if annotations => return Err(Error::Annotated),
                _ => {}
            }
            *addr = entry_start + size;
            idx += 1;
        }
        Ok(sticks_out)
    }
}
