//! SMMUv3 register offsets and fields (IHI 0070, chapter 6), as far as
//! Warden uses them. Offsets are from the SMMU's base; page 1 starts at
//! `PAGE1`.

/// Identification register 0.
pub const IDR0: u64 = 0x00;
/// Identification register 1.
pub const IDR1: u64 = 0x04;
/// Identification register 3.
pub const IDR3: u64 = 0x0c;
/// Identification register 5.
pub const IDR5: u64 = 0x14;
/// Global control 0 (enables).
pub const CR0: u64 = 0x20;
/// Acknowledgement of CR0.
pub const CR0ACK: u64 = 0x24;
/// Global control 1 (table and queue memory attributes).
pub const CR1: u64 = 0x28;
/// Global control 2.
pub const CR2: u64 = 0x2c;
/// Global bypass attribute (what happens while SMMUEN is 0).
pub const GBPA: u64 = 0x44;
/// Interrupt enables.
pub const IRQ_CTRL: u64 = 0x50;
/// Acknowledgement of IRQ_CTRL.
pub const IRQ_CTRLACK: u64 = 0x54;
/// Global errors (active while a bit differs from GERRORN's).
pub const GERROR: u64 = 0x60;
/// Global errors acknowledged.
pub const GERRORN: u64 = 0x64;
/// Stream table base (64-bit).
pub const STRTAB_BASE: u64 = 0x80;
/// Stream table format and size.
pub const STRTAB_BASE_CFG: u64 = 0x88;
/// Command queue base (64-bit).
pub const CMDQ_BASE: u64 = 0x90;
/// Command queue producer index.
pub const CMDQ_PROD: u64 = 0x98;
/// Command queue consumer index (and error code).
pub const CMDQ_CONS: u64 = 0x9c;
/// Event queue base (64-bit).
pub const EVENTQ_BASE: u64 = 0xa0;
/// Start of register page 1.
pub const PAGE1: u64 = 0x1_0000;
/// Event queue producer index (page 1).
pub const EVENTQ_PROD: u64 = PAGE1 + 0xa8;
/// Event queue consumer index (page 1).
pub const EVENTQ_CONS: u64 = PAGE1 + 0xac;
/// Size of the register frame (two 64 KiB pages).
pub const FRAME_SIZE: u64 = 2 * PAGE1;

/// IDR0 fields.
pub mod idr0 {
    /// Stage-2 translation supported.
    pub const S2P: u32 = 1 << 0;
    /// Stage-1 translation supported.
    pub const S1P: u32 = 1 << 1;
    /// Translation table formats, bits \[3:2\]: 0b10 AArch64, 0b11 both.
    pub const TTF_SHIFT: u32 = 2;
    /// Coherent access to tables, queues and structures.
    pub const COHACC: u32 = 1 << 4;
    /// Broadcast TLB maintenance.
    pub const BTM: u32 = 1 << 5;
    /// 16-bit VMIDs.
    pub const VMID16: u32 = 1 << 18;
    /// Translation table endianness, bits \[22:21\]: 0b11 big-endian only.
    pub const TTENDIAN_SHIFT: u32 = 21;
    /// Stream table levels, bits \[28:27\]: 0b00 linear only, 0b01 2-level.
    pub const ST_LEVEL_SHIFT: u32 = 27;
}

/// IDR1 fields.
pub mod idr1 {
    /// Stream ID size in bits, \[5:0\].
    pub const SIDSIZE_MASK: u32 = 0x3f;
    /// Event queue maximum log2 size, \[20:16\].
    pub const EVENTQS_SHIFT: u32 = 16;
    /// Command queue maximum log2 size, \[25:21\].
    pub const CMDQS_SHIFT: u32 = 21;
    /// Queue base addresses are fixed by the implementation.
    pub const QUEUES_PRESET: u32 = 1 << 29;
    /// Stream table base is fixed by the implementation.
    pub const TABLES_PRESET: u32 = 1 << 30;
}

/// IDR3: range-based invalidation supported.
pub const IDR3_RIL: u32 = 1 << 10;

/// IDR5 fields.
pub mod idr5 {
    /// Output address size encoding, \[2:0\].
    pub const OAS_MASK: u32 = 0x7;
    /// 4 KiB translation granule supported.
    pub const GRAN4K: u32 = 1 << 4;
}

/// CR0 fields (mirrored in CR0ACK).
pub mod cr0 {
    /// Translation enabled.
    pub const SMMUEN: u32 = 1 << 0;
    /// Event queue enabled.
    pub const EVENTQEN: u32 = 1 << 2;
    /// Command queue enabled.
    pub const CMDQEN: u32 = 1 << 3;
}

/// CR1 fields: cacheability (0 non-cacheable, 1 write-back) and
/// shareability (2 outer, 3 inner) of queue and table accesses.
pub mod cr1 {
    /// Queue inner cacheability, \[1:0\].
    pub const QUEUE_IC_SHIFT: u32 = 0;
    /// Queue outer cacheability, \[3:2\].
    pub const QUEUE_OC_SHIFT: u32 = 2;
    /// Queue shareability, \[5:4\].
    pub const QUEUE_SH_SHIFT: u32 = 4;
    /// Table inner cacheability, \[7:6\].
    pub const TABLE_IC_SHIFT: u32 = 6;
    /// Table outer cacheability, \[9:8\].
    pub const TABLE_OC_SHIFT: u32 = 8;
    /// Table shareability, \[11:10\].
    pub const TABLE_SH_SHIFT: u32 = 10;
}

/// CR2: record C_BAD_STREAMID events for out-of-range stream IDs.
pub const CR2_RECINVSID: u32 = 1 << 1;

/// GBPA fields.
pub mod gbpa {
    /// Write 1 with the new value; reads 1 until the update took effect.
    pub const UPDATE: u32 = 1 << 31;
    /// Abort all incoming transactions while SMMUEN is 0.
    pub const ABORT: u32 = 1 << 20;
}

/// GERROR/GERRORN: command queue error.
pub const GERROR_CMDQ_ERR: u32 = 1 << 0;

/// Read-allocate hint in a base register (bit 62).
pub const BASE_RA: u64 = 1 << 62;
/// Write-allocate hint in the event queue base register (bit 62).
pub const BASE_WA: u64 = 1 << 62;
/// Address field of the base registers, bits \[51:5\] (queues) and
/// \[51:6\] (stream table) - both covered by this mask on aligned bases.
pub const BASE_ADDR_MASK: u64 = ((1 << 52) - 1) & !0x1f;

/// STRTAB_BASE_CFG fields.
pub mod strtab_cfg {
    /// log2 of the number of stream IDs covered, \[5:0\].
    pub const LOG2SIZE_SHIFT: u32 = 0;
    /// 2-level split point, \[10:6\].
    pub const SPLIT_SHIFT: u32 = 6;
    /// Format, \[17:16\]: 0 linear, 1 2-level.
    pub const FMT_SHIFT: u32 = 16;
    /// 2-level format.
    pub const FMT_2LVL: u32 = 1;
}

/// Queue index fields: CMDQ_CONS.ERR, \[30:24\].
pub const CONS_ERR_SHIFT: u32 = 24;
/// Overflow flag in EVENTQ_PROD (toggles) and its acknowledgement in
/// EVENTQ_CONS.
pub const Q_OVF: u32 = 1 << 31;
