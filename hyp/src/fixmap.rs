//! The per-CPU fixmap and fixblock of Warden's EL2 stage 1: a 4 KiB and a
//! 2 MiB window per CPU through which EL2 reaches any physical page or
//! block (to zero it, or to clean it to the point of coherency) without
//! allocating, without a lock, and without touching the identity map.
//!
//! # Layout
//!
//! The caller picks `base`, 2 MiB aligned, in the upper half of an EL2 VA
//! space one bit wider than the physical address space (`va_bits =
//! pa_bits + 1`). Every physical address is below `1 << pa_bits`, so no
//! identity mapping (RAM, or MMIO donated to EL2) can ever land in the
//! fixmap, and the fixmap needs no carve-out in the ownership layer.
//! `init` enforces the upper half (it cannot know `pa_bits`).
//!
//! ```text
//! base                         one 2 MiB region: page slot i at base + i * 4 KiB,
//!                              the rest of the region guard pages
//! base + 2 MiB * (1 + i)       fixblock slot i, one level-2 entry
//! ```
//!
//! The whole fixmap lies inside one 1 GiB-aligned region, so all of its
//! entries hang off a single level-2 table: the fixblock slots must be
//! level-2 entries (the hardware can only make a 2 MiB block there), and
//! the level-2 table exists once the page region's level-3 table is linked.
//!
//! # Why annotations
//!
//! The engine keeps each table page's count at 1 + its non-zero entries
//! and frees a table that empties. pKVM pins its fixmap tables by leaving
//! the count raised over a zero entry; here every slot entry is instead
//! *never zero*: a free slot holds an ownership annotation (owner HYP, a
//! fixmap tag in the metadata), a busy one a valid leaf. So the refcount
//! rule holds at every instant without the fixmap touching a count after
//! [`Fixmap::init`], the engine's property checks apply unchanged, and a
//! stray engine operation on the range is refused rather than obeyed: `map`
//! stops at a free slot's annotation, and `unmap` of any range reaching
//! into the page region stops at a guard page (never mapped, so refusing
//! even while every slot is busy): no engine call can free the fixmap's
//! tables under the recorded descriptor addresses. A busy slot's leaf is
//! not protected that way; the range simply belongs to the fixmap.
//!
//! The engine's `annotate` is page-granular (it splits down to level 3),
//! so it cannot make the level-2 entry a fixblock slot needs. `init`
//! annotates the page region through `annotate` (which links the tables
//! and marks the path `TABLE_MAY_ANNOTATE`, so scans look inside), then
//! writes the fixblock annotations itself through the engine's `walk`,
//! over entries that are empty (no maintenance: invalid to invalid) and
//! taking the table page's reference as the engine would.
//!
//! # Use
//!
//! `init` does every allocation; [`Fixmap::map_page`] and friends only
//! rewrite one descriptor whose address `init` recorded, so they cannot
//! run out of memory. Each CPU passes its *own* index and only ever writes
//! its own slots, so no lock is needed; a slot is used by one CPU at a
//! time and mapped once at a time (a second map is refused, not nested).
//!
//! * Map: write the valid leaf over the annotation, `DSB ISHST`, `ISB`.
//!   Invalid to valid needs no invalidation: no TLB holds a faulting entry,
//!   and the previous unmap left the entry clean on every CPU.
//! * Unmap: write the annotation back, `DSB ISHST`, `TLBI VALE2IS` at the
//!   slot's level, `DSB ISH`, `ISB`. The invalidation is *broadcast*
//!   although only this CPU used the slot: the table is shared, so any CPU
//!   may have walked the slot speculatively and cached it, and a later
//!   remap to another page without broadcast invalidation would break
//!   break-before-make on that CPU (seed 002, Mark Rutland's review of
//!   pKVM's fixmap).

use warden_memprotect::owner;
use warden_pgtable::config::{level_size, LAST_LEVEL};
use warden_pgtable::desc::OA_MASK;
use warden_pgtable::{
    Annotation, Attrs, Barrier, Desc, Kind, MemType, MmOps, PageTable, Perms, Regime, Scope, TlbOps, Tlbi, Visit,
    WalkFlags,
};

/// Most CPUs the fixmap has slots for.
pub const MAX_CPUS: usize = 8;
/// Size of a page slot.
pub const PAGE_SIZE: u64 = level_size(LAST_LEVEL);
/// Size of a fixblock slot, and the alignment of the fixmap's base.
pub const BLOCK_SIZE: u64 = level_size(LAST_LEVEL - 1);
/// Level of a fixblock slot's entry.
const BLOCK_LEVEL: u8 = LAST_LEVEL - 1;
/// The region one level-2 table covers; the fixmap may not straddle one.
const TABLE_SPAN: u64 = level_size(LAST_LEVEL - 2);

/// Metadata tag of the fixmap's annotations ("fixm"), so that a dump of
/// the table says what the entries are.
const META_TAG: u64 = 0x6669_786d << 16;

/// What a slot maps: normal cacheable memory, read-write, never executable.
const SLOT_ATTRS: Attrs = Attrs::new(Perms::RW, MemType::NormalWb);

/// Bytes of VA the fixmap takes for `cpus` CPUs: the page region and one
/// block per CPU.
pub const fn size(cpus: usize) -> u64 {
    BLOCK_SIZE * (1 + cpus as u64)
}

/// Why the fixmap refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// `init`: the CPU count is 0 or above [`MAX_CPUS`].
    Cpus,
    /// A CPU index at or above the count given to `init`.
    NoSuchCpu,
    /// The base is not 2 MiB aligned, or the physical address not aligned
    /// to the slot's size.
    Unaligned,
    /// `init`: the range is outside the upper half of the VA space (or
    /// past its end) or crosses a 1 GiB boundary; map: the physical
    /// address is beyond the 48-bit output range.
    OutOfRange,
    /// `init`: the table is not an EL2 stage-1 table.
    Regime,
    /// `init`: something is mapped, annotated or linked in the range.
    Occupied,
    /// map: this CPU's slot is already mapped.
    Busy,
    /// The slot's entry holds neither its annotation nor a leaf: someone
    /// else wrote into the fixmap's range. Nothing was written. (From
    /// `init`: the table did not take the annotations as the engine's
    /// contract says it must.)
    Clobbered,
    /// `init`: the engine refused (e.g. `NoMemory`); the table is as it was.
    Table(warden_pgtable::Error),
}

impl From<warden_pgtable::Error> for Error {
    fn from(e: warden_pgtable::Error) -> Self {
        Error::Table(e)
    }
}

/// What a fixmap annotation marks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotKind {
    /// A page of the page region that is no CPU's slot.
    Guard,
    /// A CPU's page slot.
    Page,
    /// A CPU's fixblock slot.
    Block,
}

/// The annotation a free slot (or a guard page) holds: owner HYP, the
/// fixmap tag, the kind and the CPU index in the metadata.
pub const fn annotation(kind: SlotKind, cpu: usize) -> Annotation {
    let kind = match kind {
        SlotKind::Guard => 0,
        SlotKind::Page => 1,
        SlotKind::Block => 2,
    };
    Annotation {
        owner: owner::HYP,
        meta: META_TAG | (kind << 8) | (cpu as u64 & 0xff),
    }
}

/// The descriptor of [`annotation`]. Every owner and metadata it builds is
/// encodable, so this cannot fail.
fn annotation_desc(kind: SlotKind, cpu: usize) -> u64 {
    Desc::annotated(annotation(kind, cpu)).map_or(0, |d| d.0)
}

/// Reading and writing one descriptor by physical address: all a CPU needs
/// to use its slots. Every [`MmOps`] is one; at EL2 a zero-sized type doing
/// single-copy atomic accesses at the identity-mapped address will do, so
/// the per-CPU path never needs the page pool or its lock.
///
/// The methods are not called `read_desc`/`write_desc` so that a type that
/// is also an [`MmOps`] has no ambiguous method with both traits in scope.
pub trait DescAccess {
    /// Read the descriptor at `pa`.
    fn read_entry(&self, pa: u64) -> u64;
    /// Write the descriptor at `pa` (single-copy atomic).
    fn write_entry(&mut self, pa: u64, val: u64);
}

impl<M: MmOps> DescAccess for M {
    fn read_entry(&self, pa: u64) -> u64 {
        self.read_desc(pa)
    }

    fn write_entry(&mut self, pa: u64, val: u64) {
        self.write_desc(pa, val)
    }
}

/// Memory access through a mapped slot's virtual address, for the helpers
/// that use a slot ([`Fixmap::zero_page`]). At EL2: volatile stores and
/// `DC CVAC` by VA; in tests: the model's translation of the VA.
pub trait SlotMem {
    /// Store `val` at `va` (8-byte aligned, inside a slot this CPU mapped).
    fn write_u64(&mut self, va: u64, val: u64);
    /// Clean `[va, va + len)` to the point of coherency by VA. Completion
    /// is the caller's: the helpers issue `DSB ISH` before unmapping.
    fn clean_to_poc(&mut self, va: u64, len: u64);
}

/// The fixmap of one EL2 stage-1 table: where each CPU's slots are and
/// where their descriptors live. Plain data, shared by all CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fixmap {
    base: u64,
    cpus: usize,
    /// Physical address of each CPU's page-slot descriptor.
    page_entry: [u64; MAX_CPUS],
    /// Physical address of each CPU's fixblock descriptor.
    block_entry: [u64; MAX_CPUS],
    /// The slots' leaf descriptors without output address.
    page_leaf: u64,
    block_leaf: u64,
}

impl Fixmap {
    /// Reserve slots for `cpus` CPUs at `[base, base + size(cpus))` in
    /// `table`, an EL2 stage-1 table, and record where their descriptors
    /// are. The only fallible, allocating step; on error the translation
    /// the table provides is unchanged (the engine rolls back an `annotate`
    /// that runs out of memory).
    ///
    /// Requires: `base` 2 MiB aligned, the range in the upper half of the
    /// table's VA space and inside one 1 GiB-aligned region, and nothing in
    /// the range. Afterwards the range belongs to the fixmap: no other
    /// operation on the table may touch it.
    pub fn init<M: MmOps, T: TlbOps>(table: &mut PageTable<M, T>, base: u64, cpus: usize) -> Result<Fixmap, Error> {
        let regime = *table.regime();
        let Regime::El2Stage1 { .. } = regime else {
            return Err(Error::Regime);
        };
        if cpus == 0 || cpus > MAX_CPUS {
            return Err(Error::Cpus);
        }
        if !base.is_multiple_of(BLOCK_SIZE) {
            return Err(Error::Unaligned);
        }
        let ia_end = table.geometry().ia_end();
        let end = base.checked_add(size(cpus)).ok_or(Error::OutOfRange)?;
        if base < ia_end / 2 || end > ia_end || base / TABLE_SPAN != (end - 1) / TABLE_SPAN {
            return Err(Error::OutOfRange);
        }
        check_empty(table, base, end)?;
        let page_leaf = Desc::leaf(&regime, LAST_LEVEL, 0, SLOT_ATTRS)?.0;
        let block_leaf = Desc::leaf(&regime, BLOCK_LEVEL, 0, SLOT_ATTRS)?.0;

        // The only allocating step: links the tables down to the page
        // region's level-3 table (the level-2 table the fixblock slots sit
        // in comes with it). Guards first, then each slot's own marker.
        table.annotate(base, BLOCK_SIZE, annotation(SlotKind::Guard, 0))?;
        for cpu in 0..cpus {
            table.annotate(
                base + cpu as u64 * PAGE_SIZE,
                PAGE_SIZE,
                annotation(SlotKind::Page, cpu),
            )?;
        }
        write_block_annotations(table, base, cpus)?;

        let mut fixmap = Fixmap {
            base,
            cpus,
            page_entry: [0; MAX_CPUS],
            block_entry: [0; MAX_CPUS],
            page_leaf,
            block_leaf,
        };
        fixmap.record_entries(table)?;
        Ok(fixmap)
    }

    /// First VA of the fixmap.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Number of CPUs with slots.
    pub fn cpus(&self) -> usize {
        self.cpus
    }

    /// Bytes of VA the fixmap takes.
    pub fn size(&self) -> u64 {
        size(self.cpus)
    }

    /// VA of `cpu`'s page slot.
    pub fn page_va(&self, cpu: usize) -> Option<u64> {
        (cpu < self.cpus).then(|| self.base + cpu as u64 * PAGE_SIZE)
    }

    /// VA of `cpu`'s fixblock slot.
    pub fn block_va(&self, cpu: usize) -> Option<u64> {
        (cpu < self.cpus).then(|| self.base + BLOCK_SIZE * (1 + cpu as u64))
    }

    /// Physical address of the descriptor of `cpu`'s page slot.
    pub fn page_entry(&self, cpu: usize) -> Option<u64> {
        (cpu < self.cpus).then(|| self.page_entry[cpu])
    }

    /// Physical address of the descriptor of `cpu`'s fixblock slot.
    pub fn block_entry(&self, cpu: usize) -> Option<u64> {
        (cpu < self.cpus).then(|| self.block_entry[cpu])
    }

    /// Map the 4 KiB page at `pa` (page aligned) at this CPU's page slot
    /// and return the slot's VA. `cpu` must be the calling CPU's index.
    pub fn map_page<A, T>(&self, cpu: usize, pa: u64, mem: &mut A, tlb: &mut T) -> Result<u64, Error>
    where
        A: DescAccess + ?Sized,
        T: TlbOps + ?Sized,
    {
        self.slot(false, cpu)?.map(pa, mem, tlb)
    }

    /// Unmap this CPU's page slot (nothing to do if it is free).
    pub fn unmap_page<A, T>(&self, cpu: usize, mem: &mut A, tlb: &mut T) -> Result<(), Error>
    where
        A: DescAccess + ?Sized,
        T: TlbOps + ?Sized,
    {
        self.slot(false, cpu)?.unmap(mem, tlb)
    }

    /// Map the 2 MiB block at `pa` (2 MiB aligned) at this CPU's fixblock
    /// slot and return the slot's VA. `cpu` must be the calling CPU's index.
    pub fn map_block<A, T>(&self, cpu: usize, pa: u64, mem: &mut A, tlb: &mut T) -> Result<u64, Error>
    where
        A: DescAccess + ?Sized,
        T: TlbOps + ?Sized,
    {
        self.slot(true, cpu)?.map(pa, mem, tlb)
    }

    /// Unmap this CPU's fixblock slot (nothing to do if it is free).
    pub fn unmap_block<A, T>(&self, cpu: usize, mem: &mut A, tlb: &mut T) -> Result<(), Error>
    where
        A: DescAccess + ?Sized,
        T: TlbOps + ?Sized,
    {
        self.slot(true, cpu)?.unmap(mem, tlb)
    }

    /// Map the page at `pa`, run `f` with the slot's VA, unmap: the slot
    /// cannot be left mapped by mistake.
    pub fn with_page<A, T, R>(
        &self,
        cpu: usize,
        pa: u64,
        mem: &mut A,
        tlb: &mut T,
        f: impl FnOnce(u64) -> R,
    ) -> Result<R, Error>
    where
        A: DescAccess + ?Sized,
        T: TlbOps + ?Sized,
    {
        self.scoped(false, cpu, pa, mem, tlb, f)
    }

    /// Map the block at `pa`, run `f` with the slot's VA, unmap.
    pub fn with_block<A, T, R>(
        &self,
        cpu: usize,
        pa: u64,
        mem: &mut A,
        tlb: &mut T,
        f: impl FnOnce(u64) -> R,
    ) -> Result<R, Error>
    where
        A: DescAccess + ?Sized,
        T: TlbOps + ?Sized,
    {
        self.scoped(true, cpu, pa, mem, tlb, f)
    }

    fn scoped<A, T, R>(
        &self,
        block: bool,
        cpu: usize,
        pa: u64,
        mem: &mut A,
        tlb: &mut T,
        f: impl FnOnce(u64) -> R,
    ) -> Result<R, Error>
    where
        A: DescAccess + ?Sized,
        T: TlbOps + ?Sized,
    {
        let slot = self.slot(block, cpu)?;
        let va = slot.map(pa, mem, tlb)?;
        let r = f(va);
        slot.unmap(mem, tlb)?;
        Ok(r)
    }

    /// Zero the page at `pa` through this CPU's page slot and clean it to
    /// the point of coherency, so that whoever gets it next sees zeros even
    /// through a non-cacheable mapping or a non-coherent device.
    pub fn zero_page<A, T, S>(&self, cpu: usize, pa: u64, mem: &mut A, tlb: &mut T, out: &mut S) -> Result<(), Error>
    where
        A: DescAccess + ?Sized,
        T: TlbOps + ?Sized,
        S: SlotMem + ?Sized,
    {
        let slot = self.slot(false, cpu)?;
        let va = slot.map(pa, mem, tlb)?;
        for off in (0..PAGE_SIZE).step_by(8) {
            out.write_u64(va + off, 0);
        }
        out.clean_to_poc(va, PAGE_SIZE);
        // The clean by VA must complete while the VA still translates.
        tlb.barrier(Barrier::DsbIsh);
        slot.unmap(mem, tlb)
    }

    fn slot(&self, block: bool, cpu: usize) -> Result<Slot, Error> {
        if cpu >= self.cpus {
            return Err(Error::NoSuchCpu);
        }
        Ok(if !block {
            Slot {
                va: self.base + cpu as u64 * PAGE_SIZE,
                entry: self.page_entry[cpu],
                level: LAST_LEVEL,
                leaf: self.page_leaf,
                free: annotation_desc(SlotKind::Page, cpu),
            }
        } else {
            Slot {
                va: self.base + BLOCK_SIZE * (1 + cpu as u64),
                entry: self.block_entry[cpu],
                level: BLOCK_LEVEL,
                leaf: self.block_leaf,
                free: annotation_desc(SlotKind::Block, cpu),
            }
        })
    }

    /// Find each slot's descriptor and check it holds its annotation at
    /// the right level.
    fn record_entries<M: MmOps, T: TlbOps>(&mut self, table: &mut PageTable<M, T>) -> Result<(), Error> {
        let (base, cpus) = (self.base, self.cpus as u64);
        let mut found = 0;
        table
            .walk(base, size(self.cpus), WalkFlags::LEAF, &mut |_, ctx, _| {
                let off = ctx.entry_start - base;
                let (kind, cpu, level) = if off < BLOCK_SIZE {
                    (SlotKind::Page, off / PAGE_SIZE, LAST_LEVEL)
                } else {
                    (SlotKind::Block, off / BLOCK_SIZE - 1, BLOCK_LEVEL)
                };
                if cpu >= cpus {
                    return Ok(());
                }
                if ctx.level != level || ctx.old.0 != annotation_desc(kind, cpu as usize) {
                    return Err(warden_pgtable::Error::InvalidConfig);
                }
                match kind {
                    SlotKind::Block => self.block_entry[cpu as usize] = ctx.entry_pa,
                    _ => self.page_entry[cpu as usize] = ctx.entry_pa,
                }
                found += 1;
                Ok(())
            })
            .map_err(|_| Error::Clobbered)?;
        // Unreachable after a successful init: the walk met every slot.
        if found != 2 * cpus {
            return Err(Error::Clobbered);
        }
        Ok(())
    }
}

/// One slot's coordinates.
struct Slot {
    va: u64,
    entry: u64,
    level: u8,
    leaf: u64,
    free: u64,
}

impl Slot {
    fn map<A, T>(&self, pa: u64, mem: &mut A, tlb: &mut T) -> Result<u64, Error>
    where
        A: DescAccess + ?Sized,
        T: TlbOps + ?Sized,
    {
        if !pa.is_multiple_of(level_size(self.level)) {
            return Err(Error::Unaligned);
        }
        if pa & !OA_MASK != 0 {
            return Err(Error::OutOfRange);
        }
        let old = mem.read_entry(self.entry);
        if old != self.free {
            return Err(if Desc(old).kind(self.level) == Kind::Leaf {
                Error::Busy
            } else {
                Error::Clobbered
            });
        }
        mem.write_entry(self.entry, self.leaf | pa);
        // Publish the entry to this CPU's walker before the caller's first
        // access through the VA (which would otherwise fault spuriously).
        tlb.barrier(Barrier::DsbIshSt);
        tlb.barrier(Barrier::Isb);
        Ok(self.va)
    }

    fn unmap<A, T>(&self, mem: &mut A, tlb: &mut T) -> Result<(), Error>
    where
        A: DescAccess + ?Sized,
        T: TlbOps + ?Sized,
    {
        let old = mem.read_entry(self.entry);
        if old == self.free {
            return Ok(());
        }
        if Desc(old).kind(self.level) != Kind::Leaf {
            return Err(Error::Clobbered);
        }
        mem.write_entry(self.entry, self.free);
        tlb.barrier(Barrier::DsbIshSt);
        // Broadcast: the table is shared, so another CPU may hold the slot
        // from a speculative walk, and the next map of another page here
        // must find the entry clean everywhere (seed 002).
        tlb.tlbi(Tlbi::El2Va {
            va: self.va,
            level: self.level,
            last_level: true,
            scope: Scope::Broadcast,
        });
        tlb.barrier(Barrier::DsbIsh);
        tlb.barrier(Barrier::Isb);
        Ok(())
    }
}

/// Refuse a range that holds anything: a leaf or annotation anywhere, or a
/// level-2 table (which would sit where a fixblock slot goes, or be a page
/// region table the refcount rule says cannot be empty).
fn check_empty<M: MmOps, T: TlbOps>(table: &mut PageTable<M, T>, base: u64, end: u64) -> Result<(), Error> {
    let flags = WalkFlags {
        table_pre: true,
        leaf: true,
        table_post: false,
    };
    let mut occupied = false;
    table.walk(base, end - base, flags, &mut |_, ctx, visit| {
        occupied |= match visit {
            Visit::TablePre => ctx.level >= BLOCK_LEVEL,
            _ => ctx.old != Desc::EMPTY,
        };
        Ok(())
    })?;
    if occupied {
        return Err(Error::Occupied);
    }
    Ok(())
}

/// Put each fixblock slot's annotation in its (empty) level-2 entry.
fn write_block_annotations<M: MmOps, T: TlbOps>(
    table: &mut PageTable<M, T>,
    base: u64,
    cpus: usize,
) -> Result<(), Error> {
    let start = base + BLOCK_SIZE;
    table
        .walk(start, BLOCK_SIZE * cpus as u64, WalkFlags::LEAF, &mut |pt, ctx, _| {
            // check_empty and the one-level-2-table rule guarantee an empty
            // level-2 entry per slot; anything else would be an engine bug.
            if ctx.level != BLOCK_LEVEL || ctx.old != Desc::EMPTY {
                return Err(warden_pgtable::Error::InvalidConfig);
            }
            let cpu = ((ctx.entry_start - start) / BLOCK_SIZE) as usize;
            // Empty to invalid: no maintenance. The reference is the one
            // the engine takes for every non-zero entry.
            pt.mm_mut().get_page(ctx.table_page());
            pt.mm_mut()
                .write_desc(ctx.entry_pa, annotation_desc(SlotKind::Block, cpu));
            Ok(())
        })
        .map_err(|_| Error::Clobbered)
}
