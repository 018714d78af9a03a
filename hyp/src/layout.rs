//! Warden's EL2 address space: the image's sections, the page pool, the
//! device tree and the console, each identity-mapped with the least
//! permissions it needs (never writable and executable at once).
//!
//! [`MapPlan`] checks the layout against the machine and lists the regions;
//! [`build_el2_table`] maps them with warden-pgtable and reads every region
//! back from the table to prove it holds what was asked.

use warden_pgtable::{Attrs, Kind, MapPolicy, MemType, MmOps, PageTable, Perms, Regime, TlbOps, PAGE_SIZE};

use crate::platform::{Platform, Range};

/// Where the linker put the image's parts (all page-aligned).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageLayout {
    /// Code (and the boot header): read + execute.
    pub text: Range,
    /// Constants: read-only.
    pub rodata: Range,
    /// Initialised data: read + write.
    pub data: Range,
    /// Zero-initialised data: read + write.
    pub bss: Range,
    /// The boot CPU's stack (an unmapped guard page sits below it).
    pub stack: Range,
    /// The page-table page pool.
    pub pool: Range,
}

impl ImageLayout {
    /// The whole image, from the start of text to the end of the pool.
    pub fn image(&self) -> Range {
        Range::new(self.text.base, self.pool.end().saturating_sub(self.text.base))
    }

    /// The parts in address order, with their names.
    pub fn parts(&self) -> [(&'static str, Range); 6] {
        [
            ("text", self.text),
            ("rodata", self.rodata),
            ("data", self.data),
            ("bss", self.bss),
            ("stack", self.stack),
            ("pool", self.pool),
        ]
    }
}

/// One identity-mapped region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// What it is.
    pub name: &'static str,
    /// Where (page-aligned).
    pub range: Range,
    /// How it is mapped.
    pub attrs: Attrs,
}

/// Most regions in a plan.
pub const MAX_REGIONS: usize = 10;

/// Why the layout cannot be mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// A section is not page-aligned or is empty where it must not be.
    Unaligned(&'static str),
    /// A part of the image is not inside RAM the device tree describes.
    NotInRam(&'static str),
    /// Two regions overlap.
    Overlap(&'static str, &'static str),
    /// The UART lies in RAM.
    UartInRam,
    /// Warden's carve-out does not fit in RAM after the image.
    NoRoom,
    /// The table could not be built.
    Map(&'static str, warden_pgtable::Error),
    /// Reading a region back from the table gave something else.
    Verify(&'static str),
}

/// The list of regions to map.
#[derive(Clone, Copy, Debug)]
pub struct MapPlan {
    regions: [Region; MAX_REGIONS],
    count: usize,
}

const fn attrs(perms: Perms, mem: MemType) -> Attrs {
    Attrs::new(perms, mem)
}

fn page_round(r: Range) -> Range {
    let base = r.base & !(PAGE_SIZE - 1);
    let end = r.end().saturating_add(PAGE_SIZE - 1) & !(PAGE_SIZE - 1);
    Range::new(base, end - base)
}

impl MapPlan {
    /// Check the layout and list the regions: image sections and pool
    /// (must be page-aligned, inside RAM, disjoint), Warden's memory carved
    /// out of RAM at boot (`hyp_mem`: per-page metadata and the host
    /// stage-2's pool; see [`carve_out`]), the device tree (read-write, so
    /// that Warden can rewrite it for the host, rounded out to pages, must
    /// not overlap the image; unmapped before the host runs) and the UART
    /// (device memory, must not be RAM). The SMMU's registers are not here:
    /// the host donates them through warden-memprotect, which maps them.
    pub fn new(layout: &ImageLayout, platform: &Platform, dtb: Range, hyp_mem: Range) -> Result<Self, LayoutError> {
        let mut plan = MapPlan {
            regions: [Region {
                name: "",
                range: Range::default(),
                attrs: attrs(Perms::R, MemType::NormalWb),
            }; MAX_REGIONS],
            count: 0,
        };
        let normal = MemType::NormalWb;
        let sections = [
            ("text", layout.text, Perms::RX),
            ("rodata", layout.rodata, Perms::R),
            ("data", layout.data, Perms::RW),
            ("bss", layout.bss, Perms::RW),
            ("stack", layout.stack, Perms::RW),
            ("pool", layout.pool, Perms::RW),
            ("carve", hyp_mem, Perms::RW),
        ];
        for (name, range, perms) in sections {
            if range.base % PAGE_SIZE != 0 || range.size % PAGE_SIZE != 0 {
                return Err(LayoutError::Unaligned(name));
            }
            if range.size == 0 {
                // An empty section (e.g. no .data) is simply not mapped,
                // but text, stack and pool must exist.
                if matches!(name, "text" | "stack" | "pool") {
                    return Err(LayoutError::Unaligned(name));
                }
                continue;
            }
            if !platform.is_ram(&range) {
                return Err(LayoutError::NotInRam(name));
            }
            plan.push(name, range, attrs(perms, normal))?;
        }
        let dtb = page_round(dtb);
        if !platform.is_ram(&dtb) {
            return Err(LayoutError::NotInRam("dtb"));
        }
        plan.push("dtb", dtb, attrs(Perms::RW, normal))?;
        let uart = page_round(platform.uart);
        if platform.memory().iter().any(|m| m.overlaps(&uart)) {
            return Err(LayoutError::UartInRam);
        }
        plan.push("uart", uart, attrs(Perms::RW, MemType::Device))?;
        Ok(plan)
    }

    fn push(&mut self, name: &'static str, range: Range, attrs: Attrs) -> Result<(), LayoutError> {
        if let Some(other) = self.regions().iter().find(|r| r.range.overlaps(&range)) {
            return Err(LayoutError::Overlap(other.name, name));
        }
        // MAX_REGIONS covers every push `new` makes.
        let slot = self
            .regions
            .get_mut(self.count)
            .ok_or(LayoutError::Overlap(name, name))?;
        *slot = Region { name, range, attrs };
        self.count += 1;
        Ok(())
    }

    /// The regions, in the order they are mapped.
    pub fn regions(&self) -> &[Region] {
        &self.regions[..self.count]
    }
}

/// Where Warden's boot-time memory goes: `size` bytes (rounded up to
/// pages) right after the image, inside the RAM region that holds the
/// image, clear of the device tree. `NoRoom` otherwise.
pub fn carve_out(image: Range, platform: &Platform, dtb: Range, size: u64) -> Result<Range, LayoutError> {
    let base = image
        .end()
        .checked_next_multiple_of(PAGE_SIZE)
        .ok_or(LayoutError::NoRoom)?;
    let size = size.checked_next_multiple_of(PAGE_SIZE).ok_or(LayoutError::NoRoom)?;
    base.checked_add(size).ok_or(LayoutError::NoRoom)?;
    let r = Range::new(base, size);
    if size == 0 || !platform.is_ram(&r) || r.overlaps(&page_round(dtb)) {
        return Err(LayoutError::NoRoom);
    }
    Ok(r)
}

/// How a region ended up in the table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegionLeaves {
    /// Leaf count per level (index 1: 1 GiB blocks, 2: 2 MiB, 3: pages).
    pub per_level: [u64; 4],
}

/// What [`build_el2_table`] reports for the summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableReport {
    /// Leaves per region, in plan order.
    pub leaves: [RegionLeaves; MAX_REGIONS],
}

/// Build the EL2 stage-1 table for `plan` with `va_bits` of VA space:
/// identity-map each region with the largest blocks alignment allows, then
/// walk each region back and check every leaf: identity output address,
/// the permissions and memory type asked for.
pub fn build_el2_table<M: MmOps, T: TlbOps>(
    plan: &MapPlan,
    va_bits: u8,
    mm: M,
    tlb: T,
) -> Result<(PageTable<M, T>, TableReport), LayoutError> {
    let regime = Regime::El2Stage1 { va_bits };
    let mut pt = PageTable::new(regime, mm, tlb).map_err(|e| LayoutError::Map("root", e))?;
    for r in plan.regions() {
        pt.map(r.range.base, r.range.size, r.range.base, r.attrs, MapPolicy::BLOCKS)
            .map_err(|e| LayoutError::Map(r.name, e))?;
    }
    let mut report = TableReport::default();
    for (i, r) in plan.regions().iter().enumerate() {
        let mut ok = true;
        let mut counts = RegionLeaves::default();
        let walked = pt.walk(
            r.range.base,
            r.range.size,
            warden_pgtable::WalkFlags::LEAF,
            &mut |_, ctx, _| {
                let level = ctx.level;
                let size = ctx.entry_size();
                let leaf_ok = ctx.old.kind(level) == Kind::Leaf
                    && ctx.old.oa() == ctx.entry_start
                    && ctx.old.attrs(&regime) == r.attrs
                    && r.range.base <= ctx.entry_start
                    && ctx.entry_start + size <= r.range.end();
                ok &= leaf_ok;
                counts.per_level[level as usize & 3] += 1;
                Ok(())
            },
        );
        if walked.is_err() || !ok {
            return Err(LayoutError::Verify(r.name));
        }
        report.leaves[i] = counts;
    }
    Ok((pt, report))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::pool::fake::FakeMem;
    use crate::pool::PagePool;
    use warden_pgtable::{Barrier, Tlbi};

    const QEMU_VIRT: &[u8] = include_bytes!("testdata/qemu-virt-gicv3-smmuv3.dtb");

    pub(crate) fn sample_layout() -> ImageLayout {
        let k = 0x1000;
        ImageLayout {
            text: Range::new(0x4020_0000, 16 * k),
            rodata: Range::new(0x4021_0000, 4 * k),
            data: Range::new(0x4021_4000, k),
            bss: Range::new(0x4021_5000, 2 * k),
            // One guard page below the stack.
            stack: Range::new(0x4021_8000, 16 * k),
            pool: Range::new(0x4022_8000, 64 * k),
        }
    }

    /// Counts barriers and TLBIs.
    #[derive(Default)]
    pub(crate) struct CountingTlb {
        pub barriers: usize,
        pub tlbis: usize,
    }

    impl TlbOps for CountingTlb {
        fn barrier(&mut self, _: Barrier) {
            self.barriers += 1;
        }
        fn tlbi(&mut self, _: Tlbi) {
            self.tlbis += 1;
        }
    }

    pub(crate) fn sample_plan() -> (ImageLayout, Platform, MapPlan) {
        let layout = sample_layout();
        let platform = Platform::from_fdt(QEMU_VIRT).unwrap();
        let dtb = Range::new(0x4800_0000, 0x1fbe);
        let plan = MapPlan::new(&layout, &platform, dtb, sample_hyp_mem()).unwrap();
        (layout, platform, plan)
    }

    pub(crate) fn sample_hyp_mem() -> Range {
        Range::new(0x4026_8000, 0x10_0000)
    }

    #[test]
    fn plan_lists_every_region() {
        let (_, _, plan) = sample_plan();
        let names: Vec<_> = plan.regions().iter().map(|r| r.name).collect();
        assert_eq!(
            names,
            ["text", "rodata", "data", "bss", "stack", "pool", "carve", "dtb", "uart"]
        );
        let dtb = plan.regions()[7];
        assert_eq!(dtb.range, Range::new(0x4800_0000, 0x2000));
        let uart = plan.regions()[8];
        assert_eq!(uart.attrs.mem, MemType::Device);
        // Never writable and executable.
        assert!(plan.regions().iter().all(|r| !(r.attrs.perms.w && r.attrs.perms.x)));
    }

    #[test]
    fn plan_refuses_bad_layouts() {
        let platform = Platform::from_fdt(QEMU_VIRT).unwrap();
        let dtb = Range::new(0x4800_0000, 0x1000);
        let mut l = sample_layout();
        l.data.base += 8;
        assert_eq!(
            MapPlan::new(&l, &platform, dtb, sample_hyp_mem()).unwrap_err(),
            LayoutError::Unaligned("data")
        );
        let mut l = sample_layout();
        l.text.base = 0x1000_0000;
        assert_eq!(
            MapPlan::new(&l, &platform, dtb, sample_hyp_mem()).unwrap_err(),
            LayoutError::NotInRam("text")
        );
        let l = sample_layout();
        let dtb_in_image = Range::new(l.pool.base, 0x100);
        assert_eq!(
            MapPlan::new(&l, &platform, dtb_in_image, sample_hyp_mem()).unwrap_err(),
            LayoutError::Overlap("pool", "dtb")
        );
        let mut l = sample_layout();
        l.stack.size = 0;
        assert_eq!(
            MapPlan::new(&l, &platform, dtb, sample_hyp_mem()).unwrap_err(),
            LayoutError::Unaligned("stack")
        );
    }

    #[test]
    fn builds_and_verifies_the_table() {
        let (layout, _, plan) = sample_plan();
        for va_bits in [39, 48] {
            // The pool region of the sample layout, backed by a buffer.
            let mem = FakeMem::new(layout.pool.base, layout.pool.size);
            let pool = PagePool::new(mem, layout.pool.base, layout.pool.size);
            let (pt, report) = build_el2_table(&plan, va_bits, pool, CountingTlb::default()).expect("table builds");
            assert_eq!(pt.geometry().start_level, if va_bits == 39 { 1 } else { 0 });
            // text: 16 pages, no block fits.
            assert_eq!(report.leaves[0].per_level, [0, 0, 0, 16]);
            let used = pt.mm().stats().used;
            // Root + L1 + L2 for the image, L1 shared; uart needs L1(0)..L3.
            assert!((5..=8).contains(&used), "{used} table pages");
            assert_eq!(pt.mm().stats().bad_refs, 0);
            // Nothing outside the plan is mapped.
            let (d, _) = pt.get_leaf(layout.stack.base - PAGE_SIZE).unwrap();
            assert!(!d.is_valid(), "guard page must stay unmapped");
        }
    }

    #[test]
    fn carve_out_follows_the_image_inside_ram() {
        let platform = Platform::from_fdt(QEMU_VIRT).unwrap();
        let image = Range::new(0x4020_0000, 0x23_4567);
        let dtb = Range::new(0x4800_0000, 0x10_0000);
        assert_eq!(
            carve_out(image, &platform, dtb, 0x1001),
            Ok(Range::new(0x4043_5000, 0x2000))
        );
        // Into the device tree, past RAM, empty: no room.
        assert_eq!(carve_out(image, &platform, dtb, 0x800_0000), Err(LayoutError::NoRoom));
        assert_eq!(carve_out(image, &platform, dtb, 1 << 40), Err(LayoutError::NoRoom));
        assert_eq!(carve_out(image, &platform, dtb, 0), Err(LayoutError::NoRoom));
        assert_eq!(carve_out(image, &platform, dtb, u64::MAX), Err(LayoutError::NoRoom));
    }
}
