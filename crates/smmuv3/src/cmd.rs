//! Commands (IHI 0070, chapter 4): the few Warden issues, encoded into
//! the two 64-bit words of a command-queue entry.

/// CMD_CFGI_STE opcode.
pub const CFGI_STE: u8 = 0x03;
/// CMD_CFGI_STE_RANGE opcode (CMD_CFGI_ALL is its Range = 31 form).
pub const CFGI_STE_RANGE: u8 = 0x04;
/// CMD_TLBI_S12_VMALL opcode.
pub const TLBI_S12_VMALL: u8 = 0x28;
/// CMD_TLBI_S2_IPA opcode.
pub const TLBI_S2_IPA: u8 = 0x2a;
/// CMD_TLBI_NSNH_ALL opcode.
pub const TLBI_NSNH_ALL: u8 = 0x30;
/// CMD_SYNC opcode.
pub const SYNC: u8 = 0x46;

/// A range of pages for TLBI_S2_IPA's range form: (NUM + 1) << SCALE
/// pages of 4 KiB from the address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    /// NUM, 0..=31.
    pub num: u8,
    /// SCALE, 0..=31.
    pub scale: u8,
}

impl Range {
    /// Pages covered.
    pub const fn pages(self) -> u64 {
        (self.num as u64 + 1) << self.scale
    }
}

/// A command Warden issues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmd {
    /// Invalidate cached configuration of one stream (STE and below),
    /// non-leaf: a level-1 descriptor cached for its span goes too (the
    /// SMMU may cache invalid ones, e.g. before a level-2 table existed).
    CfgiSte {
        /// Stream ID.
        sid: u32,
    },
    /// Invalidate cached configuration of every stream.
    CfgiAll,
    /// Invalidate stage-2 TLB entries of `vmid` for one IPA, or for a
    /// range of IPAs when `range` is given (only with IDR3.RIL).
    TlbiS2Ipa {
        /// VMID.
        vmid: u16,
        /// Input address (page aligned).
        ipa: u64,
        /// Only leaf entries (no walk-cache entries) need invalidating.
        leaf: bool,
        /// Level of the entries (TTL hint, 1..=3), or 0 for unknown; only
        /// sent in the range form.
        ttl: u8,
        /// Range form.
        range: Option<Range>,
    },
    /// Invalidate every stage-1 and stage-2 entry of `vmid`.
    TlbiS12Vmall {
        /// VMID.
        vmid: u16,
    },
    /// Invalidate every non-secure, non-hyp TLB entry.
    TlbiNsnhAll,
    /// Complete every earlier command; completion shows as the consumer
    /// index passing it (no interrupt, no MSI).
    Sync,
}

impl Cmd {
    /// The two words of the queue entry.
    pub fn encode(self) -> [u64; 2] {
        let op = |o: u8| u64::from(o);
        match self {
            Cmd::CfgiSte { sid } => [op(CFGI_STE) | u64::from(sid) << 32, 0],
            Cmd::CfgiAll => [op(CFGI_STE_RANGE), 31],
            Cmd::TlbiS2Ipa {
                vmid,
                ipa,
                leaf,
                ttl,
                range,
            } => {
                // TG and the TTL hint belong to range invalidation (RES0
                // without IDR3.RIL): the single form carries neither.
                let (num, scale, tg, ttl) = match range {
                    Some(r) => (u64::from(r.num), u64::from(r.scale), 0b01u64, u64::from(ttl) & 3),
                    None => (0, 0, 0, 0),
                };
                let w0 = op(TLBI_S2_IPA) | num << 12 | scale << 20 | u64::from(vmid) << 32;
                let w1 = u64::from(leaf) | ttl << 8 | tg << 10 | (ipa & ((1 << 52) - 1) & !0xfff);
                [w0, w1]
            }
            Cmd::TlbiS12Vmall { vmid } => [op(TLBI_S12_VMALL) | u64::from(vmid) << 32, 0],
            Cmd::TlbiNsnhAll => [op(TLBI_NSNH_ALL), 0],
            Cmd::Sync => [op(SYNC), 0],
        }
    }
}

/// Split `pages` pages into range-form pieces, largest scale first: the
/// fewest commands that cover exactly the range.
pub fn ranges(mut pages: u64, mut emit: impl FnMut(u64, Range)) {
    let mut offset = 0;
    while pages > 0 {
        let scale = pages.trailing_zeros().min(31);
        let num = ((pages >> scale) & 0x1f).max(1);
        let r = Range {
            num: (num - 1) as u8,
            scale: scale as u8,
        };
        emit(offset, r);
        offset += r.pages();
        pages -= r.pages();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::vec::Vec;

    #[test]
    fn ranges_cover_exactly() {
        for pages in [
            1u64,
            2,
            3,
            31,
            32,
            33,
            63,
            512,
            513,
            1000,
            262_144,
            262_145,
            (1 << 36) + 7,
        ] {
            let mut got = Vec::new();
            ranges(pages, |off, r| got.push((off, r)));
            let mut next = 0;
            for (off, r) in &got {
                assert_eq!(*off, next, "{pages} pages: contiguous");
                assert!(r.num <= 31 && r.scale <= 31);
                next += r.pages();
            }
            assert_eq!(next, pages);
            assert!(got.len() <= 64, "{pages} pages in {} commands", got.len());
        }
        let mut one = Vec::new();
        ranges(512, |_, r| one.push(r));
        assert_eq!(one, [Range { num: 0, scale: 9 }]);
    }

    #[test]
    fn encodings() {
        assert_eq!(Cmd::CfgiSte { sid: 0x1234 }.encode(), [0x0000_1234_0000_0003, 0]);
        assert_eq!(Cmd::CfgiAll.encode(), [0x04, 31]);
        assert_eq!(Cmd::Sync.encode(), [0x46, 0]);
        assert_eq!(Cmd::TlbiS12Vmall { vmid: 5 }.encode(), [0x0000_0005_0000_0028, 0]);
        let c = Cmd::TlbiS2Ipa {
            vmid: 3,
            ipa: 0x4000_2000,
            leaf: true,
            ttl: 3,
            range: Some(Range { num: 1, scale: 9 }),
        };
        assert_eq!(c.encode(), [0x0000_0003_0090_102a, 0x4000_2000 | 1 << 10 | 3 << 8 | 1]);
    }
}
