//! warden-iommu: DMA isolation.
//!
//! A device the host controls must never reach memory the host does not
//! own (seeds 001 and 004). Every IOMMU Warden drives translates all of the
//! host's DMA through one table, the *host stage-2 shadow* ([`HostShadow`]):
//! an identity stage-2 that grants exactly what the host stage-2 grants or
//! could grant lazily, with RAM cacheable and MMIO as device memory (a DMA
//! master cannot pick the attributes itself). It is built once from a
//! snapshot of the host stage-2 and then follows every ownership change
//! through warden-memprotect's ownership hook ([`IommuHook`]), before the
//! transition returns.
//!
//! The crate is `no_std`; the hardware side is an [`IommuDriver`] (the
//! SMMUv3 driver is one), whose TLB operations the shadow's table uses.
#![no_std]

pub mod driver;
pub mod prot;
pub mod shadow;

pub use driver::{IommuDriver, IommuError, IommuHook};
pub use prot::IommuProt;
pub use shadow::HostShadow;
