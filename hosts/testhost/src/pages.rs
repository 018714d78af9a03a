//! The host's free RAM as runs of whole pages, and a top-down allocator.
//!
//! "Free" means RAM the device tree gives the host, minus what must not be
//! scribbled on: the test host's image and stacks, the device tree blob and
//! the memory reservations. `lazy-map` touches every page of every run; the
//! scenarios that share, donate or DMA take their pages from the top of the
//! highest run, far from the image (so a donation splits a block of its
//! own, not the one the test host runs in).

use warden_hyp::platform::Range;

/// The page size (4 KiB granule at both stages).
pub const PAGE: u64 = 4096;
/// Most runs kept (every exclusion can split a range in two).
pub const MAX_RUNS: usize = 32;

/// Page runs of free RAM, ascending.
#[derive(Clone, Copy, Debug)]
pub struct FreeRuns {
    runs: [Range; MAX_RUNS],
    count: usize,
    /// Pieces dropped because there were more than [`MAX_RUNS`].
    pub dropped: usize,
}

impl FreeRuns {
    /// `memory` (page-aligned inwards) minus `exclude` (page-aligned
    /// outwards).
    pub fn new(memory: &[Range], exclude: &[Range]) -> Self {
        let mut f = FreeRuns {
            runs: [Range::default(); MAX_RUNS],
            count: 0,
            dropped: 0,
        };
        for m in memory {
            let start = m.base.saturating_add(PAGE - 1) & !(PAGE - 1);
            let end = m.end() & !(PAGE - 1);
            f.add_minus(start, end, exclude);
        }
        f.runs[..f.count].sort_unstable_by_key(|r| r.base);
        f
    }

    /// Add `[start, end)` minus every exclusion, recursively splitting.
    fn add_minus(&mut self, start: u64, end: u64, exclude: &[Range]) {
        if start >= end {
            return;
        }
        for (i, x) in exclude.iter().enumerate() {
            let xs = x.base & !(PAGE - 1);
            let xe = x.end().saturating_add(PAGE - 1) & !(PAGE - 1);
            if x.size != 0 && xs < end && start < xe {
                // Keep the parts on either side; later exclusions still
                // apply to them.
                self.add_minus(start, xs.max(start), &exclude[i + 1..]);
                self.add_minus(xe.min(end), end, &exclude[i + 1..]);
                return;
            }
        }
        if self.count == MAX_RUNS {
            self.dropped += 1;
        } else {
            self.runs[self.count] = Range::new(start, end - start);
            self.count += 1;
        }
    }

    /// The runs, ascending.
    pub fn runs(&self) -> &[Range] {
        &self.runs[..self.count]
    }

    /// Total free pages.
    pub fn pages(&self) -> u64 {
        self.runs().iter().map(|r| r.size / PAGE).sum()
    }

    /// Take `pages` contiguous pages from the top of the highest run that
    /// has them; their base address.
    pub fn alloc_top(&mut self, pages: u64) -> Option<u64> {
        let bytes = pages.checked_mul(PAGE)?;
        let run = self.runs[..self.count].iter_mut().rev().find(|r| r.size >= bytes)?;
        run.size -= bytes;
        Some(run.base + run.size)
    }
}

/// The size of the blocks Warden maps the host's RAM with.
pub const BLOCK_2M: u64 = 2 << 20;

/// The most stage-2 faults Warden may take to map `memory` if it maps the
/// largest block around each fault that stays inside the RAM region: one
/// per 2 MiB-aligned block lying wholly inside a region, and one per page
/// of the partial blocks at a region's unaligned ends (a block there would
/// reach outside the region, e.g. into Warden's own memory). Returns
/// (whole blocks, pages at unaligned ends).
pub fn block_fault_bound(memory: &[Range]) -> (u64, u64) {
    let (mut blocks, mut pages) = (0, 0);
    for r in memory {
        let start = r.base.saturating_add(PAGE - 1) & !(PAGE - 1);
        let end = r.end() & !(PAGE - 1);
        if start >= end {
            continue;
        }
        let first_block = start.saturating_add(BLOCK_2M - 1) & !(BLOCK_2M - 1);
        let last_block = end & !(BLOCK_2M - 1);
        if first_block >= last_block {
            // No whole block: every page on its own.
            pages += (end - start) / PAGE;
            continue;
        }
        blocks += (last_block - first_block) / BLOCK_2M;
        pages += (first_block - start) / PAGE + (end - last_block) / PAGE;
    }
    (blocks, pages)
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: fn(u64, u64) -> Range = Range::new;

    #[test]
    fn excludes_and_aligns() {
        let f = FreeRuns::new(
            &[R(0x4000_0000, 0x4000_0000)],
            &[R(0x4400_0000, 0x5_0000), R(0x4800_0010, 0x100)],
        );
        assert_eq!(
            f.runs(),
            &[
                R(0x4000_0000, 0x400_0000),
                R(0x4405_0000, 0x400_0000 - 0x5_0000),
                R(0x4800_1000, 0x3800_0000 - 0x1000),
            ]
        );
        assert_eq!(f.pages(), (0x4000_0000 - 0x5_0000 - 0x1000) / PAGE);
        // Unaligned memory is trimmed inwards; exclusions outside are ignored.
        let f = FreeRuns::new(&[R(0x1001, 0x3000)], &[R(0x10_0000, 0x1000)]);
        assert_eq!(f.runs(), &[R(0x2000, 0x2000)]);
        // An exclusion covering everything leaves nothing.
        let f = FreeRuns::new(&[R(0x1000, 0x1000)], &[R(0, 0x10_0000)]);
        assert!(f.runs().is_empty());
    }

    #[test]
    fn fault_bound() {
        // 1 GiB minus Warden's 0x40200000..0x40920000: the first 2 MiB is
        // one block, the rest starts 224 pages short of a block boundary.
        let mem = [R(0x4000_0000, 0x20_0000), R(0x4092_0000, 0x8000_0000 - 0x4092_0000)];
        assert_eq!(block_fault_bound(&mem), (1 + 507, 224));
        // Aligned everywhere: blocks only.
        assert_eq!(block_fault_bound(&[R(0x4000_0000, 0x4000_0000)]), (512, 0));
        // Smaller than a block, and unaligned at both ends.
        assert_eq!(block_fault_bound(&[R(0x4000_1000, 0x3000)]), (0, 3));
        assert_eq!(block_fault_bound(&[R(0x401f_f000, 0x20_2000)]), (1, 2));
    }

    #[test]
    fn allocates_from_the_top() {
        let mut f = FreeRuns::new(&[R(0x1000, 0x3000), R(0x10_0000, 0x2000)], &[]);
        assert_eq!(f.alloc_top(1), Some(0x10_1000));
        assert_eq!(f.alloc_top(2), Some(0x2000));
        assert_eq!(f.alloc_top(1), Some(0x10_0000));
        assert_eq!(f.alloc_top(2), None);
        assert_eq!(f.alloc_top(1), Some(0x1000));
        assert_eq!(f.alloc_top(1), None);
    }
}
