//! Everything the CPUs share once the host runs: page ownership
//! (warden-memprotect over the host stage-2, Warden's stage 1 and the
//! SMMU), the hypercall service, the CPUs' power state and the EL2 values
//! that confine the host. Built by the boot CPU, then only shared.

use warden_abi::counter;
use warden_hyp::fixmap::{Fixmap, SlotMem};
use warden_hyp::hostcall::Hostcalls;
use warden_hyp::pool::PagePool;
use warden_hyp::psci_relay::Cpus;
use warden_hyp::sync::{Once, TicketLock};
use warden_iommu::IommuHook;
use warden_memprotect::{HostAccess, MemProtect, OwnershipHook, Poison};

use super::console::println;
use super::host::HostCtl;
use super::mem::IdentityMem;
use super::smmu::El2Smmu;
use super::sysreg;
use super::tlb::El2Tlb;

/// Most host stage-2 table pages (16 MiB of tables: page granularity over
/// 8 GiB of RAM).
pub const HOST_POOL_PAGES: usize = 4096;

/// The host stage-2's table pages.
pub type HostPool = PagePool<IdentityMem, HOST_POOL_PAGES>;

/// The ownership hook at EL2: the SMMU driver once it has taken over.
pub struct SmmuHook(pub Option<IommuHook<El2Smmu>>);

impl OwnershipHook for SmmuHook {
    fn host_ownership_changed(&mut self, base: u64, size: u64, access: HostAccess) {
        if let Some(h) = self.0.as_mut() {
            h.host_ownership_changed(base, size, access);
        }
    }
}

/// Stores through a fixmap slot and cleans them to the PoC.
pub struct RawSlot;

impl SlotMem for RawSlot {
    fn write_u64(&mut self, va: u64, val: u64) {
        // SAFETY: `va` lies in this CPU's fixmap slot, mapped read-write by
        // the fixmap to the page the caller is clearing (its to write).
        unsafe { (va as *mut u64).write_volatile(val) }
    }
    fn clean_to_poc(&mut self, va: u64, len: u64) {
        sysreg::dcache_clean_poc(va, va + len);
    }
}

/// Clears pages a guest owned before the host gets them back: zeroes them
/// through this CPU's fixmap slot and cleans them to the PoC, so neither
/// the host's CPU accesses nor its DMA see the guest's data. Holds the
/// fixmap and access to the EL2 table's pool, where its descriptors are.
pub struct Poisoner(pub Fixmap, pub IdentityMem);

impl Poison for Poisoner {
    fn poison(&mut self, pa: u64) {
        let cpu = super::host::cpu_index();
        if let Err(e) = self.0.zero_page(cpu, pa, &mut self.1, &mut El2Tlb::new(), &mut RawSlot) {
            // The slot is this CPU's and `pa` a page memprotect chose: a
            // failure is an internal invariant broken, not host input.
            super::fatal(format_args!("poisoning {pa:#x} through the fixmap: {e:?}"));
        }
    }
}

/// warden-memprotect's platform at EL2.
pub struct El2Platform;

impl warden_memprotect::Platform for El2Platform {
    type Lock = TicketLock;
    type HostMm = HostPool;
    type HostTlb = El2Tlb;
    type HypMm = PagePool<IdentityMem>;
    type HypTlb = El2Tlb;
    type Hook = SmmuHook;
    type GuestMm = PagePool<IdentityMem>;
    type GuestTlb = El2Tlb;
    type Poison = Poisoner;
}

/// The shared state.
pub struct World {
    /// Page ownership.
    pub mp: MemProtect<'static, El2Platform>,
    /// Hypercalls, donations, counters.
    pub calls: Hostcalls<TicketLock>,
    /// CPUs' power state (the PSCI relay).
    pub cpus: Cpus,
    /// The EL2 values that confine the host.
    pub ctl: HostCtl,
}

impl World {
    /// Log and count the SMMU's pending events (fault records for DMA the
    /// shadow refused). Under the host lock, which also guards the SMMU.
    pub fn drain_smmu_events(&self) {
        // One line per drain, naming the first and last event: a device
        // can fault thousands of times, and the console is shared.
        let (n, first, last) = self.mp.with_host(|h| {
            let (mut first, mut last) = (None, None);
            let n = match h.hook.0.as_mut() {
                Some(hook) => hook.driver_mut().drain_events(|e| {
                    first.get_or_insert(e);
                    last = Some(e);
                }),
                None => 0,
            };
            (n, first, last)
        });
        if let (Some(f), Some(l)) = (first, last) {
            println!(
                "Warden: SMMUv3: {n} fault event(s) blocked, first {:?} stream {:#x} {} {:#x}, last {:#x}",
                f.kind,
                f.sid,
                if f.write { "write" } else { "read" },
                f.addr,
                l.addr
            );
        }
        self.calls.counters.add(counter::SMMU_FAULTS, n as u64);
    }
}

static WORLD: Once<World> = Once::new();

/// Publish the world (boot CPU, once, before the host runs).
pub fn publish(w: World) -> &'static World {
    match WORLD.set(w) {
        Ok(w) => w,
        Err(_) => super::fatal(format_args!("the world was built twice")),
    }
}

/// The world, once published.
pub fn world() -> Option<&'static World> {
    WORLD.get()
}
