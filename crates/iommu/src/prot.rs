//! What an IOMMU mapping grants.

use warden_memprotect::HostAccess;
use warden_pgtable::{Attrs, MemType, Perms};

/// IOMMU permissions of an identity mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IommuProt {
    /// DMA reads allowed.
    pub read: bool,
    /// DMA writes allowed.
    pub write: bool,
    /// The range is MMIO (device memory); otherwise cacheable RAM.
    pub mmio: bool,
}

impl IommuProt {
    /// Nothing: the range is unmapped.
    pub const NONE: IommuProt = IommuProt {
        read: false,
        write: false,
        mmio: false,
    };
    /// RAM the host owns: read, write, cacheable.
    pub const MEM: IommuProt = IommuProt {
        read: true,
        write: true,
        mmio: false,
    };
    /// MMIO the host owns: read, write, device memory.
    pub const MMIO: IommuProt = IommuProt {
        read: true,
        write: true,
        mmio: true,
    };

    /// What a range the host can now reach with `access` gives DMA.
    pub const fn of(access: HostAccess) -> IommuProt {
        match access {
            HostAccess::None => IommuProt::NONE,
            HostAccess::Mem => IommuProt::MEM,
            HostAccess::Mmio => IommuProt::MMIO,
        }
    }

    /// Whether the range is accessible at all.
    pub const fn is_none(self) -> bool {
        !self.read && !self.write
    }

    /// The stage-2 attributes that encode it (never executable: DMA does
    /// not fetch instructions).
    pub const fn attrs(self) -> Attrs {
        let mem = if self.mmio { MemType::Device } else { MemType::NormalWb };
        Attrs::new(Perms::new(self.read, self.write, false), mem)
    }
}
