//! The host stage-2 policy, step by step on the architecture model: lazy
//! identity mapping with the largest block that fits, injection for pages
//! that are not the host's, idempotence when another CPU mapped first, and
//! recycling of MMIO mappings when the table pool runs dry, with every
//! ownership annotation surviving.

mod support;

use support::*;
use warden_memprotect::{AbortOutcome, Error, HostAccess, PageState};

const MIB2: u64 = 2 << 20;

#[test]
fn ram_faults_map_the_largest_block_inside_the_region() {
    let w = world(&RAM);
    // RAM[0] is 256 MiB at 1 GiB: 1 GiB blocks do not fit, 2 MiB ones do.
    let mut faults = 0;
    let mut pa = RAM[0].base;
    while pa < RAM[0].end() {
        if w.host_mapping(pa >> 12).is_none() {
            assert_eq!(w.mp.host_abort(pa + 0x123), Ok(AbortOutcome::Handled));
            faults += 1;
            assert_eq!(w.mp.host_s2_entry(pa >> 12).unwrap().1, 2, "2 MiB block at {pa:#x}");
        }
        pa += 4096;
    }
    assert_eq!(faults, RAM[0].size / MIB2, "one fault per 2 MiB block");
    // MMIO below RAM: the whole first GiB is one gap, mapped as one block.
    assert_eq!(w.mp.host_abort(MMIO_PFN << 12), Ok(AbortOutcome::Handled));
    assert_eq!(w.mp.host_s2_entry(MMIO_PFN).unwrap().1, 1);
    assert_eq!(
        w.host_mapping(MMIO_PFN),
        Some((true, true, false)),
        "MMIO is never executable"
    );
    assert_eq!(w.host_mapping(RAM[0].base >> 12), Some((true, true, true)));
    w.assert_clean();
}

#[test]
fn a_second_fault_on_a_mapped_page_changes_nothing() {
    let w = world(&RAM);
    assert_eq!(w.mp.host_abort(RAM[1].base), Ok(AbortOutcome::Handled));
    w.m.borrow_mut().reset_stats();
    // Another CPU faulted on the same block before this one took the lock.
    assert_eq!(w.mp.host_abort(RAM[1].base + 4096), Ok(AbortOutcome::Handled));
    assert_eq!(w.m.borrow().stats().writes, 0, "no descriptor written");
}

#[test]
fn pages_the_host_does_not_own_inject_and_their_neighbours_map_as_pages() {
    let w = world(&RAM);
    let donated = (RAM[0].base >> 12) + 5;
    w.mp.host_donate_hyp(donated, 1).unwrap();
    assert_eq!(w.mp.host_abort(donated << 12), Ok(AbortOutcome::Inject));
    assert_eq!(w.mp.host_abort((donated + 1) << 12), Ok(AbortOutcome::Handled));
    assert_eq!(
        w.mp.host_s2_entry(donated + 1).unwrap().1,
        3,
        "the block around a donated page maps page by page"
    );
    assert_eq!(w.host_mapping(donated), None);
    // Beyond the physical address space.
    assert_eq!(w.mp.host_abort(1 << 48), Ok(AbortOutcome::Inject));
    assert_eq!(w.mp.host_abort(u64::MAX), Ok(AbortOutcome::Inject));
    w.assert_clean();
}

#[test]
fn donation_unmaps_the_host_and_tells_the_hook() {
    let w = world(&RAM);
    let pfn = RAM[1].base >> 12;
    w.mp.host_abort(pfn << 12).unwrap();
    let cpu1 = |w: &World| w.m.borrow_mut().translate(1, w.host_id, pfn << 12).is_ok();
    assert!(cpu1(&w), "CPU 1 caches the host mapping");
    w.mp.host_donate_hyp(pfn, 4).unwrap();
    assert!(!cpu1(&w), "no CPU keeps the host mapping of a donated page");
    assert_eq!(w.events.borrow().as_slice(), &[(pfn << 12, 4 * 4096, HostAccess::None)]);
    // The rest of the 2 MiB block is still the host's and faults back in.
    assert_eq!(w.mp.host_abort((pfn + 4) << 12), Ok(AbortOutcome::Handled));
    w.mp.hyp_donate_host(pfn, 4).unwrap();
    assert_eq!(w.events.borrow()[1], (pfn << 12, 4 * 4096, HostAccess::Mem));
    assert_eq!(
        w.host_mapping(pfn),
        Some((true, true, true)),
        "given back mapped, not just unannotated"
    );
    w.assert_clean();
}

#[test]
fn an_exhausted_pool_recycles_mmio_mappings_and_keeps_every_annotation() {
    let w = world(&RAM);
    // Ownership recorded before the pool runs dry: RAM pages in several
    // 2 MiB blocks of both regions, and a device's registers.
    let ram_pages: Vec<u64> = (0..6)
        .map(|i| (RAM[0].base >> 12) + i * 700)
        .chain([RAM[1].base >> 12])
        .collect();
    for &p in &ram_pages {
        w.mp.host_donate_hyp(p, 1).unwrap();
    }
    w.mp.host_donate_hyp_mmio(MMIO_PFN, 2).unwrap();
    // Leave a small pool, then fault MMIO in many distant places: each
    // needs a table of its own, so the pool runs dry again and again.
    let limit = w.m.borrow().mem.allocated_pages() + 6;
    w.m.borrow_mut().mem.set_alloc_limit(Some(limit));
    for i in 1..40u64 {
        let pa = (i << 39) + 0x1000; // one per 512 GiB
        assert_eq!(w.mp.host_abort(pa), Ok(AbortOutcome::Handled), "MMIO fault {i}");
    }
    // RAM faults and a donation still succeed.
    assert_eq!(w.mp.host_abort(RAM[1].base + 64 * 4096), Ok(AbortOutcome::Handled));
    w.mp.host_donate_hyp((RAM[0].base >> 12) + 9000, 1).unwrap();
    let recycles = w.mp.with_host(|h| h.recycles);
    assert!(recycles > 0, "the pool ran dry and MMIO mappings were recycled");
    // Every annotation survived.
    for &p in ram_pages.iter().chain([MMIO_PFN, MMIO_PFN + 1].iter()) {
        let (d, _) = w.mp.host_s2_entry(p).unwrap();
        assert_eq!(
            d.annotation().map(|a| a.owner),
            Some(warden_memprotect::owner::HYP),
            "pfn {p:#x}"
        );
        assert_eq!(w.mp.host_abort(p << 12), Ok(AbortOutcome::Inject));
    }
    for &p in &ram_pages {
        assert_eq!(w.mp.host_state(p), Some(PageState::NoPage));
    }
    w.assert_clean();
}

#[test]
fn an_exhausted_pool_refuses_a_donation_without_changing_anything() {
    let w = world(&RAM);
    let pfn = (RAM[0].base >> 12) + 3;
    w.mp.host_abort(pfn << 12).unwrap();
    let limit = w.m.borrow().mem.allocated_pages();
    w.m.borrow_mut().mem.set_alloc_limit(Some(limit));
    assert_eq!(w.mp.host_donate_hyp(pfn, 1), Err(Error::NoMem));
    assert_eq!(w.mp.host_state(pfn), Some(PageState::Owned));
    assert_eq!(w.host_mapping(pfn), Some((true, true, true)));
    assert!(w.events.borrow().is_empty());
    w.assert_clean();
}

#[test]
fn huge_hostile_mmio_ranges_are_refused_quickly_without_change() {
    let w = world(&RAM);
    w.mp.host_donate_hyp_mmio(MMIO_PFN, 1).unwrap();
    let start = std::time::Instant::now();
    // 4 TiB of address space above RAM: nothing owns it, but no pool can
    // hold the tables its annotations would need.
    let (pfn, nr) = (1u64 << 28, 1u64 << 30);
    assert_eq!(w.mp.host_donate_hyp_mmio(pfn, nr), Err(Error::NoMem));
    assert_eq!(w.mp.hyp_donate_host_mmio(pfn, nr), Err(Error::Perm));
    // All MMIO below RAM, including the page already donated.
    let below = RAM[0].base >> 12;
    assert_eq!(w.mp.host_donate_hyp_mmio(0, below), Err(Error::Perm));
    assert_eq!(w.mp.hyp_donate_host_mmio(0, below), Err(Error::Perm));
    assert!(
        start.elapsed() < std::time::Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(
        w.mp.host_abort(pfn << 12),
        Ok(AbortOutcome::Handled),
        "still the host's"
    );
    assert_eq!(
        w.mp.host_abort(MMIO_PFN << 12),
        Ok(AbortOutcome::Inject),
        "still the hyp's"
    );
    assert_eq!(w.events.borrow().len(), 1, "only the first donation told the hook");
    w.assert_clean();
}

#[test]
fn the_hypervisor_claims_only_ram_it_already_maps_at_el2() {
    use warden_pgtable::{Attrs, MapPolicy, MemType, Perms};
    let w = world(&RAM);
    let pfn = (RAM[0].base >> 12) + 16;
    // Not mapped at EL2 yet: refused, nothing changes.
    assert_eq!(w.mp.hyp_claim_boot(pfn, 4), Err(Error::Perm));
    w.mp.with_hyp(|h| {
        h.s1.map(
            pfn << 12,
            4 * 4096,
            pfn << 12,
            Attrs::new(Perms::RW, MemType::NormalWb),
            MapPolicy::PAGES,
        )
        .unwrap()
    });
    // One page past the EL2 mapping: refused as a whole.
    assert_eq!(w.mp.hyp_claim_boot(pfn, 5), Err(Error::Perm));
    assert_eq!(w.mp.host_state(pfn), Some(PageState::Owned));
    assert_eq!(w.mp.hyp_claim_boot(pfn, 4), Ok(()));
    for p in pfn..pfn + 4 {
        assert_eq!(w.mp.host_state(p), Some(PageState::NoPage));
        assert_eq!(w.mp.hyp_state(p), Some(PageState::Owned));
        assert_eq!(w.mp.host_abort(p << 12), Ok(AbortOutcome::Inject));
    }
    assert_eq!(w.events.borrow().as_slice(), &[(pfn << 12, 4 * 4096, HostAccess::None)]);
    // Claimed twice, MMIO, malformed: refused.
    assert_eq!(w.mp.hyp_claim_boot(pfn, 1), Err(Error::Perm));
    assert_eq!(w.mp.hyp_claim_boot(MMIO_PFN, 1), Err(Error::Perm));
    assert_eq!(w.mp.hyp_claim_boot(pfn, 0), Err(Error::Inval));
    assert_eq!(w.mp.hyp_claim_boot(u64::MAX, 2), Err(Error::Inval));
    // The neighbours are still the host's and fault in.
    assert_eq!(w.mp.host_abort((pfn + 4) << 12), Ok(AbortOutcome::Handled));
    w.assert_clean();
}
