//! The event queue: fault records the SMMU writes into Warden's memory,
//! decoded into typed events for the log and the tests.

use crate::hw::{Mmio, SmmuMem};
use crate::regs;

/// Bytes per event record.
pub const EVENT_BYTES: u64 = 32;

/// What kind of event (IHI 0070, 7.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// C_BAD_STREAMID: a stream ID beyond the stream table.
    BadStreamId,
    /// C_BAD_STE: an invalid or malformed stream table entry.
    BadSte,
    /// F_WALK_EABT: an external abort on a table walk.
    WalkAbort,
    /// F_TRANSLATION: no translation for the address.
    Translation,
    /// F_ADDR_SIZE: an address beyond the configured size.
    AddressSize,
    /// F_ACCESS: the access flag was clear.
    Access,
    /// F_PERMISSION: the translation does not permit the access.
    Permission,
    /// Anything else, by its type code.
    Other(u8),
}

impl EventKind {
    /// Decode an event type code.
    pub const fn of(code: u8) -> EventKind {
        match code {
            0x02 => EventKind::BadStreamId,
            0x04 => EventKind::BadSte,
            0x0b => EventKind::WalkAbort,
            0x10 => EventKind::Translation,
            0x11 => EventKind::AddressSize,
            0x12 => EventKind::Access,
            0x13 => EventKind::Permission,
            c => EventKind::Other(c),
        }
    }

    /// Whether it is a translation fault record (F_*), whose address and
    /// direction fields are meaningful.
    pub const fn is_fault(self) -> bool {
        matches!(
            self,
            EventKind::WalkAbort
                | EventKind::Translation
                | EventKind::AddressSize
                | EventKind::Access
                | EventKind::Permission
        )
    }
}

/// One decoded event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// Kind.
    pub kind: EventKind,
    /// Stream that caused it.
    pub sid: u32,
    /// Input address of the faulting access (fault records only).
    pub addr: u64,
    /// The access was a write (fault records only).
    pub write: bool,
    /// The fault arose at stage 2 (fault records only).
    pub stage2: bool,
    /// The raw record.
    pub raw: [u64; 4],
}

impl Event {
    /// Decode a 32-byte record: type \[7:0\] and StreamID \[63:32\] of the
    /// first word; for faults RnW (bit 35) and S2 (bit 39) of the second
    /// and the input address in the third.
    pub fn decode(raw: [u64; 4]) -> Event {
        let kind = EventKind::of(raw[0] as u8);
        let fault = kind.is_fault();
        Event {
            kind,
            sid: (raw[0] >> 32) as u32,
            addr: if fault { raw[2] } else { 0 },
            write: fault && raw[1] & (1 << 35) == 0,
            stage2: fault && raw[1] & (1 << 39) != 0,
            raw,
        }
    }
}

/// Driver state of the event queue.
#[derive(Debug)]
pub struct EventQueue {
    base: u64,
    log2: u8,
    cons: u32,
    coherent: bool,
    /// Events lost to a full queue, as far as the overflow flag tells.
    pub overflows: u32,
}

impl EventQueue {
    /// A queue of `1 << log2` records at `base` (zeroed, aligned).
    pub fn new(base: u64, log2: u8, coherent: bool) -> Self {
        EventQueue {
            base,
            log2,
            cons: 0,
            coherent,
            overflows: 0,
        }
    }

    /// The EVENTQ_BASE value: address, size, write-allocate when coherent.
    pub fn base_reg(&self) -> u64 {
        let wa = if self.coherent { regs::BASE_WA } else { 0 };
        wa | (self.base & regs::BASE_ADDR_MASK) | u64::from(self.log2)
    }

    /// Hand every pending event to `f`, free the records, acknowledge an
    /// overflow. Reads at most one queue's worth, whatever the producer
    /// index claims. Returns how many were handed over.
    pub fn drain<R: Mmio, D: SmmuMem>(&mut self, regs: &mut R, mem: &mut D, mut f: impl FnMut(Event)) -> usize {
        let mask = (2u32 << self.log2) - 1;
        let raw_prod = regs.read32(regs::EVENTQ_PROD);
        let prod = raw_prod & mask;
        let mut n = 0;
        while self.cons != prod && n < 1 << self.log2 {
            let slot = self.base + u64::from(self.cons & ((1 << self.log2) - 1)) * EVENT_BYTES;
            if !self.coherent {
                mem.invalidate(slot, EVENT_BYTES);
            }
            let raw = core::array::from_fn(|i| mem.read64(slot + 8 * i as u64));
            f(Event::decode(raw));
            self.cons = (self.cons + 1) & mask;
            n += 1;
        }
        let ovf = raw_prod & regs::Q_OVF;
        let acked = regs.read32(regs::EVENTQ_CONS) & regs::Q_OVF;
        if ovf != acked {
            self.overflows += 1;
        }
        regs.write32(regs::EVENTQ_CONS, self.cons | ovf);
        n as usize
    }
}
