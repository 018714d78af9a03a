//! `unmap` and the freeing of detached tables.
//!
//! A fully covered subtree that cannot hold annotations (its table
//! descriptor lacks [`desc::TABLE_MAY_ANNOTATE`]) is unlinked as a whole,
//! invalidated once, and freed without reading its leaves: a level-3
//! table's count (1 + its non-zero entries) already says how many pages it
//! mapped.

use crate::config::{level_shift, level_size, ENTRIES_PER_TABLE, LAST_LEVEL, PAGE_SIZE};
use crate::desc::{Desc, Kind, OA_MASK, TABLE_OR_PAGE, VALID};
use crate::ops::{MmOps, Scope, TlbOps};
use crate::table::Pending;
use crate::{Error, PageTable};

#[cfg(doc)]
use crate::desc;

impl<M: MmOps, T: TlbOps> PageTable<M, T> {
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
        if self.scan(ia, end, true)? {
            self.split_boundaries(ia, end)?;
        }
        let mut unmapped = 0u64;
        let mut pending = Pending::new();
        let mut addr = ia;
        let level = self.geo.start_level;
        while addr < end {
            let page = self.root_page_for(addr);
            self.unmap_table(
                page,
                level,
                ENTRIES_PER_TABLE,
                &mut addr,
                ia,
                end,
                &mut unmapped,
                &mut pending,
            );
        }
        self.flush(&mut pending, Scope::Broadcast);
        Ok(unmapped)
    }

    /// Unmap the part of `[*addr, end)` in `table`. The scan has refused
    /// annotations and the boundary blocks are split, so every leaf met is
    /// covered.
    #[allow(clippy::too_many_arguments)]
    fn unmap_table(
        &mut self,
        table: u64,
        level: u8,
        entries: usize,
        addr: &mut u64,
        start: u64,
        end: u64,
        unmapped: &mut u64,
        pending: &mut Pending,
    ) {
        let shift = level_shift(level);
        let size = level_size(level);
        let mut idx = ((*addr >> shift) as usize) & (entries - 1);
        let mut cleared = 0u32;
        while *addr < end && idx < entries {
            let entry_pa = table + idx as u64 * 8;
            let entry_start = (*addr >> shift) << shift;
            let covered = entry_start >= start && entry_start + size <= end;
            let old = Desc(self.mm.read_desc(entry_pa));
            match old.kind(level) {
                Kind::Leaf => {
                    self.mm.write_desc(entry_pa, 0);
                    cleared += 1;
                    *unmapped += size;
                    pending.add(entry_start, level);
                }
                Kind::Table => {
                    let child = old.oa();
                    // A covered subtree without annotations goes whole.
                    let whole = covered && !old.may_annotate();
                    if !whole {
                        self.unmap_table(child, level + 1, ENTRIES_PER_TABLE, addr, start, end, unmapped, pending);
                    }
                    if whole || self.mm.page_count(child) == 1 {
                        // Unlink, invalidate everything the subtree may
                        // have fed into TLBs and walk caches, then free.
                        self.mm.write_desc(entry_pa, 0);
                        cleared += 1;
                        pending.all = true;
                        self.flush(pending, Scope::Broadcast);
                        *unmapped += self.free_unlinked(child, level + 1);
                    }
                }
                _ => {}
            }
            *addr = entry_start + size;
            idx += 1;
        }
        self.mm.put_pages(table, cleared);
    }

    /// Free a table that is no longer reachable: recurse into child
    /// tables, drop the table's references, and return how many bytes its
    /// valid leaves mapped. A level-3 table is freed from its count alone;
    /// its bytes are exact when it holds no annotation (which is how
    /// unmap calls it).
    pub(crate) fn free_unlinked(&mut self, table: u64, level: u8) -> u64 {
        let count = self.mm.page_count(table);
        if level == LAST_LEVEL {
            self.mm.put_pages(table, count);
            return count.saturating_sub(1) as u64 * PAGE_SIZE;
        }
        // Plain bit tests rather than Desc::kind: this loop reads every
        // entry of a detached table. Level 0 has no blocks.
        let block = if level == 0 { 0 } else { level_size(level) };
        let mut bytes = 0;
        // In chunks, so that a small EL2 stack suffices at every level.
        let mut chunk = [0u64; 64];
        for first in (0..ENTRIES_PER_TABLE as u64).step_by(chunk.len()) {
            self.mm.read_descs(table + first * 8, &mut chunk);
            // Counting passes the compiler can vectorise; the recursion
            // only for chunks that hold tables.
            let is_table = |d: &&u64| **d & (VALID | TABLE_OR_PAGE) == VALID | TABLE_OR_PAGE;
            let tables = chunk.iter().filter(is_table).count();
            let valid = chunk.iter().filter(|d| **d & VALID != 0).count();
            bytes += (valid - tables) as u64 * block;
            if tables > 0 {
                for &d in chunk.iter().filter(is_table) {
                    bytes += self.free_unlinked(d & OA_MASK, level + 1);
                }
            }
        }
        self.mm.put_pages(table, count);
        bytes
    }
}
