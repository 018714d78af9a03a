//! Multi-threaded stress with the real lock discipline: four threads issue
//! transitions and host aborts on overlapping pages through ticket locks.
//! No deadlock (a watchdog fails the test), and the outcome of every call
//! and the final state agree with the spec replayed in the order the calls
//! took the host lock.
//!
//! Every operation takes the host lock first and holds it to the end, so
//! the order in which calls acquired it is a serialization of the run. The
//! test's lock wrapper numbers each call when it takes its first lock.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Barrier, Mutex as StdMutex};
use std::time::Duration;

use lock_api::{GuardSend, RawMutex};
use warden_memprotect::harness::{assert_guests_agree, replay, run, GuestTables, Op, Outcome};
use warden_memprotect::spec::Spec;
use warden_memprotect::*;
use warden_pgtable::testutil::{ArenaMm, CountingTlb};
use warden_pgtable::{PageTable, Regime};

static NEXT_TICKET: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Locks this thread holds.
    static HELD: Cell<u32> = const { Cell::new(0) };
    /// The ticket of this thread's current call.
    static TICKET: Cell<u64> = const { Cell::new(0) };
}

/// The ticket lock of the test: waiters yield their CPU, since four
/// threads share two cores here (at EL2 each CPU is its own).
type Ticket = spin::mutex::TicketMutex<(), spin::relax::Yield>;

/// A ticket lock that numbers each call when it takes its first lock.
struct Recorded(Ticket);

impl Recorded {
    fn took(&self) {
        HELD.with(|h| {
            if h.get() == 0 {
                TICKET.with(|t| t.set(NEXT_TICKET.fetch_add(1, Ordering::SeqCst)));
            }
            h.set(h.get() + 1);
        });
    }
}

// SAFETY: mutual exclusion is entirely the inner ticket lock's; the wrapper
// only keeps thread-local counts beside it.
unsafe impl RawMutex for Recorded {
    #[allow(clippy::declare_interior_mutable_const)]
    const INIT: Self = Recorded(<Ticket as RawMutex>::INIT);
    type GuardMarker = GuardSend;

    fn lock(&self) {
        RawMutex::lock(&self.0);
        self.took();
    }

    fn try_lock(&self) -> bool {
        let ok = RawMutex::try_lock(&self.0);
        if ok {
            self.took();
        }
        ok
    }

    unsafe fn unlock(&self) {
        HELD.with(|h| h.set(h.get() - 1));
        // SAFETY: our caller holds this lock (RawMutex::unlock's contract),
        // so it holds the inner one.
        unsafe { RawMutex::unlock(&self.0) };
    }
}

type Events = Arc<StdMutex<Vec<(u64, u64, HostAccess)>>>;

struct Hook(Events);

impl OwnershipHook for Hook {
    fn host_ownership_changed(&mut self, base: u64, size: u64, access: HostAccess) {
        self.0.lock().unwrap().push((base, size, access));
    }
}

/// Poisoned pages, recorded.
struct Poisoned(Arc<StdMutex<Vec<u64>>>);

impl Poison for Poisoned {
    fn poison(&mut self, pa: u64) {
        self.0.lock().unwrap().push(pa >> 12);
    }
}

struct Threaded;

impl Platform for Threaded {
    type Lock = Recorded;
    type HostMm = ArenaMm;
    type HostTlb = CountingTlb;
    type HypMm = ArenaMm;
    type HypTlb = CountingTlb;
    type Hook = Hook;
    type GuestMm = ArenaMm;
    type GuestTlb = CountingTlb;
    type Poison = Poisoned;
}

/// Each thread makes its guest tables in arenas of its own.
struct Tables(u64);

impl GuestTables<Threaded> for Tables {
    fn new_s2(&mut self, ipa_bits: u8, vmid: u16) -> PageTable<ArenaMm, CountingTlb> {
        self.0 += 1 << 24;
        let s2 = Regime::Stage2 {
            ipa_bits,
            vmid,
            fwb: true,
        };
        PageTable::new(s2, ArenaMm::new(0x40_0000_0000 + self.0, 64), CountingTlb::default()).unwrap()
    }
}

const RAM: [Region; 2] = [
    Region {
        base: 0x4000_0000,
        size: 64 << 20,
    },
    Region {
        base: 0x8000_0000,
        size: 16 << 20,
    },
];
const MMIO: u64 = 0x0905_0000 >> 12;

/// A small xorshift generator: each thread's sequence is reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn op(&mut self) -> Op {
        // Eight hot RAM pages shared by all threads, a few MMIO pages.
        let hot = (RAM[0].base >> 12) + self.next() % 8;
        let mmio = MMIO + self.next() % 3;
        let nr = 1 + self.next() % 3;
        let h = 1 + (self.next() % 2) as Handle;
        let gfn = self.next() % 4;
        match self.next() % 20 {
            10 => Op::InitVm {
                protected: self.next().is_multiple_of(2),
                ipa_bits: 40,
                vmid: 1 + (self.next() % 3) as u16,
                pfn: (RAM[1].base >> 12) + self.next() % 4,
                nr: 1,
            },
            11 => Op::ShareGuest(h, hot, gfn, 1, Perms::RW),
            12 => Op::UnshareGuest(h, gfn, 1),
            13 => Op::DonateGuest(h, hot, gfn),
            14 => Op::GuestShareHost(h, gfn),
            15 => Op::GuestUnshareHost(h, gfn),
            16 => Op::ForceReclaim(hot),
            17 => Op::StartTeardown(h),
            18 => Op::ReclaimGuest(h, gfn),
            19 => Op::FinalizeVm(h),
            0 => Op::ShareHyp(hot),
            1 => Op::UnshareHyp(hot),
            2 => Op::Pin(hot, nr),
            3 => Op::Unpin(hot, nr),
            4 => Op::DonateHyp(hot, nr),
            5 => Op::HypDonateHost(hot, nr),
            6 => Op::DonateMmio(mmio, nr),
            7 => Op::ReclaimMmio(mmio, nr),
            8 => Op::Abort((hot << 12) + self.next() % 4096),
            _ => Op::Abort(mmio << 12),
        }
    }
}

const THREADS: u64 = 4;
const OPS_PER_THREAD: usize = 6_000;

#[test]
fn four_threads_agree_with_the_spec_in_lock_order() {
    let n = RamMap::pages_of(&RAM);
    let meta: &'static [PageMeta] = Box::leak(
        (0..n)
            .map(|_| PageMeta::default())
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    );
    let ram = RamMap::new(&RAM, meta, 48).unwrap();
    let s2 = Regime::Stage2 {
        ipa_bits: 48,
        vmid: 0,
        fwb: true,
    };
    let host_s2 = PageTable::new(s2, ArenaMm::new(0x10_0000_0000, 4096), CountingTlb::default()).unwrap();
    let s1 = Regime::El2Stage1 { va_bits: 48 };
    let hyp_s1 = PageTable::new(s1, ArenaMm::new(0x20_0000_0000, 4096), CountingTlb::default()).unwrap();
    let events = Events::default();
    let poisoned: Arc<StdMutex<Vec<u64>>> = Default::default();
    let mp: &'static MemProtect<'static, Threaded> = Box::leak(Box::new(MemProtect::new(
        ram,
        host_s2,
        hyp_s1,
        Hook(events.clone()),
        Poisoned(poisoned.clone()),
    )));

    let (done, finished) = mpsc::channel();
    let start = Arc::new(Barrier::new(THREADS as usize));
    for t in 0..THREADS {
        let done = done.clone();
        let start = start.clone();
        std::thread::spawn(move || {
            start.wait();
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (t + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
            let mut log = Vec::with_capacity(OPS_PER_THREAD);
            let mut tables = Tables(t << 40);
            for _ in 0..OPS_PER_THREAD {
                let op = rng.op();
                let outcome = run(mp, &mut tables, op);
                log.push((TICKET.with(Cell::get), t, op, outcome));
                // Give the other threads a turn now and then, outside any
                // lock, so that calls interleave even with few cores.
                if rng.next().is_multiple_of(4) {
                    std::thread::yield_now();
                }
            }
            done.send(log).unwrap();
        });
    }
    let mut all = Vec::new();
    for _ in 0..THREADS {
        let log = finished
            .recv_timeout(Duration::from_secs(60))
            .expect("a thread is stuck: deadlock");
        all.extend(log);
    }
    all.sort_by_key(|(ticket, _, _, _)| *ticket);
    let tickets: Vec<u64> = all.iter().map(|(t, _, _, _)| *t).collect();
    assert!(
        tickets.windows(2).all(|w| w[0] < w[1]),
        "every call took the host lock exactly once, first"
    );
    let switches = all.windows(2).filter(|w| w[0].1 != w[1].1).count();
    assert!(
        switches > 100,
        "the threads really ran concurrently ({switches} hand-overs of the host lock)"
    );

    let mut spec = Spec::new(&RAM, 48);
    let mut successes = 0;
    for (ticket, _, op, outcome) in &all {
        assert_eq!(*outcome, replay(&mut spec, *op), "call {ticket} ({op:?}) in lock order");
        successes += matches!(outcome, Outcome::Done(Ok(()))) as usize;
    }
    assert!(
        successes > 1000,
        "the threads mostly collided on refusals ({successes} successes)"
    );
    assert_eq!(
        *events.lock().unwrap(),
        spec.take_hook_events(),
        "hook calls in lock order"
    );
    assert_eq!(
        *poisoned.lock().unwrap(),
        spec.take_poisoned(),
        "pages poisoned, in lock order"
    );
    assert_guests_agree(mp, &spec);
    for pfn in (RAM[0].base >> 12)..(RAM[0].base >> 12) + 12 {
        let page = spec.page(pfn);
        assert_eq!(mp.host_state(pfn), Some(page.host), "host state of {pfn:#x}");
        assert_eq!(mp.hyp_state(pfn), Some(page.hyp), "hyp state of {pfn:#x}");
        assert_eq!(mp.pins(pfn).map(u32::from), Some(page.pins), "pins of {pfn:#x}");
        assert_eq!(mp.hyp_mapped(pfn), spec.hyp_mapped(pfn), "EL2 mapping of {pfn:#x}");
    }
    for pfn in MMIO..MMIO + 5 {
        let annotated = mp.host_s2_entry(pfn).is_some_and(|(d, _)| d.annotation().is_some());
        assert_eq!(annotated, spec.annotation(pfn).is_some(), "MMIO {pfn:#x}");
    }
}
