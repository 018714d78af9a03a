//! A model of an Arm SMMUv3, written from the SMMU architecture
//! specification (Arm IHI 0070, issue G.b), as a test oracle for Warden's
//! SMMUv3 driver.
//!
//! The model is an [`Smmu`] with a register file (offsets from the SMMU's
//! base, page 1 at `+0x10000`), a command queue, an event queue, a stream
//! table walk with configuration caches, stage-2 translation through the
//! crate's own VMSAv8-64 walker ([`mod@crate::walk`]) and a TLB. Memory is a
//! [`PhysMem`] passed to every call that may touch it. Device traffic is
//! injected with [`Smmu::dma`].
//!
//! # What it models
//!
//! * The Non-secure programming interface of an SMMU described by a
//!   [`SmmuConfig`]: `SMMU_IDR0/1/3/5` from the configuration, `CR0` (with
//!   `CR0ACK` following at once), `CR1`, `CR2`, `GBPA` (an Update completes at
//!   once), `IRQ_CTRL`/`IRQ_CTRLACK`, `GERROR`/`GERRORN`, the Stream table
//!   base registers, the Command queue and the Event queue (`EVENTQ_PROD` and
//!   `EVENTQ_CONS` in page 1). Guarded registers written while their guard is
//!   enabled are ignored (the SMMUv3.2 behaviour) and recorded as
//!   [`SmmuViolation::WriteWhileEnabled`].
//! * 32-bit accesses to 32-bit registers and to either half of a 64-bit
//!   register, and 64-bit accesses to 64-bit registers (spec 6.2). Any other
//!   width or alignment is a [`SmmuViolation::WrongWidth`]: reads return 0,
//!   writes are ignored.
//! * Command consumption when `CMDQ_PROD` is written (or the queue is enabled,
//!   or a command error is acknowledged): `CMD_PREFETCH_*` (no effect),
//!   `CMD_CFGI_STE`, `CMD_CFGI_STE_RANGE` (and `CMD_CFGI_ALL`), `CMD_CFGI_CD*`
//!   (no effect; stage 1 is not modelled), `CMD_TLBI_NH_*`/`CMD_TLBI_EL2_*`
//!   (no effect on the stage-2-only TLB), `CMD_TLBI_S12_VMALL`,
//!   `CMD_TLBI_S2_IPA` (single and, with `IDR3.RIL`, range form with TTL
//!   hints), `CMD_TLBI_NSNH_ALL` and `CMD_SYNC`. Everything else, and the
//!   illegal encodings the spec names, stop the queue with `CERROR_ILL`;
//!   a command fetch outside memory stops it with `CERROR_ABT`.
//! * **Invalidation completes only at a `CMD_SYNC`.** A consumed `CMD_CFGI_*`
//!   or `CMD_TLBI_*` is held pending and applied when a later `CMD_SYNC` is
//!   consumed (spec 4.3.8, 4.7.3): until then DMA keeps using the cached STE
//!   or TLB entry. The model invalidates exactly the minimum scope the spec
//!   requires (e.g. a `CMD_CFGI_STE` with Leaf = 1 leaves a cached level-1
//!   descriptor alone; a TLBI whose TTL hint names another level misses).
//! * Stream table lookup, linear or 2-level (`L1STD.Span`/`L2Ptr`), with
//!   `C_BAD_STREAMID` (recorded only when `CR2.RECINVSID` is set),
//!   `F_STE_FETCH` for structures outside memory, `C_BAD_STE` for `V == 0` and
//!   the ILLEGAL stage-2 configurations of the STE validity rules (spec
//!   5.2.2), abort without an event for `Config == 0b0xx`, bypass for
//!   `Config == 0b100` and stage-2 translation for `Config == 0b110`.
//!   Stage-1 configurations are reported as `C_BAD_STE` (not modelled).
//!   Fetched STEs and L1 descriptors are cached, valid or not (spec 3.21.3
//!   allows it), until a matching `CMD_CFGI_*` and `CMD_SYNC`.
//! * Stage-2 translation with the STE's `S2TTB`, `S2T0SZ`, `S2SL0`, `S2PS`
//!   (capped to the OAS), `S2FWB`, `S2AFFD`, `S2R` and `S2VMID`; faults
//!   `F_TRANSLATION`, `F_ADDR_SIZE`, `F_ACCESS`, `F_PERMISSION` (recorded only
//!   if `S2R`) and `F_WALK_EABT` for descriptor reads outside memory, plus the
//!   stage-1 `F_ADDR_SIZE` for input addresses beyond the IAS.
//! * Event records (32 bytes, spec 7.3) written into the Event queue when it
//!   is writable; a full queue discards the record and toggles
//!   `EVENTQ_PROD.OVFLG` if no overflow is pending (spec 7.4); writes outside
//!   memory raise `GERROR.EVENTQ_ABT_ERR`.
//! * A TLB of stage-2 leaf translations tagged by VMID. [`Smmu::stale_entries`]
//!   reports entries that grant more than a walk of the live tables.
//! * Non-coherent access: every SMMU read (L1 descriptor, STE, command,
//!   stage-2 descriptor) of a 64-byte line that [`PhysMem::is_dirty`] reports
//!   is a [`SmmuViolation::ReadUncleaned`] when the access is not IO-coherent,
//!   that is when `SmmuConfig::coherent` is false, or when the attributes the
//!   software chose for it (`CR1.TABLE_*`, `CR1.QUEUE_*`, `STE.S2IR0/S2OR0/
//!   S2SH0`) are not cacheable and shareable. The value is still read. Dirty
//!   tracking is off unless the test turns it on with
//!   [`PhysMem::set_track_dirty`]; the model never does. Event records are
//!   written with [`PhysMem::device_write_u64`], which does not dirty lines.
//!
//! Nothing software writes can make the model panic: misuse the hardware
//! would make UNPREDICTABLE is recorded as a [`SmmuViolation`] and the model
//! carries on with one of the permitted behaviours.
//!
//! # What it does not model
//!
//! Stage 1 (CDs), ATS/PRI, MSIs (`IDR0.MSI == 0`; the `*_IRQ_CFG*` registers
//! are RES0), stalls (`IDR0.STALL_MODEL == 0b01`), broadcast TLB maintenance,
//! HTTU, the Secure and Realm interfaces, ECMDQ, VMID wildcards, walk caches,
//! attribute overrides (`IDR1.ATTR_TYPES_OVR == 0`: a bypassing transaction
//! reports [`MemType::AsStage1`], meaning "the device's own attributes"),
//! STE.CONT, event merging, and the software side of non-coherent event
//! reads (the model cannot tell whether the driver invalidated its cache
//! before reading an event record). Register updates that the spec lets take
//! time (`CR0ACK`, `IRQ_CTRLACK`, `GBPA.Update`) complete immediately.
//!
//! # Encodings
//!
//! Every encoding below comes from IHI 0070 G.b; bit positions of command
//! and event fields that the spec only gives as figures were checked against
//! public driver headers (Linux `arm-smmu-v3.h`, QEMU `smmuv3-internal.h`).
//! The model's tests build all structures from raw numbers.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use crate::mem::{DescSource, PhysMem, LINE_SIZE};
use crate::walk::{self, FaultKind, MemType, Regime, Translation};

// ---------------------------------------------------------------------------
// Register offsets (spec 6.2.1, 6.2.2).

const IDR0: u64 = 0x00;
const IDR1: u64 = 0x04;
const IDR2: u64 = 0x08;
const IDR3: u64 = 0x0c;
const IDR4: u64 = 0x10;
const IDR5: u64 = 0x14;
const IIDR: u64 = 0x18;
const AIDR: u64 = 0x1c;
const CR0: u64 = 0x20;
const CR0ACK: u64 = 0x24;
const CR1: u64 = 0x28;
const CR2: u64 = 0x2c;
const STATUSR: u64 = 0x40;
const GBPA: u64 = 0x44;
const AGBPA: u64 = 0x48;
const IRQ_CTRL: u64 = 0x50;
const IRQ_CTRLACK: u64 = 0x54;
const GERROR: u64 = 0x60;
const GERRORN: u64 = 0x64;
const GERROR_IRQ_CFG0: u64 = 0x68;
const GERROR_IRQ_CFG1: u64 = 0x70;
const GERROR_IRQ_CFG2: u64 = 0x74;
const STRTAB_BASE: u64 = 0x80;
const STRTAB_BASE_CFG: u64 = 0x88;
const CMDQ_BASE: u64 = 0x90;
const CMDQ_PROD: u64 = 0x98;
const CMDQ_CONS: u64 = 0x9c;
const EVENTQ_BASE: u64 = 0xa0;
const EVENTQ_IRQ_CFG0: u64 = 0xb0;
const EVENTQ_IRQ_CFG1: u64 = 0xb8;
const EVENTQ_IRQ_CFG2: u64 = 0xbc;
const EVENTQ_PROD: u64 = 0x1_00a8;
const EVENTQ_CONS: u64 = 0x1_00ac;

/// The 64-bit registers (each also accessible as two 32-bit halves).
const REGS64: [u64; 5] = [GERROR_IRQ_CFG0, STRTAB_BASE, CMDQ_BASE, EVENTQ_BASE, EVENTQ_IRQ_CFG0];

// CR0 (6.3.9).
const CR0_SMMUEN: u32 = 1 << 0;
const CR0_EVENTQEN: u32 = 1 << 2;
const CR0_CMDQEN: u32 = 1 << 3;
// CR2 (6.3.12).
const CR2_E2H: u32 = 1 << 0;
const CR2_RECINVSID: u32 = 1 << 1;
// GBPA (6.3.14).
const GBPA_UPDATE: u32 = 1 << 31;
const GBPA_ABORT: u32 = 1 << 20;
/// ABORT, INSTCFG[19:18], PRIVCFG[17:16], SHCFG[13:12], ALLOCCFG[11:8],
/// MTCFG[4], MemAttr[3:0].
const GBPA_FIELDS: u32 = GBPA_ABORT | (0xf << 16) | (0x3 << 12) | (0xf << 8) | (1 << 4) | 0xf;
// IRQ_CTRL (6.3.16): GERROR_IRQEN, EVENTQ_IRQEN (PRIQ_IRQEN is RES0: no PRI).
const IRQ_CTRL_FIELDS: u32 = 0b101;
// GERROR (6.3.19).
const GERROR_CMDQ_ERR: u32 = 1 << 0;
const GERROR_EVENTQ_ABT_ERR: u32 = 1 << 2;
/// CMDQ_ERR, EVENTQ_ABT_ERR and SFM_ERR; the PRI and MSI bits are reserved
/// without PRI and MSI support.
const GERROR_FIELDS: u32 = GERROR_CMDQ_ERR | GERROR_EVENTQ_ABT_ERR | (1 << 8);
// Queue index registers (6.3.27-6.3.29, 6.3.95-6.3.96).
const Q_INDEX: u32 = 0xf_ffff;
const Q_OVFLG: u32 = 1 << 31;
const CMDQ_CONS_ERR_SHIFT: u32 = 24;
const CMDQ_CONS_ERR: u32 = 0x7f << CMDQ_CONS_ERR_SHIFT;
// Command errors (7.1).
const CERROR_ILL: u32 = 1;
const CERROR_ABT: u32 = 2;

// ---------------------------------------------------------------------------
// Public types.

/// Implementation choices of the modelled SMMU, reported in its ID registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmmuConfig {
    /// Stage 1 implemented (`IDR0.S1P`). Stage-1 configurations are still not
    /// modelled; the bit changes which commands are legal and what `IDR0`
    /// reports.
    pub stage1: bool,
    /// Stage 2 implemented (`IDR0.S2P`).
    pub stage2: bool,
    /// 2-level Stream tables supported (`IDR0.ST_LEVEL == 0b01`).
    pub two_level: bool,
    /// IO-coherent access to tables, queues and walks (`IDR0.COHACC`).
    pub coherent: bool,
    /// 16-bit VMIDs (`IDR0.VMID16`).
    pub vmid16: bool,
    /// Range invalidation and TTL hints (`IDR3.RIL`); also makes the model an
    /// SMMUv3.2 (`AIDR`, `IDR3.BBML == 0b10`, `IDR3.FWB`), otherwise v3.1.
    pub ril: bool,
    /// StreamID bits (`IDR1.SIDSIZE`, 0..=32).
    pub sid_bits: u8,
    /// log2 of the maximum Command queue entries (`IDR1.CMDQS`, 0..=19).
    pub cmdq_log2: u8,
    /// log2 of the maximum Event queue entries (`IDR1.EVENTQS`, 0..=19).
    pub evtq_log2: u8,
    /// Output address size in bits (`IDR5.OAS`): 32, 36, 40, 42, 44 or 48.
    pub oas_bits: u8,
}

impl Default for SmmuConfig {
    /// Close to QEMU's `virt` SMMUv3 with both stages: stage 1 and stage 2,
    /// 2-level Stream tables, coherent, 16-bit VMIDs, range invalidation,
    /// 16 StreamID bits, 256-entry command and event queues, 44-bit OAS.
    fn default() -> Self {
        SmmuConfig {
            stage1: true,
            stage2: true,
            two_level: true,
            coherent: true,
            vmid16: true,
            ril: true,
            sid_bits: 16,
            cmdq_log2: 8,
            evtq_log2: 8,
            oas_bits: 44,
        }
    }
}

/// Direction of a DMA transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DmaDir {
    /// Device reads memory.
    Read,
    /// Device writes memory.
    Write,
}

/// A transaction that the SMMU let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaOk {
    /// Output physical address.
    pub pa: u64,
    /// Memory type from stage 2; [`MemType::AsStage1`] for a transaction that
    /// bypassed translation (the device's incoming attributes apply).
    pub mem: MemType,
    /// Whether the translation came from the TLB rather than a walk.
    pub from_tlb: bool,
}

/// An event: the architectural record and its main fields decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmmuEvent {
    /// Event type (record bits \[7:0\]), e.g. [`SmmuEvent::F_TRANSLATION`].
    pub code: u8,
    /// StreamID of the transaction.
    pub sid: u32,
    /// Input address of the transaction (also for configuration errors,
    /// whose records do not carry it).
    pub addr: u64,
    /// The transaction was a write (the record's `RnW` is 0).
    pub write: bool,
    /// The record's `S2` bit: the fault is a stage-2 fault.
    pub stage2: bool,
    /// The 32-byte record as it is (or would have been) written to the queue.
    pub raw: [u64; 4],
}

impl SmmuEvent {
    /// Transaction StreamID out of range (7.3.3).
    pub const C_BAD_STREAMID: u8 = 0x02;
    /// External abort fetching an STE or L1 descriptor (7.3.4).
    pub const F_STE_FETCH: u8 = 0x03;
    /// STE invalid or ILLEGAL (7.3.5).
    pub const C_BAD_STE: u8 = 0x04;
    /// External abort fetching a translation table descriptor (7.3.12).
    pub const F_WALK_EABT: u8 = 0x0b;
    /// Translation fault (7.3.13).
    pub const F_TRANSLATION: u8 = 0x10;
    /// Address Size fault (7.3.14).
    pub const F_ADDR_SIZE: u8 = 0x11;
    /// Access flag fault (7.3.15).
    pub const F_ACCESS: u8 = 0x12;
    /// Permission fault (7.3.16).
    pub const F_PERMISSION: u8 = 0x13;
}

/// A transaction that the SMMU terminated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmaErr {
    /// Terminated without an event: `GBPA.ABORT` while the SMMU is disabled,
    /// a bypassing address beyond the OAS while disabled, or an STE with
    /// `Config == 0b0xx`.
    Abort,
    /// Terminated with an event.
    Fault {
        /// The event.
        event: SmmuEvent,
        /// Whether it was written to the Event queue (false when the queue
        /// is disabled, full or aborted, when `S2R == 0` suppressed a
        /// translation fault, or when `CR2.RECINVSID == 0` suppressed
        /// `C_BAD_STREAMID`).
        recorded: bool,
    },
}

/// Test-only misbehaviour to inject into the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmmuInject {
    /// The Command queue consumes nothing (`CMDQ_CONS` stays where it is),
    /// so a driver waiting for consumption times out. Clearing it with
    /// `inject(None)` does not by itself restart consumption: the next
    /// `CMDQ_PROD` write (or other restart) does.
    StallCommandQueue,
    /// The next command consumed fails with `CERROR_ILL`, whatever it is.
    /// The injection is used up by that command.
    CommandError,
}

/// Software misbehaviour that a real SMMU would make UNPREDICTABLE (or that
/// the spec defines but no correct driver does). The model records it and
/// carries on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmmuViolation {
    /// A non-coherent SMMU read of a line the CPU wrote and did not clean.
    ReadUncleaned {
        /// Physical address read.
        pa: u64,
        /// What was being read ("STE", "L1STD", "command", "S2 descriptor").
        what: &'static str,
    },
    /// A register access of a size or alignment the register does not
    /// support.
    WrongWidth {
        /// Offset of the access.
        off: u64,
        /// Access size in bits.
        width: u8,
    },
    /// An access to an offset with no register the model implements
    /// (reserved, optional-alias or unimplemented-feature locations): RAZ/WI.
    UnknownRegister {
        /// Offset of the access.
        off: u64,
        /// Whether it was a write.
        write: bool,
    },
    /// A write to a read-only register (ignored).
    ReadOnlyWrite {
        /// Register offset.
        off: u64,
    },
    /// A register write set RES0 bits (they are not stored).
    Res0 {
        /// Register offset (the 64-bit register's base for a 64-bit one).
        off: u64,
        /// The RES0 bits that were set.
        bits: u64,
    },
    /// A write to a Guarded register (or field) while its guard is enabled:
    /// ignored, the SMMUv3.2 behaviour.
    WriteWhileEnabled {
        /// Register offset.
        off: u64,
    },
    /// `GBPA` written without `Update` set (ignored).
    GbpaWithoutUpdate {
        /// The value written.
        val: u32,
    },
    /// `GERRORN` toggled bits whose error was not active.
    GerrornInactive {
        /// The bits toggled without an active error.
        bits: u32,
    },
    /// A queue index register written to an inconsistent state: more
    /// entries between `CONS` and `PROD` than the queue holds.
    QueueOverrun {
        /// Offset of the index register written.
        off: u64,
        /// Producer index and wrap after the write.
        prod: u32,
        /// Consumer index and wrap after the write.
        cons: u32,
    },
    /// A queue index moved other than forward by whole entries while the
    /// queue is enabled (`CMDQ_PROD` may move back only while a command
    /// error is active; `EVENTQ_CONS` must not pass `EVENTQ_PROD`).
    QueueIndexBackwards {
        /// Offset of the index register written.
        off: u64,
        /// Old value.
        old: u32,
        /// New value.
        new: u32,
    },
    /// A queue `LOG2SIZE` above the `IDR1` maximum (capped when used).
    BadQueueSize {
        /// Base register offset.
        off: u64,
        /// Value written.
        log2size: u8,
        /// The maximum.
        max: u8,
    },
    /// A base address with bits below the alignment the SMMU imposes (the
    /// SMMU ignores them, which is not what the driver meant).
    Misaligned {
        /// What is misaligned ("STRTAB_BASE", "CMDQ_BASE", "EVENTQ_BASE",
        /// "S2TTB").
        what: &'static str,
        /// The address as programmed.
        addr: u64,
    },
    /// `STRTAB_BASE_CFG.FMT` selects a 2-level table on an SMMU without them
    /// (`FMT` is RES0; the table is used as linear).
    TwoLevelUnsupported,
    /// A TLBI used the range or TTL fields without `IDR3.RIL` (they are RES0;
    /// the model ignores them and performs the non-range invalidation).
    RangeWithoutRil {
        /// Queue index of the command.
        index: u32,
    },
    /// A command with RES0 bits set or an argument the spec makes
    /// UNPREDICTABLE, executed with the bits ignored.
    BadCommand {
        /// Queue index of the command.
        index: u32,
        /// What is wrong.
        what: &'static str,
    },
    /// An STE's `S2PS` above the OAS (capped to the OAS, which software must
    /// not rely on).
    S2psAboveOas {
        /// StreamID of the STE.
        sid: u32,
        /// The `S2PS` field.
        s2ps: u8,
    },
}

/// Counts of consumed commands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SmmuStats {
    /// Commands consumed (any kind; a command failing with an error is not
    /// consumed).
    pub commands: u64,
    /// `CMD_SYNC`s consumed.
    pub syncs: u64,
    /// `CMD_TLBI_S2_IPA`s consumed (single or range).
    pub tlbi_s2_ipa: u64,
    /// `CMD_TLBI_S12_VMALL`s consumed.
    pub tlbi_s12_vmall: u64,
    /// `CMD_CFGI_STE`s and `CMD_CFGI_STE_RANGE`s (including `CMD_CFGI_ALL`)
    /// consumed.
    pub cfgi_ste: u64,
    /// Every other command consumed.
    pub other: u64,
}

/// A TLB entry that grants more than the live tables do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stale {
    /// VMID the entry is tagged with.
    pub vmid: u16,
    /// First input address (IPA) in the entry's range where the cached and
    /// the live translation disagree. The entry covers
    /// `[ia & !(size - 1), +size)`.
    pub ia: u64,
    /// Size of the entry's range.
    pub size: u64,
    /// The cached translation of `ia`.
    pub cached: Translation,
    /// What a walk of the currently configured STE gives for `ia` (`None`:
    /// a fault, or no StreamID whose live STE translates with this VMID).
    pub live: Option<Translation>,
}

// ---------------------------------------------------------------------------
// Internal state.

#[derive(Debug, Clone, Copy)]
struct TlbEntry {
    vmid: u16,
    /// Input address of the start of the leaf's range.
    base: u64,
    size: u64,
    /// The leaf, with `oa` the output address of `base`.
    t: Translation,
    /// StreamID whose transaction filled the entry.
    sid: u32,
}

/// An invalidation consumed but not yet completed by a `CMD_SYNC`.
#[derive(Debug, Clone, Copy)]
enum Pending {
    Ste {
        sid: u32,
        leaf: bool,
    },
    SteRange {
        start: u64,
        end: u64,
    },
    VmAll {
        vmid: u16,
    },
    S2Ipa {
        vmid: u16,
        start: u64,
        end: u64,
        level: Option<u8>,
    },
    All,
}

/// A decoded stage-2 STE.
#[derive(Debug, Clone, Copy)]
struct S2Cfg {
    vmid: u16,
    regime: Regime,
    /// S2TTB as programmed (the walk aligns it).
    ttb: u64,
    /// Effective output size (S2PS capped to the OAS).
    ps: u8,
    affd: bool,
    record: bool,
    /// Walk attributes are cacheable and shareable (and the SMMU coherent).
    snoop: bool,
}

#[derive(Debug, Clone, Copy)]
enum SteCfg {
    Abort,
    Bypass,
    S2(S2Cfg),
}

/// Why an STE lookup did not find an STE.
enum LookupErr {
    BadStreamId,
    Fetch(u64),
}

/// Outcome of a DMA translation step: a pass or a terminating event.
struct Term {
    event: SmmuEvent,
    /// Whether the event may be recorded (`S2R`, `RECINVSID`).
    record: bool,
}

/// The model's view of memory during a stage-2 walk: reads outside the
/// window or beyond the output size are remembered (and return an invalid
/// descriptor so the walk stops), dirty lines are noted.
struct WalkSrc<'a> {
    mem: &'a PhysMem,
    ps: u8,
    check_dirty: bool,
    abnormal: Cell<Option<WalkAbnormal>>,
    dirty: RefCell<Vec<u64>>,
}

#[derive(Debug, Clone, Copy)]
enum WalkAbnormal {
    /// A table address beyond the effective S2PS.
    AddrSize,
    /// A descriptor read outside memory (external abort).
    Eabt(u64),
}

impl DescSource for WalkSrc<'_> {
    fn read_desc(&self, pa: u64) -> u64 {
        if self.abnormal.get().is_some() {
            return 0;
        }
        if pa >> self.ps != 0 {
            self.abnormal.set(Some(WalkAbnormal::AddrSize));
            return 0;
        }
        if pa & 7 != 0 || !self.mem.contains(pa) {
            self.abnormal.set(Some(WalkAbnormal::Eabt(pa)));
            return 0;
        }
        if self.check_dirty && self.mem.is_dirty(pa) {
            self.dirty.borrow_mut().push(pa);
        }
        self.mem.read_u64(pa)
    }
}

/// The SMMU model. See the [module documentation](self).
#[derive(Debug, Clone)]
pub struct Smmu {
    cfg: SmmuConfig,
    overrides: HashMap<u64, u32>,
    inject: Option<SmmuInject>,
    cr0: u32,
    cr1: u32,
    cr2: u32,
    gbpa: u32,
    irq_ctrl: u32,
    gerror: u32,
    gerrorn: u32,
    strtab_base: u64,
    strtab_base_cfg: u32,
    cmdq_base: u64,
    cmdq_prod: u32,
    cmdq_cons: u32,
    eventq_base: u64,
    eventq_prod: u32,
    eventq_cons: u32,
    /// Cached STEs by StreamID.
    ste_cache: HashMap<u32, [u64; 8]>,
    /// Cached L1 descriptors by (SPLIT in use, L1 index).
    l1_cache: HashMap<(u8, u32), u64>,
    tlb: Vec<TlbEntry>,
    pending: Vec<Pending>,
    violations: Vec<SmmuViolation>,
    stats: SmmuStats,
}

// ---------------------------------------------------------------------------
// Small helpers.

fn bits(v: u64, hi: u32, lo: u32) -> u64 {
    (v >> lo) & (u64::MAX >> (63 - (hi - lo)))
}

fn mask(hi: u32, lo: u32) -> u64 {
    (u64::MAX >> (63 - hi)) & !((1u64 << lo) - 1)
}

/// Address size of an `IDR5.OAS` / `STE.S2PS` encoding (6.3.6, 5.2).
fn ps_bits(enc: u64) -> u8 {
    match enc & 7 {
        0 => 32,
        1 => 36,
        2 => 40,
        3 => 42,
        4 => 44,
        5 => 48,
        6 => 52,
        _ => 56,
    }
}

/// A queue's effective log2 size and index helpers (3.5.1).
#[derive(Clone, Copy)]
struct Q {
    qs: u32,
}

impl Q {
    fn wrap_mask(self) -> u32 {
        (2u32 << self.qs) - 1
    }
    fn idx(self, v: u32) -> u32 {
        v & ((1u32 << self.qs) - 1)
    }
    fn wrap(self, v: u32) -> u32 {
        (v >> self.qs) & 1
    }
    fn empty(self, p: u32, c: u32) -> bool {
        p & self.wrap_mask() == c & self.wrap_mask()
    }
    fn full(self, p: u32, c: u32) -> bool {
        self.idx(p) == self.idx(c) && self.wrap(p) != self.wrap(c)
    }
    /// Inconsistent states of 3.5.1.
    fn inconsistent(self, p: u32, c: u32) -> bool {
        let (pi, ci) = (self.idx(p), self.idx(c));
        (pi > ci && self.wrap(p) != self.wrap(c)) || (pi < ci && self.wrap(p) == self.wrap(c))
    }
    /// Entries between `c` and `p` (for consistent states).
    fn count(self, p: u32, c: u32) -> u32 {
        (p & self.wrap_mask()).wrapping_sub(c & self.wrap_mask()) & self.wrap_mask()
    }
    fn inc(self, v: u32) -> u32 {
        ((v & self.wrap_mask()) + 1) & self.wrap_mask()
    }
}

/// Whether an access with these cacheability/shareability attributes is
/// IO-coherent. `ic`/`oc` use the CR1/STE encoding where 0 is non-cacheable
/// (CR1 also has 0b11 reserved, treated as 0); `sh` 0b10/0b11 are
/// shareable.
fn snooping(coherent: bool, ic: u64, oc: u64, sh: u64, reserved_3_is_nc: bool) -> bool {
    let cacheable = |c: u64| c != 0 && !(reserved_3_is_nc && c == 3);
    coherent && cacheable(ic) && cacheable(oc) && sh >= 2
}

impl Smmu {
    /// A new SMMU in its reset state: everything disabled, `GBPA` not
    /// aborting (bypass), caches and TLB empty.
    ///
    /// Panics if `cfg` is not a configuration the ID registers can express
    /// (a bug in the test, not in the driver).
    pub fn new(cfg: SmmuConfig) -> Self {
        assert!(cfg.sid_bits <= 32, "SmmuConfig::sid_bits {} > 32", cfg.sid_bits);
        assert!(cfg.cmdq_log2 <= 19, "SmmuConfig::cmdq_log2 {} > 19", cfg.cmdq_log2);
        assert!(cfg.evtq_log2 <= 19, "SmmuConfig::evtq_log2 {} > 19", cfg.evtq_log2);
        assert!(
            [32, 36, 40, 42, 44, 48].contains(&cfg.oas_bits),
            "SmmuConfig::oas_bits {} is not 32, 36, 40, 42, 44 or 48",
            cfg.oas_bits
        );
        Smmu {
            cfg,
            overrides: HashMap::new(),
            inject: None,
            cr0: 0,
            cr1: 0,
            cr2: 0,
            gbpa: 0,
            irq_ctrl: 0,
            gerror: 0,
            gerrorn: 0,
            strtab_base: 0,
            strtab_base_cfg: 0,
            cmdq_base: 0,
            cmdq_prod: 0,
            cmdq_cons: 0,
            eventq_base: 0,
            eventq_prod: 0,
            eventq_cons: 0,
            ste_cache: HashMap::new(),
            l1_cache: HashMap::new(),
            tlb: Vec::new(),
            pending: Vec::new(),
            violations: Vec::new(),
            stats: SmmuStats::default(),
        }
    }

    /// The configuration the model was built with.
    pub fn config(&self) -> &SmmuConfig {
        &self.cfg
    }

    // -- ID registers -------------------------------------------------------

    fn hyp(&self) -> bool {
        self.cfg.stage1 && self.cfg.stage2
    }

    /// The IAS (3.4): VMSAv8-32 is not implemented, so IAS == OAS.
    fn ias(&self) -> u8 {
        self.cfg.oas_bits
    }

    fn fwb(&self) -> bool {
        self.cfg.stage2 && self.cfg.ril
    }

    fn idr0(&self) -> u32 {
        let c = &self.cfg;
        let mut v = 0u32;
        v |= u32::from(c.stage2); // S2P [0]
        v |= u32::from(c.stage1) << 1; // S1P [1]
        v |= 0b10 << 2; // TTF [3:2]: VMSAv8-64
        v |= u32::from(c.coherent) << 4; // COHACC [4]
        v |= u32::from(self.hyp()) << 9; // Hyp [9]
        v |= u32::from(c.stage1) << 12; // ASID16 [12]
        v |= u32::from(c.vmid16 && c.stage2) << 18; // VMID16 [18]
        v |= 0b10 << 21; // TTENDIAN [22:21]: little-endian
        v |= 0b01 << 24; // STALL_MODEL [25:24]: no stalls
        v |= 1 << 26; // TERM_MODEL [26]: abort only
        v |= u32::from(c.two_level) << 27; // ST_LEVEL [28:27]
        v
    }

    fn idr1(&self) -> u32 {
        let c = &self.cfg;
        u32::from(c.sid_bits) | (u32::from(c.evtq_log2) << 16) | (u32::from(c.cmdq_log2) << 21)
    }

    fn idr3(&self) -> u32 {
        let c = &self.cfg;
        let mut v = 0u32;
        v |= u32::from(c.stage1) << 2; // HAD
        v |= u32::from(c.stage2) << 4; // XNX
        v |= u32::from(self.fwb()) << 8; // FWB
        v |= u32::from(c.ril) << 10; // RIL
        if c.ril {
            v |= 0b10 << 11; // BBML: level 2
        }
        v
    }

    fn idr5(&self) -> u32 {
        let oas = match self.cfg.oas_bits {
            32 => 0,
            36 => 1,
            40 => 2,
            42 => 3,
            44 => 4,
            _ => 5,
        };
        oas | (1 << 4) // GRAN4K
    }

    // -- register access ------------------------------------------------------

    fn violation(&mut self, v: SmmuViolation) {
        self.violations.push(v);
    }

    fn reg64_value(&self, base: u64) -> u64 {
        match base {
            STRTAB_BASE => self.strtab_base,
            CMDQ_BASE => self.cmdq_base,
            EVENTQ_BASE => self.eventq_base,
            // MSI registers are RES0 (IDR0.MSI == 0).
            _ => 0,
        }
    }

    /// The value of a 32-bit register, or `None` if there is none at `off`.
    fn reg32_value(&self, off: u64) -> Option<u32> {
        Some(match off {
            IDR0 => self.idr0(),
            IDR1 => self.idr1(),
            IDR2 | IDR4 | IIDR | STATUSR | AGBPA => 0,
            IDR3 => self.idr3(),
            IDR5 => self.idr5(),
            AIDR => {
                if self.cfg.ril {
                    0x02
                } else {
                    0x01
                }
            }
            CR0 | CR0ACK => self.cr0,
            CR1 => self.cr1,
            CR2 => self.cr2,
            GBPA => self.gbpa,
            IRQ_CTRL | IRQ_CTRLACK => self.irq_ctrl,
            GERROR => self.gerror,
            GERRORN => self.gerrorn,
            GERROR_IRQ_CFG1 | GERROR_IRQ_CFG2 | EVENTQ_IRQ_CFG1 | EVENTQ_IRQ_CFG2 => 0,
            STRTAB_BASE_CFG => self.strtab_base_cfg,
            CMDQ_PROD => self.cmdq_prod,
            CMDQ_CONS => self.cmdq_cons,
            EVENTQ_PROD => self.eventq_prod,
            EVENTQ_CONS => self.eventq_cons,
            // ID_REGS (6.3.170): CoreSight component identification.
            0xff0 => 0x0d,
            0xff4 => 0xf0,
            0xff8 => 0x05,
            0xffc => 0xb1,
            0xfd0..=0xfec => 0,
            _ => return None,
        })
    }

    fn reg64_base(off: u64) -> Option<u64> {
        REGS64.iter().copied().find(|&b| off & !7 == b)
    }

    /// Read the 32-bit register (or 32-bit half of a 64-bit register) at
    /// `off`. A register overridden with [`Smmu::override_reg`] reads as the
    /// override.
    pub fn read32(&mut self, _mem: &PhysMem, off: u64) -> u32 {
        if off & 3 != 0 {
            self.violation(SmmuViolation::WrongWidth { off, width: 32 });
            return 0;
        }
        if let Some(&v) = self.overrides.get(&off) {
            return v;
        }
        if let Some(base) = Self::reg64_base(off) {
            return (self.reg64_value(base) >> ((off - base) * 8)) as u32;
        }
        match self.reg32_value(off) {
            Some(v) => v,
            None => {
                self.violation(SmmuViolation::UnknownRegister { off, write: false });
                0
            }
        }
    }

    /// Read the 64-bit register at `off` (8-byte aligned). A 64-bit access to
    /// anything else is a [`SmmuViolation::WrongWidth`] and reads as zero.
    pub fn read64(&mut self, _mem: &PhysMem, off: u64) -> u64 {
        if off & 7 != 0 || Self::reg64_base(off).is_none() {
            self.violation(SmmuViolation::WrongWidth { off, width: 64 });
            return 0;
        }
        let mut v = self.reg64_value(off);
        if let Some(&lo) = self.overrides.get(&off) {
            v = (v & !0xffff_ffff) | u64::from(lo);
        }
        if let Some(&hi) = self.overrides.get(&(off + 4)) {
            v = (v & 0xffff_ffff) | (u64::from(hi) << 32);
        }
        v
    }

    /// Write the 32-bit register (or one half of a 64-bit register) at `off`.
    pub fn write32(&mut self, mem: &mut PhysMem, off: u64, val: u32) {
        if off & 3 != 0 {
            self.violation(SmmuViolation::WrongWidth { off, width: 32 });
            return;
        }
        if let Some(base) = Self::reg64_base(off) {
            let shift = (off - base) * 8;
            self.write_reg64(base, u64::from(val) << shift, 0xffff_ffff << shift);
            return;
        }
        self.write_reg32(mem, off, val);
    }

    /// Write the 64-bit register at `off` (8-byte aligned). A 64-bit access
    /// to anything else is a [`SmmuViolation::WrongWidth`] and is ignored.
    pub fn write64(&mut self, _mem: &mut PhysMem, off: u64, val: u64) {
        if off & 7 != 0 || Self::reg64_base(off).is_none() {
            self.violation(SmmuViolation::WrongWidth { off, width: 64 });
            return;
        }
        self.write_reg64(off, val, u64::MAX);
    }

    /// Make reads of the 32-bit register at `off` return `val` (to present
    /// malformed hardware, e.g. an `IDR0` without `S2P` or with reserved
    /// fields set). Only reads change; the model behaves as configured.
    pub fn override_reg(&mut self, off: u64, val: u32) {
        self.overrides.insert(off, val);
    }

    /// Inject misbehaviour (see [`SmmuInject`]); `None` clears it.
    pub fn inject(&mut self, what: Option<SmmuInject>) {
        self.inject = what;
    }

    fn res0_check(&mut self, off: u64, written: u64, valid: u64) {
        let bad = written & !valid;
        if bad != 0 {
            self.violation(SmmuViolation::Res0 { off, bits: bad });
        }
    }

    /// Valid bits of a queue base register: RA/WA [62], ADDR [55:5] up to
    /// the OAS, LOG2SIZE [4:0].
    fn queue_base_valid(&self) -> u64 {
        (1 << 62) | (mask(55, 5) & ((1u64 << self.cfg.oas_bits) - 1)) | 0x1f
    }

    /// `mask` selects the bits written (a 32-bit half or all 64).
    fn write_reg64(&mut self, base: u64, val: u64, mask_w: u64) {
        let oas_mask = (1u64 << self.cfg.oas_bits) - 1;
        let (guard, valid) = match base {
            STRTAB_BASE => (self.cr0 & CR0_SMMUEN != 0, (1 << 62) | (mask(55, 6) & oas_mask)),
            CMDQ_BASE => (self.cr0 & CR0_CMDQEN != 0, self.queue_base_valid()),
            EVENTQ_BASE => (self.cr0 & CR0_EVENTQEN != 0, self.queue_base_valid()),
            // GERROR_IRQ_CFG0 / EVENTQ_IRQ_CFG0: RES0 without MSIs.
            _ => (false, 0),
        };
        self.res0_check(base, val & mask_w, valid);
        if guard {
            self.violation(SmmuViolation::WriteWhileEnabled { off: base });
            return;
        }
        let old = self.reg64_value(base);
        let new = ((old & !mask_w) | (val & mask_w)) & valid;
        match base {
            STRTAB_BASE => self.strtab_base = new,
            CMDQ_BASE => {
                self.cmdq_base = new;
                self.check_queue_size(CMDQ_BASE, new, self.cfg.cmdq_log2);
            }
            EVENTQ_BASE => {
                self.eventq_base = new;
                self.check_queue_size(EVENTQ_BASE, new, self.cfg.evtq_log2);
            }
            _ => {}
        }
    }

    fn check_queue_size(&mut self, off: u64, base: u64, max: u8) {
        let log2 = (base & 0x1f) as u8;
        if log2 > max {
            self.violation(SmmuViolation::BadQueueSize {
                off,
                log2size: log2,
                max,
            });
        }
    }

    fn write_reg32(&mut self, mem: &mut PhysMem, off: u64, val: u32) {
        let v64 = u64::from(val);
        match off {
            IDR0 | IDR1 | IDR2 | IDR3 | IDR4 | IDR5 | IIDR | AIDR | CR0ACK | STATUSR | IRQ_CTRLACK | GERROR => {
                self.violation(SmmuViolation::ReadOnlyWrite { off });
            }
            0xfd0..=0xffc => self.violation(SmmuViolation::ReadOnlyWrite { off }),
            CR0 => {
                let valid = CR0_SMMUEN | CR0_EVENTQEN | CR0_CMDQEN;
                self.res0_check(off, v64, u64::from(valid));
                let old = self.cr0;
                self.cr0 = val & valid;
                let rising = self.cr0 & !old;
                if rising & CR0_SMMUEN != 0 {
                    self.check_strtab_alignment();
                }
                if rising & CR0_CMDQEN != 0 {
                    self.check_queue_alignment("CMDQ_BASE", self.cmdq_base, self.cfg.cmdq_log2, 16);
                }
                if rising & CR0_EVENTQEN != 0 {
                    self.check_queue_alignment("EVENTQ_BASE", self.eventq_base, self.cfg.evtq_log2, 32);
                }
                self.process_cmdq(mem);
            }
            CR1 => {
                self.res0_check(off, v64, 0xfff);
                let table_guard = self.cr0 & CR0_SMMUEN != 0;
                let queue_guard = self.cr0 & (CR0_CMDQEN | CR0_EVENTQEN) != 0;
                let (table, queue) = (0xfc0u32, 0x3fu32);
                let mut new = self.cr1;
                let mut blocked = false;
                if (val ^ self.cr1) & table != 0 {
                    if table_guard {
                        blocked = true;
                    } else {
                        new = (new & !table) | (val & table);
                    }
                }
                if (val ^ self.cr1) & queue != 0 {
                    if queue_guard {
                        blocked = true;
                    } else {
                        new = (new & !queue) | (val & queue);
                    }
                }
                if blocked {
                    self.violation(SmmuViolation::WriteWhileEnabled { off });
                }
                self.cr1 = new;
            }
            CR2 => {
                let valid = CR2_RECINVSID | if self.hyp() { CR2_E2H } else { 0 };
                self.res0_check(off, v64, u64::from(valid));
                if self.cr0 & CR0_SMMUEN != 0 {
                    self.violation(SmmuViolation::WriteWhileEnabled { off });
                } else {
                    self.cr2 = val & valid;
                }
            }
            GBPA => {
                if val & GBPA_UPDATE == 0 {
                    self.violation(SmmuViolation::GbpaWithoutUpdate { val });
                } else {
                    self.res0_check(off, v64, u64::from(GBPA_FIELDS | GBPA_UPDATE));
                    // The update completes at once: Update reads as 0.
                    self.gbpa = val & GBPA_FIELDS;
                }
            }
            AGBPA | GERROR_IRQ_CFG1 | GERROR_IRQ_CFG2 | EVENTQ_IRQ_CFG1 | EVENTQ_IRQ_CFG2 => {
                self.res0_check(off, v64, 0);
            }
            IRQ_CTRL => {
                self.res0_check(off, v64, u64::from(IRQ_CTRL_FIELDS));
                self.irq_ctrl = val & IRQ_CTRL_FIELDS;
            }
            GERRORN => {
                self.res0_check(off, v64, u64::from(GERROR_FIELDS));
                let new = val & GERROR_FIELDS;
                let toggled = new ^ self.gerrorn;
                let active = self.gerror ^ self.gerrorn;
                let inactive = toggled & !active;
                if inactive != 0 {
                    self.violation(SmmuViolation::GerrornInactive { bits: inactive });
                }
                self.gerrorn = new;
                // A command error acknowledged restarts consumption (6.3.28).
                self.process_cmdq(mem);
            }
            STRTAB_BASE_CFG => {
                let valid: u32 = if self.cfg.two_level { 0x3_07ff } else { 0x3f };
                if !self.cfg.two_level && (val >> 16) & 3 == 1 {
                    self.violation(SmmuViolation::TwoLevelUnsupported);
                }
                self.res0_check(off, v64, u64::from(valid));
                if self.cr0 & CR0_SMMUEN != 0 {
                    self.violation(SmmuViolation::WriteWhileEnabled { off });
                } else {
                    self.strtab_base_cfg = val & valid;
                }
            }
            CMDQ_PROD => {
                let q = self.cmdq_q();
                self.res0_check(off, v64, u64::from(q.wrap_mask()));
                let new = val & Q_INDEX;
                let old = self.cmdq_prod;
                let cons = self.cmdq_cons & Q_INDEX;
                if q.inconsistent(new, cons) {
                    self.violation(SmmuViolation::QueueOverrun { off, prod: new, cons });
                } else if self.cr0 & CR0_CMDQEN != 0
                    && !self.cmdq_error_active()
                    && !q.inconsistent(old, cons)
                    && q.count(new, cons) < q.count(old, cons)
                {
                    self.violation(SmmuViolation::QueueIndexBackwards { off, old, new });
                }
                self.cmdq_prod = new;
                self.process_cmdq(mem);
            }
            CMDQ_CONS => {
                self.res0_check(off, v64, u64::from(Q_INDEX | CMDQ_CONS_ERR));
                if self.cr0 & CR0_CMDQEN != 0 {
                    self.violation(SmmuViolation::WriteWhileEnabled { off });
                } else {
                    // ERR is permitted to ignore the written value.
                    let q = self.cmdq_q();
                    let rd = val & q.wrap_mask();
                    if q.inconsistent(self.cmdq_prod, rd) {
                        self.violation(SmmuViolation::QueueOverrun {
                            off,
                            prod: self.cmdq_prod,
                            cons: rd,
                        });
                    }
                    self.cmdq_cons = (self.cmdq_cons & CMDQ_CONS_ERR) | rd;
                }
            }
            EVENTQ_PROD => {
                self.res0_check(off, v64, u64::from(Q_INDEX | Q_OVFLG));
                if self.cr0 & CR0_EVENTQEN != 0 {
                    self.violation(SmmuViolation::WriteWhileEnabled { off });
                } else {
                    let q = self.eventq_q();
                    let wr = val & q.wrap_mask();
                    if q.inconsistent(wr, self.eventq_cons) {
                        self.violation(SmmuViolation::QueueOverrun {
                            off,
                            prod: wr,
                            cons: self.eventq_cons & Q_INDEX,
                        });
                    }
                    self.eventq_prod = (val & Q_OVFLG) | wr;
                }
            }
            EVENTQ_CONS => {
                let q = self.eventq_q();
                self.res0_check(off, v64, u64::from(q.wrap_mask() | Q_OVFLG));
                let new = val & Q_INDEX;
                let old = self.eventq_cons & Q_INDEX;
                let prod = self.eventq_prod & Q_INDEX;
                if q.inconsistent(prod, new) {
                    self.violation(SmmuViolation::QueueOverrun { off, prod, cons: new });
                } else if self.cr0 & CR0_EVENTQEN != 0
                    && !q.inconsistent(prod, old)
                    && q.count(prod, new) > q.count(prod, old)
                {
                    self.violation(SmmuViolation::QueueIndexBackwards { off, old, new });
                }
                self.eventq_cons = (val & Q_OVFLG) | (new & q.wrap_mask());
            }
            _ => self.violation(SmmuViolation::UnknownRegister { off, write: true }),
        }
    }

    fn check_strtab_alignment(&mut self) {
        let base = self.strtab_base & mask(55, 6);
        let cfg = u64::from(self.strtab_base_cfg);
        let log2 = bits(cfg, 5, 0) as u32;
        let align_bits = if self.two_level_table() {
            let split = i64::from(self.split());
            (i64::from(log2) - split + 2).max(5) as u32 + 1
        } else {
            log2 + 6
        };
        if align_bits < 64 && base & ((1u64 << align_bits) - 1) != 0 {
            self.violation(SmmuViolation::Misaligned {
                what: "STRTAB_BASE",
                addr: base,
            });
        }
    }

    fn check_queue_alignment(&mut self, what: &'static str, base_reg: u64, max: u8, entry: u64) {
        let qs = (base_reg & 0x1f).min(u64::from(max));
        let align = ((1u64 << qs) * entry).max(32);
        let addr = base_reg & mask(55, 5);
        if addr & (align - 1) != 0 {
            self.violation(SmmuViolation::Misaligned { what, addr });
        }
    }

    // -- queues ---------------------------------------------------------------

    fn cmdq_q(&self) -> Q {
        Q {
            qs: ((self.cmdq_base & 0x1f) as u32).min(u32::from(self.cfg.cmdq_log2)),
        }
    }

    fn eventq_q(&self) -> Q {
        Q {
            qs: ((self.eventq_base & 0x1f) as u32).min(u32::from(self.cfg.evtq_log2)),
        }
    }

    /// Effective queue base: ADDR aligned to the larger of the queue size
    /// and 32 bytes (6.3.26).
    fn queue_addr(base_reg: u64, q: Q, entry: u64) -> u64 {
        let align = ((1u64 << q.qs) * entry).max(32);
        base_reg & mask(55, 5) & !(align - 1)
    }

    fn cmdq_error_active(&self) -> bool {
        (self.gerror ^ self.gerrorn) & GERROR_CMDQ_ERR != 0
    }

    fn queue_snoop(&self) -> bool {
        let c = u64::from(self.cr1);
        snooping(self.cfg.coherent, bits(c, 1, 0), bits(c, 3, 2), bits(c, 5, 4), true)
    }

    fn table_snoop(&self) -> bool {
        let c = u64::from(self.cr1);
        snooping(self.cfg.coherent, bits(c, 7, 6), bits(c, 9, 8), bits(c, 11, 10), true)
    }

    /// Record a [`SmmuViolation::ReadUncleaned`] for each dirty line among
    /// `count` consecutive words at `pa` (once per line).
    fn check_clean(&mut self, mem: &PhysMem, pa: u64, count: u64, snoop: bool, what: &'static str) {
        if snoop {
            return;
        }
        let mut last_line = None;
        for i in 0..count {
            let a = pa + i * 8;
            let line = a / LINE_SIZE;
            if last_line != Some(line) && mem.is_dirty(a) {
                self.violation(SmmuViolation::ReadUncleaned { pa: a, what });
            }
            last_line = Some(line);
        }
    }

    /// Consume commands while the queue is enabled, non-empty and error-free.
    fn process_cmdq(&mut self, mem: &PhysMem) {
        loop {
            if self.cr0 & CR0_CMDQEN == 0 || self.cmdq_error_active() {
                return;
            }
            if self.inject == Some(SmmuInject::StallCommandQueue) {
                return;
            }
            let q = self.cmdq_q();
            let (prod, cons) = (self.cmdq_prod, self.cmdq_cons & Q_INDEX);
            if q.empty(prod, cons) || q.inconsistent(prod, cons) {
                return;
            }
            let index = q.idx(cons);
            let addr = Self::queue_addr(self.cmdq_base, q, 16) + u64::from(index) * 16;
            if !(mem.contains(addr) && mem.contains(addr + 8)) {
                self.command_error(CERROR_ABT);
                return;
            }
            let snoop = self.queue_snoop();
            self.check_clean(mem, addr, 2, snoop, "command");
            let cmd = [mem.read_u64(addr), mem.read_u64(addr + 8)];
            let ok = if self.inject == Some(SmmuInject::CommandError) {
                self.inject = None;
                false
            } else {
                self.execute(cmd, index)
            };
            if !ok {
                self.command_error(CERROR_ILL);
                return;
            }
            self.stats.commands += 1;
            self.cmdq_cons = (self.cmdq_cons & CMDQ_CONS_ERR) | q.inc(cons);
        }
    }

    fn command_error(&mut self, code: u32) {
        self.cmdq_cons = (self.cmdq_cons & !CMDQ_CONS_ERR) | (code << CMDQ_CONS_ERR_SHIFT);
        if !self.cmdq_error_active() {
            self.gerror ^= GERROR_CMDQ_ERR;
        }
    }

    fn bad_command(&mut self, index: u32, cmd: [u64; 2], res0: [u64; 2], what: &'static str) {
        if cmd[0] & res0[0] != 0 || cmd[1] & res0[1] != 0 {
            self.violation(SmmuViolation::BadCommand { index, what });
        }
    }

    /// Execute one command; false means `CERROR_ILL` (4.1.3).
    fn execute(&mut self, cmd: [u64; 2], index: u32) -> bool {
        let op = cmd[0] & 0xff;
        // SSec (bit 10) must be 0 on the Non-secure queue (4.1.6).
        let ssec = cmd[0] & (1 << 10) != 0;
        let vmid_ok = |smmu: &mut Self, vmid: u64| -> bool {
            if !smmu.cfg.vmid16 && vmid >> 8 != 0 {
                // VMID[15:8] are RES0 with 8-bit VMIDs: the command is not
                // required to affect anything.
                smmu.violation(SmmuViolation::BadCommand {
                    index,
                    what: "VMID[15:8] set without VMID16",
                });
                false
            } else {
                true
            }
        };
        match op {
            // CMD_PREFETCH_CONFIG, CMD_PREFETCH_ADDR (4.2): no prefetching.
            0x01 | 0x02 => {
                if ssec {
                    return false;
                }
                self.stats.other += 1;
            }
            // CMD_CFGI_STE (4.3.1): SID [63:32], Leaf [64].
            0x03 => {
                if ssec {
                    return false;
                }
                self.bad_command(index, cmd, [mask(31, 11) | mask(9, 8), !1], "CMD_CFGI_STE RES0 bits");
                self.pending.push(Pending::Ste {
                    sid: (cmd[0] >> 32) as u32,
                    leaf: cmd[1] & 1 != 0,
                });
                self.stats.cfgi_ste += 1;
            }
            // CMD_CFGI_STE_RANGE / CMD_CFGI_ALL (4.3.2): Range [68:64].
            0x04 => {
                if ssec {
                    return false;
                }
                self.bad_command(
                    index,
                    cmd,
                    [mask(31, 11) | mask(9, 8), !0x1f],
                    "CMD_CFGI_STE_RANGE RES0 bits",
                );
                let n = (cmd[1] & 0x1f) + 1;
                let start = (cmd[0] >> 32) & !((1u64 << n) - 1);
                self.pending.push(Pending::SteRange {
                    start,
                    end: start + (1u64 << n),
                });
                self.stats.cfgi_ste += 1;
            }
            // CMD_CFGI_CD, CMD_CFGI_CD_ALL (4.3.3, 4.3.4): illegal without
            // stage 1; no CD caching is modelled.
            0x05 | 0x06 => {
                if !self.cfg.stage1 || ssec {
                    return false;
                }
                self.stats.other += 1;
            }
            // CMD_TLBI_NH_ALL/ASID/VA/VAA (4.4.2): stage-1 entries are not
            // modelled, so nothing to invalidate.
            0x10..=0x13 => {
                if !self.cfg.stage1 {
                    return false;
                }
                if (op == 0x12 || op == 0x13)
                    && !self.cfg.ril
                    && (bits(cmd[0], 25, 12) != 0 || bits(cmd[1], 11, 8) != 0)
                {
                    self.violation(SmmuViolation::RangeWithoutRil { index });
                }
                self.stats.other += 1;
            }
            // CMD_TLBI_EL2_* (4.4.2.7-10): only with IDR0.Hyp.
            0x20..=0x23 => {
                if !self.hyp() {
                    return false;
                }
                self.stats.other += 1;
            }
            // CMD_TLBI_S12_VMALL (4.4.3.2): VMID [47:32].
            0x28 => {
                if !self.cfg.stage2 {
                    return false;
                }
                self.bad_command(
                    index,
                    cmd,
                    [mask(31, 8) | mask(63, 48), u64::MAX],
                    "CMD_TLBI_S12_VMALL RES0 bits",
                );
                let vmid = bits(cmd[0], 47, 32);
                if vmid_ok(self, vmid) {
                    self.pending.push(Pending::VmAll { vmid: vmid as u16 });
                }
                self.stats.tlbi_s12_vmall += 1;
            }
            // CMD_TLBI_S2_IPA (4.4.3.1, 4.4.1.1).
            0x2a => {
                if !self.cfg.stage2 {
                    return false;
                }
                if !self.tlbi_s2_ipa(cmd, index, vmid_ok) {
                    return false;
                }
                self.stats.tlbi_s2_ipa += 1;
            }
            // CMD_TLBI_NSNH_ALL (4.4.4.1).
            0x30 => {
                self.bad_command(index, cmd, [!0xff, u64::MAX], "CMD_TLBI_NSNH_ALL RES0 bits");
                self.pending.push(Pending::All);
                self.stats.other += 1;
            }
            // CMD_SYNC (4.7.3): CS [13:12] (0b11 reserved); MSIs unsupported,
            // so the MSI fields are IGNORED.
            0x46 => {
                if bits(cmd[0], 13, 12) == 3 {
                    return false;
                }
                self.bad_command(
                    index,
                    cmd,
                    [mask(11, 8) | mask(21, 14) | mask(31, 28), mask(1, 0) | mask(63, 56)],
                    "CMD_SYNC RES0 bits",
                );
                self.complete_invalidations();
                self.stats.syncs += 1;
            }
            // Everything else: reserved opcodes, Secure/EL3 commands on the
            // Non-secure queue, ATS/PRI (IDR0.ATS == 0), stall commands
            // (STALL_MODEL == 0b01), VMS (no MPAM), DPT (no DPT).
            _ => return false,
        }
        true
    }

    /// Decode a `CMD_TLBI_S2_IPA`: NUM [16:12], SCALE [25:20], VMID [47:32];
    /// Leaf [64], TTL [73:72], TG [75:74], Address [119:76] (IPA[55:12]).
    fn tlbi_s2_ipa(&mut self, cmd: [u64; 2], index: u32, vmid_ok: impl Fn(&mut Self, u64) -> bool) -> bool {
        let num = bits(cmd[0], 16, 12);
        let scale = bits(cmd[0], 25, 20);
        let vmid = bits(cmd[0], 47, 32);
        let mut ttl = bits(cmd[1], 9, 8);
        let mut tg = bits(cmd[1], 11, 10);
        let addr = cmd[1] & mask(55, 12);
        self.bad_command(
            index,
            cmd,
            [
                mask(11, 8) | mask(19, 17) | mask(31, 26) | mask(63, 48),
                mask(7, 1) | mask(63, 56),
            ],
            "CMD_TLBI_S2_IPA RES0 bits",
        );
        let (mut num, mut scale) = (num, scale);
        if !self.cfg.ril {
            if num | scale | ttl | tg != 0 {
                self.violation(SmmuViolation::RangeWithoutRil { index });
            }
            (num, scale, ttl, tg) = (0, 0, 0, 0);
        } else if tg == 0 && num | scale | ttl != 0 {
            self.violation(SmmuViolation::BadCommand {
                index,
                what: "CMD_TLBI_S2_IPA NUM/SCALE/TTL set with TG == 0",
            });
            (num, scale, ttl) = (0, 0, 0);
        } else if tg != 0 && num == 0 && scale == 0 && ttl == 0 {
            // Reserved combination (4.4.1.1).
            return false;
        }
        if !vmid_ok(self, vmid) {
            return true;
        }
        let vmid = vmid as u16;
        if tg == 0 {
            // Single form: the entries that translate Address.
            self.pending.push(Pending::S2Ipa {
                vmid,
                start: addr,
                end: addr + 1,
                level: None,
            });
            return true;
        }
        if tg != 0b01 {
            // Only entries inserted with a 16K/64K granule need be affected:
            // the model has none.
            return true;
        }
        if (ttl == 1 && bits(addr, 29, 12) != 0) || (ttl == 2 && bits(addr, 20, 12) != 0) {
            self.violation(SmmuViolation::BadCommand {
                index,
                what: "CMD_TLBI_S2_IPA address not aligned to the TTL level (range UNPREDICTABLE)",
            });
        }
        // Range = (NUM + 1) * 2^SCALE * 4 KiB, from Address.
        let len = (u128::from(num) + 1) << (scale + 12);
        let end = (u128::from(addr) + len).min(u128::from(u64::MAX)) as u64;
        self.pending.push(Pending::S2Ipa {
            vmid,
            start: addr,
            end,
            level: if ttl != 0 { Some(ttl as u8) } else { None },
        });
        true
    }

    /// Apply every pending invalidation: a `CMD_SYNC` was consumed.
    fn complete_invalidations(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        for p in pending {
            match p {
                Pending::Ste { sid, leaf } => {
                    self.ste_cache.remove(&sid);
                    if !leaf {
                        self.l1_cache
                            .retain(|&(split, l1), _| u64::from(l1) != u64::from(sid) >> split);
                    }
                }
                Pending::SteRange { start, end } => {
                    self.ste_cache.retain(|&sid, _| !(start..end).contains(&u64::from(sid)));
                    self.l1_cache.retain(|&(split, l1), _| {
                        let lo = u64::from(l1) << split;
                        let hi = lo + (1u64 << split);
                        hi <= start || lo >= end
                    });
                }
                Pending::VmAll { vmid } => self.tlb.retain(|e| e.vmid != vmid),
                Pending::S2Ipa {
                    vmid,
                    start,
                    end,
                    level,
                } => self.tlb.retain(|e| {
                    let hit = e.vmid == vmid
                        && e.base < end
                        && start < e.base.saturating_add(e.size)
                        && level.is_none_or(|l| l == e.t.level);
                    !hit
                }),
                Pending::All => self.tlb.clear(),
            }
        }
    }

    // -- event queue ------------------------------------------------------------

    /// Try to write `ev` to the Event queue (7.2.1, 7.4). Returns whether it
    /// was written.
    fn record_event(&mut self, mem: &mut PhysMem, ev: &SmmuEvent) -> bool {
        if self.cr0 & CR0_EVENTQEN == 0 || (self.gerror ^ self.gerrorn) & GERROR_EVENTQ_ABT_ERR != 0 {
            return false;
        }
        let q = self.eventq_q();
        let (prod, cons) = (self.eventq_prod & Q_INDEX, self.eventq_cons & Q_INDEX);
        if q.full(prod, cons) || q.inconsistent(prod, cons) {
            // Overflow: toggle OVFLG unless an overflow is already pending.
            if (self.eventq_prod ^ self.eventq_cons) & Q_OVFLG == 0 {
                self.eventq_prod ^= Q_OVFLG;
            }
            return false;
        }
        let addr = Self::queue_addr(self.eventq_base, q, 32) + u64::from(q.idx(prod)) * 32;
        if !(0..4).all(|i| mem.contains(addr + i * 8)) {
            // Synchronous abort: PROD does not move.
            self.gerror ^= GERROR_EVENTQ_ABT_ERR;
            return false;
        }
        for (i, w) in ev.raw.iter().enumerate() {
            mem.device_write_u64(addr + i as u64 * 8, *w);
        }
        self.eventq_prod = (self.eventq_prod & Q_OVFLG) | q.inc(prod);
        true
    }

    // -- stream table -------------------------------------------------------------

    fn two_level_table(&self) -> bool {
        self.cfg.two_level && (self.strtab_base_cfg >> 16) & 3 == 1
    }

    /// `STRTAB_BASE_CFG.SPLIT`; reserved values behave as 6 (6.3.25).
    fn split(&self) -> u8 {
        match (self.strtab_base_cfg >> 6) & 0x1f {
            s @ (6 | 8 | 10) => s as u8,
            _ => 6,
        }
    }

    /// Find the STE for `sid`: from the cache, or fetched (and cached).
    /// Returns the STE and whether it was fetched now.
    fn lookup_ste(&mut self, mem: &PhysMem, sid: u32) -> Result<([u64; 8], bool), LookupErr> {
        let sid64 = u64::from(sid);
        let log2 = (self.strtab_base_cfg & 0x3f).min(u32::from(self.cfg.sid_bits));
        if sid64 >> log2 != 0 {
            return Err(LookupErr::BadStreamId);
        }
        if let Some(ste) = self.ste_cache.get(&sid) {
            return Ok((*ste, false));
        }
        let snoop = self.table_snoop();
        let base = self.strtab_base & mask(55, 6);
        let literal_log2 = self.strtab_base_cfg & 0x3f;
        let ste_addr = if self.two_level_table() {
            let split = self.split();
            let l1_bits = (i64::from(literal_log2) - i64::from(split) + 2).max(5) as u32 + 1;
            let l1_base = base & !((1u64 << l1_bits) - 1);
            let l1_idx = (sid64 >> split) as u32;
            let desc = match self.l1_cache.get(&(split, l1_idx)) {
                Some(&d) => d,
                None => {
                    let pa = l1_base + u64::from(l1_idx) * 8;
                    if !mem.contains(pa) {
                        return Err(LookupErr::Fetch(pa));
                    }
                    self.check_clean(mem, pa, 1, snoop, "L1STD");
                    let d = mem.read_u64(pa);
                    self.l1_cache.insert((split, l1_idx), d);
                    d
                }
            };
            // Span [4:0]: 0 invalid, 12..=31 reserved (as 0), and at most
            // SPLIT + 1 (5.1).
            let span = (desc & 0x1f) as u32;
            if span == 0 || span > 11 || span > u32::from(split) + 1 {
                return Err(LookupErr::BadStreamId);
            }
            let l2_idx = sid64 & ((1u64 << split) - 1);
            if l2_idx >= 1u64 << (span - 1) {
                return Err(LookupErr::BadStreamId);
            }
            // L2Ptr [55:6], bits [5 + Span - 1 : 0] treated as zero.
            let l2_base = desc & mask(55, 6) & !((1u64 << (6 + span - 1)) - 1);
            l2_base + l2_idx * 64
        } else {
            // Linear: ADDR[LOG2SIZE + 5 : 0] treated as zero (6.3.24).
            let align_bits = literal_log2 + 6;
            let lin_base = if align_bits >= 64 {
                0
            } else {
                base & !((1u64 << align_bits) - 1)
            };
            lin_base.wrapping_add(sid64 * 64)
        };
        let mut ste = [0u64; 8];
        for (i, w) in ste.iter_mut().enumerate() {
            let pa = ste_addr.wrapping_add(i as u64 * 8);
            if !mem.contains(pa) {
                return Err(LookupErr::Fetch(ste_addr));
            }
            *w = mem.read_u64(pa);
        }
        self.check_clean(mem, ste_addr, 8, snoop, "STE");
        self.ste_cache.insert(sid, ste);
        Ok((ste, true))
    }

    /// Decode an STE (5.2) with the validity rules of 5.2.2 that apply to
    /// this SMMU. `Err` is the reason it is invalid or ILLEGAL (`C_BAD_STE`).
    fn decode_ste(&self, ste: &[u64; 8]) -> Result<SteCfg, &'static str> {
        if ste[0] & 1 == 0 {
            return Err("V == 0");
        }
        match bits(ste[0], 3, 1) {
            0..=3 => return Ok(SteCfg::Abort),
            4 => return Ok(SteCfg::Bypass),
            5 | 7 if !self.cfg.stage1 => return Err("stage 1 enabled but not implemented"),
            5 | 7 => return Err("stage-1 translation is not modelled"),
            _ => {}
        }
        if !self.cfg.stage2 {
            return Err("stage 2 enabled but not implemented");
        }
        let (d1, d2, d3) = (ste[1], ste[2], ste[3]);
        let vmid = bits(d2, 15, 0);
        let t0sz = bits(d2, 37, 32);
        let sl0 = bits(d2, 39, 38);
        let (ir0, or0, sh0) = (bits(d2, 41, 40), bits(d2, 43, 42), bits(d2, 45, 44));
        let tg = bits(d2, 47, 46);
        let ps = ps_bits(bits(d2, 50, 48)).min(self.cfg.oas_bits);
        let aa64 = d2 & (1 << 51) != 0;
        let endi = d2 & (1 << 52) != 0;
        let affd = d2 & (1 << 53) != 0;
        let (hd, ha) = (d2 & (1 << 55) != 0, d2 & (1 << 56) != 0);
        let s2s = d2 & (1 << 57) != 0;
        let s2r = d2 & (1 << 58) != 0;
        let ttb = d3 & mask(51, 4);
        if s2s {
            return Err("S2S == 1 but stalls are not supported (STALL_MODEL == 0b01)");
        }
        if !aa64 {
            return Err("S2AA64 == 0 selects VMSAv8-32, not supported");
        }
        if ha || hd {
            return Err("S2HA/S2HD set without HTTU");
        }
        if tg != 0 {
            return Err("S2TG selects a granule other than 4 KiB");
        }
        if ttb >> ps != 0 || ttb >> 48 != 0 {
            return Err("S2TTB outside the effective S2PS");
        }
        let min_t0sz = 16u64.max(64 - u64::from(self.ias()));
        if t0sz < min_t0sz || t0sz > 39 {
            return Err("S2T0SZ out of range");
        }
        let start_level = match sl0 {
            0 => 2,
            1 => 1,
            2 => 0,
            _ => return Err("S2SL0 reserved for a 4 KiB granule"),
        };
        let regime = Regime::Stage2 {
            ipa_bits: (64 - t0sz) as u8,
            start_level,
            fwb: self.fwb() && d1 & (1 << 25) != 0,
        };
        if regime.validate().is_err() {
            return Err("S2SL0 inconsistent with S2T0SZ");
        }
        if endi {
            return Err("S2ENDI selects big-endian, TTENDIAN is little-endian only");
        }
        if !self.cfg.vmid16 && vmid >> 8 != 0 {
            return Err("S2VMID[15:8] != 0 without VMID16");
        }
        Ok(SteCfg::S2(S2Cfg {
            vmid: vmid as u16,
            regime,
            ttb,
            ps,
            affd,
            record: s2r,
            snoop: snooping(self.cfg.coherent, ir0, or0, sh0, false),
        }))
    }

    /// Violations about a freshly fetched, otherwise usable STE.
    fn ste_warnings(&mut self, sid: u32, ste: &[u64; 8], cfg: &S2Cfg) {
        let s2ps = bits(ste[2], 50, 48) as u8;
        if ps_bits(u64::from(s2ps)) > self.cfg.oas_bits {
            self.violation(SmmuViolation::S2psAboveOas { sid, s2ps });
        }
        let align = (cfg.regime.root_entries() * 8).max(64);
        if cfg.ttb & (align - 1) != 0 {
            self.violation(SmmuViolation::Misaligned {
                what: "S2TTB",
                addr: cfg.ttb,
            });
        }
    }

    // -- DMA ------------------------------------------------------------------------

    /// Event record (7.3): type [7:0], StreamID [63:32]; for translation
    /// faults RnW [35], S2 [39], CLASS [41:40] (IN = 0b10), InputAddr in
    /// word 2, IPA[55:12] or FetchAddr[55:3] in word 3.
    fn event(code: u8, sid: u32, addr: u64, write: bool, fault: Option<(bool, u64)>) -> SmmuEvent {
        let mut raw = [u64::from(code) | (u64::from(sid) << 32), 0, 0, 0];
        let mut stage2 = false;
        if let Some((s2, word3)) = fault {
            stage2 = s2;
            raw[1] = (u64::from(!write) << 35) | (u64::from(s2) << 39) | (0b10 << 40);
            raw[2] = addr;
            raw[3] = word3;
        }
        SmmuEvent {
            code,
            sid,
            addr,
            write,
            stage2,
            raw,
        }
    }

    /// Send a transaction from StreamID `sid` for `addr` through the SMMU.
    pub fn dma(&mut self, mem: &mut PhysMem, sid: u32, addr: u64, dir: DmaDir) -> Result<DmaOk, DmaErr> {
        let write = dir == DmaDir::Write;
        if self.cr0 & CR0_SMMUEN == 0 {
            // Global bypass (3.4, 6.3.14): no events, no caching.
            if self.gbpa & GBPA_ABORT != 0 || addr >> self.cfg.oas_bits != 0 {
                return Err(DmaErr::Abort);
            }
            return Ok(DmaOk {
                pa: addr,
                mem: MemType::AsStage1,
                from_tlb: false,
            });
        }
        match self.translate(mem, sid, addr, write) {
            Ok(ok) => Ok(ok),
            Err(None) => Err(DmaErr::Abort),
            Err(Some(t)) => {
                let recorded = t.record && self.record_event(mem, &t.event);
                Err(DmaErr::Fault {
                    event: t.event,
                    recorded,
                })
            }
        }
    }

    fn translate(&mut self, mem: &PhysMem, sid: u32, addr: u64, write: bool) -> Result<DmaOk, Option<Term>> {
        let (ste, fresh) = match self.lookup_ste(mem, sid) {
            Ok(s) => s,
            Err(LookupErr::BadStreamId) => {
                return Err(Some(Term {
                    event: Self::event(SmmuEvent::C_BAD_STREAMID, sid, addr, write, None),
                    record: self.cr2 & CR2_RECINVSID != 0,
                }))
            }
            Err(LookupErr::Fetch(pa)) => {
                let mut event = Self::event(SmmuEvent::F_STE_FETCH, sid, addr, write, None);
                event.raw[3] = pa & mask(55, 3);
                return Err(Some(Term { event, record: true }));
            }
        };
        let cfg = match self.decode_ste(&ste) {
            Ok(c) => c,
            Err(_) => {
                return Err(Some(Term {
                    event: Self::event(SmmuEvent::C_BAD_STE, sid, addr, write, None),
                    record: true,
                }))
            }
        };
        let stage1_addr_size = |addr: u64| Term {
            event: Self::event(SmmuEvent::F_ADDR_SIZE, sid, addr, write, Some((false, 0))),
            record: true,
        };
        let c = match cfg {
            SteCfg::Abort => return Err(None),
            SteCfg::Bypass => {
                if addr >> self.cfg.oas_bits != 0 {
                    return Err(Some(stage1_addr_size(addr)));
                }
                return Ok(DmaOk {
                    pa: addr,
                    mem: MemType::AsStage1,
                    from_tlb: false,
                });
            }
            SteCfg::S2(c) => c,
        };
        if fresh {
            self.ste_warnings(sid, &ste, &c);
        }
        // Stage 1 bypassed: the input address must fit the IAS (3.4).
        if addr >> self.ias() != 0 {
            return Err(Some(stage1_addr_size(addr)));
        }
        let s2_fault = |code: u8| Term {
            event: Self::event(code, sid, addr, write, Some((true, addr & mask(55, 12)))),
            record: c.record,
        };
        if addr >> c.regime.ia_bits() != 0 {
            return Err(Some(s2_fault(SmmuEvent::F_TRANSLATION)));
        }
        let permitted = |t: &Translation| if write { t.write } else { t.read };
        // TLB lookup.
        if let Some(e) = self
            .tlb
            .iter()
            .find(|e| e.vmid == c.vmid && e.base <= addr && addr - e.base < e.size)
        {
            if !e.t.af && !c.affd {
                return Err(Some(s2_fault(SmmuEvent::F_ACCESS)));
            }
            if !permitted(&e.t) {
                return Err(Some(s2_fault(SmmuEvent::F_PERMISSION)));
            }
            return Ok(DmaOk {
                pa: e.t.oa + (addr - e.base),
                mem: e.t.mem,
                from_tlb: true,
            });
        }
        // Walk.
        let src = WalkSrc {
            mem,
            ps: c.ps,
            check_dirty: !c.snoop,
            abnormal: Cell::new(None),
            dirty: RefCell::new(Vec::new()),
        };
        let res = walk::walk_root_aligned(&src, c.ttb, &c.regime, addr);
        let dirty = src.dirty.take();
        let abnormal = src.abnormal.get();
        for pa in dirty {
            self.violation(SmmuViolation::ReadUncleaned {
                pa,
                what: "S2 descriptor",
            });
        }
        match abnormal {
            Some(WalkAbnormal::Eabt(pa)) => {
                let event = Self::event(SmmuEvent::F_WALK_EABT, sid, addr, write, Some((true, pa & mask(55, 3))));
                // Not a Translation-related fault: S2R does not apply (5.5).
                return Err(Some(Term { event, record: true }));
            }
            Some(WalkAbnormal::AddrSize) => return Err(Some(s2_fault(SmmuEvent::F_ADDR_SIZE))),
            None => {}
        }
        let t = match res {
            Ok(t) => t,
            Err(f) => {
                let code = match f.kind {
                    FaultKind::AddressSize => SmmuEvent::F_ADDR_SIZE,
                    _ => SmmuEvent::F_TRANSLATION,
                };
                return Err(Some(s2_fault(code)));
            }
        };
        if t.oa >> c.ps != 0 {
            return Err(Some(s2_fault(SmmuEvent::F_ADDR_SIZE)));
        }
        if !t.af && !c.affd {
            // An entry that would fault on the Access flag is not cached.
            return Err(Some(s2_fault(SmmuEvent::F_ACCESS)));
        }
        let base = addr & !(t.block_size - 1);
        let mut cached = t;
        cached.oa = t.oa & !(t.block_size - 1);
        self.tlb.push(TlbEntry {
            vmid: c.vmid,
            base,
            size: t.block_size,
            t: cached,
            sid,
        });
        if !permitted(&t) {
            return Err(Some(s2_fault(SmmuEvent::F_PERMISSION)));
        }
        Ok(DmaOk {
            pa: t.oa,
            mem: t.mem,
            from_tlb: false,
        })
    }

    // -- inspection -----------------------------------------------------------------

    /// Look up and decode the live STE for `sid` from memory, without caches
    /// or side effects. `None` if the lookup fails (bad StreamID or fetch
    /// outside memory).
    fn probe_ste(&self, mem: &PhysMem, sid: u32) -> Option<Result<SteCfg, &'static str>> {
        // A copy of the register state with empty caches and attributes that
        // snoop, so that the lookup neither hits stale cache entries nor
        // records violations.
        let mut probe = Smmu::new(SmmuConfig {
            coherent: true,
            ..self.cfg
        });
        probe.cr0 = self.cr0;
        probe.cr1 = 0xd75; // TABLE/QUEUE: WB, WB, inner shareable
        probe.strtab_base = self.strtab_base;
        probe.strtab_base_cfg = self.strtab_base_cfg;
        let (ste, _) = probe.lookup_ste(mem, sid).ok()?;
        Some(probe.decode_ste(&ste))
    }

    fn live_s2(&self, mem: &PhysMem, sid: u32) -> Option<S2Cfg> {
        match self.probe_ste(mem, sid)? {
            Ok(SteCfg::S2(c)) => Some(c),
            _ => None,
        }
    }

    /// Why the STE for `sid` as it is in memory now (not as cached) would be
    /// reported as `C_BAD_STE`: `Some(reason)` if it is invalid or ILLEGAL,
    /// `None` if it is usable or cannot be found. A debugging aid for tests.
    pub fn explain_ste(&self, mem: &PhysMem, sid: u32) -> Option<&'static str> {
        self.probe_ste(mem, sid)?.err()
    }

    /// TLB entries that grant more than a walk of the live tables through the
    /// currently configured STE gives now: read or write permission the live
    /// walk does not give, or a different output address or memory type.
    ///
    /// The "currently configured STE" of an entry is the live (in-memory)
    /// STE of the StreamID that filled it or, if that no longer translates
    /// with the entry's VMID, of any StreamID in the STE cache that does. If
    /// none does, the entry is reported with `live: None` (harmless until
    /// the VMID is used again, but not invalidated). An entry larger than the
    /// live leaves is compared leaf by leaf (up to 4096 steps).
    pub fn stale_entries(&self, mem: &PhysMem) -> Vec<Stale> {
        let mut out = Vec::new();
        let mut live_cfg: HashMap<u32, Option<S2Cfg>> = HashMap::new();
        let mut cached_sids: Vec<u32> = self.ste_cache.keys().copied().collect();
        cached_sids.sort_unstable();
        for e in &self.tlb {
            let grants = |t: &Translation, affd: bool| (t.read && (t.af || affd), t.write && (t.af || affd));
            let (cr, cw) = grants(&e.t, true);
            if !cr && !cw {
                continue;
            }
            let mut cfg = None;
            for sid in std::iter::once(e.sid).chain(cached_sids.iter().copied()) {
                let c = *live_cfg.entry(sid).or_insert_with(|| self.live_s2(mem, sid));
                if let Some(c) = c.filter(|c| c.vmid == e.vmid) {
                    cfg = Some(c);
                    break;
                }
            }
            let Some(c) = cfg else {
                out.push(Stale {
                    vmid: e.vmid,
                    ia: e.base,
                    size: e.size,
                    cached: e.t,
                    live: None,
                });
                continue;
            };
            let src = WalkSrc {
                mem,
                ps: c.ps,
                check_dirty: false,
                abnormal: Cell::new(None),
                dirty: RefCell::new(Vec::new()),
            };
            let mut ia = e.base;
            let end = e.base.saturating_add(e.size);
            for _ in 0..4096 {
                src.abnormal.set(None);
                let live = walk::walk_root_aligned(&src, c.ttb, &c.regime, ia)
                    .ok()
                    .filter(|t| src.abnormal.get().is_none() && t.oa >> c.ps == 0);
                let mut cached = e.t;
                cached.oa = e.t.oa + (ia - e.base);
                let worse = match &live {
                    None => true,
                    Some(l) => {
                        let (lr, lw) = grants(l, c.affd);
                        (cr && !lr) || (cw && !lw) || l.oa != cached.oa || l.mem != cached.mem
                    }
                };
                if worse {
                    out.push(Stale {
                        vmid: e.vmid,
                        ia,
                        size: e.size,
                        cached,
                        live,
                    });
                    break;
                }
                let step = live.map_or(e.size, |l| l.block_size);
                let next = (ia & !(step - 1)).saturating_add(step);
                if next >= end {
                    break;
                }
                ia = next;
            }
        }
        out
    }

    /// Number of entries in the TLB.
    pub fn tlb_len(&self) -> usize {
        self.tlb.len()
    }

    /// Number of STEs in the configuration cache.
    pub fn ste_cache_len(&self) -> usize {
        self.ste_cache.len()
    }

    /// Number of invalidations consumed and waiting for a `CMD_SYNC`.
    pub fn pending_invalidations(&self) -> usize {
        self.pending.len()
    }

    /// Violations recorded so far.
    pub fn violations(&self) -> &[SmmuViolation] {
        &self.violations
    }

    /// Take the violations recorded so far, leaving none.
    pub fn take_violations(&mut self) -> Vec<SmmuViolation> {
        std::mem::take(&mut self.violations)
    }

    /// Command counts since creation or the last [`Smmu::reset_stats`].
    pub fn stats(&self) -> SmmuStats {
        self.stats
    }

    /// Zero the command counts.
    pub fn reset_stats(&mut self) {
        self.stats = SmmuStats::default();
    }
}
