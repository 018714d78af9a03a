//! Host-side helpers for tests and benchmarks (feature `test-util`): an
//! arena of table pages implementing [`MmOps`] and a [`TlbOps`] that only
//! counts. They are plain memory, not a model of the hardware: use
//! warden-archmodel to check translations and break-before-make.

extern crate std;

#[cfg(feature = "model")]
pub mod model;

use std::vec;
use std::vec::Vec;

use crate::ops::{Barrier, MmOps, TlbOps, Tlbi};

/// Table pages in one contiguous host allocation, addressed as physical
/// addresses from `base`, with a free list and a refcount per page.
pub struct ArenaMm {
    base: u64,
    mem: Vec<u64>,
    refs: Vec<u32>,
    free: Vec<usize>,
    next: usize,
    limit: Option<usize>,
    live: usize,
}

impl ArenaMm {
    /// An arena of `pages` pages whose first page has physical address `base`.
    pub fn new(base: u64, pages: usize) -> Self {
        ArenaMm {
            base,
            mem: vec![0; pages * 512],
            refs: vec![0; pages],
            free: Vec::new(),
            next: 0,
            limit: None,
            live: 0,
        }
    }

    /// Allow at most `limit` more live pages from now on (`None`: no limit).
    pub fn set_limit(&mut self, limit: Option<usize>) {
        self.limit = limit.map(|l| l + self.live);
    }

    /// Pages currently allocated.
    pub fn live_pages(&self) -> usize {
        self.live
    }

    fn index(&self, pa: u64) -> usize {
        ((pa - self.base) / 4096) as usize
    }
}

impl MmOps for ArenaMm {
    fn zalloc_pages(&mut self, count: usize) -> Option<u64> {
        if self.limit.is_some_and(|l| self.live + count > l) {
            return None;
        }
        let first = if count == 1 && !self.free.is_empty() {
            self.free.pop()?
        } else {
            // Concatenated roots: contiguous and aligned to their size.
            let first = self.next.next_multiple_of(count);
            if first + count > self.refs.len() {
                return None;
            }
            self.next = first + count;
            first
        };
        for p in first..first + count {
            self.mem[p * 512..(p + 1) * 512].fill(0);
            self.refs[p] = 1;
        }
        self.live += count;
        Some(self.base + first as u64 * 4096)
    }

    fn can_allocate(&self, pages: usize) -> bool {
        let free = self.free.len() + (self.refs.len() - self.next);
        free >= pages && self.limit.is_none_or(|l| self.live + pages <= l)
    }

    fn get_page(&mut self, pa: u64) {
        let i = self.index(pa);
        assert!(self.refs[i] > 0, "get_page on a free page {pa:#x}");
        self.refs[i] += 1;
    }

    fn put_page(&mut self, pa: u64) {
        let i = self.index(pa);
        assert!(self.refs[i] > 0, "put_page on a free page {pa:#x}");
        self.refs[i] -= 1;
        if self.refs[i] == 0 {
            self.free.push(i);
            self.live -= 1;
        }
    }

    fn get_pages(&mut self, pa: u64, n: u32) {
        let i = self.index(pa);
        self.refs[i] += n;
    }

    fn put_pages(&mut self, pa: u64, n: u32) {
        let i = self.index(pa);
        assert!(self.refs[i] >= n, "put_pages below zero on {pa:#x}");
        self.refs[i] -= n;
        if n > 0 && self.refs[i] == 0 {
            self.free.push(i as _);
            self.live -= 1;
        }
    }

    fn page_count(&self, pa: u64) -> u32 {
        self.refs[self.index(pa)]
    }

    #[inline]
    fn read_desc(&self, pa: u64) -> u64 {
        self.mem[((pa - self.base) / 8) as usize]
    }

    fn read_descs(&self, pa: u64, out: &mut [u64]) {
        let i = ((pa - self.base) / 8) as usize;
        out.copy_from_slice(&self.mem[i..i + out.len()]);
    }

    #[inline]
    fn write_desc(&mut self, pa: u64, val: u64) {
        let i = ((pa - self.base) / 8) as usize;
        self.mem[i] = val;
    }
}

/// TLB operations that only count what was asked.
#[derive(Default, Debug, Clone)]
pub struct CountingTlb {
    /// Barriers issued.
    pub barriers: usize,
    /// TLB invalidations issued.
    pub tlbis: Vec<Tlbi>,
}

impl TlbOps for CountingTlb {
    fn barrier(&mut self, _: Barrier) {
        self.barriers += 1;
    }

    fn tlbi(&mut self, op: Tlbi) {
        self.tlbis.push(op);
    }
}
