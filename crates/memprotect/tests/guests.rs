//! Guests on the architecture model: what each transition does to the
//! host stage-2, the guest stage-2 and the metadata, seen through the
//! model's walks and a second CPU's TLB, with break-before-make checked on
//! every write; teardown giving every page back; refusals changing
//! nothing.

mod support;

use support::*;
use warden_memprotect::guest::GUEST_POISONED;
use warden_memprotect::{
    guest_meta_decode, owner, AbortOutcome, Error, HostAccess, PageState, Perms, BLOCK_PAGES, MAX_VMS,
};
use warden_pgtable::{Attrs, MapPolicy, MemType};

/// First page of RAM[0].
fn ram0() -> u64 {
    RAM[0].base >> 12
}

/// Metadata pages for VM `i` (two each, at the end of RAM[1]).
fn meta(i: u64) -> u64 {
    (RAM[1].end() >> 12) - 2 * (i + 1)
}

fn np_vm(w: &World, vmid: u16) -> u16 {
    w.init_vm(false, vmid, meta(vmid as u64), 2).unwrap()
}

fn p_vm(w: &World, vmid: u16) -> u16 {
    w.init_vm(true, vmid, meta(vmid as u64), 2).unwrap()
}

#[test]
fn init_vm_donates_the_metadata_and_refuses_bad_tables() {
    let w = world(&RAM);
    let before = w.allocated_pages();
    // Refusals destroy the table they were given and change nothing else.
    assert_eq!(
        w.init_vm(false, 0, meta(0), 2),
        Err(Error::Inval),
        "VMID 0 is the host's"
    );
    assert_eq!(w.init_vm(false, 1, meta(0), 0), Err(Error::Inval));
    assert_eq!(w.init_vm(false, 1, u64::MAX, 2), Err(Error::Inval));
    assert_eq!(w.init_vm(false, 1, MMIO_PFN, 1), Err(Error::Perm), "MMIO as metadata");
    assert_eq!(
        w.init_vm(false, 1, (RAM[0].end() >> 12) - 1, 2),
        Err(Error::Perm),
        "a range crossing a region's end"
    );
    assert_eq!(w.allocated_pages(), before, "refused tables are destroyed");
    assert!(w.events.borrow().is_empty());

    let h = np_vm(&w, 1);
    assert_eq!(h, 1);
    assert_eq!(w.mp.vm_info(h), Some((false, false)));
    assert_eq!(w.mp.host_state(meta(1)), Some(PageState::NoPage));
    assert_eq!(w.mp.hyp_state(meta(1) + 1), Some(PageState::Owned));
    assert!(w.mp.hyp_mapped(meta(1)));
    assert_eq!(
        w.events.borrow().as_slice(),
        &[(meta(1) << 12, 2 * 4096, HostAccess::None)]
    );
    // The metadata is the hyp's now: no second VM on it, no reuse of VMID 1.
    assert_eq!(w.init_vm(true, 2, meta(1), 2), Err(Error::Perm));
    assert_eq!(w.init_vm(true, 1, meta(2), 2), Err(Error::Inval), "VMID in use");
    w.assert_clean();
}

#[test]
fn the_vm_table_fills_up() {
    let w = world(&RAM);
    for i in 1..=MAX_VMS as u16 {
        assert_eq!(w.init_vm(i % 2 == 0, i, meta(i as u64), 2), Ok(i));
    }
    let before = w.allocated_pages();
    assert_eq!(w.init_vm(false, 100, meta(100), 2), Err(Error::NoMem));
    assert_eq!(w.mp.host_state(meta(100)), Some(PageState::Owned), "nothing donated");
    assert_eq!(w.allocated_pages(), before);
}

#[test]
fn host_shares_pages_and_blocks_with_np_guests() {
    let w = world(&RAM);
    let (a, b) = (np_vm(&w, 1), np_vm(&w, 2));
    let pfn = ram0() + 7;
    w.mp.host_abort(pfn << 12).unwrap();
    assert_eq!(w.host_access_on(1, pfn), Some((true, true, true)), "CPU 1 caches it");

    w.mp.host_share_guest(a, pfn, 0x100, 1, Perms::R).unwrap();
    assert_eq!(w.mp.host_state(pfn), Some(PageState::SharedOwned));
    assert_eq!(w.guest_access(1, a, 0x100), Some((pfn << 12, true, false, false)));
    assert_eq!(
        w.mp.host_abort(pfn << 12),
        Ok(AbortOutcome::Handled),
        "still the host's"
    );
    // Again at the same gfn: the entry is taken.
    assert_eq!(w.mp.host_share_guest(a, pfn, 0x100, 1, Perms::R), Err(Error::Perm));
    // Multi-sharing: another gfn, another guest.
    w.mp.host_share_guest(a, pfn, 0x101, 1, Perms::RW).unwrap();
    w.mp.host_share_guest(b, pfn, 0x5, 1, Perms::RWX).unwrap();
    assert_eq!(w.mp.ram().meta(pfn).unwrap().guest_shares(), 3);
    // Shared with guests: nothing else may happen to it.
    assert_eq!(w.mp.host_share_hyp(pfn), Err(Error::Perm));
    assert_eq!(w.mp.host_donate_hyp(pfn, 1), Err(Error::Perm));

    // A 2 MiB block, aligned in both spaces.
    let block = ram0() + 2 * BLOCK_PAGES;
    assert_eq!(
        w.mp.host_share_guest(a, block + 1, 0x200, BLOCK_PAGES, Perms::RW),
        Err(Error::Inval)
    );
    assert_eq!(
        w.mp.host_share_guest(a, block, 0x201, BLOCK_PAGES, Perms::RW),
        Err(Error::Inval)
    );
    assert_eq!(w.mp.host_share_guest(a, block, 0x200, 2, Perms::RW), Err(Error::Inval));
    w.mp.host_share_guest(a, block, 0x200, BLOCK_PAGES, Perms::RW).unwrap();
    assert_eq!(
        w.guest_access(0, a, 0x3ff),
        Some(((block + 0x1ff) << 12, true, true, false))
    );
    w.mp.with_guest(a, |g| assert_eq!(g.leaf_at(0x200 << 12).unwrap().size, 2 << 20))
        .unwrap();
    // Unshare must name the whole leaf.
    assert_eq!(w.mp.host_unshare_guest(a, 0x200, 1), Err(Error::TooBig));
    assert_eq!(w.mp.host_unshare_guest(a, 0x201, 1), Err(Error::TooBig));
    assert_eq!(w.mp.host_unshare_guest(a, 0x100, BLOCK_PAGES), Err(Error::Inval));
    assert_eq!(
        w.guest_access(1, a, 0x200).map(|t| t.0),
        Some(block << 12),
        "CPU 1 caches it"
    );
    w.mp.host_unshare_guest(a, 0x200, BLOCK_PAGES).unwrap();
    assert_eq!(w.guest_access(1, a, 0x200), None, "no CPU keeps the unshared block");
    assert_eq!(w.mp.host_state(block + 0x1ff), Some(PageState::Owned));

    // Unsharing one of three shares keeps the page shared.
    w.mp.host_unshare_guest(a, 0x100, 1).unwrap();
    assert_eq!(w.mp.host_state(pfn), Some(PageState::SharedOwned));
    w.mp.host_unshare_guest(b, 0x5, 1).unwrap();
    assert_eq!(w.mp.host_unshare_guest(b, 0x5, 1), Err(Error::NoEnt));
    w.mp.host_unshare_guest(a, 0x101, 1).unwrap();
    assert_eq!(w.mp.host_state(pfn), Some(PageState::Owned));
    assert_eq!(w.mp.ram().meta(pfn).unwrap().guest_shares(), 0);
    assert_eq!(
        w.events.borrow().len(),
        2,
        "shares never call the hook (only the two init_vm)"
    );
    w.assert_clean();
}

#[test]
fn permission_and_age_updates_act_on_the_shared_leaf_only() {
    let w = world(&RAM);
    let a = np_vm(&w, 1);
    let pfn = ram0() + 3;
    w.mp.host_share_guest(a, pfn, 0x10, 1, Perms::R).unwrap();
    assert_eq!(w.guest_access(1, a, 0x10), Some((pfn << 12, true, false, false)));
    w.mp.host_relax_perms_guest(a, 0x10, Perms::RW).unwrap();
    assert_eq!(w.guest_access(0, a, 0x10), Some((pfn << 12, true, true, false)));
    w.mp.host_wrprotect_guest(a, 0x10, 1).unwrap();
    assert_eq!(
        w.guest_access(1, a, 0x10),
        Some((pfn << 12, true, false, false)),
        "write-protection reaches every CPU"
    );
    // Age: mapped young; test without clearing, then clear, then set.
    assert_eq!(w.mp.host_test_clear_young_guest(a, 0x10, 1, false), Ok(true));
    assert_eq!(w.mp.host_test_clear_young_guest(a, 0x10, 1, true), Ok(true));
    assert_eq!(w.mp.host_test_clear_young_guest(a, 0x10, 1, true), Ok(false));
    w.mp.host_mkyoung_guest(a, 0x10).unwrap();
    assert_eq!(w.mp.host_test_clear_young_guest(a, 0x10, 1, false), Ok(true));
    // Nothing mapped: NoEnt; wrong size: TooBig; IPA past the space: Inval.
    assert_eq!(w.mp.host_relax_perms_guest(a, 0x11, Perms::RW), Err(Error::NoEnt));
    assert_eq!(w.mp.host_mkyoung_guest(a, 0x11), Err(Error::NoEnt));
    assert_eq!(w.mp.host_wrprotect_guest(a, 0, BLOCK_PAGES), Err(Error::NoEnt));
    assert_eq!(w.mp.host_relax_perms_guest(a, 1 << 28, Perms::RW), Err(Error::Inval));
    assert_eq!(
        w.mp.host_test_clear_young_guest(a, u64::MAX, 1, true),
        Err(Error::Inval)
    );
    w.assert_clean();
}

#[test]
fn the_host_really_shared_this_check_is_always_on() {
    let w = world(&RAM);
    let a = np_vm(&w, 1);
    // A SharedBorrowed leaf over a page the host never shared (what a bug
    // elsewhere, or a forged table, would leave): every update refuses it.
    let pfn = ram0() + 9;
    let forged = Attrs {
        sw: PageState::SharedBorrowed as u8,
        ..Attrs::new(Perms::R, MemType::NormalWb)
    };
    w.mp.with_guest(a, |g| g.s2.map(0x20 << 12, 4096, pfn << 12, forged, MapPolicy::PAGES))
        .unwrap()
        .unwrap();
    assert_eq!(w.mp.host_relax_perms_guest(a, 0x20, Perms::RWX), Err(Error::Perm));
    assert_eq!(w.mp.host_wrprotect_guest(a, 0x20, 1), Err(Error::Perm));
    assert_eq!(w.mp.host_test_clear_young_guest(a, 0x20, 1, true), Err(Error::Perm));
    assert_eq!(w.mp.host_mkyoung_guest(a, 0x20), Err(Error::Perm));
    assert_eq!(w.mp.host_unshare_guest(a, 0x20, 1), Err(Error::Perm));
    assert_eq!(
        w.guest_access(0, a, 0x20),
        Some((pfn << 12, true, false, false)),
        "unchanged"
    );
    assert_eq!(w.mp.host_state(pfn), Some(PageState::Owned));
}

#[test]
fn each_kind_of_guest_takes_only_its_own_calls() {
    let w = world(&RAM);
    let (np, p) = (np_vm(&w, 1), p_vm(&w, 2));
    let pfn = ram0() + 1;
    assert_eq!(w.mp.host_donate_guest(np, pfn, 0), Err(Error::Perm));
    assert_eq!(w.mp.host_share_guest(p, pfn, 0, 1, Perms::RW), Err(Error::Perm));
    assert_eq!(w.mp.host_unshare_guest(p, 0, 1), Err(Error::Perm));
    assert_eq!(w.mp.guest_share_host(np, 0), Err(Error::Perm));
    // Handles that name nothing.
    for h in [0, 3, MAX_VMS as u16, MAX_VMS as u16 + 1, u16::MAX] {
        assert_eq!(w.mp.host_share_guest(h, pfn, 0, 1, Perms::RW), Err(Error::NoEnt));
        assert_eq!(w.mp.host_donate_guest(h, pfn, 0), Err(Error::NoEnt));
        assert_eq!(w.mp.start_teardown_vm(h), Err(Error::NoEnt));
        assert_eq!(w.mp.reclaim_dying_guest_page(h, 0), Err(Error::NoEnt));
        assert_eq!(w.mp.finalize_teardown_vm(h).err(), Some(Error::NoEnt));
    }
    assert_eq!(w.mp.host_state(pfn), Some(PageState::Owned));
}

#[test]
fn protected_guest_donation_sharing_back_and_force_reclaim() {
    let w = world(&RAM);
    let p = p_vm(&w, 1);
    let pfn = ram0() + 0x42;
    w.mp.host_abort(pfn << 12).unwrap();
    assert!(w.host_access_on(1, pfn).is_some(), "CPU 1 caches the host mapping");
    w.events.borrow_mut().clear();

    w.mp.host_donate_guest(p, pfn, 0x30).unwrap();
    assert_eq!(w.host_access_on(1, pfn), None, "no CPU keeps the host mapping");
    assert_eq!(w.mp.host_abort(pfn << 12), Ok(AbortOutcome::Inject));
    assert_eq!(w.guest_access(1, p, 0x30), Some((pfn << 12, true, true, true)));
    let a = w.mp.host_s2_entry(pfn).unwrap().0.annotation().unwrap();
    assert_eq!((a.owner, guest_meta_decode(a.meta)), (owner::GUEST, (p, 0x30)));
    assert_eq!(w.mp.host_state(pfn), Some(PageState::NoPage));
    assert_eq!(w.events.borrow().as_slice(), &[(pfn << 12, 4096, HostAccess::None)]);
    // Taken: not again, not by the hyp, not at another gfn.
    assert_eq!(w.mp.host_donate_guest(p, pfn, 0x31), Err(Error::Perm));
    assert_eq!(w.mp.host_donate_hyp(pfn, 1), Err(Error::Perm));
    assert_eq!(w.mp.host_share_hyp(pfn), Err(Error::Perm));
    assert_eq!(w.mp.host_donate_guest(p, pfn + 1, 0x30), Err(Error::Perm), "gfn taken");

    // The guest shares it back, then takes it back.
    assert_eq!(w.mp.guest_unshare_host(p, 0x30), Err(Error::Perm));
    w.mp.guest_share_host(p, 0x30).unwrap();
    assert_eq!(w.mp.host_state(pfn), Some(PageState::SharedBorrowed));
    assert_eq!(w.host_access_on(1, pfn), Some((true, true, true)));
    assert_eq!(w.mp.host_abort(pfn << 12), Ok(AbortOutcome::Handled));
    assert_eq!(w.mp.guest_share_host(p, 0x30), Err(Error::Perm));
    assert_eq!(
        w.mp.force_reclaim_guest_page(pfn),
        Err(Error::Perm),
        "the host has access already"
    );
    w.mp.guest_unshare_host(p, 0x30).unwrap();
    assert_eq!(w.host_access_on(1, pfn), None, "unshare reaches every CPU");
    assert_eq!(w.mp.host_state(pfn), Some(PageState::NoPage));
    assert_eq!(w.mp.guest_share_host(p, 0x31), Err(Error::NoEnt));

    // The host needs it back while the guest lives.
    assert!(w.poisoned.borrow().is_empty());
    w.mp.force_reclaim_guest_page(pfn).unwrap();
    assert_eq!(w.poisoned.borrow().as_slice(), &[pfn]);
    assert_eq!(w.guest_access(1, p, 0x30), None, "the guest's next access faults");
    let entry = w.mp.with_guest(p, |g| g.s2.get_leaf(0x30 << 12).unwrap().0).unwrap();
    assert_eq!(entry.annotation(), Some(GUEST_POISONED));
    assert_eq!(w.mp.host_state(pfn), Some(PageState::Owned));
    assert_eq!(w.host_access_on(1, pfn), Some((true, true, true)));
    assert_eq!(w.mp.force_reclaim_guest_page(pfn), Err(Error::Perm));
    // The poisoned gfn stays dead.
    assert_eq!(w.mp.guest_share_host(p, 0x30), Err(Error::NoEnt));
    assert_eq!(w.mp.host_donate_guest(p, pfn + 1, 0x30), Err(Error::Perm));
    // Not a guest's page at all.
    assert_eq!(w.mp.force_reclaim_guest_page(ram0()), Err(Error::Perm));
    assert_eq!(w.mp.force_reclaim_guest_page(MMIO_PFN), Err(Error::Perm));
    assert_eq!(w.mp.force_reclaim_guest_page(u64::MAX), Err(Error::Inval));
    w.assert_clean();
}

#[test]
fn teardown_gives_every_page_back_poisoned() {
    let w = world(&RAM);
    let (p, np) = (p_vm(&w, 1), np_vm(&w, 2));
    let base = ram0() + 0x100;
    for i in 0..4 {
        w.mp.host_donate_guest(p, base + i, 0x10 + i).unwrap();
    }
    w.mp.guest_share_host(p, 0x11).unwrap();
    w.mp.host_share_guest(np, base + 8, 0x50, 1, Perms::RW).unwrap();
    w.mp.force_reclaim_guest_page(base + 3).unwrap();
    w.poisoned.borrow_mut().clear();
    w.events.borrow_mut().clear();

    assert_eq!(
        w.mp.reclaim_dying_guest_page(p, 0x10),
        Err(Error::Perm),
        "not dying yet"
    );
    assert_eq!(w.mp.finalize_teardown_vm(p).err(), Some(Error::Perm));
    w.mp.start_teardown_vm(p).unwrap();
    w.mp.start_teardown_vm(np).unwrap();
    assert_eq!(w.mp.start_teardown_vm(p), Err(Error::NoEnt), "already dying");
    assert_eq!(w.mp.vm_info(p), Some((true, true)));
    // A dying guest takes no new work.
    assert_eq!(w.mp.host_donate_guest(p, base + 5, 0x20), Err(Error::NoEnt));
    assert_eq!(w.mp.guest_share_host(p, 0x10), Err(Error::NoEnt));
    assert_eq!(
        w.mp.host_share_guest(np, base + 9, 0x51, 1, Perms::RW),
        Err(Error::NoEnt)
    );
    assert_eq!(w.mp.finalize_teardown_vm(p).err(), Some(Error::Busy), "pages left");

    // Reclaim: the guest's own pages are poisoned, the shared one too.
    w.mp.reclaim_dying_guest_page(p, 0x10).unwrap();
    w.mp.reclaim_dying_guest_page(p, 0x11).unwrap();
    w.mp.reclaim_dying_guest_page(p, 0x12).unwrap();
    assert_eq!(w.mp.reclaim_dying_guest_page(p, 0x12), Err(Error::NoEnt));
    assert_eq!(
        w.mp.reclaim_dying_guest_page(p, 0x13),
        Err(Error::NoEnt),
        "poisoned already"
    );
    assert_eq!(w.poisoned.borrow().as_slice(), &[base, base + 1, base + 2]);
    assert_eq!(
        w.events.borrow().as_slice(),
        &[
            (base << 12, 4096, HostAccess::Mem),
            ((base + 2) << 12, 4096, HostAccess::Mem)
        ],
        "only pages the host could not reach are news to the hook"
    );
    for i in 0..4 {
        assert_eq!(w.mp.host_state(base + i), Some(PageState::Owned));
        assert_eq!(w.mp.host_abort((base + i) << 12), Ok(AbortOutcome::Handled));
    }
    // The np guest's shared page is the host's own: unshared, not poisoned.
    w.mp.reclaim_dying_guest_page(np, 0x50).unwrap();
    assert_eq!(w.mp.host_state(base + 8), Some(PageState::Owned));
    assert_eq!(w.poisoned.borrow().len(), 3);

    w.poisoned.borrow_mut().clear();
    w.events.borrow_mut().clear();
    let before = w.allocated_pages();
    let freed = w.finalize(p).unwrap() + w.finalize(np).unwrap();
    assert!(freed >= 6, "root and tables of both guests ({freed})");
    assert!(w.allocated_pages() <= before - freed, "every guest table page is back");
    assert_eq!(w.mp.vm_info(p), None);
    let metas: Vec<u64> = [meta(1), meta(1) + 1, meta(2), meta(2) + 1].into();
    assert_eq!(w.poisoned.borrow().as_slice(), metas.as_slice());
    for m in metas {
        assert_eq!(w.mp.host_state(m), Some(PageState::Owned));
        assert_eq!(w.mp.hyp_state(m), Some(PageState::NoPage));
        assert!(!w.mp.hyp_mapped(m));
    }
    assert_eq!(w.events.borrow().len(), 2);
    // The slot and the VMID can be used again.
    assert_eq!(w.init_vm(true, 1, meta(3), 1), Ok(1));
    w.assert_clean();
}

#[test]
fn running_out_of_guest_table_pages_changes_nothing() {
    let w = world(&RAM);
    let (np, p) = (np_vm(&w, 1), p_vm(&w, 2));
    let limit = w.allocated_pages();
    w.m.borrow_mut().mem.set_alloc_limit(Some(limit));
    let pfn = ram0() + 0x200;
    assert_eq!(w.mp.host_share_guest(np, pfn, 0x1234, 1, Perms::RW), Err(Error::NoMem));
    assert_eq!(w.mp.host_donate_guest(p, pfn, 0x1234), Err(Error::NoMem));
    assert_eq!(w.mp.host_state(pfn), Some(PageState::Owned));
    assert_eq!(w.mp.ram().meta(pfn).unwrap().guest_shares(), 0);
    assert_eq!(w.guest_access(0, np, 0x1234), None);
    assert_eq!(w.allocated_pages(), limit);
    w.m.borrow_mut().mem.set_alloc_limit(None);
    w.mp.host_share_guest(np, pfn, 0x1234, 1, Perms::RW).unwrap();
    w.assert_clean();
}
