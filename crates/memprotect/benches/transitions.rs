//! Cost of the ownership transitions, side by side in one run, with the
//! spec off: table pages in an arena, TLB maintenance counted (not timed
//! hardware), spin locks. `cargo bench -p warden-memprotect --bench transitions`.

use std::hint::black_box;
use std::time::Instant;

use warden_memprotect::*;
use warden_pgtable::testutil::{ArenaMm, CountingTlb};
use warden_pgtable::{PageTable, Regime};

/// Page clearing is not what these figures measure.
struct NoClear;

impl Poison for NoClear {
    fn poison(&mut self, _: u64) {}
}

struct Bench;

impl Platform for Bench {
    type Lock = spin::mutex::SpinMutex<()>;
    type HostMm = ArenaMm;
    type HostTlb = CountingTlb;
    type HypMm = ArenaMm;
    type HypTlb = CountingTlb;
    type Hook = ();
    type GuestMm = ArenaMm;
    type GuestTlb = CountingTlb;
    type Poison = NoClear;
}

/// 16 GiB of RAM at 1 GiB, like a large host.
const RAM: [Region; 1] = [Region {
    base: 1 << 30,
    size: 16 << 30,
}];

fn fresh(meta: &[PageMeta]) -> MemProtect<'_, Bench> {
    let ram = RamMap::new(&RAM, meta, 48).unwrap();
    let s2 = Regime::Stage2 {
        ipa_bits: 48,
        vmid: 0,
        fwb: true,
    };
    let host_s2 = PageTable::new(s2, ArenaMm::new(0x100_0000_0000, 16384), CountingTlb::default()).unwrap();
    let s1 = Regime::El2Stage1 { va_bits: 48 };
    let hyp_s1 = PageTable::new(s1, ArenaMm::new(0x200_0000_0000, 16384), CountingTlb::default()).unwrap();
    MemProtect::new(ram, host_s2, hyp_s1, (), NoClear)
}

/// Median of `samples` timings of `f`, in ns, and its per-call figure.
fn time(samples: usize, calls: u64, mut f: impl FnMut()) -> (f64, f64) {
    let mut t: Vec<f64> = (0..samples)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_nanos() as f64
        })
        .collect();
    t.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let median = t[t.len() / 2];
    (median, median / calls as f64)
}

fn main() {
    let n = RamMap::pages_of(&RAM);
    let meta: Vec<PageMeta> = (0..n).map(|_| PageMeta::default()).collect();
    let base = RAM[0].base >> 12;
    println!("warden-memprotect transitions (spec off, arena tables, counted TLB maintenance)");
    println!("{:<44} {:>12} {:>14}", "workload", "median", "per transition");

    // Share + unshare one page with the hypervisor, the host's busiest pair.
    let mp = fresh(&meta);
    mp.host_abort(RAM[0].base).unwrap();
    let (t, per) = time(51, 2000, || {
        for i in 0..1000 {
            mp.host_share_hyp(base + i).unwrap();
            mp.host_unshare_hyp(base + i).unwrap();
        }
    });
    println!(
        "{:<44} {:>9.1} us {:>11.1} ns",
        "1000 x (share_hyp + unshare_hyp), 1 page",
        t / 1e3,
        per
    );

    // Pin + unpin (maps and unmaps at EL2).
    for i in 0..64 {
        mp.host_share_hyp(base + 4096 + i).unwrap();
    }
    let (t, per) = time(51, 128, || {
        for i in 0..64 {
            mp.hyp_pin_shared(base + 4096 + i, 1).unwrap();
            mp.hyp_unpin_shared(base + 4096 + i, 1).unwrap();
        }
    });
    println!(
        "{:<44} {:>9.1} us {:>11.1} ns",
        "64 x (pin + unpin), 1 page",
        t / 1e3,
        per
    );

    // Donate 2 MiB to the hypervisor and give it back.
    let (t, per) = time(51, 2, || {
        mp.host_donate_hyp(base + 8192, 512).unwrap();
        mp.hyp_donate_host(base + 8192, 512).unwrap();
    });
    println!(
        "{:<44} {:>9.1} us {:>11.1} ns",
        "donate_hyp + hyp_donate_host, 2 MiB",
        t / 1e3,
        per
    );

    // Share + unshare one page with a non-protected guest (the host's
    // np-guest fault path), and a 2 MiB block; the guest's tables stay.
    let guest_s2 = Regime::Stage2 {
        ipa_bits: 40,
        vmid: 1,
        fwb: true,
    };
    let g = PageTable::new(guest_s2, ArenaMm::new(0x300_0000_0000, 1024), CountingTlb::default()).unwrap();
    let h = mp.init_vm(g, false, base + 16384, 1).unwrap();
    let (t, per) = time(51, 2000, || {
        for i in 0..1000 {
            mp.host_share_guest(h, base + i, i, 1, Perms::RW).unwrap();
            mp.host_unshare_guest(h, i, 1).unwrap();
        }
    });
    println!(
        "{:<44} {:>9.1} us {:>11.1} ns",
        "1000 x (share_guest + unshare_guest), 1 page",
        t / 1e3,
        per
    );
    let (t, per) = time(51, 2, || {
        mp.host_share_guest(h, base + 8192, 8192, 512, Perms::RW).unwrap();
        mp.host_unshare_guest(h, 8192, 512).unwrap();
    });
    println!(
        "{:<44} {:>9.1} us {:>11.1} ns",
        "share_guest + unshare_guest, one 2 MiB block",
        t / 1e3,
        per
    );

    // Host aborts until all 16 GiB are mapped, from an empty stage-2. The
    // host touches every 2 MiB and faults only where nothing is mapped yet:
    // an untimed pass finds those addresses, then each sample times just
    // the aborts on a fresh stage-2 (built outside the timing).
    let mut faulting = Vec::new();
    {
        let mp = fresh(&meta);
        let mut pa = RAM[0].base;
        while pa < RAM[0].end() {
            if !mp.host_s2_entry(pa >> 12).is_some_and(|(d, _)| d.is_valid()) {
                mp.host_abort(pa).unwrap();
                faulting.push(pa);
            }
            pa += 2 << 20;
        }
    }
    let faults = faulting.len() as u64;
    let mut samples: Vec<f64> = (0..11)
        .map(|_| {
            let mp = fresh(&meta);
            let start = Instant::now();
            for &pa in &faulting {
                black_box(mp.host_abort(pa).unwrap());
            }
            start.elapsed().as_nanos() as f64
        })
        .collect();
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let t = samples[samples.len() / 2];
    println!(
        "{:<44} {:>9.1} us {:>11.1} ns  ({} faults: one per 1 GiB block)",
        "host aborts covering 16 GiB of RAM",
        t / 1e3,
        t / faults as f64,
        faults
    );
}
