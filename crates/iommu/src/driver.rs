//! The IOMMU-driver trait and the ownership hook that drives it.

use warden_memprotect::{HostAccess, OwnershipHook};

use crate::prot::IommuProt;

/// Why an IOMMU operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IommuError {
    /// A malformed request (range, configuration).
    Inval,
    /// No table page for the update.
    NoMem,
    /// The hardware lacks something Warden needs (e.g. stage-2
    /// translation); the string says what.
    Unsupported(&'static str),
    /// The hardware did not answer in time (e.g. a command-queue sync).
    Timeout,
    /// The hardware reported an error (e.g. a command-queue error).
    Hardware(&'static str),
    /// The operation is not implemented by this driver.
    NotImplemented,
}

/// What Warden needs from an IOMMU driver.
pub trait IommuDriver {
    /// Take the hardware over: every stream translates the host's DMA
    /// through the shadow (or aborts), and nothing bypasses it.
    fn init(&mut self) -> Result<(), IommuError>;

    /// Identity-map `[base, base + size)` for host DMA with `prot`
    /// ([`IommuProt::NONE`] unmaps), invalidating whatever the IOMMU cached
    /// before returning.
    fn idmap(&mut self, base: u64, size: u64, prot: IommuProt) -> Result<(), IommuError>;

    /// A trapped host access to the IOMMU's registers (trap-and-emulate, as
    /// the pKVM SMMUv3 series v4+): the offset, whether it writes, and the
    /// value written; returns the value read.
    fn handle_trap(&mut self, _offset: u64, _write: bool, _value: u64) -> Result<u64, IommuError> {
        Err(IommuError::NotImplemented)
    }

    /// Attach stream `sid` to a paravirtualized domain (pKVM's earlier
    /// series); not supported by default.
    fn attach_domain(&mut self, _sid: u32, _domain: u32) -> Result<(), IommuError> {
        Err(IommuError::NotImplemented)
    }

    /// Stop all DMA, using nothing that can fail: called when an update
    /// could not be completed, so that what the IOMMU may still have
    /// cached cannot outlive the ownership change. The host loses DMA
    /// until Warden is restarted; that is the price of staying safe.
    fn block_all(&mut self);
}

/// The ownership hook that keeps an IOMMU's view in step with the host's:
/// warden-memprotect calls it under the host lock for every change of what
/// the host may reach, before the transition returns.
///
/// The hook runs after the ownership change has committed, so it cannot
/// refuse it. If the IOMMU update fails (hardware error, sync timeout, or
/// a shadow pool that ran dry), DMA could still reach what the host just
/// lost; the hook then blocks all DMA ([`IommuDriver::block_all`]) and
/// stops updating: the system stays safe and the failure is kept for the
/// log ([`IommuHook::failure`]). Hostile input never gets here with an
/// error: only the hardware or a mis-sized pool can.
pub struct IommuHook<D: IommuDriver> {
    driver: D,
    failure: Option<IommuError>,
}

impl<D: IommuDriver> IommuHook<D> {
    /// A hook driving `driver`.
    pub const fn new(driver: D) -> Self {
        IommuHook { driver, failure: None }
    }

    /// The driver.
    pub fn driver(&self) -> &D {
        &self.driver
    }

    /// The driver, mutably (setup, diagnostics).
    pub fn driver_mut(&mut self) -> &mut D {
        &mut self.driver
    }

    /// The first update that failed, after which all DMA was blocked.
    pub fn failure(&self) -> Option<IommuError> {
        self.failure
    }
}

impl<D: IommuDriver> OwnershipHook for IommuHook<D> {
    fn host_ownership_changed(&mut self, base: u64, size: u64, access: HostAccess) {
        if self.failure.is_some() {
            return;
        }
        if let Err(e) = self.driver.idmap(base, size, IommuProt::of(access)) {
            self.failure = Some(e);
            self.driver.block_all();
        }
    }
}
