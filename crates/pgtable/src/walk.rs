//! The walker: visits every entry that overlaps a range, like
//! `kvm_pgtable_walk`.
//!
//! For each entry the walker reads the descriptor, calls the visitor
//! ([`Visit::TablePre`] for a table entry, [`Visit::Leaf`] for anything
//! else, invalid entries included), then **re-reads** the entry: a callback
//! may have replaced a block by a table (the walker then descends into it)
//! or a table by a block (it then does not). After a table's children it
//! calls [`Visit::TablePost`], again with a fresh read.

use crate::config::{level_shift, level_size, LAST_LEVEL};
use crate::desc::{Desc, Kind};
use crate::ops::{MmOps, TlbOps};
use crate::{Error, PageTable};

/// Which visits a walk makes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalkFlags {
    /// Visit table entries before their children.
    pub table_pre: bool,
    /// Visit leaf entries: blocks, pages and invalid entries.
    pub leaf: bool,
    /// Visit table entries after their children.
    pub table_post: bool,
}

impl WalkFlags {
    /// Leaves only.
    pub const LEAF: WalkFlags = WalkFlags {
        table_pre: false,
        leaf: true,
        table_post: false,
    };
}

/// Which visit a callback is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Visit {
    /// A table entry, before its children.
    TablePre,
    /// A leaf or invalid entry.
    Leaf,
    /// A table entry, after its children.
    TablePost,
}

/// What the visitor is told about the entry it visits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ctx {
    /// Physical address of the descriptor.
    pub entry_pa: u64,
    /// The descriptor as read just before the callback.
    pub old: Desc,
    /// Level of the entry.
    pub level: u8,
    /// First input address the entry covers.
    pub entry_start: u64,
    /// Start of the walked range.
    pub start: u64,
    /// End (exclusive) of the walked range.
    pub end: u64,
}

impl Ctx {
    /// Size of the region the entry covers.
    pub fn entry_size(&self) -> u64 {
        level_size(self.level)
    }

    /// End (exclusive) of the region the entry covers.
    pub fn entry_end(&self) -> u64 {
        self.entry_start + self.entry_size()
    }

    /// Whether the walked range covers the entry's whole region.
    pub fn fully_covered(&self) -> bool {
        self.start <= self.entry_start && self.entry_end() <= self.end
    }

    /// The table page holding the entry (for reference counting).
    pub fn table_page(&self) -> u64 {
        self.entry_pa & !(crate::config::PAGE_SIZE - 1)
    }
}

impl<M: MmOps, T: TlbOps> PageTable<M, T> {
    /// Walk `[ia, ia + size)` (rounded out to pages), calling `visitor` as
    /// `flags` ask. The visitor gets the table itself, so it can change
    /// entries; a visitor error stops the walk and is returned.
    pub fn walk<F>(&mut self, ia: u64, size: u64, flags: WalkFlags, visitor: &mut F) -> Result<(), Error>
    where
        F: FnMut(&mut Self, &Ctx, Visit) -> Result<(), Error>,
    {
        let start = ia & !(crate::config::PAGE_SIZE - 1);
        let end = ia
            .checked_add(size)
            .and_then(|e| e.checked_add(crate::config::PAGE_SIZE - 1))
            .ok_or(Error::OutOfRange)?
            & !(crate::config::PAGE_SIZE - 1);
        if end > self.geo.ia_end() {
            return Err(Error::OutOfRange);
        }
        if start >= end {
            return Ok(());
        }
        let mut addr = start;
        let level = self.geo.start_level;
        let root = self.root;
        let entries = self.geo.root_pages * crate::config::ENTRIES_PER_TABLE;
        self.walk_table(root, level, entries, &mut addr, start, end, flags, visitor)
    }

    #[allow(clippy::too_many_arguments)]
    fn walk_table<F>(
        &mut self,
        table: u64,
        level: u8,
        entries: usize,
        addr: &mut u64,
        start: u64,
        end: u64,
        flags: WalkFlags,
        visitor: &mut F,
    ) -> Result<(), Error>
    where
        F: FnMut(&mut Self, &Ctx, Visit) -> Result<(), Error>,
    {
        let shift = level_shift(level);
        let mut idx = ((*addr >> shift) as usize) & (entries - 1);
        while *addr < end && idx < entries {
            let entry_pa = table + (idx as u64) * 8;
            let entry_start = (*addr >> shift) << shift;
            let mut ctx = Ctx {
                entry_pa,
                old: Desc(self.mm.read_desc(entry_pa)),
                level,
                entry_start,
                start,
                end,
            };
            let is_table = ctx.old.kind(level) == Kind::Table;
            let wanted = if is_table { flags.table_pre } else { flags.leaf };
            if wanted {
                let visit = if is_table { Visit::TablePre } else { Visit::Leaf };
                visitor(self, &ctx, visit)?;
                ctx.old = Desc(self.mm.read_desc(entry_pa));
            }
            if level < LAST_LEVEL && ctx.old.kind(level) == Kind::Table {
                let child = ctx.old.oa();
                self.walk_table(
                    child,
                    level + 1,
                    crate::config::ENTRIES_PER_TABLE,
                    addr,
                    start,
                    end,
                    flags,
                    visitor,
                )?;
                if flags.table_post {
                    ctx.old = Desc(self.mm.read_desc(entry_pa));
                    visitor(self, &ctx, Visit::TablePost)?;
                }
            }
            // Whatever the entry became, the walk moves to the next one.
            *addr = entry_start + level_size(level);
            idx += 1;
        }
        Ok(())
    }
}
