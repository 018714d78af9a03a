//! The differential harness behind the fuzz target (feature `spec`): bytes
//! decode into a sequence of transitions and host aborts with hostile
//! arguments, which run on the implementation (tables in an arena) and on
//! the executable spec; any difference in results, hook calls or final
//! state panics.

extern crate alloc;

use alloc::vec::Vec;

use warden_pgtable::testutil::{ArenaMm, CountingTlb};
use warden_pgtable::{PageTable, Regime};

use crate::protect::{MemProtect, Platform};
use crate::ram::{PageMeta, RamMap};
use crate::spec::Spec;
use crate::types::{AbortOutcome, Error, HostAccess, OwnershipHook, Poison, Region};

/// RAM of the harness: two regions with MMIO between and around them.
pub const RAM: [Region; 2] = [
    Region {
        base: 0x4000_0000,
        size: 32 << 20,
    },
    Region {
        base: 0x8000_0000,
        size: 8 << 20,
    },
];

struct Hook(Vec<(u64, u64, HostAccess)>);

impl OwnershipHook for Hook {
    fn host_ownership_changed(&mut self, base: u64, size: u64, access: HostAccess) {
        self.0.push((base, size, access));
    }
}

/// Records the pages poisoned, in order.
struct Poisoned(Vec<u64>);

impl Poison for Poisoned {
    fn poison(&mut self, pa: u64) {
        self.0.push(pa >> 12);
    }
}

struct Arena;

impl Platform for Arena {
    type Lock = spin::mutex::SpinMutex<()>;
    type HostMm = ArenaMm;
    type HostTlb = CountingTlb;
    type HypMm = ArenaMm;
    type HypTlb = CountingTlb;
    type Hook = Hook;
    type GuestMm = ArenaMm;
    type GuestTlb = CountingTlb;
    type Poison = Poisoned;
}

/// One call the harnesses and tests make, on either side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `host_share_hyp(pfn)`.
    ShareHyp(u64),
    /// `host_unshare_hyp(pfn)`.
    UnshareHyp(u64),
    /// `hyp_pin_shared(pfn, nr)`.
    Pin(u64, u64),
    /// `hyp_unpin_shared(pfn, nr)`.
    Unpin(u64, u64),
    /// `host_donate_hyp(pfn, nr)`.
    DonateHyp(u64, u64),
    /// `hyp_donate_host(pfn, nr)`.
    HypDonateHost(u64, u64),
    /// `host_donate_hyp_mmio(pfn, nr)`.
    DonateMmio(u64, u64),
    /// `hyp_donate_host_mmio(pfn, nr)`.
    ReclaimMmio(u64, u64),
    /// `host_abort(pa)`.
    Abort(u64),
}

/// What a call returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A transition's result.
    Done(Result<(), Error>),
    /// A host abort's outcome (`None`: the implementation ran out of table
    /// pages, which the spec does not model).
    Abort(Option<AbortOutcome>),
}

/// Make `op` on the implementation.
pub fn run<P: Platform>(mp: &MemProtect<'_, P>, op: Op) -> Outcome {
    match op {
        Op::ShareHyp(p) => Outcome::Done(mp.host_share_hyp(p)),
        Op::UnshareHyp(p) => Outcome::Done(mp.host_unshare_hyp(p)),
        Op::Pin(p, n) => Outcome::Done(mp.hyp_pin_shared(p, n)),
        Op::Unpin(p, n) => Outcome::Done(mp.hyp_unpin_shared(p, n)),
        Op::DonateHyp(p, n) => Outcome::Done(mp.host_donate_hyp(p, n)),
        Op::HypDonateHost(p, n) => Outcome::Done(mp.hyp_donate_host(p, n)),
        Op::DonateMmio(p, n) => Outcome::Done(mp.host_donate_hyp_mmio(p, n)),
        Op::ReclaimMmio(p, n) => Outcome::Done(mp.hyp_donate_host_mmio(p, n)),
        Op::Abort(pa) => Outcome::Abort(mp.host_abort(pa).ok()),
    }
}

/// Make `op` on the spec.
pub fn replay(s: &mut Spec, op: Op) -> Outcome {
    match op {
        Op::ShareHyp(p) => Outcome::Done(s.host_share_hyp(p)),
        Op::UnshareHyp(p) => Outcome::Done(s.host_unshare_hyp(p)),
        Op::Pin(p, n) => Outcome::Done(s.hyp_pin_shared(p, n)),
        Op::Unpin(p, n) => Outcome::Done(s.hyp_unpin_shared(p, n)),
        Op::DonateHyp(p, n) => Outcome::Done(s.host_donate_hyp(p, n)),
        Op::HypDonateHost(p, n) => Outcome::Done(s.hyp_donate_host(p, n)),
        Op::DonateMmio(p, n) => Outcome::Done(s.host_donate_hyp_mmio(p, n)),
        Op::ReclaimMmio(p, n) => Outcome::Done(s.hyp_donate_host_mmio(p, n)),
        Op::Abort(pa) => Outcome::Abort(Some(s.host_abort(pa))),
    }
}

/// Decode one 10-byte step of fuzzer input.
fn decode(step: &[u8]) -> Op {
    let (p, n) = (pfn(&step[1..]), nr(step[9]));
    match step[0] % 9 {
        0 => Op::ShareHyp(p),
        1 => Op::UnshareHyp(p),
        2 => Op::Pin(p, n),
        3 => Op::Unpin(p, n),
        4 => Op::DonateHyp(p, n),
        5 => Op::HypDonateHost(p, n),
        6 => Op::DonateMmio(p, n),
        7 => Op::ReclaimMmio(p, n),
        _ => Op::Abort(p.wrapping_shl(12) | step[9] as u64),
    }
}

/// Bytes to page numbers: mostly a few hot RAM pages, region edges and
/// MMIO, sometimes anything.
fn pfn(b: &[u8]) -> u64 {
    let r0 = RAM[0].base >> 12;
    let r1_end = RAM[1].end() >> 12;
    match b[0] % 8 {
        0..=3 => r0 + (b[1] % 8) as u64,
        4 => (RAM[0].end() >> 12) - 2 + (b[1] % 4) as u64,
        5 => r1_end - 2 + (b[1] % 4) as u64,
        6 => (0x0905_0000 >> 12) + (b[1] % 4) as u64,
        _ => u64::from_le_bytes([b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8]]),
    }
}

fn nr(b: u8) -> u64 {
    match b % 16 {
        0 => 0,
        1 => u64::MAX,
        2 => 600,
        n => (n % 4) as u64,
    }
}

/// Run the sequence `data` encodes (10 bytes per step) on both sides and
/// panic on the first difference.
pub fn run_bytes(data: &[u8]) {
    let n = RamMap::pages_of(&RAM);
    let meta: Vec<PageMeta> = (0..n).map(|_| PageMeta::default()).collect();
    let ram = RamMap::new(&RAM, &meta, 48).expect("harness RAM");
    let s2 = Regime::Stage2 {
        ipa_bits: 48,
        vmid: 0,
        fwb: true,
    };
    let Ok(host_s2) = PageTable::new(s2, ArenaMm::new(0x10_0000_0000, 2048), CountingTlb::default()) else {
        unreachable!("a fresh arena has a root page")
    };
    let s1 = Regime::El2Stage1 { va_bits: 48 };
    let Ok(hyp_s1) = PageTable::new(s1, ArenaMm::new(0x20_0000_0000, 2048), CountingTlb::default()) else {
        unreachable!("a fresh arena has a root page")
    };
    let mp: MemProtect<'_, Arena> = MemProtect::new(ram, host_s2, hyp_s1, Hook(Vec::new()), Poisoned(Vec::new()));
    let mut spec = Spec::new(&RAM, 48);
    for step in data.chunks_exact(10) {
        let op = decode(step);
        assert_eq!(run(&mp, op), replay(&mut spec, op), "{op:?}");
        let events = mp.with_host(|h| core::mem::take(&mut h.hook.0));
        assert_eq!(events, spec.take_hook_events(), "hook calls of {op:?}");
    }
    for pfn in spec.touched_pfns() {
        if let Some(page) = spec.is_ram(pfn).then(|| spec.page(pfn)) {
            assert_eq!(mp.host_state(pfn), Some(page.host), "host state of {pfn:#x}");
            assert_eq!(mp.hyp_state(pfn), Some(page.hyp), "hyp state of {pfn:#x}");
            assert_eq!(mp.pins(pfn).map(u32::from), Some(page.pins), "pins of {pfn:#x}");
        }
        let annotated = mp.host_s2_entry(pfn).and_then(|(d, _)| d.annotation()).map(|a| a.owner);
        assert_eq!(
            annotated,
            spec.annotation(pfn).map(|a| a.owner),
            "annotation of {pfn:#x}"
        );
        assert_eq!(mp.hyp_mapped(pfn), spec.hyp_mapped(pfn), "EL2 mapping of {pfn:#x}");
    }
}
