//! The random hypercalls of `garbage-hypercalls`: which function IDs and
//! arguments to throw at Warden, and what a success obliges the caller to
//! undo so that page ownership ends where it started.
//!
//! Arguments are drawn from a mix meant to hit Warden's checks rather than
//! its fast "no such page" path: raw random words, small numbers, values at
//! the edges of the physical address space, and page frame numbers that
//! matter (the calling CPU's own scratch pages, Warden's gap, the UART, the
//! SMMU). The one thing the generator never produces is a donation that
//! could take away RAM the test host is using: a donation overlapping RAM
//! is confined to the calling CPU's scratch pages (a donation that wraps
//! around the address space is kept: Warden must refuse it).

use warden_abi as abi;

use crate::rng::XorShift;

/// A page frame range: `base..base + pages`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PfnRange {
    /// First page frame number.
    pub base: u64,
    /// Number of pages.
    pub pages: u64,
}

impl PfnRange {
    /// Whether `pfn` lies inside.
    pub fn contains(&self, pfn: u64) -> bool {
        pfn >= self.base && pfn - self.base < self.pages
    }

    /// One past the last pfn (saturating).
    pub fn end(&self) -> u64 {
        self.base.saturating_add(self.pages)
    }
}

/// The page frames the generator aims at.
#[derive(Clone, Copy, Debug)]
pub struct Targets {
    /// The calling CPU's scratch pages: host-owned, used by nothing else,
    /// so sharing or donating them (and undoing it) is harmless.
    pub own: PfnRange,
    /// Everything from the lowest to the highest RAM page (Warden's gap
    /// included): donations must stay out of it except for `own`.
    pub ram: PfnRange,
    /// A page of Warden's memory, if known.
    pub gap: Option<u64>,
    /// The UART's page (MMIO the host may map, never own as RAM).
    pub uart: u64,
    /// The SMMU's first page (Warden's MMIO).
    pub smmu: u64,
}

/// What kind of call a function ID is, for the caller's bookkeeping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// FN_HOST_SHARE_HYP: a success must be undone with an unshare.
    ShareHyp,
    /// FN_HOST_DONATE_HYP: a success must be undone with a reclaim.
    DonateHyp,
    /// FN_HOST_UNSHARE_HYP / FN_HOST_RECLAIM_HYP: nothing the generator
    /// aims at is shared or donated, so a success is an anomaly.
    TakeBack,
    /// A guest call: no guest exists, so a success is an anomaly.
    Guest,
    /// A query (version, features, page state, counter, call UID).
    Query,
    /// Not a Warden function: Warden must answer SMCCC_NOT_SUPPORTED.
    Unknown,
    /// Not Warden's to define (Arm architecture calls such as
    /// SMCCC_VERSION, PSCI, standard hypervisor services): any answer.
    Other,
}

/// The kind of function `fid` (the low 32 bits of `x0`: SMCCC passes the
/// function ID in `w0`).
pub fn kind(fid: u32) -> Kind {
    match fid {
        abi::FN_HOST_SHARE_HYP => Kind::ShareHyp,
        abi::FN_HOST_DONATE_HYP => Kind::DonateHyp,
        abi::FN_HOST_UNSHARE_HYP | abi::FN_HOST_RECLAIM_HYP => Kind::TakeBack,
        abi::FN_HOST_SHARE_GUEST
        | abi::FN_HOST_UNSHARE_GUEST
        | abi::FN_HOST_RELAX_PERMS_GUEST
        | abi::FN_HOST_WRPROTECT_GUEST
        | abi::FN_HOST_TEST_CLEAR_YOUNG_GUEST
        | abi::FN_HOST_MKYOUNG_GUEST => Kind::Guest,
        abi::FN_CALL_UID => Kind::Query,
        f if abi::FUNCTIONS.contains(&f) => Kind::Query,
        f if matches!(owner(f), 0 | 4 | 5) => Kind::Other,
        _ => Kind::Unknown,
    }
}

/// SMCCC owning entity of a function ID (bits 29:24).
pub fn owner(fid: u32) -> u32 {
    (fid >> 24) & 0x3f
}

/// A random function ID: half from Warden's functions, a quarter in
/// Warden's own vendor-hypervisor range, a quarter anywhere. Never an Arm
/// architecture or PSCI call (entities 0 and 4): standalone, QEMU would
/// execute those (SYSTEM_OFF...).
pub fn random_fid(rng: &mut XorShift) -> u32 {
    let fid = match rng.below(4) {
        0 | 1 => rng.pick(abi::FUNCTIONS),
        2 => abi::VENDOR_HYP_64 | (rng.next_u32() & 0x3ff) | if rng.below(2) == 0 { 0 } else { 0xff00 },
        _ => rng.next_u32(),
    };
    if matches!(owner(fid), 0 | 4) {
        // Move it to a reserved entity.
        (fid & !(0x3f << 24)) | (0x30 << 24)
    } else {
        fid
    }
}

/// One random argument aimed at `t`.
pub fn random_arg(rng: &mut XorShift, t: &Targets) -> u64 {
    match rng.below(12) {
        0 => rng.next_u64(),
        1 => rng.next_u32() as u64,
        2 => rng.below(8),
        3 => rng.pick(&[
            u64::MAX,
            1 << 63,
            1 << 52,
            1 << 40,
            1 << 36,
            u64::MAX >> 12,
            u32::MAX as u64,
        ]),
        4..=6 => t.own.base + rng.below(t.own.pages),
        7 => t.gap.unwrap_or(t.ram.base),
        8 => t.uart,
        9 => t.smmu,
        10 => t.ram.base + rng.below(t.ram.pages),
        _ => 1 + rng.below(t.own.pages),
    }
}

/// The registers `x0..=x6` of one random call. `x0`'s upper half is
/// random one time in eight (Warden must read `w0` only).
pub fn random_call(rng: &mut XorShift, t: &Targets) -> [u64; 7] {
    let mut x = [0u64; 7];
    x[0] = random_fid(rng) as u64;
    if rng.below(8) == 0 {
        x[0] |= rng.next_u64() << 32;
    }
    for a in &mut x[1..] {
        *a = random_arg(rng, t);
    }
    if kind(x[0] as u32) == Kind::DonateHyp {
        confine_donation(&mut x, t);
    }
    x
}

/// Keep a donation `(x1 = pfn, x2 = count)` from reaching RAM outside the
/// caller's own pages: the test host runs from that RAM. A range that
/// wraps around the address space is left alone (Warden must refuse it).
pub fn confine_donation(x: &mut [u64; 7], t: &Targets) {
    let (pfn, n) = (x[1], x[2]);
    let Some(end) = pfn.checked_add(n) else {
        return;
    };
    let overlaps_ram = pfn < t.ram.end() && t.ram.base < end;
    if !overlaps_ram || n == 0 {
        return;
    }
    if t.own.contains(pfn) {
        x[2] = n.min(t.own.end() - pfn);
    } else {
        x[1] = t.own.base;
        x[2] = n.min(t.own.pages);
    }
}

/// What a successful call obliges the caller to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Undo {
    /// Nothing.
    Nothing,
    /// FN_HOST_UNSHARE_HYP of this pfn.
    Unshare(u64),
    /// FN_HOST_RECLAIM_HYP of `(pfn, count)`.
    Reclaim(u64, u64),
    /// Nothing can undo it: report it (a take-back or guest call that
    /// should have failed succeeded).
    Anomaly,
}

/// What to do after call `x` returned `ret` (`x0`, `x1`).
pub fn undo(x: &[u64; 7], ret: [u64; 2]) -> Undo {
    if ret[0] != abi::SMCCC_SUCCESS as u64 || ret[1] != 0 {
        return Undo::Nothing;
    }
    match kind(x[0] as u32) {
        Kind::ShareHyp => Undo::Unshare(x[1]),
        Kind::DonateHyp => Undo::Reclaim(x[1], x[2]),
        Kind::TakeBack | Kind::Guest => Undo::Anomaly,
        Kind::Query | Kind::Unknown | Kind::Other => Undo::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets() -> Targets {
        Targets {
            own: PfnRange {
                base: 0x7fff0,
                pages: 4,
            },
            ram: PfnRange {
                base: 0x40000,
                pages: 0x40000,
            },
            gap: Some(0x40200),
            uart: 0x9000,
            smmu: 0x9050,
        }
    }

    #[test]
    fn kinds() {
        assert_eq!(kind(abi::FN_HOST_SHARE_HYP), Kind::ShareHyp);
        assert_eq!(kind(abi::FN_COUNTER), Kind::Query);
        assert_eq!(kind(abi::FN_CALL_UID), Kind::Query);
        assert_eq!(kind(abi::FN_HOST_MKYOUNG_GUEST), Kind::Guest);
        assert_eq!(kind(0xC600_0FFF), Kind::Unknown);
        assert_eq!(kind(0x8600_0002), Kind::Unknown);
        assert_eq!(kind(0x8400_0008), Kind::Other);
        assert_eq!(kind(0x8000_0000), Kind::Other);
        assert_eq!(kind(0xC500_0020), Kind::Other);
    }

    #[test]
    fn never_psci_and_donations_stay_confined() {
        let t = targets();
        let mut rng = XorShift::new(42);
        let mut donations = 0;
        for _ in 0..200_000 {
            let x = random_call(&mut rng, &t);
            assert!(!matches!(owner(x[0] as u32), 0 | 4), "{:#x}", x[0]);
            if kind(x[0] as u32) == Kind::DonateHyp {
                donations += 1;
                let (pfn, n) = (x[1], x[2]);
                if let Some(end) = pfn.checked_add(n) {
                    let in_ram = n != 0 && pfn < t.ram.end() && t.ram.base < end;
                    assert!(!in_ram || (t.own.contains(pfn) && end <= t.own.end()), "{pfn:#x} {n}");
                }
            }
        }
        assert!(donations > 5_000, "{donations}");
    }

    #[test]
    fn undo_rules() {
        let mut x = [abi::FN_HOST_SHARE_HYP as u64, 5, 0, 0, 0, 0, 0];
        assert_eq!(undo(&x, [0, 0]), Undo::Unshare(5));
        assert_eq!(undo(&x, [0, (-1i64) as u64]), Undo::Nothing);
        x[0] = abi::FN_HOST_DONATE_HYP as u64 | (7 << 32);
        x[2] = 3;
        assert_eq!(undo(&x, [0, 0]), Undo::Reclaim(5, 3));
        x[0] = abi::FN_HOST_RECLAIM_HYP as u64;
        assert_eq!(undo(&x, [0, 0]), Undo::Anomaly);
        x[0] = 0xC600_0FFF;
        assert_eq!(undo(&x, [u64::MAX, 0]), Undo::Nothing);
    }
}
