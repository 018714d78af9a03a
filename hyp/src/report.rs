//! The boot summary Warden prints: the machine, the image and the EL2
//! table. Pure formatting into any [`core::fmt::Write`], so the exact text
//! is unit-tested on the host and asserted on by `cargo xtask test`.

use core::fmt::{self, Write};

use warden_pgtable::{Attrs, Geometry, MemType, Perms};

use crate::layout::{ImageLayout, MapPlan, TableReport};
use crate::platform::{Platform, Range};
use crate::pool::PoolStats;

/// A byte count printed with a binary unit (`64 KiB`, `1 GiB`, `300 B`).
#[derive(Clone, Copy, Debug)]
pub struct Size(pub u64);

impl Size {
    fn write(&self, w: &mut dyn Write) -> fmt::Result {
        const UNITS: [(&str, u32); 4] = [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)];
        // The largest unit not above the value; one decimal (rounded
        // down) unless it is a whole number of that unit.
        for (unit, shift) in UNITS {
            let one = 1u64 << shift;
            if self.0 >= one {
                if self.0.is_multiple_of(one) {
                    return write!(w, "{} {unit}", self.0 >> shift);
                }
                let tenths = (self.0 >> (shift - 10)).saturating_mul(10) / 1024;
                return write!(w, "{}.{} {unit}", tenths / 10, tenths % 10);
            }
        }
        write!(w, "{} B", self.0)
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Format into a buffer first so width and alignment flags apply.
        let mut buf = [0u8; 32];
        let mut w = Buf { buf: &mut buf, len: 0 };
        self.write(&mut w)?;
        let len = w.len;
        f.pad(core::str::from_utf8(&buf[..len]).map_err(|_| fmt::Error)?)
    }
}

/// `[base, end)` in hex with the size.
#[derive(Clone, Copy, Debug)]
pub struct Span(pub Range);

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.0;
        write!(f, "{:#011x}..{:#011x} {:>10}", r.base, r.end(), Size(r.size))
    }
}

/// Permissions as `R`, `RW`, `RX`.
#[derive(Clone, Copy, Debug)]
pub struct PermStr(pub Perms);

impl fmt::Display for PermStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.0;
        for (on, c) in [(p.r, 'R'), (p.w, 'W'), (p.x, 'X')] {
            if on {
                f.write_char(c)?;
            }
        }
        if !(p.r || p.w || p.x) {
            f.write_str("none")?;
        }
        Ok(())
    }
}

/// The memory type's usual name.
pub fn mem_type_str(m: MemType) -> &'static str {
    match m {
        MemType::Device => "Device-nGnRE",
        MemType::NormalNc => "Normal-NC",
        MemType::NormalWb => "Normal-WB",
        MemType::AsStage1 => "as-stage-1",
    }
}

fn attrs_str(a: Attrs) -> impl fmt::Display {
    struct A(Attrs);
    impl fmt::Display for A {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            // Pad the permissions so the columns line up.
            let mut perms = [b' '; 4];
            let mut w = Buf {
                buf: &mut perms,
                len: 0,
            };
            let _ = write!(w, "{}", PermStr(self.0.perms));
            let perms = core::str::from_utf8(&perms).unwrap_or("?");
            write!(f, "{perms} {:<12}", mem_type_str(self.0.mem))
        }
    }
    A(a)
}

/// A tiny fixed-buffer writer.
struct Buf<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl Write for Buf<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len.checked_add(s.len()).ok_or(fmt::Error)?;
        let dst = self.buf.get_mut(self.len..end).ok_or(fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// The memory map read from the device tree.
pub fn write_platform(w: &mut dyn Write, p: &Platform, dtb: Range) -> fmt::Result {
    writeln!(w, "device tree at {}", Span(dtb))?;
    writeln!(w, "memory map (from the device tree):")?;
    for m in p.memory() {
        writeln!(w, "  RAM      {}", Span(*m))?;
    }
    writeln!(w, "  UART     {}  arm,pl011", Span(p.uart))?;
    match p.smmu {
        Some(s) => writeln!(w, "  SMMU     {}  arm,smmu-v3", Span(s))?,
        None => writeln!(w, "  SMMU     none")?,
    }
    match p.gic_dist {
        Some(d) => {
            writeln!(w, "  GIC dist {}  arm,gic-v3", Span(d))?;
            for r in p.gic_redist() {
                writeln!(w, "  GIC rdst {}", Span(*r))?;
            }
        }
        None => writeln!(w, "  GIC      none")?,
    }
    writeln!(w, "  PSCI     method {} ({})", p.psci.as_str(), p.psci_compatible())?;
    writeln!(w, "  CPUs     {}", p.cpus)?;
    if !p.bootargs().is_empty() {
        writeln!(w, "  bootargs \"{}\"", p.bootargs())?;
    }
    Ok(())
}

/// The image layout.
pub fn write_image(w: &mut dyn Write, l: &ImageLayout) -> fmt::Result {
    writeln!(w, "hypervisor image {}:", Span(l.image()))?;
    for (name, r) in l.parts() {
        writeln!(w, "  {name:<7}{}", Span(r))?;
    }
    Ok(())
}

/// The EL2 stage-1 table.
pub fn write_table(
    w: &mut dyn Write,
    geo: &Geometry,
    root: u64,
    plan: &MapPlan,
    report: &TableReport,
    pool: &PoolStats,
) -> fmt::Result {
    writeln!(
        w,
        "EL2 page table: {}-bit VA, 4 KiB granule, start level {}, root {:#x}",
        geo.ia_bits, geo.start_level, root
    )?;
    for (r, leaves) in plan.regions().iter().zip(report.leaves.iter()) {
        write!(w, "  {:<7}{}  {}  ", r.name, Span(r.range), attrs_str(r.attrs))?;
        let mut first = true;
        for (level, n) in leaves.per_level.iter().enumerate() {
            if *n == 0 {
                continue;
            }
            let unit = match level {
                1 => "1G",
                2 => "2M",
                _ => "4K",
            };
            write!(w, "{}{n} x {unit}", if first { "" } else { " + " })?;
            first = false;
        }
        writeln!(w)?;
    }
    writeln!(
        w,
        "  table pages used: {} of {} ({} peak)",
        pool.used, pool.total, pool.peak
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::build_el2_table;
    use crate::pool::fake::FakeMem;
    use crate::pool::PagePool;
    use std::string::String;

    #[test]
    fn sizes() {
        let s = |n| std::format!("{}", Size(n));
        assert_eq!(s(0), "0 B");
        assert_eq!(s(1000), "1000 B");
        assert_eq!(s(4096), "4 KiB");
        assert_eq!(s(0x1fbe), "7.9 KiB");
        assert_eq!(s(1 << 30), "1 GiB");
        assert_eq!(s(3 << 20), "3 MiB");
        assert_eq!(s(0xf6_0000), "15.3 MiB");
        assert_eq!(s(u64::MAX), std::format!("{}.9 TiB", u64::MAX >> 40));
        assert_eq!(std::format!("[{:>8}]", Size(4096)), "[   4 KiB]");
    }

    #[test]
    fn summary_text() {
        let (layout, platform, plan) = crate::layout::tests::sample_plan();
        let pool = PagePool::new(
            FakeMem::new(layout.pool.base, layout.pool.size),
            layout.pool.base,
            layout.pool.size,
        );
        let (pt, report) = build_el2_table(&plan, 48, pool, crate::layout::tests::CountingTlb::default()).unwrap();
        let mut out = String::new();
        write_platform(&mut out, &platform, Range::new(0x4800_0000, 0x1fbe)).unwrap();
        write_image(&mut out, &layout).unwrap();
        write_table(&mut out, pt.geometry(), pt.root(), &plan, &report, &pt.mm().stats()).unwrap();
        std::println!("{out}");
        assert!(out.contains("  RAM      0x040000000..0x080000000      1 GiB"));
        assert!(out.contains("  UART     0x009000000..0x009001000      4 KiB  arm,pl011"));
        assert!(out.contains("  SMMU     0x009050000..0x009070000    128 KiB  arm,smmu-v3"));
        assert!(out.contains("  PSCI     method smc (arm,psci-1.0)"));
        assert!(out.contains("EL2 page table: 48-bit VA, 4 KiB granule, start level 0"));
        assert!(out.contains("  text   0x040200000..0x040210000     64 KiB  RX   Normal-WB     16 x 4K"));
        assert!(out.contains("  uart   0x009000000..0x009001000      4 KiB  RW   Device-nGnRE  1 x 4K"));
        assert!(out.contains("  table pages used: "));
    }
}
