//! CPUs with TLBs, and a break-before-make checker.
//!
//! A [`Machine`] owns physical memory and a set of registered ("live")
//! translation tables, as if each were installed in TTBR0_EL2 or VTTBR_EL2 on
//! every CPU. Every descriptor write, barrier and TLB invalidation the code
//! under test performs goes through the machine, which
//!
//! * keeps a per-CPU TLB of leaf translations, so that a missing or
//!   mis-scoped invalidation shows up as a stale translation, and
//! * runs a per-location automaton in the spirit of Casemate (Cambridge's
//!   runtime monitor for the pKVM page-table discipline) that records a
//!   [`Violation`] whenever a write breaks the break-before-make rules.
//!
//! # The break-before-make discipline checked
//!
//! The Arm ARM requires break-before-make when a valid translation is
//! replaced by another valid one that differs in output address, memory
//! type, shareability, block size / descriptor type or the contiguous hint:
//! otherwise TLBs may hold both entries, or an amalgamation of the two, at
//! once. The sequence is: write an invalid descriptor; make that write
//! visible to all table walkers (DSB); invalidate every TLB that may hold the
//! old entry (TLBI covering its addresses, broadcast to the inner-shareable
//! domain when other CPUs share the table); wait for the invalidation to
//! complete (DSB ISH); only then write the new valid descriptor.
//!
//! Each tracked location is in one of three states:
//!
//! * valid (the descriptor in memory is valid at that level),
//! * invalid and clean (no TLB may hold a translation derived from an old
//!   valid value),
//! * invalid and unclean: some CPUs may still cache the old value. Cleaning
//!   requires, in order, on the CPU that wrote the invalid value: a DSB ISH
//!   or DSB ISHST; a TLBI covering the location (see [`Tlbi`]); a DSB that
//!   completes that TLBI (DSB ISH; DSB NSH completes only local TLBIs). A
//!   broadcast TLBI cleans for every CPU, a local one only for the issuing
//!   CPU, so with more than one CPU a local TLBI leaves the location unclean.
//!
//! Writing a valid descriptor over an unclean location is
//! [`Violation::InvalidUncleanToValid`]; a valid-to-valid write that changes
//! more than permissions, the Access flag or software bits is
//! [`Violation::ValidToValid`].
//!
//! # Retired table pages
//!
//! Removing a table descriptor from a live location (making it invalid, or
//! replacing it, which is itself a violation) does not make the table page
//! it pointed at free: walk caches may still hold the old descriptor and
//! walk through the page. The page, and each table page reached from it
//! through tracked table descriptors, is *retired* until that location is
//! clean by the rules above, with coverage as for a table descriptor. Each
//! retirement runs its own copy of the automaton, so rewriting the location
//! early does not release the page. While retired, a descriptor write into
//! the page, a table descriptor that makes it reachable again, or a
//! [`Machine::free_pages`] of it is [`Violation::FreedBeforeInvalidation`].
//! Writing the same subtree back into the location it was removed from
//! releases it instead (stale walk-cache entries then agree with memory);
//! the location's own check still reports a missing invalidation. Frees go
//! unseen unless made through [`Machine::free_pages`].
//!
//! Conservative simplifications (they can only report more, never less):
//! only the CPU that made a location invalid can clean it (TLBIs from other
//! CPUs are not known to be ordered after the write); DSB NSH never makes the
//! invalidating write visible to other walkers.

use std::collections::{BTreeSet, HashMap};

use crate::mem::{DescSource, PhysMem, PAGE_SIZE};
use crate::walk::{self, desc_kind, level_shift, level_size, table_addr, DescKind, Fault, Regime, Translation};

/// Identifies a table registered with [`Machine::register_table`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableId(pub u32);

/// Barrier kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dsb {
    /// DSB ISH: waits for all prior accesses and TLB maintenance, inner
    /// shareable domain.
    Ish,
    /// DSB ISHST: waits for prior stores only (does not complete TLBIs).
    IshSt,
    /// DSB NSH: local only; completes local TLBIs.
    Nsh,
}

/// TLB invalidation operations.
///
/// Coverage rules for the checker: a leaf location is covered by a by-address
/// TLBI whose address lies in the leaf's range and whose level hint (TTL), if
/// any, equals the leaf's level; by a range TLBI overlapping the leaf's range;
/// and by the whole-VMID / whole-EL2 forms. A table-descriptor location
/// (whose old value may sit in walk caches and whose range may hold many
/// cached leaves) is covered only by the whole-VMID / whole-EL2 forms or by a
/// range TLBI covering its whole range; a by-address TLBI, `last_level` or
/// not, never covers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tlbi {
    /// Stage 2 by IPA (TLBI `IPAS2E1[IS]` then `VMALLE1[IS]`); `level`: TTL hint
    /// (None = any level); `last_level`: the *L form (only leaf entries, not
    /// walk caches).
    Stage2Ipa {
        /// VMID of the stage-2 tables.
        vmid: u16,
        /// An IPA inside the entry's range.
        ipa: u64,
        /// TTL level hint.
        level: Option<u8>,
        /// The last-level (*L) form.
        last_level: bool,
        /// Inner-shareable broadcast (the IS form).
        broadcast: bool,
    },
    /// Stage 2 by IPA range `[ipa, ipa + size)` (FEAT_TLBIRANGE).
    Stage2Range {
        /// VMID of the stage-2 tables.
        vmid: u16,
        /// Start of the range.
        ipa: u64,
        /// Size of the range in bytes.
        size: u64,
        /// Inner-shareable broadcast.
        broadcast: bool,
    },
    /// Everything for one VMID (TLBI `VMALLS12E1[IS]`).
    Stage2Vmid {
        /// VMID.
        vmid: u16,
        /// Inner-shareable broadcast.
        broadcast: bool,
    },
    /// EL2 stage 1 by VA (TLBI `VAE2[IS]` / `VALE2[IS]`).
    El2Va {
        /// A VA inside the entry's range.
        va: u64,
        /// TTL level hint.
        level: Option<u8>,
        /// The last-level (VALE2) form.
        last_level: bool,
        /// Inner-shareable broadcast.
        broadcast: bool,
    },
    /// All EL2 stage-1 entries (TLBI `ALLE2[IS]`).
    El2All {
        /// Inner-shareable broadcast.
        broadcast: bool,
    },
}

impl Tlbi {
    /// Whether this is the inner-shareable (broadcast) form.
    pub fn is_broadcast(&self) -> bool {
        match *self {
            Tlbi::Stage2Ipa { broadcast, .. }
            | Tlbi::Stage2Range { broadcast, .. }
            | Tlbi::Stage2Vmid { broadcast, .. }
            | Tlbi::El2Va { broadcast, .. }
            | Tlbi::El2All { broadcast } => broadcast,
        }
    }

    /// Whether the operation applies to entries of a table with this regime
    /// and VMID.
    fn targets(&self, regime: &Regime, vmid: Option<u16>) -> bool {
        match *self {
            Tlbi::Stage2Ipa { vmid: v, .. } | Tlbi::Stage2Range { vmid: v, .. } | Tlbi::Stage2Vmid { vmid: v, .. } => {
                regime.is_stage2() && vmid == Some(v)
            }
            Tlbi::El2Va { .. } | Tlbi::El2All { .. } => !regime.is_stage2(),
        }
    }

    /// Whether the operation removes a cached *leaf* translation for the
    /// input range `[base, base + size)` found at `level`.
    fn covers_leaf(&self, base: u64, size: u64, level: u8) -> bool {
        let in_range = |a: u64| (a & !(PAGE_SIZE - 1)) >= base && (a & !(PAGE_SIZE - 1)) - base < size;
        match *self {
            Tlbi::Stage2Ipa {
                ipa: a, level: hint, ..
            }
            | Tlbi::El2Va { va: a, level: hint, .. } => {
                // A wrong TTL hint means the entry need not be invalidated.
                in_range(a) && hint.is_none_or(|h| h == level)
            }
            Tlbi::Stage2Range { ipa, size: rsize, .. } => {
                rsize != 0 && ipa < base.saturating_add(size) && base < ipa.saturating_add(rsize)
            }
            Tlbi::Stage2Vmid { .. } | Tlbi::El2All { .. } => true,
        }
    }

    /// Whether the operation cleans a *table-descriptor* location covering
    /// `[base, base + size)`.
    fn covers_table(&self, base: u64, size: u64) -> bool {
        match *self {
            Tlbi::Stage2Ipa { .. } | Tlbi::El2Va { .. } => false,
            Tlbi::Stage2Range { ipa, size: rsize, .. } => {
                ipa <= base && base.saturating_add(size) <= ipa.saturating_add(rsize)
            }
            Tlbi::Stage2Vmid { .. } | Tlbi::El2All { .. } => true,
        }
    }
}

/// How far an unclean location got through its cleaning sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CleanStage {
    /// No DSB ISH/ISHST on the writing CPU since the invalidating write.
    NeedsDsb,
    /// No (completed) covering TLBI yet, or only local ones that left other
    /// CPUs unclean.
    NeedsTlbi,
    /// A covering TLBI was issued but no DSB has completed it yet.
    NeedsDsbAfterTlbi,
}

/// A break-before-make violation. Each carries the descriptor location, the
/// table and input range it serves, the old and new values and the CPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// Valid descriptor replaced by a valid one with a different output
    /// address, memory attributes, shareability, contiguous hint, or type
    /// (block <-> table).
    ValidToValid {
        /// CPU that wrote.
        cpu: usize,
        /// Physical address of the descriptor.
        pa: u64,
        /// Table the location belongs to.
        table: TableId,
        /// Lookup level of the location.
        level: u8,
        /// First input address the location translates.
        ia: u64,
        /// Previous (valid) value.
        old: u64,
        /// New (valid) value.
        new: u64,
    },
    /// A valid descriptor written where the previous (invalidated) entry was
    /// not yet clean on every CPU.
    InvalidUncleanToValid {
        /// CPU that wrote.
        cpu: usize,
        /// Physical address of the descriptor.
        pa: u64,
        /// Table the location belongs to.
        table: TableId,
        /// Lookup level of the location.
        level: u8,
        /// First input address the location translates.
        ia: u64,
        /// The last valid value, the one TLBs may still hold.
        old_valid: u64,
        /// Current (invalid) value.
        old: u64,
        /// New (valid) value.
        new: u64,
        /// CPU that wrote the invalid value.
        invalidated_by: usize,
        /// Where the cleaning sequence stopped.
        stage: CleanStage,
        /// CPUs that may still cache the old value.
        unclean_cpus: Vec<usize>,
    },
    /// A table page was reused (written, linked again, or freed) while walk
    /// caches may still hold the table descriptor that pointed into it (or
    /// into a table above it): the unlinked entry `parent_pa` is not clean
    /// yet.
    FreedBeforeInvalidation {
        /// CPU that reused the page (`None` for a free, which no CPU
        /// performs in the model).
        cpu: Option<usize>,
        /// The retired table page.
        page: u64,
        /// What was done to it.
        reuse: Reuse,
        /// Location of the table descriptor whose removal retired the page.
        /// For a page deeper in the unlinked subtree this is the top of the
        /// subtree, not the page's immediate parent entry.
        parent_pa: u64,
        /// Table in which `parent_pa` was unlinked.
        table: TableId,
        /// Lookup level of `parent_pa`.
        level: u8,
        /// First input address `parent_pa` translates.
        ia: u64,
        /// The table descriptor that was removed from `parent_pa`.
        old_table: u64,
        /// CPU that unlinked it.
        unlinked_by: usize,
        /// Where the cleaning of `parent_pa` stopped.
        stage: CleanStage,
        /// CPUs whose walk caches may still hold `old_table`.
        unclean_cpus: Vec<usize>,
    },
}

/// How a retired table page was reused (see
/// [`Violation::FreedBeforeInvalidation`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reuse {
    /// A descriptor write landed in the page.
    Write {
        /// Location written (inside the page).
        pa: u64,
        /// Value before.
        old: u64,
        /// Value written.
        new: u64,
    },
    /// The page became reachable again as a table, through the table
    /// descriptor written at `pa` (possibly via pages below it).
    Link {
        /// Location of the linking write.
        pa: u64,
        /// Value written there.
        new: u64,
    },
    /// The page was handed to [`Machine::free_pages`].
    Free,
}

/// Counters of the operations the machine has seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// All `write_desc` calls.
    pub writes: u64,
    /// Writes to tracked (live) descriptor locations.
    pub tracked_writes: u64,
    /// DSB ISH.
    pub dsb_ish: u64,
    /// DSB ISHST.
    pub dsb_ishst: u64,
    /// DSB NSH.
    pub dsb_nsh: u64,
    /// ISB.
    pub isb: u64,
    /// All TLBIs.
    pub tlbi: u64,
    /// Broadcast (IS) TLBIs.
    pub tlbi_broadcast: u64,
    /// Local TLBIs.
    pub tlbi_local: u64,
    /// `Tlbi::Stage2Ipa`.
    pub tlbi_s2_ipa: u64,
    /// `Tlbi::Stage2Range`.
    pub tlbi_s2_range: u64,
    /// `Tlbi::Stage2Vmid`.
    pub tlbi_s2_vmid: u64,
    /// `Tlbi::El2Va`.
    pub tlbi_el2_va: u64,
    /// `Tlbi::El2All`.
    pub tlbi_el2_all: u64,
    /// `translate` calls answered from a TLB.
    pub tlb_hits: u64,
    /// `translate` calls that walked memory.
    pub tlb_misses: u64,
}

/// One operation, as logged by the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A descriptor write.
    Write {
        /// CPU.
        cpu: usize,
        /// Location.
        pa: u64,
        /// Value before.
        old: u64,
        /// Value written.
        new: u64,
    },
    /// A DSB.
    Dsb {
        /// CPU.
        cpu: usize,
        /// Kind.
        kind: Dsb,
    },
    /// An ISB.
    Isb {
        /// CPU.
        cpu: usize,
    },
    /// A TLBI.
    Tlbi {
        /// CPU.
        cpu: usize,
        /// Operation.
        op: Tlbi,
    },
    /// Pages freed through [`Machine::free_pages`].
    Free {
        /// First page.
        pa: u64,
        /// Number of pages.
        count: usize,
    },
}

#[derive(Debug, Clone)]
struct TableInfo {
    root: u64,
    regime: Regime,
    vmid: Option<u16>,
}

/// Cleaning progress of an unclean location.
#[derive(Debug, Clone)]
struct Unclean {
    /// The valid value being broken.
    old_valid: u64,
    /// CPU that wrote the invalid value.
    writer: usize,
    /// A DSB ISH/ISHST followed the invalidating write on `writer`.
    dsbed: bool,
    /// CPUs that may still hold the old value.
    dirty: u64,
    /// CPUs to be cleaned once a DSB ISH completes pending broadcast TLBIs.
    pending_broadcast: u64,
    /// CPUs to be cleaned once a DSB (ISH or NSH) completes pending local TLBIs.
    pending_local: u64,
}

impl Unclean {
    /// A fresh automaton for a valid value `old_valid` broken by `writer`:
    /// every CPU may hold it, nothing done yet.
    fn new(old_valid: u64, writer: usize, cpus: usize) -> Self {
        Unclean {
            old_valid,
            writer,
            dsbed: false,
            dirty: all_cpus(cpus),
            pending_broadcast: 0,
            pending_local: 0,
        }
    }

    /// Step the automaton for a DSB of `kind` on `cpu`. Returns true once no
    /// CPU may still hold the old value.
    fn on_dsb(&mut self, cpu: usize, kind: Dsb) -> bool {
        if self.writer == cpu {
            match kind {
                Dsb::Ish => {
                    // Completes every TLBI this CPU issued before it
                    // (broadcast or local), and makes earlier writes
                    // visible to all walkers in the domain.
                    self.dirty &= !(self.pending_broadcast | self.pending_local);
                    self.pending_broadcast = 0;
                    self.pending_local = 0;
                    self.dsbed = true;
                }
                Dsb::IshSt => self.dsbed = true,
                Dsb::Nsh => {
                    self.dirty &= !self.pending_local;
                    self.pending_local = 0;
                }
            }
        }
        self.dirty == 0
    }

    /// Whether a TLBI issued by `cpu` may count towards cleaning: only the
    /// invalidating CPU's TLBIs, and only after the DSB that published the
    /// invalid value.
    fn accepts_tlbi_from(&self, cpu: usize) -> bool {
        self.writer == cpu && self.dsbed
    }

    /// Record a covering TLBI issued by `cpu` (to be completed by a DSB).
    fn on_covering_tlbi(&mut self, cpu: usize, broadcast: bool, cpus: usize) {
        if broadcast {
            self.pending_broadcast = all_cpus(cpus);
        } else {
            self.pending_local |= 1 << cpu;
        }
    }

    fn stage(&self) -> CleanStage {
        if !self.dsbed {
            CleanStage::NeedsDsb
        } else if (self.pending_broadcast | self.pending_local) & self.dirty != 0 {
            CleanStage::NeedsDsbAfterTlbi
        } else {
            CleanStage::NeedsTlbi
        }
    }
}

/// Why a table page is retired: the table descriptor at `parent_pa` (a
/// location of `table` at `level`, translating from `ia`) that led to it was
/// removed, and walk caches may hold it until `pending` completes.
#[derive(Debug, Clone)]
struct Retired {
    table: TableId,
    parent_pa: u64,
    level: u8,
    ia: u64,
    /// Cleaning progress of `parent_pa` for this table, run independently of
    /// the location's own automaton: the location may be rewritten (even
    /// with a violation) before the old table pointer is flushed.
    pending: Unclean,
}

/// One way a location is reached: from `table`'s root, at `level`,
/// translating `[ia, ia + level_size(level))`.
#[derive(Debug, Clone)]
struct View {
    table: TableId,
    level: u8,
    ia: u64,
    unclean: Option<Unclean>,
}

#[derive(Debug, Clone)]
struct TlbEntry {
    /// Translation of the block's first input address.
    base: Translation,
    level: u8,
}

#[derive(Debug, Default, Clone)]
struct Tlb {
    /// (table, block-aligned IA, block size) -> entry.
    entries: HashMap<(TableId, u64, u64), TlbEntry>,
}

/// A multi-CPU machine: memory, live tables, per-CPU TLBs and the
/// break-before-make checker. See the module documentation.
#[derive(Debug)]
pub struct Machine {
    /// Physical memory. Writing descriptors of live tables directly here
    /// bypasses the checker; use [`Machine::write_desc`].
    pub mem: PhysMem,
    cpus: usize,
    tables: HashMap<TableId, TableInfo>,
    next_id: u32,
    locs: HashMap<u64, Vec<View>>,
    unclean: BTreeSet<u64>,
    /// Table page -> why it may not be reused yet.
    retired: HashMap<u64, Vec<Retired>>,
    tlbs: Vec<Tlb>,
    violations: Vec<Violation>,
    stats: Stats,
    events: Vec<Event>,
    log_events: bool,
}

impl DescSource for Machine {
    fn read_desc(&self, pa: u64) -> u64 {
        self.mem.read_u64(pa)
    }
}

fn all_cpus(cpus: usize) -> u64 {
    if cpus == 64 {
        u64::MAX
    } else {
        (1u64 << cpus) - 1
    }
}

fn cpu_list(mask: u64) -> Vec<usize> {
    (0..64).filter(|c| mask & (1 << c) != 0).collect()
}

/// Bits whose change between two valid leaves needs break-before-make: the
/// output address (and bits \[51:48\] above it), the memory attribute field
/// (stage 2 MemAttr \[5:2\]; stage 1 AttrIndx \[4:2\]), SH \[9:8\] and the
/// contiguous hint (52). Permissions, AF, DBM and software bits may change in
/// place.
fn bbm_leaf_mask(level: u8, stage2: bool) -> u64 {
    let oa = ((1u64 << 52) - 1) & !(level_size(level) - 1);
    let attr = if stage2 { 0xf << 2 } else { 0x7 << 2 };
    oa | attr | (3 << 8) | (1 << 52)
}

impl Machine {
    /// Create a machine with `cpus` CPUs (1..=64) over `mem`.
    pub fn new(mem: PhysMem, cpus: usize) -> Self {
        assert!((1..=64).contains(&cpus), "Machine supports 1..=64 CPUs");
        Machine {
            mem,
            cpus,
            tables: HashMap::new(),
            next_id: 0,
            locs: HashMap::new(),
            unclean: BTreeSet::new(),
            retired: HashMap::new(),
            tlbs: vec![Tlb::default(); cpus],
            violations: Vec::new(),
            stats: Stats::default(),
            events: Vec::new(),
            log_events: true,
        }
    }

    /// Number of CPUs.
    pub fn cpus(&self) -> usize {
        self.cpus
    }

    /// Register a live translation table (as if installed in TTBR0_EL2 /
    /// VTTBR_EL2 on every CPU) and start tracking every descriptor reachable
    /// from it. Stage-2 tables carry a VMID; EL2 stage-1 tables have none.
    ///
    /// Panics (test bug) if the regime is invalid, the VMID presence does not
    /// match the regime, or the root is not aligned to its size (a
    /// concatenated root must be aligned to all of its pages).
    pub fn register_table(&mut self, root: u64, regime: Regime, vmid: Option<u16>) -> TableId {
        if let Err(e) = regime.validate() {
            panic!("register_table: invalid regime {regime:?}: {e:?}");
        }
        assert_eq!(
            regime.is_stage2(),
            vmid.is_some(),
            "register_table: stage-2 tables need a VMID, stage-1 none"
        );
        let align = regime.root_pages() as u64 * PAGE_SIZE;
        assert!(
            root & (align - 1) == 0,
            "register_table: root {root:#x} not aligned to {align:#x}"
        );
        let id = TableId(self.next_id);
        self.next_id += 1;
        self.tables.insert(id, TableInfo { root, regime, vmid });
        self.track(
            id,
            root,
            regime.start_level(),
            0,
            regime.root_entries(),
            &mut Vec::new(),
        );
        id
    }

    /// Stop treating a table as live: its locations are no longer checked and
    /// its TLB entries are dropped (as if the table were uninstalled and its
    /// VMID retired).
    pub fn unregister_table(&mut self, id: TableId) {
        assert!(self.tables.remove(&id).is_some(), "unregister_table: unknown {id:?}");
        self.locs.retain(|_, views| {
            views.retain(|v| v.table != id);
            !views.is_empty()
        });
        let locs = &self.locs;
        self.unclean
            .retain(|pa| locs.get(pa).is_some_and(|vs| vs.iter().any(|v| v.unclean.is_some())));
        self.retired.retain(|_, recs| {
            recs.retain(|r| r.table != id);
            !recs.is_empty()
        });
        for tlb in &mut self.tlbs {
            tlb.entries.retain(|k, _| k.0 != id);
        }
    }

    /// Root and regime of a registered table.
    pub fn table(&self, id: TableId) -> (u64, Regime, Option<u16>) {
        let t = &self.tables[&id];
        (t.root, t.regime, t.vmid)
    }

    fn regime_of(&self, id: TableId) -> Regime {
        self.tables[&id].regime
    }

    /// Add views for `entries` descriptors of the table page at `page`
    /// (`level`, first IA `ia`), recursing into valid table descriptors.
    /// Every table page entered is appended to `entered`.
    fn track(&mut self, table: TableId, page: u64, level: u8, ia: u64, entries: u64, entered: &mut Vec<u64>) {
        for i in 0..entries {
            let pa = page + i * 8;
            if !self.mem.contains(pa) {
                // A wild table pointer: the walk will show it; nothing to track.
                return;
            }
            if i % 512 == 0 {
                entered.push(pa);
            }
            let eia = ia + (i << level_shift(level));
            self.locs.entry(pa).or_default().push(View {
                table,
                level,
                ia: eia,
                unclean: None,
            });
            let desc = self.mem.read_u64(pa);
            if desc_kind(desc, level) == DescKind::Table {
                self.track(table, table_addr(desc), level + 1, eia, 512, entered);
            }
        }
    }

    /// Remove the views of `table` for the subtree below a table descriptor
    /// `desc` found at `level` covering IA `ia`, and retire every table page
    /// of that subtree until the unlinked entry described by `origin` is
    /// clean.
    fn untrack_below(&mut self, table: TableId, desc: u64, level: u8, ia: u64, origin: &Retired) {
        let page = table_addr(desc);
        let child = level + 1;
        if self.mem.contains(page) {
            self.retired.entry(page).or_default().push(origin.clone());
        }
        for i in 0..512u64 {
            let pa = page + i * 8;
            let eia = ia + (i << level_shift(child));
            let Some(views) = self.locs.get_mut(&pa) else {
                continue;
            };
            let before = views.len();
            views.retain(|v| !(v.table == table && v.level == child && v.ia == eia));
            if views.len() == before {
                continue;
            }
            if views.is_empty() {
                self.locs.remove(&pa);
            }
            if !self
                .locs
                .get(&pa)
                .is_some_and(|vs| vs.iter().any(|v| v.unclean.is_some()))
            {
                self.unclean.remove(&pa);
            }
            let d = self.mem.read_u64(pa);
            if desc_kind(d, child) == DescKind::Table {
                self.untrack_below(table, d, child, eia, origin);
            }
        }
    }

    /// Whether `pa` is currently a live (tracked) descriptor location.
    pub fn is_tracked(&self, pa: u64) -> bool {
        self.locs.contains_key(&pa)
    }

    /// Whether `pa` is an invalid location that some CPU may still cache
    /// (in any of the tables that reach it).
    pub fn is_unclean(&self, pa: u64) -> bool {
        self.locs
            .get(&pa)
            .is_some_and(|vs| vs.iter().any(|v| v.unclean.is_some()))
    }

    /// Number of tracked locations currently unclean (0 once every
    /// break-before-make sequence has completed).
    pub fn unclean_count(&self) -> usize {
        self.unclean.len()
    }

    /// Whether the page containing `pa` is a retired table page: it was
    /// unlinked (directly or as part of a subtree) and the invalidation of
    /// the unlinked entry has not completed, so it may not be written,
    /// linked again or freed yet.
    pub fn is_retired(&self, pa: u64) -> bool {
        self.retired.contains_key(&(pa & !(PAGE_SIZE - 1)))
    }

    /// The retired table pages, in ascending order.
    pub fn retired_pages(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.retired.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// The violation for reusing the retired `page` (if it is retired),
    /// described from its oldest pending retirement.
    fn reuse_violation(&self, cpu: Option<usize>, page: u64, reuse: Reuse) -> Option<Violation> {
        let r = self.retired.get(&page)?.first()?;
        Some(Violation::FreedBeforeInvalidation {
            cpu,
            page,
            reuse,
            parent_pa: r.parent_pa,
            table: r.table,
            level: r.level,
            ia: r.ia,
            old_table: r.pending.old_valid,
            unlinked_by: r.pending.writer,
            stage: r.pending.stage(),
            unclean_cpus: cpu_list(r.pending.dirty),
        })
    }

    /// Allocate `count` zeroed pages aligned to `align_pages` pages; forwards
    /// to [`PhysMem::alloc_pages`].
    pub fn alloc_pages(&mut self, count: usize, align_pages: usize) -> Option<u64> {
        self.mem.alloc_pages(count, align_pages)
    }

    /// Free `count` pages starting at `pa`, forwarding to
    /// [`PhysMem::free_pages`] (which panics on a double free). Freeing a
    /// retired table page records a [`Violation::FreedBeforeInvalidation`]
    /// per such page; the page is then no longer treated as retired (the
    /// violation already stands for whatever reuse follows).
    pub fn free_pages(&mut self, pa: u64, count: usize) {
        if self.log_events {
            self.events.push(Event::Free { pa, count });
        }
        for i in 0..count as u64 {
            let page = pa.wrapping_add(i * PAGE_SIZE);
            if let Some(v) = self.reuse_violation(None, page, Reuse::Free) {
                self.violations.push(v);
                self.retired.remove(&page);
            }
        }
        self.mem.free_pages(pa, count);
    }

    /// Write a descriptor. Every descriptor write goes through here; writes to
    /// live locations are checked against break-before-make.
    pub fn write_desc(&mut self, cpu: usize, pa: u64, val: u64) {
        assert!(cpu < self.cpus, "write_desc: no CPU {cpu}");
        let old = self.mem.read_u64(pa);
        self.stats.writes += 1;
        if self.log_events {
            self.events.push(Event::Write { cpu, pa, old, new: val });
        }
        let page = pa & !(PAGE_SIZE - 1);
        if let Some(v) = self.reuse_violation(Some(cpu), page, Reuse::Write { pa, old, new: val }) {
            self.violations.push(v);
        }
        self.mem.write_u64(pa, val);
        let Some(views) = self.locs.get(&pa).cloned() else {
            return;
        };
        self.stats.tracked_writes += 1;
        let mut new_views = Vec::with_capacity(views.len());
        let mut relink = Vec::new();
        for mut v in views {
            let old_kind = desc_kind(old, v.level);
            let new_kind = desc_kind(val, v.level);
            let stage2 = self.regime_of(v.table).is_stage2();
            match (old_kind != DescKind::Invalid, new_kind != DescKind::Invalid) {
                (true, true) => {
                    let changed = if old_kind != new_kind {
                        true
                    } else if old_kind == DescKind::Table {
                        table_addr(old) != table_addr(val) || (old ^ val) & (0xf << 48) != 0
                    } else {
                        (old ^ val) & bbm_leaf_mask(v.level, stage2) != 0
                    };
                    if changed {
                        self.violations.push(Violation::ValidToValid {
                            cpu,
                            pa,
                            table: v.table,
                            level: v.level,
                            ia: v.ia,
                            old,
                            new: val,
                        });
                        relink.push((
                            v.table,
                            v.level,
                            v.ia,
                            old_kind == DescKind::Table,
                            new_kind == DescKind::Table,
                        ));
                    }
                }
                (true, false) => {
                    v.unclean = Some(Unclean {
                        old_valid: old,
                        writer: cpu,
                        dsbed: false,
                        dirty: all_cpus(self.cpus),
                        pending_broadcast: 0,
                        pending_local: 0,
                    });
                    relink.push((v.table, v.level, v.ia, old_kind == DescKind::Table, false));
                }
                (false, true) => {
                    if let Some(u) = v.unclean.take() {
                        self.violations.push(Violation::InvalidUncleanToValid {
                            cpu,
                            pa,
                            table: v.table,
                            level: v.level,
                            ia: v.ia,
                            old_valid: u.old_valid,
                            old,
                            new: val,
                            invalidated_by: u.writer,
                            stage: u.stage(),
                            unclean_cpus: cpu_list(u.dirty),
                        });
                    }
                    relink.push((v.table, v.level, v.ia, false, new_kind == DescKind::Table));
                }
                (false, false) => {}
            }
            new_views.push(v);
        }
        if new_views.iter().any(|v| v.unclean.is_some()) {
            self.unclean.insert(pa);
        } else {
            self.unclean.remove(&pa);
        }
        self.locs.insert(pa, new_views);
        let mut entered = Vec::new();
        for (table, level, ia, was_table, is_table) in relink {
            if was_table {
                let origin = Retired {
                    table,
                    parent_pa: pa,
                    level,
                    ia,
                    pending: Unclean::new(old, cpu, self.cpus),
                };
                self.untrack_below(table, old, level, ia, &origin);
            }
            if is_table {
                let from = entered.len();
                self.track(table, table_addr(val), level + 1, ia, 512, &mut entered);
                // Putting a subtree back where it was unlinked from is not a
                // reuse: stale walk-cache entries for this location point at
                // the same pages. (Whether the location itself was clean is
                // the location automaton's business.)
                for &p in &entered[from..] {
                    if let Some(recs) = self.retired.get_mut(&p) {
                        recs.retain(|r| !(r.table == table && r.parent_pa == pa));
                        if recs.is_empty() {
                            self.retired.remove(&p);
                        }
                    }
                }
            }
        }
        entered.sort_unstable();
        entered.dedup();
        for p in entered {
            if let Some(v) = self.reuse_violation(Some(cpu), p, Reuse::Link { pa, new: val }) {
                self.violations.push(v);
            }
        }
    }

    /// Read a descriptor (no checking).
    pub fn read_desc(&self, pa: u64) -> u64 {
        self.mem.read_u64(pa)
    }

    /// Data synchronization barrier on `cpu`.
    pub fn dsb(&mut self, cpu: usize, kind: Dsb) {
        assert!(cpu < self.cpus, "dsb: no CPU {cpu}");
        match kind {
            Dsb::Ish => self.stats.dsb_ish += 1,
            Dsb::IshSt => self.stats.dsb_ishst += 1,
            Dsb::Nsh => self.stats.dsb_nsh += 1,
        }
        if self.log_events {
            self.events.push(Event::Dsb { cpu, kind });
        }
        let pas: Vec<u64> = self.unclean.iter().copied().collect();
        for pa in pas {
            let views = self.locs.get_mut(&pa).expect("unclean location is tracked");
            for v in views.iter_mut() {
                if v.unclean.as_mut().is_some_and(|u| u.on_dsb(cpu, kind)) {
                    v.unclean = None;
                }
            }
            if !views.iter().any(|v| v.unclean.is_some()) {
                self.unclean.remove(&pa);
            }
        }
        // Retired table pages follow the same automaton; once the unlinked
        // entry is clean, nothing can walk into the page any more.
        self.retired.retain(|_, recs| {
            recs.retain_mut(|r| !r.pending.on_dsb(cpu, kind));
            !recs.is_empty()
        });
    }

    /// Instruction synchronization barrier on `cpu` (counted only: the model
    /// has no instruction stream to resynchronize).
    pub fn isb(&mut self, cpu: usize) {
        assert!(cpu < self.cpus, "isb: no CPU {cpu}");
        self.stats.isb += 1;
        if self.log_events {
            self.events.push(Event::Isb { cpu });
        }
    }

    /// TLB invalidation issued by `cpu`. Matching TLB entries are removed at
    /// once (on every CPU for the broadcast forms, on `cpu` only otherwise);
    /// for the checker the invalidation only counts once a later DSB on
    /// `cpu` completes it.
    pub fn tlbi(&mut self, cpu: usize, op: Tlbi) {
        assert!(cpu < self.cpus, "tlbi: no CPU {cpu}");
        self.stats.tlbi += 1;
        let broadcast = op.is_broadcast();
        if broadcast {
            self.stats.tlbi_broadcast += 1;
        } else {
            self.stats.tlbi_local += 1;
        }
        match op {
            Tlbi::Stage2Ipa { .. } => self.stats.tlbi_s2_ipa += 1,
            Tlbi::Stage2Range { .. } => self.stats.tlbi_s2_range += 1,
            Tlbi::Stage2Vmid { .. } => self.stats.tlbi_s2_vmid += 1,
            Tlbi::El2Va { .. } => self.stats.tlbi_el2_va += 1,
            Tlbi::El2All { .. } => self.stats.tlbi_el2_all += 1,
        }
        if self.log_events {
            self.events.push(Event::Tlbi { cpu, op });
        }

        // TLB contents. Only leaves are cached, so the *L forms behave like
        // the others here.
        let tables = &self.tables;
        for (c, tlb) in self.tlbs.iter_mut().enumerate() {
            if !broadcast && c != cpu {
                continue;
            }
            tlb.entries.retain(|&(t, base, size), e| {
                let info = &tables[&t];
                !(op.targets(&info.regime, info.vmid) && op.covers_leaf(base, size, e.level))
            });
        }

        // Checker.
        let pas: Vec<u64> = self.unclean.iter().copied().collect();
        for pa in pas {
            let views = self.locs.get_mut(&pa).expect("unclean location is tracked");
            for v in views.iter_mut() {
                let info = &tables[&v.table];
                let Some(u) = v.unclean.as_mut() else {
                    continue;
                };
                if !u.accepts_tlbi_from(cpu) || !op.targets(&info.regime, info.vmid) {
                    continue;
                }
                let size = level_size(v.level);
                let covered = if desc_kind(u.old_valid, v.level) == DescKind::Table {
                    op.covers_table(v.ia, size)
                } else {
                    op.covers_leaf(v.ia, size, v.level)
                };
                if covered {
                    u.on_covering_tlbi(cpu, broadcast, self.cpus);
                }
            }
        }
        // The unlinked entry a retired page waits for was always a table
        // descriptor, so only whole-range forms cover it.
        for r in self.retired.values_mut().flatten() {
            let info = &tables[&r.table];
            if r.pending.accepts_tlbi_from(cpu)
                && op.targets(&info.regime, info.vmid)
                && op.covers_table(r.ia, level_size(r.level))
            {
                r.pending.on_covering_tlbi(cpu, broadcast, self.cpus);
            }
        }
    }

    /// Translate through `cpu`'s TLB: a hit returns the cached (possibly
    /// stale) translation; a miss walks memory and, if the result is a valid
    /// translation with AF set, fills the TLB (entries that would fault are
    /// never cached, as on hardware without Access flag management).
    pub fn translate(&mut self, cpu: usize, table: TableId, ia: u64) -> Result<Translation, Fault> {
        assert!(cpu < self.cpus, "translate: no CPU {cpu}");
        assert!(self.tables.contains_key(&table), "translate: unknown {table:?}");
        for level in [3u8, 2, 1] {
            let size = level_size(level);
            let base = ia & !(size - 1);
            if let Some(e) = self.tlbs[cpu].entries.get(&(table, base, size)) {
                self.stats.tlb_hits += 1;
                let mut t = e.base;
                t.oa += ia - base;
                return Ok(t);
            }
        }
        self.stats.tlb_misses += 1;
        let t = self.walk(table, ia)?;
        if t.af {
            let base = ia & !(t.block_size - 1);
            let mut bt = t;
            bt.oa -= ia - base;
            self.tlbs[cpu].entries.insert(
                (table, base, t.block_size),
                TlbEntry {
                    base: bt,
                    level: t.level,
                },
            );
        }
        Ok(t)
    }

    /// Walk memory directly, ignoring TLBs.
    pub fn walk(&self, table: TableId, ia: u64) -> Result<Translation, Fault> {
        let info = &self.tables[&table];
        walk::walk(&self.mem, info.root, &info.regime, ia)
    }

    /// Number of translations cached in `cpu`'s TLB.
    pub fn tlb_len(&self, cpu: usize) -> usize {
        self.tlbs[cpu].entries.len()
    }

    /// Violations recorded so far.
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// Take (and clear) the recorded violations.
    pub fn take_violations(&mut self) -> Vec<Violation> {
        std::mem::take(&mut self.violations)
    }

    /// Operation counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Reset the operation counters.
    pub fn reset_stats(&mut self) {
        self.stats = Stats::default();
    }

    /// The log of writes, barriers and TLBIs (if logging is on).
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// Take (and clear) the event log.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Turn the event log on or off (on by default; long property tests may
    /// want it off to save memory).
    pub fn set_event_log(&mut self, on: bool) {
        self.log_events = on;
    }
}
