//! Walker tests on hand-built tables.
//!
//! Descriptors are written as raw numbers worked out from the Arm ARM
//! (VMSAv8-64, 4 KiB granule), not with the crate's own decoding helpers:
//!
//! * bits[1:0]: 0b11 table (levels 0-2) or page (level 3); 0b01 block
//!   (levels 1-2 only).
//! * stage 2 leaf: MemAttr [5:2], S2AP [7:6] (6 = read, 7 = write), SH [9:8],
//!   AF 10, XN [54:53], software [58:55].
//! * EL2 stage 1 leaf: AttrIndx [4:2], AP[2:1] [7:6], SH [9:8], AF 10, XN 54.

use warden_archmodel::walk::{decode_mair, decode_s2_memattr};
use warden_archmodel::*;

const TABLE: u64 = 0b11;
/// Stage-2 page: 0b11 | MemAttr 0b1111 (0x3c) | S2AP RW (0xc0) | SH inner (0x300) | AF (0x400).
const S2_PAGE_RW_WB: u64 = 0x7ff;
/// Stage-2 block: as above with bits[1:0] = 0b01.
const S2_BLOCK_RW_WB: u64 = 0x7fd;
/// EL2 stage-1 page: 0b11 | AttrIndx 0 | AP RW | SH inner (0x300) | AF (0x400).
const S1_PAGE: u64 = 0x703;
/// EL2 stage-1 block.
const S1_BLOCK: u64 = 0x701;

const MEM_BASE: u64 = 0x4000_0000;

fn mem() -> PhysMem {
    PhysMem::new(MEM_BASE, 64 << 20)
}

fn page(m: &mut PhysMem) -> u64 {
    m.alloc_pages(1, 1).unwrap()
}

fn el2(va_bits: u8) -> Regime {
    // Attr0 = 0xff (Normal WB), Attr1 = 0x04 (Device-nGnRE), Attr2 = 0x44
    // (Normal NC), Attr3 = 0x00 (Device-nGnRnE).
    Regime::El2Stage1 {
        va_bits,
        mair: 0x0000_0000_0044_04ff,
    }
}

/// Build a 4-level EL2 stage-1 chain for `va` ending in `leaf` at level 3.
/// Returns (root, [l1, l2, l3]).
fn el2_chain(m: &mut PhysMem, va: u64, leaf: u64) -> (u64, [u64; 3]) {
    let (l0, l1, l2, l3) = (page(m), page(m), page(m), page(m));
    m.write_u64(l0 + ((va >> 39) & 511) * 8, l1 | TABLE);
    m.write_u64(l1 + ((va >> 30) & 511) * 8, l2 | TABLE);
    m.write_u64(l2 + ((va >> 21) & 511) * 8, l3 | TABLE);
    m.write_u64(l3 + ((va >> 12) & 511) * 8, leaf);
    (l0, [l1, l2, l3])
}

#[test]
fn el2_page_4k() {
    let mut m = mem();
    // L0 index 1, L1 index 2, L2 index 3, L3 index 4, offset 0xabc.
    let va = (1u64 << 39) | (2 << 30) | (3 << 21) | (4 << 12) | 0xabc;
    let oa_page = 0x8_1234_5000u64;
    // Software bits 58:55 = 0b1010.
    let leaf = oa_page | S1_PAGE | (0b1010 << 55);
    let (root, _) = el2_chain(&mut m, va, leaf);
    let t = walk(&m, root, &el2(48), va).unwrap();
    assert_eq!(t.oa, oa_page | 0xabc);
    assert_eq!(t.level, 3);
    assert_eq!(t.block_size, 0x1000);
    assert!(t.read && t.write && t.exec && t.af);
    assert_eq!(t.mem, MemType::NormalWb);
    assert_eq!(t.shareability, 3);
    assert_eq!(t.sw, 0b1010);
    assert_eq!(t.desc, leaf);
    // Neighbouring page is unmapped: translation fault at level 3.
    assert_eq!(
        walk(&m, root, &el2(48), va + 0x1000),
        Err(Fault {
            level: 3,
            kind: FaultKind::Translation
        })
    );
}

#[test]
fn el2_block_2m_and_1g() {
    let mut m = mem();
    let (l0, l1, l2) = (page(&mut m), page(&mut m), page(&mut m));
    m.write_u64(l0, l1 | TABLE);
    m.write_u64(l1, l2 | TABLE);
    // L2 index 5 -> 2 MiB block at 0x1_4020_0000.
    m.write_u64(l2 + 5 * 8, 0x1_4020_0000 | S1_BLOCK);
    // L1 index 3 -> 1 GiB block at 0x80_0000_0000.
    m.write_u64(l1 + 3 * 8, 0x80_0000_0000 | S1_BLOCK);
    let t = walk(&m, l0, &el2(48), (5 << 21) | 0x1_2345).unwrap();
    assert_eq!((t.oa, t.level, t.block_size), (0x1_4020_0000 + 0x1_2345, 2, 2 << 20));
    let t = walk(&m, l0, &el2(48), (3 << 30) | 0x1234_5678).unwrap();
    assert_eq!(
        (t.oa, t.level, t.block_size),
        (0x80_0000_0000 + 0x1234_5678, 1, 1 << 30)
    );

    // va_bits 39 starts at level 1 (T0SZ 25): a 1 GiB block in the root.
    let root = page(&mut m);
    m.write_u64(root + 511 * 8, 0x40_0000_0000 | S1_BLOCK);
    let t = walk(&m, root, &el2(39), (511 << 30) | 0xfff).unwrap();
    assert_eq!((t.oa, t.level), (0x40_0000_0fff, 1));
    // va_bits 36 (level 1 start, 64-entry root): IA beyond 2^36 faults at level 0.
    m.write_u64(root + 63 * 8, 0x40_0000_0000 | S1_BLOCK);
    assert_eq!(walk(&m, root, &el2(36), 63 << 30).unwrap().level, 1);
    assert_eq!(
        walk(&m, root, &el2(36), 64 << 30),
        Err(Fault {
            level: 0,
            kind: FaultKind::Translation
        })
    );
    // va_bits 30 starts at level 2.
    let root2 = page(&mut m);
    m.write_u64(root2 + 511 * 8, 0x20_0000 | S1_BLOCK);
    let t = walk(&m, root2, &el2(30), (511 << 21) | 7).unwrap();
    assert_eq!((t.oa, t.level), (0x20_0007, 2));
}

#[test]
fn out_of_range_input_addresses_fault_at_level_0() {
    let mut m = mem();
    let va = 0x7f_ffff_f000u64; // highest page below 2^39
    let (root, _) = el2_chain(&mut m, va, 0x1000 | S1_PAGE);
    assert!(walk(&m, root, &el2(48), va).is_ok());
    let l1_root = page(&mut m);
    m.write_u64(l1_root + 511 * 8, 0x4000_0000 | S1_BLOCK);
    assert!(walk(&m, l1_root, &el2(39), va).is_ok());
    let f = Fault {
        level: 0,
        kind: FaultKind::Translation,
    };
    assert_eq!(walk(&m, l1_root, &el2(39), 1 << 39), Err(f));
    assert_eq!(walk(&m, root, &el2(48), 1 << 48), Err(f));
    assert_eq!(walk(&m, root, &el2(48), 0xffff_0000_0000_0000), Err(f));
    let s2 = Regime::Stage2 {
        ipa_bits: 40,
        start_level: 1,
        fwb: false,
    };
    let r2 = m.alloc_pages(2, 2).unwrap();
    assert_eq!(walk(&m, r2, &s2, 1 << 40), Err(f));
}

#[test]
fn invalid_at_each_level() {
    let mut m = mem();
    let va = (7u64 << 39) | (6 << 30) | (5 << 21) | (4 << 12);
    let (root, [l1, l2, l3]) = el2_chain(&mut m, va, 0x9000 | S1_PAGE);
    let locs = [root + 7 * 8, l1 + 6 * 8, l2 + 5 * 8, l3 + 4 * 8];
    assert!(walk(&m, root, &el2(48), va).is_ok());
    for (level, &pa) in locs.iter().enumerate().rev() {
        let saved = m.read_u64(pa);
        // Bit 0 clear: invalid whatever the other bits hold (bit 1 set here).
        m.write_u64(pa, saved & !1);
        assert_eq!(
            walk(&m, root, &el2(48), va),
            Err(Fault {
                level: level as u8,
                kind: FaultKind::Translation
            })
        );
        m.write_u64(pa, 0);
        assert_eq!(
            walk(&m, root, &el2(48), va),
            Err(Fault {
                level: level as u8,
                kind: FaultKind::Translation
            })
        );
        m.write_u64(pa, saved);
    }
}

#[test]
fn level0_block_and_level3_0b01_are_translation_faults() {
    let mut m = mem();
    let root = page(&mut m);
    // A "block" at level 0 does not exist for 4 KiB.
    m.write_u64(root, S1_BLOCK);
    assert_eq!(
        walk(&m, root, &el2(48), 0x1000),
        Err(Fault {
            level: 0,
            kind: FaultKind::Translation
        })
    );

    let va = 0x1000u64;
    let (root, [_, _, l3]) = el2_chain(&mut m, va, 0x5000 | S1_BLOCK);
    assert_eq!(
        walk(&m, root, &el2(48), va),
        Err(Fault {
            level: 3,
            kind: FaultKind::Translation
        })
    );
    m.write_u64(l3 + 8, 0x5000 | S1_PAGE);
    assert_eq!(walk(&m, root, &el2(48), va).unwrap().oa, 0x5000);

    // Same for stage 2 (ipa 48, start level 0).
    let s2 = Regime::Stage2 {
        ipa_bits: 48,
        start_level: 0,
        fwb: false,
    };
    let r = page(&mut m);
    m.write_u64(r, S2_BLOCK_RW_WB);
    assert_eq!(
        walk(&m, r, &s2, 0),
        Err(Fault {
            level: 0,
            kind: FaultKind::Translation
        })
    );
}

#[test]
fn address_size_faults() {
    let mut m = mem();
    let va = 0x20_0000u64;
    // Page OA with bit 48 set.
    let (root, [_, l2, l3]) = el2_chain(&mut m, va, (1 << 48) | 0x3000 | S1_PAGE);
    assert_eq!(
        walk(&m, root, &el2(48), va),
        Err(Fault {
            level: 3,
            kind: FaultKind::AddressSize
        })
    );
    m.write_u64(l3, 0x3000 | S1_PAGE);
    assert!(walk(&m, root, &el2(48), va).is_ok());
    // Table address with bit 50 set.
    let d = m.read_u64(l2 + 8);
    m.write_u64(l2 + 8, d | (1 << 50));
    assert_eq!(
        walk(&m, root, &el2(48), va),
        Err(Fault {
            level: 2,
            kind: FaultKind::AddressSize
        })
    );
}

/// Expected concatenated root pages, from the Arm ARM rule: the start level
/// resolves ipa_bits - shift bits; a table holds 2^9 entries; up to 2^4
/// tables may be concatenated; at least one bit must be resolved.
fn expected_root_pages(ipa_bits: u32, start_level: u32) -> Option<u64> {
    let shift = 12 + 9 * (3 - start_level);
    let bits = ipa_bits.checked_sub(shift)?;
    match bits {
        0 => None,
        1..=9 => Some(1),
        10..=13 => Some(1 << (bits - 9)),
        _ => None,
    }
}

#[test]
fn stage2_concatenated_roots_for_all_ipa_sizes() {
    let mut configs = 0;
    for ipa_bits in 32u32..=48 {
        for start_level in 0u32..=2 {
            let regime = Regime::Stage2 {
                ipa_bits: ipa_bits as u8,
                start_level: start_level as u8,
                fwb: false,
            };
            let Some(pages) = expected_root_pages(ipa_bits, start_level) else {
                assert!(regime.validate().is_err(), "{regime:?} should be rejected");
                let m = mem();
                assert_eq!(
                    walk(&m, MEM_BASE, &regime, 0),
                    Err(Fault {
                        level: 0,
                        kind: FaultKind::Translation
                    })
                );
                continue;
            };
            configs += 1;
            assert_eq!(regime.validate(), Ok(()), "{regime:?}");
            assert_eq!(regime.root_pages() as u64, pages, "{regime:?}");
            let mut m = mem();
            let root = m.alloc_pages(pages as usize, pages as usize).unwrap();
            // Map the last page of the IPA space and the first one.
            for (ipa, oa) in [((1u64 << ipa_bits) - 0x1000, 0x7777_7000u64), (0, 0x1111_1000)] {
                let shift = 12 + 9 * (3 - start_level);
                // The root is one big table indexed by all bits above shift.
                let mut entry = root + (ipa >> shift) * 8;
                for level in start_level..3 {
                    let next = page(&mut m);
                    m.write_u64(entry, next | TABLE);
                    let child_shift = 12 + 9 * (3 - (level + 1));
                    entry = next + ((ipa >> child_shift) & 511) * 8;
                }
                m.write_u64(entry, oa | S2_PAGE_RW_WB);
                let t = walk(&m, root, &regime, ipa + 0x10).unwrap();
                assert_eq!((t.oa, t.level), (oa + 0x10, 3), "{regime:?} ipa {ipa:#x}");
            }
            // The last IPA's root entry is in the last concatenated page.
            let last = (1u64 << ipa_bits) - 1;
            let idx = last >> (12 + 9 * (3 - start_level));
            assert_eq!(idx * 8 / 4096, pages - 1);
            assert_eq!(
                walk(&m, root, &regime, 1 << ipa_bits),
                Err(Fault {
                    level: 0,
                    kind: FaultKind::Translation
                })
            );
        }
    }
    assert!(configs >= 17);
}

#[test]
fn stage2_named_concatenation_cases() {
    let cases = [
        (40u8, 1u8, 2usize),
        (34, 2, 16),
        (32, 2, 4),
        (39, 1, 1),
        (48, 0, 1),
        (42, 1, 8),
        (43, 1, 16),
    ];
    for (ipa_bits, start_level, pages) in cases {
        let r = Regime::Stage2 {
            ipa_bits,
            start_level,
            fwb: true,
        };
        assert_eq!(r.validate(), Ok(()));
        assert_eq!(r.root_pages(), pages, "{r:?}");
    }
    // ipa 34 start level 2: IPA 0x3_ffe0_0000 uses the last entry of page 16.
    let mut m = mem();
    let r = Regime::Stage2 {
        ipa_bits: 34,
        start_level: 2,
        fwb: false,
    };
    let root = m.alloc_pages(16, 16).unwrap();
    let l3 = page(&mut m);
    m.write_u64(root + 15 * 4096 + 511 * 8, l3 | TABLE);
    m.write_u64(l3 + 511 * 8, 0xabc000 | S2_PAGE_RW_WB);
    assert_eq!(walk(&m, root, &r, 0x3_ffff_f123).unwrap().oa, 0xabc123);
    // ipa 40 start level 1: bit 39 selects the second root page.
    let r = Regime::Stage2 {
        ipa_bits: 40,
        start_level: 1,
        fwb: false,
    };
    let root = m.alloc_pages(2, 2).unwrap();
    m.write_u64(root + 4096 + 8, 0x40_0000_0000 | S2_BLOCK_RW_WB);
    let t = walk(&m, root, &r, (1 << 39) | (1 << 30) | 0x42).unwrap();
    assert_eq!((t.oa, t.level), (0x40_0000_0042, 1));
    // Rejected: too many tables, nothing decoded, bad SL, bad size.
    for (ipa_bits, start_level) in [
        (48, 1),
        (40, 2),
        (39, 0),
        (30, 1),
        (44, 1),
        (35, 2),
        (24, 2),
        (49, 0),
        (40, 3),
    ] {
        assert!(
            Regime::Stage2 {
                ipa_bits,
                start_level,
                fwb: false
            }
            .validate()
            .is_err(),
            "{ipa_bits} {start_level}"
        );
    }
}

#[test]
fn access_flag() {
    let mut m = mem();
    let va = 0x3000u64;
    let (root, _) = el2_chain(&mut m, va, 0x8000 | (S1_PAGE & !0x400));
    let t = walk(&m, root, &el2(48), va).unwrap();
    assert!(!t.af);
    for a in [Access::Read, Access::Write, Access::Exec] {
        assert_eq!(
            check_access(&t, a),
            Err(Fault {
                level: 3,
                kind: FaultKind::AccessFlag
            })
        );
    }
    // AF takes priority over a permission fault (read-only, XN).
    let (root, _) = el2_chain(&mut m, va, 0x8000 | 0x303 | (1 << 7) | (1 << 54));
    let t = walk(&m, root, &el2(48), va).unwrap();
    assert_eq!(
        check_access(&t, Access::Write),
        Err(Fault {
            level: 3,
            kind: FaultKind::AccessFlag
        })
    );
}

#[test]
fn stage2_permissions() {
    let mut m = mem();
    let r = Regime::Stage2 {
        ipa_bits: 32,
        start_level: 1,
        fwb: false,
    };
    let root = page(&mut m);
    let l2 = page(&mut m);
    m.write_u64(root, l2 | TABLE);
    // (S2AP bits, XN bits, read, write, exec)
    let cases = [
        (0b00u64, 0b00u64, false, false, true),
        (0b01, 0b00, true, false, true),
        (0b10, 0b00, false, true, true),
        (0b11, 0b00, true, true, true),
        (0b11, 0b01, true, true, false),
        (0b11, 0b10, true, true, false),
        (0b11, 0b11, true, true, false),
    ];
    for (i, &(s2ap, xn, rd, wr, ex)) in cases.iter().enumerate() {
        // Block: bits[1:0] 0b01, MemAttr 0xf, SH 0b11, AF.
        let desc = ((i as u64) << 21) | 0b01 | (0xf << 2) | (s2ap << 6) | (0b11 << 8) | (1 << 10) | (xn << 53);
        m.write_u64(l2 + (i as u64) * 8, desc);
        let t = walk(&m, root, &r, (i as u64) << 21).unwrap();
        assert_eq!((t.read, t.write, t.exec), (rd, wr, ex), "case {i}");
        let perm = Err(Fault {
            level: 2,
            kind: FaultKind::Permission,
        });
        assert_eq!(check_access(&t, Access::Read), if rd { Ok(()) } else { perm });
        assert_eq!(check_access(&t, Access::Write), if wr { Ok(()) } else { perm });
        assert_eq!(check_access(&t, Access::Exec), if ex { Ok(()) } else { perm });
    }
}

#[test]
fn el2_permissions_and_hierarchical_limits() {
    let mut m = mem();
    // (AP[2:1] bits 7:6, XN, write, exec). AP[1] has no effect at EL2.
    let cases = [
        (0b00u64, 0u64, true, true),
        (0b01, 0, true, true),
        (0b10, 0, false, true),
        (0b11, 1, false, false),
        (0b00, 1, true, false),
    ];
    for (i, &(ap, xn, wr, ex)) in cases.iter().enumerate() {
        let va = (i as u64 + 1) << 12;
        let (root, _) = el2_chain(&mut m, va, 0x10_0000 | 0x703 | (ap << 6) | (xn << 54));
        let t = walk(&m, root, &el2(48), va).unwrap();
        assert!(t.read);
        assert_eq!((t.write, t.exec), (wr, ex), "case {i}");
    }
    // APTable[1] (bit 62) and XNTable (bit 60) in a level-1 table descriptor.
    let va = 0x4000u64;
    let (root, [l1, _, _]) = el2_chain(&mut m, va, 0x10_0000 | S1_PAGE);
    let d = m.read_u64(l1);
    m.write_u64(l1, d | (1 << 62));
    let t = walk(&m, root, &el2(48), va).unwrap();
    assert_eq!((t.read, t.write, t.exec), (true, false, true));
    m.write_u64(l1, d | (1 << 60));
    let t = walk(&m, root, &el2(48), va).unwrap();
    assert_eq!((t.read, t.write, t.exec), (true, true, false));
}

#[test]
fn mair_decode_through_attr_index() {
    let mut m = mem();
    let mair: u64 = 0x0c08_bbf4_4404_00ff_u64;
    // Attr0 0xff WB, Attr1 0x00 nGnRnE, Attr2 0x04 nGnRE, Attr3 0x44 NC,
    // Attr4 0xf4 (mixed), Attr5 0xbb (WT both), Attr6 0x08 nGRE, Attr7 0x0c GRE.
    let expect = [
        MemType::NormalWb,
        MemType::DeviceNGnRnE,
        MemType::DeviceNGnRE,
        MemType::NormalNc,
        MemType::Other(0xf4),
        MemType::NormalWt,
        MemType::DeviceNGRE,
        MemType::DeviceGRE,
    ];
    let r = Regime::El2Stage1 { va_bits: 48, mair };
    for (idx, want) in expect.iter().enumerate() {
        let va = (idx as u64 + 1) << 12;
        let (root, _) = el2_chain(&mut m, va, 0x20_0000 | S1_PAGE | ((idx as u64) << 2));
        assert_eq!(walk(&m, root, &r, va).unwrap().mem, *want, "AttrIndx {idx}");
    }
    assert_eq!(decode_mair(0xee), MemType::NormalWb);
    assert_eq!(decode_mair(0xaa), MemType::NormalWt);
    assert_eq!(decode_mair(0x01), MemType::Other(0x01));
    assert_eq!(decode_mair(0x40), MemType::NormalNc);
    assert_eq!(decode_mair(0x4f), MemType::Other(0x4f));
}

#[test]
fn stage2_memattr_without_fwb() {
    use MemType::*;
    let expect = [
        DeviceNGnRnE,
        DeviceNGnRE,
        DeviceNGRE,
        DeviceGRE, // 0b00xx
        Other(0b0100),
        NormalNc,
        NormalNc,
        NormalNc, // outer NC
        Other(0b1000),
        NormalNc,
        NormalWt,
        NormalWt, // outer WT
        Other(0b1100),
        NormalNc,
        NormalWt,
        NormalWb, // outer WB
    ];
    let mut m = mem();
    let r = Regime::Stage2 {
        ipa_bits: 32,
        start_level: 1,
        fwb: false,
    };
    let root = page(&mut m);
    let l2 = page(&mut m);
    m.write_u64(root, l2 | TABLE);
    for (attr, want) in expect.iter().enumerate() {
        assert_eq!(decode_s2_memattr(attr as u8, false), *want, "MemAttr {attr:#06b}");
        let desc = ((attr as u64) << 21) | 0b01 | ((attr as u64) << 2) | (0b11 << 6) | (0b11 << 8) | (1 << 10);
        m.write_u64(l2 + attr as u64 * 8, desc);
        assert_eq!(walk(&m, root, &r, (attr as u64) << 21).unwrap().mem, *want);
    }
}

#[test]
fn stage2_memattr_with_fwb() {
    use MemType::*;
    let expect = [
        DeviceNGnRnE,
        DeviceNGnRE,
        DeviceNGRE,
        DeviceGRE, // MemAttr[2] = 0
        Other(0b0100),
        NormalNc,
        NormalWb,
        AsStage1, // MemAttr[2] = 1
    ];
    let mut m = mem();
    let r = Regime::Stage2 {
        ipa_bits: 32,
        start_level: 1,
        fwb: true,
    };
    let root = page(&mut m);
    let l2 = page(&mut m);
    m.write_u64(root, l2 | TABLE);
    for (attr, want) in expect.iter().enumerate() {
        assert_eq!(decode_s2_memattr(attr as u8, true), *want);
        let desc = ((attr as u64) << 21) | 0b01 | ((attr as u64) << 2) | (0b11 << 6) | (0b11 << 8) | (1 << 10);
        m.write_u64(l2 + attr as u64 * 8, desc);
        assert_eq!(walk(&m, root, &r, (attr as u64) << 21).unwrap().mem, *want);
    }
    // Linux's encodings: MT_S2_FWB_NORMAL = 6, MT_S2_FWB_DEVICE_nGnRE = 1,
    // MT_S2_FWB_NORMAL_NC = 5, "as S1" = 7.
    assert_eq!(decode_s2_memattr(6, true), NormalWb);
    assert_eq!(decode_s2_memattr(1, true), DeviceNGnRE);
    assert_eq!(decode_s2_memattr(5, true), NormalNc);
    assert_eq!(decode_s2_memattr(7, true), AsStage1);
    assert_eq!(decode_s2_memattr(0b1110, true), Other(0b1110));
}

#[test]
fn stage2_page_fields() {
    let mut m = mem();
    let r = Regime::Stage2 {
        ipa_bits: 40,
        start_level: 1,
        fwb: false,
    };
    let root = m.alloc_pages(2, 2).unwrap();
    let (l2, l3) = (page(&mut m), page(&mut m));
    let ipa = 0x80_4020_3000u64; // bit 39 set: second root page, root index 513
    assert_eq!(ipa >> 30, 512 + 1);
    m.write_u64(root + (ipa >> 30) * 8, l2 | TABLE);
    m.write_u64(l2 + ((ipa >> 21) & 511) * 8, l3 | TABLE);
    // SH outer (0b10), software bits 0b0110, S2AP read-only, MemAttr Device-nGnRE (0b0001).
    let leaf = 0xdead_b000 | 0b11 | (0b0001 << 2) | (0b01 << 6) | (0b10 << 8) | (1 << 10) | (0b0110 << 55);
    m.write_u64(l3 + ((ipa >> 12) & 511) * 8, leaf);
    let t = walk(&m, root, &r, ipa + 0x10).unwrap();
    assert_eq!(t.oa, 0xdead_b010);
    assert_eq!((t.read, t.write, t.exec), (true, false, true));
    assert_eq!(t.mem, MemType::DeviceNGnRE);
    assert_eq!((t.shareability, t.sw, t.af, t.desc), (0b10, 0b0110, true, leaf));
}

#[test]
fn stage2_root_aligned_to_its_size() {
    // 32-bit IPA starting at level 1: a 4-entry (32-byte) root, which an SMMU
    // STE may place at any 64-byte boundary.
    let mut m = mem();
    let page = m.alloc_pages(1, 1).unwrap();
    let (l2, l3) = (m.alloc_pages(1, 1).unwrap(), m.alloc_pages(1, 1).unwrap());
    let root = page + 0x40;
    m.write_u64(root + 3 * 8, l2 | TABLE);
    m.write_u64(l2 + 8, l3 | TABLE);
    m.write_u64(l3 + 2 * 8, 0x8_0000_0000 | S2_PAGE_RW_WB);
    let regime = Regime::Stage2 {
        ipa_bits: 32,
        start_level: 1,
        fwb: false,
    };
    let ipa = (3 << 30) | (1 << 21) | (2 << 12) | 0x10;
    let t = walk::walk_root_aligned(&m, root | 0x3f, &regime, ipa).unwrap();
    assert_eq!(t.oa, 0x8_0000_0010);
    // The 4 KiB-aligned walk would look at the page's first bytes instead.
    assert!(walk(&m, root, &regime, ipa).is_err());
}
