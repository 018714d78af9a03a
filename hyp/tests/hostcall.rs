//! The hypercall dispatcher (warden_hyp::hostcall) on the host: every
//! function of the ABI, with hostile arguments, against warden-memprotect
//! over tables in memory. A refused call must change no page's state and
//! no donation; unknown functions are SMCCC NOT_SUPPORTED; nothing panics.

use std::cell::Cell;

use warden_abi::{self as abi, counter, page_state, Errno};
use warden_hyp::hostcall::{CallRegs, Hostcalls, RetRegs, MAX_DONATIONS};
use warden_hyp::sync::TicketLock;
use warden_memprotect::{HostAccess, MemProtect, OwnershipHook, PageMeta, Platform, Poison, RamMap, Region};
use warden_pgtable::testutil::{ArenaMm, CountingTlb};
use warden_pgtable::{Attrs, MapPolicy, MemType, PageTable, Perms, Regime};

struct NoHook;
impl OwnershipHook for NoHook {
    fn host_ownership_changed(&mut self, _: u64, _: u64, _: HostAccess) {}
}
struct NoPoison;
impl Poison for NoPoison {
    fn poison(&mut self, _: u64) {}
}

struct Test;
impl Platform for Test {
    type Lock = TicketLock;
    type HostMm = ArenaMm;
    type HostTlb = CountingTlb;
    type HypMm = ArenaMm;
    type HypTlb = CountingTlb;
    type Hook = NoHook;
    type GuestMm = ArenaMm;
    type GuestTlb = CountingTlb;
    type Poison = NoPoison;
}

const RAM: Region = Region {
    base: 0x4000_0000,
    size: 8 << 20,
};
const RAM_PFN: u64 = RAM.base >> 12;
const RAM_PAGES: u64 = RAM.size >> 12;
/// Pages Warden claims at boot (its image), at the start of RAM.
const HYP_PAGES: u64 = 16;
const PA_BITS: u8 = 40;

fn machine() -> MemProtect<'static, Test> {
    let meta: &'static [PageMeta] = Vec::leak((0..RAM_PAGES).map(|_| PageMeta::default()).collect());
    let ram = RamMap::new(&[RAM], meta, PA_BITS as u32).unwrap();
    let host = PageTable::new(
        Regime::Stage2 {
            ipa_bits: PA_BITS,
            vmid: 0,
            fwb: false,
        },
        ArenaMm::new(0x10_0000_0000, 512),
        CountingTlb::default(),
    )
    .unwrap();
    let mut hyp = PageTable::new(
        Regime::El2Stage1 { va_bits: PA_BITS + 1 },
        ArenaMm::new(0x20_0000_0000, 512),
        CountingTlb::default(),
    )
    .unwrap();
    hyp.map(
        RAM.base,
        HYP_PAGES << 12,
        RAM.base,
        Attrs::new(Perms::RW, MemType::NormalWb),
        MapPolicy::PAGES,
    )
    .unwrap();
    let mp = MemProtect::new(ram, host, hyp, NoHook, NoPoison);
    mp.hyp_claim_boot(RAM_PFN, HYP_PAGES).unwrap();
    mp
}

fn call(hc: &Hostcalls<TicketLock>, mp: &MemProtect<'_, Test>, x: CallRegs) -> RetRegs {
    hc.handle(mp, &x, || {})
}

fn state(mp: &MemProtect<'_, Test>) -> Vec<(u64, u16)> {
    (RAM_PFN..RAM_PFN + RAM_PAGES)
        .map(|p| (mp.host_state(p).unwrap() as u64, mp.pins(p).unwrap()))
        .collect()
}

fn errno(r: RetRegs) -> i64 {
    assert_eq!(r[0], 0, "SMCCC status of an implemented function");
    r[1] as i64
}

#[test]
fn discovery() {
    let (mp, hc) = (machine(), Hostcalls::<TicketLock>::new());
    let uid = call(&hc, &mp, [abi::FN_CALL_UID as u64, 0, 0, 0, 0, 0, 0]);
    assert_eq!(uid, abi::CALL_UID.map(|w| w as u64));
    let v = call(&hc, &mp, [abi::FN_VERSION as u64, 0, 0, 0, 0, 0, 0]);
    assert_eq!((v[0], v[1], v[2]), (0, 0, 1 << 16));
    for &f in abi::FUNCTIONS {
        assert_eq!(
            errno(call(&hc, &mp, [abi::FN_FEATURES as u64, f as u64, 0, 0, 0, 0, 0])),
            0
        );
    }
    for f in [0xC600_0FFF, 0x8400_0000, u64::MAX, 1 << 32 | abi::FN_VERSION as u64] {
        assert_eq!(
            errno(call(&hc, &mp, [abi::FN_FEATURES as u64, f, 0, 0, 0, 0, 0])),
            Errno::OpNotSupp as i64
        );
    }
    // SMCCC: only W0 names the function.
    let v = call(
        &hc,
        &mp,
        [0xdead_0000_0000_0000 | abi::FN_VERSION as u64, 0, 0, 0, 0, 0, 0],
    );
    assert_eq!(v[2], 1 << 16);
    // Unknown functions: NOT_SUPPORTED and nothing else.
    for f in [0u64, 0xC600_0006, 0xC600_FFFF, 0x8600_0000, 0xC400_0003, 0xffff_ffff] {
        assert_eq!(call(&hc, &mp, [f, 1, 2, 3, 4, 5, 6]), [u64::MAX, 0, 0, 0]);
    }
}

#[test]
fn share_unshare_and_page_state() {
    let (mp, hc) = (machine(), Hostcalls::<TicketLock>::new());
    let pfn = RAM_PFN + 100;
    let st = |pfn: u64| call(&hc, &mp, [abi::FN_HOST_PAGE_STATE as u64, pfn, 0, 0, 0, 0, 0]);
    assert_eq!(st(pfn)[..3], [0, 0, page_state::OWNED]);
    assert_eq!(
        errno(call(&hc, &mp, [abi::FN_HOST_SHARE_HYP as u64, pfn, 0, 0, 0, 0, 0])),
        0
    );
    assert_eq!(st(pfn)[2], page_state::SHARED_OWNED);
    assert_eq!(
        errno(call(&hc, &mp, [abi::FN_HOST_SHARE_HYP as u64, pfn, 0, 0, 0, 0, 0])),
        Errno::Perm as i64,
        "double share"
    );
    assert_eq!(
        errno(call(&hc, &mp, [abi::FN_HOST_UNSHARE_HYP as u64, pfn, 0, 0, 0, 0, 0])),
        0
    );
    assert_eq!(
        errno(call(&hc, &mp, [abi::FN_HOST_UNSHARE_HYP as u64, pfn, 0, 0, 0, 0, 0])),
        Errno::Perm as i64
    );
    assert_eq!(st(RAM_PFN)[2], page_state::NO_PAGE, "Warden's image");
    assert_eq!(
        errno(call(&hc, &mp, [abi::FN_HOST_SHARE_HYP as u64, RAM_PFN, 0, 0, 0, 0, 0])),
        Errno::Perm as i64
    );
    assert_eq!(errno(st(0x9000)), Errno::NoEnt as i64, "MMIO has no page state");
    assert_eq!(errno(st(u64::MAX)), Errno::Inval as i64);
    assert_eq!(errno(st(1 << (PA_BITS - 12))), Errno::Inval as i64);
}

#[test]
fn donations_come_back_only_exactly() {
    let (mp, hc) = (machine(), Hostcalls::<TicketLock>::new());
    let pfn = RAM_PFN + 200;
    let donate = |pfn: u64, nr: u64| errno(call(&hc, &mp, [abi::FN_HOST_DONATE_HYP as u64, pfn, nr, 0, 0, 0, 0]));
    let reclaim = |pfn: u64, nr: u64| errno(call(&hc, &mp, [abi::FN_HOST_RECLAIM_HYP as u64, pfn, nr, 0, 0, 0, 0]));
    assert_eq!(donate(pfn, 4), 0);
    let before = state(&mp);
    for (p, n) in [
        (pfn, 3),
        (pfn, 5),
        (pfn + 1, 3),
        (pfn + 1, 1),
        (RAM_PFN, HYP_PAGES),
        (RAM_PFN, 1),
    ] {
        assert_eq!(reclaim(p, n), Errno::Perm as i64, "({p:#x}, {n})");
        assert_eq!(state(&mp), before);
    }
    assert_eq!(donate(pfn, 1), Errno::Perm as i64, "already donated");
    assert_eq!(reclaim(pfn, 4), 0);
    assert_eq!(reclaim(pfn, 4), Errno::Perm as i64, "only once");
    assert_eq!(mp.host_state(pfn), Some(warden_memprotect::PageState::Owned));

    // A full list refuses before anything changes.
    for i in 0..MAX_DONATIONS as u64 {
        assert_eq!(donate(pfn + i, 1), 0);
    }
    let before = state(&mp);
    assert_eq!(donate(pfn + 100, 1), Errno::NoMem as i64);
    assert_eq!(state(&mp), before);
    assert_eq!(reclaim(pfn + 5, 1), 0);
    assert_eq!(donate(pfn + 100, 1), 0, "a freed slot is reused");
}

#[test]
fn guest_calls_without_guests_and_counters() {
    let (mp, hc) = (machine(), Hostcalls::<TicketLock>::new());
    let pfn = RAM_PFN + 300;
    let share = |h: u64, prot: u64| errno(call(&hc, &mp, [abi::FN_HOST_SHARE_GUEST as u64, h, pfn, 0, 1, prot, 0]));
    assert_eq!(share(1, abi::prot::R), Errno::NoEnt as i64);
    assert_eq!(
        share(1 << 16 | 1, abi::prot::R),
        Errno::NoEnt as i64,
        "a handle is 16 bits"
    );
    assert_eq!(share(1, 8), Errno::Inval as i64, "undefined permission bits first");
    for f in [
        abi::FN_HOST_UNSHARE_GUEST,
        abi::FN_HOST_RELAX_PERMS_GUEST,
        abi::FN_HOST_WRPROTECT_GUEST,
        abi::FN_HOST_TEST_CLEAR_YOUNG_GUEST,
        abi::FN_HOST_MKYOUNG_GUEST,
    ] {
        assert_eq!(errno(call(&hc, &mp, [f as u64, 1, 0, 1, 0, 0, 0])), Errno::NoEnt as i64);
    }
    let drained = Cell::new(0);
    let read = |which: u64| {
        hc.handle(&mp, &[abi::FN_COUNTER as u64, which, 0, 0, 0, 0, 0], || {
            drained.set(drained.get() + 1)
        })
    };
    hc.counters.add(counter::SMMU_FAULTS, 3);
    assert_eq!(read(counter::SMMU_FAULTS)[..3], [0, 0, 3]);
    assert_eq!(drained.get(), 1, "events are drained before a counter is read");
    let calls = read(counter::HYPERCALLS)[2];
    assert!(calls >= 9, "every call counts: {calls}");
    assert_eq!(errno(read(counter::COUNT)), Errno::Inval as i64);
    assert_eq!(errno(read(u64::MAX)), Errno::Inval as i64);
}

/// Random calls, mostly with hostile arguments: each either succeeds or
/// leaves every page's state as it was; the dispatcher never panics.
#[test]
fn hostile_calls_change_nothing_when_refused() {
    let (mp, hc) = (machine(), Hostcalls::<TicketLock>::new());
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut successes = 0;
    for _ in 0..4000 {
        let f = match rand() % 4 {
            0 => rand() as u32,
            _ => abi::FUNCTIONS[(rand() % abi::FUNCTIONS.len() as u64) as usize],
        };
        let mut arg = || match rand() % 6 {
            0 => rand(),
            1 => RAM_PFN + rand() % (RAM_PAGES + 8),
            2 => rand() % 4,
            3 => u64::MAX - rand() % 3,
            4 => 1 << (rand() % 64),
            _ => rand() % 600,
        };
        let x = [f as u64, arg(), arg(), arg(), arg(), arg(), arg()];
        let before = state(&mp);
        let r = call(&hc, &mp, x);
        let implemented = f == abi::FN_CALL_UID || abi::FUNCTIONS.contains(&f);
        if !implemented {
            assert_eq!(r, [u64::MAX, 0, 0, 0], "{x:x?}");
        }
        let changes = [
            abi::FN_HOST_SHARE_HYP,
            abi::FN_HOST_UNSHARE_HYP,
            abi::FN_HOST_DONATE_HYP,
            abi::FN_HOST_RECLAIM_HYP,
        ];
        if r[1] != 0 || !changes.contains(&f) {
            assert_eq!(state(&mp), before, "{x:x?} -> {r:x?} changed state");
        } else {
            successes += 1;
        }
        // Warden's own pages never leave it.
        assert!((RAM_PFN..RAM_PFN + HYP_PAGES).all(|p| mp.hyp_state(p) == Some(warden_memprotect::PageState::Owned)));
    }
    assert!(
        successes > 10,
        "the generator must also reach successful calls ({successes})"
    );
}
