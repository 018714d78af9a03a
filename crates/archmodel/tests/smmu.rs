//! SMMUv3 model tests.
//!
//! Every structure is built from raw numbers worked out from the SMMU
//! architecture specification (IHI 0070 G.b), not with the model's own
//! helpers:
//!
//! * Registers (6.2.1/6.2.2): CR0 0x20 (SMMUEN 0, EVENTQEN 2, CMDQEN 3),
//!   CR0ACK 0x24, CR1 0x28, CR2 0x2c (RECINVSID 1), GBPA 0x44 (Update 31,
//!   ABORT 20), GERROR 0x60, GERRORN 0x64, STRTAB_BASE 0x80, STRTAB_BASE_CFG
//!   0x88 (LOG2SIZE [5:0], SPLIT [10:6], FMT [17:16]), CMDQ_BASE 0x90
//!   (LOG2SIZE [4:0], ADDR [55:5]), CMDQ_PROD 0x98, CMDQ_CONS 0x9c (ERR
//!   [30:24]), EVENTQ_BASE 0xa0, EVENTQ_PROD 0x100a8 (OVFLG 31), EVENTQ_CONS
//!   0x100ac (OVACKFLG 31).
//! * STE (5.2): word 0 V [0], Config [3:1] (0b110 = stage 2 only); word 2
//!   S2VMID [15:0], S2T0SZ [37:32], S2SL0 [39:38], S2IR0 [41:40], S2OR0
//!   [43:42], S2SH0 [45:44], S2TG [47:46], S2PS [50:48], S2AA64 51, S2ENDI
//!   52, S2AFFD 53, S2HA 56, S2S 57, S2R 58; word 3 S2TTB [51:4].
//! * L1STD (5.1): Span [4:0], L2Ptr [55:6].
//! * Commands (4.x): opcode [7:0]; CFGI_STE 0x03 (SID [63:32], Leaf [64]),
//!   CFGI_STE_RANGE 0x04 (Range [68:64]), TLBI_S12_VMALL 0x28 (VMID
//!   [47:32]), TLBI_S2_IPA 0x2a (NUM [16:12], SCALE [25:20], VMID [47:32],
//!   Leaf [64], TTL [73:72], TG [75:74], IPA [119:76]), TLBI_NSNH_ALL 0x30,
//!   CMD_SYNC 0x46.
//! * Event records (7.3): type [7:0], StreamID [63:32], RnW 35, S2 39, CLASS
//!   [41:40] (IN = 0b10), InputAddr word 2, IPA/FetchAddr word 3.
//! * Stage-2 descriptors (Arm ARM VMSAv8-64): table `pa | 0b11`; page
//!   `pa | 0x7ff` = valid+page, MemAttr 0b1111, S2AP RW, SH inner, AF.

use proptest::prelude::*;
use warden_archmodel::*;

const MEM_BASE: u64 = 0x4000_0000;

const IDR0: u64 = 0x0;
const IDR1: u64 = 0x4;
const IDR3: u64 = 0xc;
const IDR5: u64 = 0x14;
const AIDR: u64 = 0x1c;
const CR0: u64 = 0x20;
const CR0ACK: u64 = 0x24;
const CR1: u64 = 0x28;
const CR2: u64 = 0x2c;
const GBPA: u64 = 0x44;
const IRQ_CTRL: u64 = 0x50;
const IRQ_CTRLACK: u64 = 0x54;
const GERROR: u64 = 0x60;
const GERRORN: u64 = 0x64;
const STRTAB_BASE: u64 = 0x80;
const STRTAB_BASE_CFG: u64 = 0x88;
const CMDQ_BASE: u64 = 0x90;
const CMDQ_PROD: u64 = 0x98;
const CMDQ_CONS: u64 = 0x9c;
const EVENTQ_BASE: u64 = 0xa0;
const EVENTQ_PROD: u64 = 0x1_00a8;
const EVENTQ_CONS: u64 = 0x1_00ac;

/// CR1: QUEUE_IC/OC = WB (0b01), QUEUE_SH = ISH (0b11), same for TABLE_*.
const CR1_WB_ISH: u32 = 0b11_01_01_11_01_01;

/// Stage-2 page, read/write, Normal WB, inner shareable, AF.
const S2_PAGE_RW: u64 = 0x7ff;
/// As above without S2AP[1] (bit 7): read-only.
const S2_PAGE_RO: u64 = 0x77f;
/// As the RW page without AF (bit 10).
const S2_PAGE_NOAF: u64 = 0x3ff;
const TABLE: u64 = 0b11;

/// STE word 0: V | Config 0b110 (stage 2 only).
const STE0_S2: u64 = 0x1 | (0b110 << 1);
/// STE word 0: V | Config 0b100 (bypass).
const STE0_BYPASS: u64 = 0x1 | (0b100 << 1);

/// STE word 2 for a 39-bit IPA walk starting at level 1 with 44-bit PS,
/// WB/WB/ISH walks, VMSAv8-64 and S2R.
fn ste2(vmid: u16) -> u64 {
    u64::from(vmid)
        | (25 << 32) // S2T0SZ = 25
        | (0b01 << 38) // S2SL0: level 1
        | (0b01 << 40) // S2IR0 WB
        | (0b01 << 42) // S2OR0 WB
        | (0b11 << 44) // S2SH0 inner shareable
        | (0b100 << 48) // S2PS 44 bits
        | (1 << 51) // S2AA64
        | (1 << 58) // S2R
}

fn s2_ste(vmid: u16, ttb: u64) -> [u64; 8] {
    [STE0_S2, 0, ste2(vmid), ttb, 0, 0, 0, 0]
}

struct Rig {
    mem: PhysMem,
    smmu: Smmu,
    strtab: u64,
    cmdq: u64,
    evtq: u64,
    /// Next command index (8-bit index plus wrap bit 8).
    prod: u32,
}

impl Rig {
    /// A 256-entry linear Stream table, 256-entry command and event queues,
    /// all enabled, RECINVSID set, coherent attributes in CR1.
    fn new(cfg: SmmuConfig) -> Rig {
        let mut mem = PhysMem::new(MEM_BASE, 64 << 20);
        let strtab = mem.alloc_pages(4, 4).unwrap(); // 256 * 64 bytes
        let cmdq = mem.alloc_pages(1, 1).unwrap(); // 256 * 16 bytes
        let evtq = mem.alloc_pages(2, 2).unwrap(); // 256 * 32 bytes
        let mut rig = Rig {
            mem,
            smmu: Smmu::new(cfg),
            strtab,
            cmdq,
            evtq,
            prod: 0,
        };
        rig.w32(CR1, CR1_WB_ISH);
        rig.w32(CR2, 0b10); // RECINVSID
        rig.w64(STRTAB_BASE, strtab);
        rig.w32(STRTAB_BASE_CFG, 8); // linear, LOG2SIZE 8
        rig.w64(CMDQ_BASE, cmdq | 8);
        rig.w32(CMDQ_PROD, 0);
        rig.w32(CMDQ_CONS, 0);
        rig.w64(EVENTQ_BASE, evtq | 8);
        rig.w32(EVENTQ_PROD, 0);
        rig.w32(EVENTQ_CONS, 0);
        rig.w32(CR0, 0b1100); // CMDQEN | EVENTQEN
        rig.w32(CR0, 0b1101); // | SMMUEN
        rig
    }

    fn w32(&mut self, off: u64, val: u32) {
        self.smmu.write32(&mut self.mem, off, val);
    }
    fn r32(&mut self, off: u64) -> u32 {
        self.smmu.read32(&self.mem, off)
    }
    fn w64(&mut self, off: u64, val: u64) {
        self.smmu.write64(&mut self.mem, off, val);
    }
    fn r64(&mut self, off: u64) -> u64 {
        self.smmu.read64(&self.mem, off)
    }

    fn set_ste(&mut self, sid: u32, ste: [u64; 8]) {
        for (i, w) in ste.iter().enumerate() {
            self.mem.write_u64(self.strtab + u64::from(sid) * 64 + i as u64 * 8, *w);
        }
    }

    /// Put a command in the queue without publishing it.
    fn put(&mut self, c0: u64, c1: u64) {
        let slot = self.cmdq + u64::from(self.prod & 0xff) * 16;
        self.mem.write_u64(slot, c0);
        self.mem.write_u64(slot + 8, c1);
        self.prod = (self.prod + 1) & 0x1ff;
    }

    fn publish(&mut self) {
        let p = self.prod;
        self.w32(CMDQ_PROD, p);
    }

    fn cmd(&mut self, c0: u64, c1: u64) {
        self.put(c0, c1);
        self.publish();
    }

    fn sync(&mut self) {
        self.cmd(0x46, 0);
    }

    fn cfgi_ste(&mut self, sid: u32) {
        self.cmd(0x03 | (u64::from(sid) << 32), 1);
    }

    fn tlbi_ipa(&mut self, vmid: u16, ipa: u64) {
        self.cmd(0x2a | (u64::from(vmid) << 32), ipa & 0x00ff_ffff_ffff_f000);
    }

    fn page(&mut self) -> u64 {
        self.mem.alloc_pages(1, 1).unwrap()
    }

    /// Map 4 KiB `ipa -> pa` with `leaf` attributes in a level-1-rooted
    /// 39-bit stage-2 table at `root`, allocating tables as needed.
    fn map(&mut self, root: u64, ipa: u64, pa: u64, leaf: u64) {
        let mut table = root;
        for shift in [30u32, 21] {
            let slot = table + ((ipa >> shift) & 511) * 8;
            let d = self.mem.read_u64(slot);
            table = if d & 3 == 3 {
                d & 0xffff_ffff_f000
            } else {
                let t = self.page();
                self.mem.write_u64(slot, t | TABLE);
                t
            };
        }
        self.mem.write_u64(table + ((ipa >> 12) & 511) * 8, pa | leaf);
    }

    fn dma(&mut self, sid: u32, addr: u64, dir: DmaDir) -> Result<DmaOk, DmaErr> {
        self.smmu.dma(&mut self.mem, sid, addr, dir)
    }

    fn event(&self, index: u64) -> [u64; 4] {
        let a = self.evtq + index * 32;
        [0, 1, 2, 3].map(|i| self.mem.read_u64(a + i * 8))
    }

    fn fault(&mut self, sid: u32, addr: u64, dir: DmaDir) -> (SmmuEvent, bool) {
        match self.dma(sid, addr, dir) {
            Err(DmaErr::Fault { event, recorded }) => (event, recorded),
            other => panic!("expected a fault for sid {sid} addr {addr:#x}, got {other:?}"),
        }
    }
}

fn default_rig() -> Rig {
    Rig::new(SmmuConfig::default())
}

/// A rig with StreamID 1 translating through a fresh 39-bit table (VMID 5)
/// with IPA 0x1000 -> `pa` read/write. Returns (rig, root, pa).
fn s2_rig() -> (Rig, u64, u64) {
    let mut rig = default_rig();
    let root = rig.page();
    let pa = rig.page();
    rig.map(root, 0x1000, pa, S2_PAGE_RW);
    rig.set_ste(1, s2_ste(5, root));
    (rig, root, pa)
}

#[test]
fn id_registers_default() {
    let mut rig = default_rig();
    let idr0 = rig.r32(IDR0);
    assert_eq!(idr0 & 1, 1, "S2P");
    assert_eq!((idr0 >> 1) & 1, 1, "S1P");
    assert_eq!((idr0 >> 2) & 3, 0b10, "TTF: AArch64");
    assert_eq!((idr0 >> 4) & 1, 1, "COHACC");
    assert_eq!((idr0 >> 9) & 1, 1, "Hyp");
    assert_eq!((idr0 >> 18) & 1, 1, "VMID16");
    assert_eq!((idr0 >> 21) & 3, 0b10, "TTENDIAN: little");
    assert_eq!((idr0 >> 24) & 3, 0b01, "STALL_MODEL: no stall");
    assert_eq!((idr0 >> 27) & 3, 0b01, "ST_LEVEL: 2-level");
    assert_eq!((idr0 >> 13) & 1, 0, "no MSI");
    assert_eq!(idr0, 0x0d44_121b);
    // SIDSIZE 16, EVENTQS 8 [20:16], CMDQS 8 [25:21].
    assert_eq!(rig.r32(IDR1), 16 | (8 << 16) | (8 << 21));
    // HAD 2, XNX 4, FWB 8, RIL 10, BBML [12:11] = 0b10.
    assert_eq!(rig.r32(IDR3), (1 << 2) | (1 << 4) | (1 << 8) | (1 << 10) | (0b10 << 11));
    // OAS 0b100 (44 bits), GRAN4K 4.
    assert_eq!(rig.r32(IDR5), 0b100 | (1 << 4));
    assert_eq!(rig.r32(AIDR), 0x02, "SMMUv3.2");
    assert!(rig.smmu.violations().is_empty(), "{:?}", rig.smmu.violations());
}

#[test]
fn id_registers_follow_config() {
    let cfg = SmmuConfig {
        stage1: false,
        two_level: false,
        coherent: false,
        vmid16: false,
        ril: false,
        sid_bits: 6,
        cmdq_log2: 5,
        evtq_log2: 4,
        oas_bits: 48,
        ..SmmuConfig::default()
    };
    let mut smmu = Smmu::new(cfg);
    let mem = PhysMem::new(MEM_BASE, 1 << 20);
    let idr0 = smmu.read32(&mem, IDR0);
    assert_eq!(idr0 & 3, 0b01, "S2P only");
    assert_eq!((idr0 >> 4) & 1, 0, "not coherent");
    assert_eq!((idr0 >> 9) & 1, 0, "no Hyp without S1P");
    assert_eq!((idr0 >> 18) & 1, 0, "8-bit VMIDs");
    assert_eq!((idr0 >> 27) & 3, 0, "linear only");
    assert_eq!(smmu.read32(&mem, IDR1), 6 | (4 << 16) | (5 << 21));
    assert_eq!(smmu.read32(&mem, IDR3) & (1 << 10), 0, "no RIL");
    assert_eq!(smmu.read32(&mem, IDR5) & 7, 0b101, "48-bit OAS");
    assert_eq!(smmu.read32(&mem, AIDR), 0x01);
    smmu.override_reg(IDR0, 0xffff_ffff);
    assert_eq!(smmu.read32(&mem, IDR0), 0xffff_ffff);
}

#[test]
fn cr0_ack_irq_ack_and_gbpa() {
    let mut mem = PhysMem::new(MEM_BASE, 1 << 20);
    let mut smmu = Smmu::new(SmmuConfig::default());
    // Reset: GBPA not aborting, so traffic bypasses.
    assert_eq!(smmu.read32(&mem, GBPA) & (1 << 20), 0);
    let ok = smmu.dma(&mut mem, 3, 0x1234_5678, DmaDir::Read).unwrap();
    assert_eq!(ok.pa, 0x1234_5678);
    assert!(!ok.from_tlb);
    // Beyond the 44-bit OAS: terminated without an event.
    assert_eq!(smmu.dma(&mut mem, 3, 1 << 44, DmaDir::Read), Err(DmaErr::Abort));

    // GBPA written without Update: ignored.
    smmu.write32(&mut mem, GBPA, 1 << 20);
    assert_eq!(smmu.read32(&mem, GBPA), 0);
    assert!(matches!(
        smmu.take_violations()[..],
        [SmmuViolation::GbpaWithoutUpdate { .. }]
    ));
    // With Update: takes effect, Update reads back as 0 (completed).
    smmu.write32(&mut mem, GBPA, (1 << 31) | (1 << 20));
    assert_eq!(smmu.read32(&mem, GBPA), 1 << 20);
    assert_eq!(smmu.dma(&mut mem, 3, 0x1000, DmaDir::Write), Err(DmaErr::Abort));
    smmu.write32(&mut mem, GBPA, 1 << 31);
    assert!(smmu.dma(&mut mem, 3, 0x1000, DmaDir::Write).is_ok());

    smmu.write32(&mut mem, CR0, 0b1100);
    assert_eq!(smmu.read32(&mem, CR0ACK), 0b1100);
    smmu.write32(&mut mem, IRQ_CTRL, 0b101);
    assert_eq!(smmu.read32(&mem, IRQ_CTRLACK), 0b101);
    assert!(smmu.violations().is_empty(), "{:?}", smmu.violations());
}

#[test]
fn linear_stream_table_stage2_translation_and_tlb() {
    let (mut rig, _root, pa) = s2_rig();
    let ok = rig.dma(1, 0x1abc, DmaDir::Read).unwrap();
    assert_eq!(ok.pa, pa + 0xabc);
    assert_eq!(ok.mem, MemType::NormalWb);
    assert!(!ok.from_tlb);
    assert_eq!(rig.smmu.tlb_len(), 1);
    let ok = rig.dma(1, 0x1ff8, DmaDir::Write).unwrap();
    assert_eq!(ok.pa, pa + 0xff8);
    assert!(ok.from_tlb);
    assert!(rig.smmu.stale_entries(&rig.mem).is_empty());
    assert!(rig.smmu.violations().is_empty(), "{:?}", rig.smmu.violations());
    // Bypass STE.
    rig.set_ste(2, [STE0_BYPASS, 0, 0, 0, 0, 0, 0, 0]);
    let ok = rig.dma(2, 0x5555_0000, DmaDir::Read).unwrap();
    assert_eq!(ok.pa, 0x5555_0000);
    assert_eq!(ok.mem, MemType::AsStage1);
}

#[test]
fn two_level_stream_table() {
    let mut rig = default_rig();
    // Re-point the stream table: disable, program, enable.
    rig.w32(CR0, 0b1100);
    let l1 = rig.page(); // 2^(16 - 8) descriptors * 8 bytes = 2 KiB
    let l2 = rig.mem.alloc_pages(4, 4).unwrap(); // Span 9: 256 STEs, 16 KiB aligned
    let l2_small = rig.page(); // Span 2: 2 STEs
    rig.w64(STRTAB_BASE, l1);
    rig.w32(STRTAB_BASE_CFG, (1 << 16) | (8 << 6) | 16); // 2-level, SPLIT 8, LOG2SIZE 16
    rig.w32(CR0, 0b1101);
    rig.mem.write_u64(l1 + 8, l2 | 9); // L1[1]: SIDs 0x100..0x1ff
    rig.mem.write_u64(l1 + 3 * 8, l2_small | 2); // L1[3]: SIDs 0x300, 0x301
    let root = rig.page();
    let pa = rig.page();
    rig.map(root, 0x7000, pa, S2_PAGE_RW);
    let ste = s2_ste(9, root);
    for (i, w) in ste.iter().enumerate() {
        rig.mem.write_u64(l2 + 0x23 * 64 + i as u64 * 8, *w);
        rig.mem.write_u64(l2_small + 64 + i as u64 * 8, *w);
    }
    assert_eq!(rig.dma(0x123, 0x7010, DmaDir::Read).unwrap().pa, pa + 0x10);
    assert_eq!(rig.dma(0x301, 0x7010, DmaDir::Read).unwrap().pa, pa + 0x10);
    // L1[2] has Span 0; SID 0x305 is beyond L1[3]'s 2 STEs; 0x1_0000 is
    // beyond LOG2SIZE.
    for sid in [0x200, 0x305, 0x1_0000] {
        let (ev, recorded) = rig.fault(sid, 0x7000, DmaDir::Read);
        assert!(recorded);
        assert_eq!(ev.code, 0x02, "C_BAD_STREAMID for {sid:#x}");
        assert_eq!(ev.raw, [0x02 | (u64::from(sid) << 32), 0, 0, 0]);
    }
    assert_eq!(rig.r32(EVENTQ_PROD), 3);
    assert_eq!(rig.event(2), [0x02 | (0x1_0000 << 32), 0, 0, 0]);
    assert!(rig.smmu.violations().is_empty(), "{:?}", rig.smmu.violations());
}

#[test]
fn l1_descriptor_cache_needs_non_leaf_cfgi() {
    let mut rig = default_rig();
    rig.w32(CR0, 0b1100);
    let l1 = rig.page();
    rig.w64(STRTAB_BASE, l1);
    rig.w32(STRTAB_BASE_CFG, (1 << 16) | (6 << 6) | 12); // SPLIT 6
    rig.w32(CR0, 0b1101);
    // L1[0] invalid: the lookup caches it.
    assert_eq!(rig.fault(5, 0, DmaDir::Read).0.code, 0x02);
    let l2 = rig.page();
    rig.mem.write_u64(l2 + 5 * 64, STE0_BYPASS);
    rig.mem.write_u64(l1, l2 | 7); // Span 7: 64 STEs
                                   // A leaf CFGI_STE leaves the L1 descriptor cached (5.1.1)...
    rig.cfgi_ste(5);
    rig.sync();
    assert_eq!(rig.fault(5, 0, DmaDir::Read).0.code, 0x02);
    // ...the non-leaf form invalidates it.
    rig.cmd(0x03 | (5 << 32), 0);
    rig.sync();
    assert_eq!(rig.dma(5, 0x42, DmaDir::Read).unwrap().pa, 0x42);
}

#[test]
fn translation_faults_and_event_records() {
    let (mut rig, root, _pa) = s2_rig();
    let ro = rig.page();
    rig.map(root, 0x2000, ro, S2_PAGE_RO);
    let noaf = rig.page();
    rig.map(root, 0x3000, noaf, S2_PAGE_NOAF);

    // Unmapped page: F_TRANSLATION, stage 2, CLASS IN, read.
    let (ev, recorded) = rig.fault(1, 0x8_0123, DmaDir::Read);
    assert!(recorded);
    assert_eq!(ev.code, 0x10);
    assert!(ev.stage2 && !ev.write);
    assert_eq!(
        ev.raw,
        [
            0x10 | (1 << 32),
            (1 << 35) | (1 << 39) | (0b10 << 40),
            0x8_0123,
            0x8_0000
        ]
    );
    assert_eq!(rig.event(0), ev.raw);
    assert_eq!(rig.r32(EVENTQ_PROD), 1);

    // Write to a read-only page: F_PERMISSION with RnW = 0.
    let (ev, _) = rig.fault(1, 0x2008, DmaDir::Write);
    assert_eq!(ev.code, 0x13);
    assert_eq!(ev.raw[1], (1 << 39) | (0b10 << 40));
    assert!(rig.dma(1, 0x2008, DmaDir::Read).is_ok());

    // AF == 0: F_ACCESS; not cached.
    let tlb = rig.smmu.tlb_len();
    assert_eq!(rig.fault(1, 0x3000, DmaDir::Read).0.code, 0x12);
    assert_eq!(rig.smmu.tlb_len(), tlb);

    // IPA beyond the 39-bit stage-2 input range: stage-2 F_TRANSLATION.
    let (ev, _) = rig.fault(1, 1 << 39, DmaDir::Read);
    assert_eq!((ev.code, ev.stage2), (0x10, true));
    // Beyond the IAS (44 bits): stage-1 F_ADDR_SIZE (S2 == 0), 3.4.
    let (ev, _) = rig.fault(1, 1 << 44, DmaDir::Read);
    assert_eq!((ev.code, ev.stage2), (0x11, false));
    assert_eq!(ev.raw[1], (1 << 35) | (0b10 << 40));

    // Table descriptor pointing outside memory: F_WALK_EABT with FetchAddr.
    let l1 = rig.mem.read_u64(root) & 0xffff_ffff_f000; // root[0] -> level-2 table
    rig.mem.write_u64(l1 + 8, 0x1000_0000 | TABLE); // IPA 0x20_0000 -> table at 0x1000_0000
    let (ev, recorded) = rig.fault(1, 0x20_5000, DmaDir::Read);
    assert!(recorded);
    assert_eq!(ev.code, 0x0b);
    assert_eq!(ev.raw[3], 0x1000_0000 + 5 * 8);

    assert_eq!(rig.r32(EVENTQ_PROD), 6);
    assert!(rig.smmu.violations().is_empty(), "{:?}", rig.smmu.violations());
}

#[test]
fn s2r_affd_and_output_size() {
    let mut rig = default_rig();
    let root = rig.page();
    let noaf = rig.page();
    rig.map(root, 0x3000, noaf, S2_PAGE_NOAF);
    rig.map(root, 0x4000, 1 << 40, S2_PAGE_RW); // beyond a 40-bit PS
                                                // S2R clear: faults are not recorded.
    let mut ste = s2_ste(1, root);
    ste[2] &= !(1 << 58);
    rig.set_ste(1, ste);
    let (ev, recorded) = rig.fault(1, 0x9000, DmaDir::Read);
    assert_eq!((ev.code, recorded), (0x10, false));
    assert_eq!(rig.r32(EVENTQ_PROD), 0);
    // S2AFFD: AF == 0 does not fault.
    let mut ste = s2_ste(2, root);
    ste[2] |= 1 << 53;
    rig.set_ste(2, ste);
    assert_eq!(rig.dma(2, 0x3004, DmaDir::Read).unwrap().pa, noaf + 4);
    // S2PS 40 bits: an output address at 2^40 is an F_ADDR_SIZE.
    let mut ste = s2_ste(3, root);
    ste[2] = (ste[2] & !(7 << 48)) | (0b010 << 48);
    rig.set_ste(3, ste);
    assert_eq!(rig.fault(3, 0x4000, DmaDir::Read).0.code, 0x11);
}

#[test]
fn concatenated_and_small_roots() {
    let mut rig = default_rig();
    // 40-bit IPA starting at level 1: two concatenated root pages.
    let root = rig.mem.alloc_pages(2, 2).unwrap();
    let l2 = rig.page();
    let l3 = rig.page();
    let pa = rig.page();
    let ipa = (1u64 << 39) | (3 << 21) | (7 << 12);
    rig.mem.write_u64(root + 512 * 8, l2 | TABLE); // index 512: IPA bit 39
    rig.mem.write_u64(l2 + 3 * 8, l3 | TABLE);
    rig.mem.write_u64(l3 + 7 * 8, pa | S2_PAGE_RW);
    let mut ste = s2_ste(1, root);
    ste[2] = (ste[2] & !(0x3f << 32)) | (24 << 32); // S2T0SZ 24
    rig.set_ste(1, ste);
    assert_eq!(rig.dma(1, ipa | 8, DmaDir::Read).unwrap().pa, pa + 8);

    // 32-bit IPA at level 1: a 4-entry root, 64-byte aligned, in the middle
    // of a page.
    let page = rig.page();
    let small = page + 0x40;
    let l2 = rig.page();
    let l3 = rig.page();
    rig.mem.write_u64(small + 2 * 8, l2 | TABLE); // IPA 0x8000_0000
    rig.mem.write_u64(l2, l3 | TABLE);
    rig.mem.write_u64(l3 + 8, pa | S2_PAGE_RW);
    let mut ste = s2_ste(2, small);
    ste[2] = (ste[2] & !(0x3f << 32)) | (32 << 32); // S2T0SZ 32
    rig.set_ste(2, ste);
    assert_eq!(rig.dma(2, 0x8000_1010, DmaDir::Read).unwrap().pa, pa + 0x10);
    assert!(rig.smmu.violations().is_empty(), "{:?}", rig.smmu.violations());
}

#[test]
fn tlbi_without_sync_leaves_stale_entry() {
    let (mut rig, root, pa) = s2_rig();
    assert!(rig.dma(1, 0x1000, DmaDir::Write).is_ok());
    // Unmap, invalidate, but no CMD_SYNC yet.
    rig.map(root, 0x1000, 0, 0);
    rig.tlbi_ipa(5, 0x1000);
    assert_eq!(rig.r32(CMDQ_CONS), rig.prod, "consumed");
    assert_eq!(rig.smmu.pending_invalidations(), 1);
    let ok = rig.dma(1, 0x1008, DmaDir::Write).unwrap();
    assert!(ok.from_tlb);
    assert_eq!(ok.pa, pa + 8);
    let stale = rig.smmu.stale_entries(&rig.mem);
    assert_eq!(stale.len(), 1);
    assert_eq!((stale[0].vmid, stale[0].ia, stale[0].size), (5, 0x1000, 0x1000));
    assert_eq!(stale[0].cached.oa, pa);
    assert_eq!(stale[0].live, None);
    // A TLBI of another VMID plus SYNC does not help.
    rig.tlbi_ipa(6, 0x1000);
    rig.sync();
    assert_eq!(
        rig.smmu.stale_entries(&rig.mem).len(),
        0,
        "the VMID 5 TLBI completed too"
    );
    assert_eq!(rig.fault(1, 0x1008, DmaDir::Write).0.code, 0x10);
    let stats = rig.smmu.stats();
    assert_eq!((stats.tlbi_s2_ipa, stats.syncs, stats.commands), (2, 1, 3));
}

#[test]
fn stale_reports_permission_downgrade_and_other_vmid_tlbi_misses() {
    let (mut rig, root, pa) = s2_rig();
    assert!(rig.dma(1, 0x1000, DmaDir::Write).is_ok());
    rig.map(root, 0x1000, pa, S2_PAGE_RO);
    rig.tlbi_ipa(6, 0x1000);
    rig.sync();
    let stale = rig.smmu.stale_entries(&rig.mem);
    assert_eq!(stale.len(), 1);
    assert!(stale[0].cached.write && !stale[0].live.unwrap().write);
    assert!(rig.dma(1, 0x1000, DmaDir::Write).unwrap().from_tlb);
    rig.tlbi_ipa(5, 0x1234);
    rig.sync();
    assert!(rig.smmu.stale_entries(&rig.mem).is_empty());
    assert_eq!(rig.fault(1, 0x1000, DmaDir::Write).0.code, 0x13);
}

#[test]
fn range_tlbi_and_ttl() {
    let (mut rig, root, _) = s2_rig();
    let pages: Vec<u64> = (0..8).map(|_| rig.page()).collect();
    for (i, &p) in pages.iter().enumerate() {
        rig.map(root, 0x10_0000 + i as u64 * 0x1000, p, S2_PAGE_RW);
    }
    for i in 0..8 {
        assert!(rig.dma(1, 0x10_0000 + i * 0x1000, DmaDir::Read).is_ok());
    }
    assert_eq!(rig.smmu.tlb_len(), 8);
    for i in 2..7 {
        rig.map(root, 0x10_0000 + i * 0x1000, 0, 0);
    }
    // Range: NUM 3 (4 granules), SCALE 0, TG 4K (0b01), TTL level 3.
    rig.cmd(0x2a | (3 << 12) | (5 << 32), 0x10_2000 | (0b01 << 10) | (0b11 << 8));
    // TTL level 2 does not match the level-3 entry at page 6.
    rig.cmd(0x2a | (5 << 32), 0x10_6000 | (0b01 << 10) | (0b10 << 8));
    rig.sync();
    assert_eq!(rig.smmu.tlb_len(), 4);
    for i in 2..6 {
        assert_eq!(rig.fault(1, 0x10_0000 + i * 0x1000, DmaDir::Read).0.code, 0x10);
    }
    assert!(rig.dma(1, 0x10_6000, DmaDir::Read).unwrap().from_tlb, "stale page 6");
    let stale = rig.smmu.stale_entries(&rig.mem);
    assert_eq!(stale.len(), 1);
    assert_eq!(stale[0].ia, 0x10_6000);
    // TG != 0 with NUM == SCALE == TTL == 0 is reserved: CERROR_ILL.
    rig.cmd(0x2a | (5 << 32), 0x10_6000 | (0b01 << 10));
    assert_eq!(rig.r32(GERROR) & 1, 1);
    assert_eq!((rig.r32(CMDQ_CONS) >> 24) & 0x7f, 1);
}

#[test]
fn range_fields_without_ril_are_a_violation() {
    let cfg = SmmuConfig {
        ril: false,
        ..SmmuConfig::default()
    };
    let mut rig = Rig::new(cfg);
    let root = rig.page();
    for i in 0..4u64 {
        let p = rig.page();
        rig.map(root, 0x1000 * (i + 1), p, S2_PAGE_RW);
    }
    rig.set_ste(1, s2_ste(5, root));
    for i in 1..5 {
        assert!(rig.dma(1, i * 0x1000, DmaDir::Read).is_ok());
    }
    // A 4-page range invalidation: without RIL only the page at Address.
    rig.cmd(0x2a | (3 << 12) | (5 << 32), 0x1000 | (0b01 << 10) | (0b11 << 8));
    rig.sync();
    assert_eq!(rig.smmu.tlb_len(), 3);
    assert!(matches!(
        rig.smmu.take_violations()[..],
        [SmmuViolation::RangeWithoutRil { index: 0 }]
    ));
}

#[test]
fn vmall_and_nsnh_all() {
    let mut rig = default_rig();
    let root_a = rig.page();
    let root_b = rig.page();
    let p = rig.page();
    rig.map(root_a, 0x1000, p, S2_PAGE_RW);
    rig.map(root_b, 0x1000, p, S2_PAGE_RW);
    rig.set_ste(1, s2_ste(1, root_a));
    rig.set_ste(2, s2_ste(2, root_b));
    assert!(rig.dma(1, 0x1000, DmaDir::Read).is_ok());
    assert!(rig.dma(2, 0x1000, DmaDir::Read).is_ok());
    assert_eq!(rig.smmu.tlb_len(), 2);
    rig.cmd(0x28 | (1 << 32), 0); // TLBI_S12_VMALL VMID 1
    assert_eq!(rig.smmu.tlb_len(), 2, "not before the SYNC");
    rig.sync();
    assert_eq!(rig.smmu.tlb_len(), 1);
    assert!(rig.dma(2, 0x1000, DmaDir::Read).unwrap().from_tlb);
    rig.cmd(0x30, 0); // TLBI_NSNH_ALL
    rig.sync();
    assert_eq!(rig.smmu.tlb_len(), 0);
    let stats = rig.smmu.stats();
    assert_eq!((stats.tlbi_s12_vmall, stats.syncs, stats.other), (1, 2, 1));
    rig.smmu.reset_stats();
    assert_eq!(rig.smmu.stats(), SmmuStats::default());
}

#[test]
fn cfgi_ste_takes_effect_at_sync() {
    let (mut rig, _root, pa) = s2_rig();
    assert_eq!(rig.dma(1, 0x1000, DmaDir::Read).unwrap().pa, pa);
    // Make the STE abort. Without CFGI the cached STE is used.
    rig.set_ste(1, [0x1, 0, 0, 0, 0, 0, 0, 0]);
    assert!(rig.dma(1, 0x1000, DmaDir::Read).is_ok());
    rig.cfgi_ste(1);
    assert!(rig.dma(1, 0x1000, DmaDir::Read).is_ok(), "CFGI without SYNC");
    rig.sync();
    assert_eq!(rig.dma(1, 0x1000, DmaDir::Read), Err(DmaErr::Abort));
    // Reserved Config 0b001 behaves as abort too.
    rig.set_ste(1, [0x1 | (0b001 << 1), 0, 0, 0, 0, 0, 0, 0]);
    rig.cmd(0x04 | (1 << 32), 31); // CFGI_ALL (STE_RANGE, Range 31)
    rig.sync();
    assert_eq!(rig.dma(1, 0x1000, DmaDir::Read), Err(DmaErr::Abort));
    // CFGI_STE_RANGE Range 0 covers SIDs 0 and 1.
    rig.set_ste(1, [STE0_BYPASS, 0, 0, 0, 0, 0, 0, 0]);
    rig.cmd(0x04, 0);
    rig.sync();
    assert_eq!(rig.dma(1, 0x1000, DmaDir::Read).unwrap().pa, 0x1000);
    assert_eq!(rig.smmu.stats().cfgi_ste, 3);
}

#[test]
fn bad_ste_and_illegal_stage2_fields() {
    let mut rig = default_rig();
    let root = rig.page();
    let p = rig.page();
    rig.map(root, 0x1000, p, S2_PAGE_RW);
    type Tweak = fn(&mut [u64; 8]);
    let cases: [(&str, Tweak); 12] = [
        ("V == 0", |s| s[0] &= !1),
        ("stage 1", |s| s[0] = 0x1 | (0b101 << 1)),
        ("nested", |s| s[0] = 0x1 | (0b111 << 1)),
        ("S2TG 64K", |s| s[2] |= 0b01 << 46),
        ("S2AA64 0", |s| s[2] &= !(1 << 51)),
        ("S2T0SZ 19 < 64 - IAS", |s| s[2] = (s[2] & !(0x3f << 32)) | (19 << 32)),
        ("S2T0SZ 40 > 39", |s| s[2] = (s[2] & !(0x3f << 32)) | (40 << 32)),
        ("S2SL0 reserved", |s| s[2] |= 0b11 << 38),
        ("S2SL0 level 2 for 39 bits", |s| s[2] &= !(0b11 << 38)),
        ("S2S", |s| s[2] |= 1 << 57),
        ("S2HA", |s| s[2] |= 1 << 56),
        ("S2TTB beyond S2PS", |s| s[3] = 1 << 45),
    ];
    for (i, (what, tweak)) in cases.iter().enumerate() {
        let sid = 10 + i as u32;
        let mut ste = s2_ste(1, root);
        tweak(&mut ste);
        rig.set_ste(sid, ste);
        let (ev, recorded) = rig.fault(sid, 0x1000, DmaDir::Read);
        assert_eq!(ev.code, 0x04, "{what}");
        assert!(recorded);
        assert_eq!(ev.raw, [0x04 | (u64::from(sid) << 32), 0, 0, 0], "{what}");
        assert!(rig.smmu.explain_ste(&rig.mem, sid).is_some(), "{what}");
    }
    // S2ENDI is ILLEGAL with a little-endian-only TTENDIAN.
    let mut ste = s2_ste(1, root);
    ste[2] |= 1 << 52;
    rig.set_ste(30, ste);
    assert_eq!(rig.fault(30, 0x1000, DmaDir::Read).0.code, 0x04);
    // The untouched STE works.
    rig.set_ste(31, s2_ste(1, root));
    assert_eq!(rig.smmu.explain_ste(&rig.mem, 31), None);
    assert!(rig.dma(31, 0x1000, DmaDir::Read).is_ok());
}

#[test]
fn vmid16_and_s2ps_above_oas() {
    let cfg = SmmuConfig {
        vmid16: false,
        oas_bits: 40,
        ..SmmuConfig::default()
    };
    let mut rig = Rig::new(cfg);
    let root = rig.page();
    let p = rig.page();
    rig.map(root, 0x1000, p, S2_PAGE_RW);
    let mut ste = s2_ste(0x100, root);
    ste[2] = (ste[2] & !(0x3f << 32)) | (25 << 32);
    rig.set_ste(1, ste);
    assert_eq!(
        rig.fault(1, 0x1000, DmaDir::Read).0.code,
        0x04,
        "VMID[15:8] without VMID16"
    );
    // S2PS 44 bits on a 40-bit OAS: capped, and a violation.
    rig.set_ste(2, s2_ste(1, root));
    assert!(rig.dma(2, 0x1000, DmaDir::Read).is_ok());
    assert_eq!(
        rig.smmu.take_violations(),
        vec![SmmuViolation::S2psAboveOas { sid: 2, s2ps: 0b100 }]
    );
}

#[test]
fn bad_streamid_needs_recinvsid_and_ste_fetch_abort() {
    let mut rig = default_rig();
    rig.w32(CR0, 0b1100);
    rig.w32(CR2, 0); // RECINVSID clear
    rig.w64(STRTAB_BASE, 0x1_0000_0000); // outside memory
    rig.w32(CR0, 0b1101);
    let (ev, recorded) = rig.fault(0x100, 0, DmaDir::Read);
    assert_eq!((ev.code, recorded), (0x02, false));
    let (ev, recorded) = rig.fault(3, 0x77, DmaDir::Write);
    assert_eq!((ev.code, recorded), (0x03, true));
    assert_eq!(ev.raw[3], 0x1_0000_0000 + 3 * 64, "FetchAddr");
    assert_eq!(rig.r32(EVENTQ_PROD), 1);
}

#[test]
fn command_error_and_recovery() {
    let (mut rig, root, _) = s2_rig();
    assert!(rig.dma(1, 0x1000, DmaDir::Read).is_ok());
    rig.map(root, 0x1000, 0, 0);
    rig.tlbi_ipa(5, 0x1000);
    rig.put(0x7f, 0); // reserved opcode
    rig.put(0x46, 0);
    rig.publish();
    let cons = rig.r32(CMDQ_CONS);
    assert_eq!(cons & 0xfffff, 1, "stopped at the bad command");
    assert_eq!((cons >> 24) & 0x7f, 1, "CERROR_ILL");
    assert_eq!(rig.r32(GERROR) & 1, 1);
    assert_eq!(rig.r32(GERRORN) & 1, 0);
    // Writing PROD again while the error is active does nothing.
    rig.publish();
    assert_eq!(rig.r32(CMDQ_CONS) & 0xfffff, 1);
    assert!(rig.dma(1, 0x1000, DmaDir::Read).unwrap().from_tlb);
    // Replace the bad command by a CMD_SYNC and acknowledge: consumption
    // resumes without another PROD write (7.1).
    rig.mem.write_u64(rig.cmdq + 16, 0x46);
    rig.w32(GERRORN, 1);
    assert_eq!(rig.r32(CMDQ_CONS) & 0xfffff, 3);
    assert_eq!(rig.fault(1, 0x1000, DmaDir::Read).0.code, 0x10);
    assert!(rig.smmu.violations().is_empty(), "{:?}", rig.smmu.violations());
    // Acknowledging an error that is not active is a violation.
    rig.w32(GERRORN, 0);
    assert!(matches!(
        rig.smmu.take_violations()[..],
        [SmmuViolation::GerrornInactive { bits: 1 }]
    ));
}

#[test]
fn command_fetch_abort() {
    let mut rig = default_rig();
    rig.w32(CR0, 0b0001);
    rig.w64(CMDQ_BASE, 0x2_0000_0000 | 8);
    rig.w32(CMDQ_PROD, 0);
    rig.w32(CMDQ_CONS, 0);
    rig.w32(CR0, 0b1001);
    rig.w32(CMDQ_PROD, 1);
    assert_eq!(rig.r32(CMDQ_CONS), 2 << 24, "CERROR_ABT, RD still 0");
    assert_eq!(rig.r32(GERROR), 1);
}

#[test]
fn injected_stall_and_command_error() {
    let (mut rig, _, _) = s2_rig();
    rig.smmu.inject(Some(SmmuInject::StallCommandQueue));
    rig.sync();
    assert_eq!(rig.r32(CMDQ_CONS), 0, "nothing consumed");
    rig.smmu.inject(None);
    rig.publish();
    assert_eq!(rig.r32(CMDQ_CONS), 1);
    rig.smmu.inject(Some(SmmuInject::CommandError));
    rig.sync();
    assert_eq!(rig.r32(CMDQ_CONS), 1 | (1 << 24));
    assert_eq!(rig.r32(GERROR), 1);
    rig.w32(GERRORN, 1);
    assert_eq!(rig.r32(CMDQ_CONS) & 0xfffff, 2, "the same CMD_SYNC succeeds on retry");
    assert_eq!(rig.smmu.stats().syncs, 2);
}

#[test]
fn event_queue_overflow() {
    let mut rig = default_rig();
    rig.w32(CR0, 0b1001);
    rig.w64(EVENTQ_BASE, rig.evtq | 1); // 2 entries
    rig.w32(EVENTQ_PROD, 0);
    rig.w32(EVENTQ_CONS, 0);
    rig.w32(CR0, 0b1101);
    let mut recorded = vec![];
    for sid in 0..4 {
        recorded.push(rig.fault(0x1000 + sid, 0, DmaDir::Read).1);
    }
    assert_eq!(recorded, [true, true, false, false]);
    // Full (index 0, wrap 1) and overflowed once.
    assert_eq!(rig.r32(EVENTQ_PROD), (1 << 31) | 0b10);
    assert_eq!(rig.event(1)[0] >> 32, 0x1001, "records were not overwritten");
    // Consume both records and acknowledge the overflow.
    rig.w32(EVENTQ_CONS, (1 << 31) | 0b10);
    assert!(rig.fault(0x2000, 0, DmaDir::Read).1);
    assert_eq!(rig.r32(EVENTQ_PROD), (1 << 31) | 0b11);
    assert_eq!(rig.event(0)[0] >> 32, 0x2000);
    assert!(rig.smmu.violations().is_empty(), "{:?}", rig.smmu.violations());
}

#[test]
fn non_coherent_reads_of_uncleaned_lines() {
    let cfg = SmmuConfig {
        coherent: false,
        ..SmmuConfig::default()
    };
    let mut rig = Rig::new(cfg);
    rig.mem.set_track_dirty(true);
    let root = rig.page();
    let p = rig.page();
    rig.map(root, 0x1000, p, S2_PAGE_RW);
    rig.set_ste(1, s2_ste(5, root));
    // Clean the tables but not the STE.
    rig.mem.clean(MEM_BASE, 64 << 20);
    rig.set_ste(1, s2_ste(5, root));
    assert!(rig.dma(1, 0x1000, DmaDir::Read).is_ok(), "the value is still read");
    let ste_pa = rig.strtab + 64;
    assert_eq!(
        rig.smmu.take_violations(),
        vec![SmmuViolation::ReadUncleaned {
            pa: ste_pa,
            what: "STE"
        }]
    );
    // An uncleaned command and stage-2 descriptor.
    let p2 = rig.page();
    rig.map(root, 0x2000, p2, S2_PAGE_RW);
    rig.sync();
    assert!(rig.dma(1, 0x2000, DmaDir::Read).is_ok());
    let v = rig.smmu.take_violations();
    assert!(
        v.iter()
            .any(|v| matches!(v, SmmuViolation::ReadUncleaned { what: "command", .. })),
        "{v:?}"
    );
    assert!(
        v.iter().any(|v| matches!(
            v,
            SmmuViolation::ReadUncleaned {
                what: "S2 descriptor",
                ..
            }
        )),
        "{v:?}"
    );
    // Cleaned: no violation.
    let p3 = rig.page();
    rig.map(root, 0x3000, p3, S2_PAGE_RW);
    rig.put(0x46, 0);
    rig.mem.clean(MEM_BASE, 64 << 20);
    rig.publish();
    assert!(rig.dma(1, 0x3000, DmaDir::Read).is_ok());
    assert!(rig.smmu.violations().is_empty(), "{:?}", rig.smmu.violations());
    // Event records written by the SMMU do not dirty lines.
    assert_eq!(rig.fault(1, 0x9000, DmaDir::Read).0.code, 0x10);
    assert!(!rig.mem.is_dirty(rig.evtq));
}

#[test]
fn coherent_smmu_needs_cacheable_attributes() {
    let mut rig = default_rig();
    rig.mem.set_track_dirty(true);
    rig.set_ste(1, [STE0_BYPASS, 0, 0, 0, 0, 0, 0, 0]);
    assert!(rig.dma(1, 0x1000, DmaDir::Read).is_ok());
    assert!(rig.smmu.violations().is_empty(), "coherent, WB/ISH: snooped");
    // Non-cacheable table attributes: the STE read no longer snoops.
    rig.w32(CR0, 0b1100);
    rig.w32(CR1, CR1_WB_ISH & !(0b1111 << 6));
    rig.w32(CR0, 0b1101);
    rig.set_ste(2, [STE0_BYPASS, 0, 0, 0, 0, 0, 0, 0]);
    assert!(rig.dma(2, 0x1000, DmaDir::Read).is_ok());
    assert!(matches!(
        rig.smmu.take_violations()[..],
        [SmmuViolation::ReadUncleaned { what: "STE", .. }]
    ));
}

#[test]
fn register_widths_and_guards() {
    let mut rig = default_rig();
    // 32-bit halves of a 64-bit register are legal (6.2).
    let base = rig.r64(STRTAB_BASE);
    assert_eq!(
        u64::from(rig.r32(STRTAB_BASE)) | (u64::from(rig.r32(STRTAB_BASE + 4)) << 32),
        base
    );
    assert!(rig.smmu.violations().is_empty());
    // 64-bit access to 32-bit registers, misaligned accesses.
    assert_eq!(rig.r64(CR0), 0);
    rig.w64(CMDQ_PROD, 5);
    assert_eq!(rig.r32(0x22), 0);
    rig.w32(0x81, 1);
    assert_eq!(
        rig.smmu.take_violations(),
        vec![
            SmmuViolation::WrongWidth { off: CR0, width: 64 },
            SmmuViolation::WrongWidth {
                off: CMDQ_PROD,
                width: 64
            },
            SmmuViolation::WrongWidth { off: 0x22, width: 32 },
            SmmuViolation::WrongWidth { off: 0x81, width: 32 },
        ]
    );
    assert_eq!(rig.r32(CMDQ_PROD), 0, "ignored");
    // Guarded registers while enabled: ignored.
    rig.w64(STRTAB_BASE, 0x4800_0000);
    rig.w32(STRTAB_BASE_CFG, 5);
    rig.w64(CMDQ_BASE, 0x4800_0000 | 4);
    rig.w32(CMDQ_CONS, 7);
    rig.w64(EVENTQ_BASE, 0x4800_0000 | 4);
    rig.w32(EVENTQ_PROD, 3);
    rig.w32(CR2, 0);
    assert_eq!(rig.r64(STRTAB_BASE), rig.strtab);
    assert_eq!(rig.r32(STRTAB_BASE_CFG), 8);
    assert_eq!(rig.r64(CMDQ_BASE), rig.cmdq | 8);
    assert_eq!(rig.r32(CR2), 0b10);
    let v = rig.smmu.take_violations();
    assert_eq!(v.len(), 7, "{v:?}");
    assert!(
        v.iter().all(|v| matches!(v, SmmuViolation::WriteWhileEnabled { .. })),
        "{v:?}"
    );
    // Read-only registers and RES0 bits.
    rig.w32(IDR0, 0);
    rig.w32(CR0, 0xffff_ffff);
    assert_eq!(rig.r32(CR0ACK), 0b1101);
    assert_eq!(
        rig.smmu.take_violations(),
        vec![
            SmmuViolation::ReadOnlyWrite { off: IDR0 },
            SmmuViolation::Res0 {
                off: CR0,
                bits: 0xffff_fff2
            },
        ]
    );
    // Unknown offsets.
    assert_eq!(rig.r32(0x3000), 0);
    assert_eq!(
        rig.smmu.take_violations(),
        vec![SmmuViolation::UnknownRegister {
            off: 0x3000,
            write: false
        }]
    );
}

#[test]
fn queue_index_misuse() {
    let mut rig = default_rig();
    // PROD more than 256 entries ahead of CONS: inconsistent.
    rig.w32(CMDQ_PROD, 0x101 | 0x100);
    let v = rig.smmu.take_violations();
    assert!(
        matches!(v[..], [SmmuViolation::QueueOverrun { off: CMDQ_PROD, .. }]),
        "{v:?}"
    );
    // Misaligned queue base noticed when the queue is enabled.
    rig.w32(CR0, 0b0101);
    rig.w64(CMDQ_BASE, (rig.cmdq + 0x20) | 8);
    rig.w32(CMDQ_PROD, 0);
    rig.w32(CMDQ_CONS, 0);
    rig.w32(CR0, 0b1101);
    let v = rig.smmu.take_violations();
    assert!(v.contains(&SmmuViolation::Misaligned {
        what: "CMDQ_BASE",
        addr: rig.cmdq + 0x20
    }));
}

#[test]
fn dirty_tracking_in_physmem() {
    let mut m = PhysMem::new(MEM_BASE, 1 << 20);
    m.write_u64(MEM_BASE, 1);
    assert!(!m.is_dirty(MEM_BASE), "off by default");
    m.set_track_dirty(true);
    m.write_u64(MEM_BASE + 0x48, 1);
    assert!(m.is_dirty(MEM_BASE + 0x40) && m.is_dirty(MEM_BASE + 0x7f));
    assert!(!m.is_dirty(MEM_BASE + 0x80) && !m.is_dirty(MEM_BASE));
    m.device_write_u64(MEM_BASE + 0x100, 2);
    assert!(!m.is_dirty(MEM_BASE + 0x100));
    m.write_u64(MEM_BASE + 0x1000, 1);
    m.clean(MEM_BASE + 0x7f, 1);
    assert!(!m.is_dirty(MEM_BASE + 0x40));
    assert!(m.is_dirty(MEM_BASE + 0x1000));
    m.clean(MEM_BASE + 0xfff, 2);
    assert!(!m.is_dirty(MEM_BASE + 0x1000));
    m.write_u64(MEM_BASE, 1);
    m.set_track_dirty(false);
    assert!(!m.is_dirty(MEM_BASE));
    m.clean(u64::MAX - 3, 100);
}

/// Offsets a hostile driver might poke, including bad ones.
const POKE: [u64; 24] = [
    CR0,
    CR1,
    CR2,
    GBPA,
    IRQ_CTRL,
    GERRORN,
    STRTAB_BASE,
    STRTAB_BASE + 4,
    STRTAB_BASE_CFG,
    CMDQ_BASE,
    CMDQ_BASE + 4,
    CMDQ_PROD,
    CMDQ_CONS,
    EVENTQ_BASE,
    EVENTQ_BASE + 4,
    EVENTQ_PROD,
    EVENTQ_CONS,
    IDR0,
    0x68,
    0x22,
    0xa8,
    0x1_0000,
    0x2_0000,
    0xfff,
];

/// Layout of the hostile test's 16-page memory: Stream table (64 STEs),
/// command queue (16 entries), event queue (8 entries), stage-2 tables and a
/// data page.
const H_STRTAB: u64 = MEM_BASE;
const H_CMDQ: u64 = MEM_BASE + PAGE_SIZE;
const H_EVTQ: u64 = MEM_BASE + 2 * PAGE_SIZE;
const H_ROOT: u64 = MEM_BASE + 3 * PAGE_SIZE;
const H_L2: u64 = MEM_BASE + 4 * PAGE_SIZE;
const H_L3: u64 = MEM_BASE + 5 * PAGE_SIZE;
const H_DATA: u64 = MEM_BASE + 6 * PAGE_SIZE;

#[derive(Debug, Clone)]
enum Op {
    W32(usize, u32),
    W64(usize, u64),
    R(usize),
    Mem(u64, u64),
    /// Write a command (opcode from a list of real and bogus ones) at the
    /// producer index and publish it.
    Cmd(u8, u64, u64),
    Clean(u64, u64),
    Dma(u32, u64, bool),
}

fn val() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        0u64..0x40,
        (0u64..0x100).prop_map(|x| MEM_BASE + x * 0x100),
        (0u64..8).prop_map(|x| 0x1000 * x),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..POKE.len(), val()).prop_map(|(i, v)| Op::W32(i, v as u32)),
        (0..POKE.len(), val()).prop_map(|(i, v)| Op::W64(i, v)),
        (0..POKE.len()).prop_map(Op::R),
        (0u64..0x2000, val()).prop_map(|(a, v)| Op::Mem(MEM_BASE + a * 8, v)),
        (
            prop::sample::select(vec![
                0x01u8, 0x03, 0x04, 0x05, 0x10, 0x12, 0x20, 0x28, 0x2a, 0x30, 0x46, 0x46, 0x7f
            ]),
            val(),
            val()
        )
            .prop_map(|(o, a, b)| Op::Cmd(o, a, b)),
        (0u64..0x10000, 0u64..0x2000).prop_map(|(a, l)| Op::Clean(MEM_BASE + a, l)),
        (prop_oneof![0u32..4, any::<u32>()], val(), any::<bool>()).prop_map(|(s, a, w)| Op::Dma(s, a, w)),
    ]
}

/// A working configuration: SID 1 translates IPA 0x1000 to `H_DATA`
/// through VMID 5, SID 2 bypasses, all queues enabled.
fn hostile_setup(coherent: bool) -> (PhysMem, Smmu) {
    let cfg = SmmuConfig {
        coherent,
        cmdq_log2: 4,
        evtq_log2: 3,
        sid_bits: 8,
        ..SmmuConfig::default()
    };
    let mut mem = PhysMem::new(MEM_BASE, 16 * PAGE_SIZE);
    let mut smmu = Smmu::new(cfg);
    for (i, w) in s2_ste(5, H_ROOT).iter().enumerate() {
        mem.write_u64(H_STRTAB + 64 + i as u64 * 8, *w);
    }
    mem.write_u64(H_STRTAB + 128, STE0_BYPASS);
    mem.write_u64(H_ROOT, H_L2 | TABLE);
    mem.write_u64(H_L2, H_L3 | TABLE);
    mem.write_u64(H_L3 + 8, H_DATA | S2_PAGE_RW);
    for (off, v) in [
        (CR1, u64::from(CR1_WB_ISH)),
        (CR2, 0b10),
        (STRTAB_BASE_CFG, 6),
        (CMDQ_PROD, 0),
        (CMDQ_CONS, 0),
        (EVENTQ_PROD, 0),
        (EVENTQ_CONS, 0),
    ] {
        smmu.write32(&mut mem, off, v as u32);
    }
    smmu.write64(&mut mem, STRTAB_BASE, H_STRTAB);
    smmu.write64(&mut mem, CMDQ_BASE, H_CMDQ | 4);
    smmu.write64(&mut mem, EVENTQ_BASE, H_EVTQ | 3);
    smmu.write32(&mut mem, CR0, 0b1101);
    assert_eq!(smmu.dma(&mut mem, 1, 0x1008, DmaDir::Read).unwrap().pa, H_DATA + 8);
    assert!(smmu.take_violations().is_empty());
    mem.set_track_dirty(true);
    (mem, smmu)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// From a working configuration, random register writes, memory
    /// scribbles, commands and DMA never panic; a translated DMA only ever
    /// lands in the window or where the device pointed (bypass).
    #[test]
    fn hostile_driver_never_panics(ops in proptest::collection::vec(op(), 1..60), coherent in any::<bool>()) {
        let (mut mem, mut smmu) = hostile_setup(coherent);
        let mut prod = 0u32;
        for op in ops {
            match op {
                Op::W32(i, v) => smmu.write32(&mut mem, POKE[i], v),
                Op::W64(i, v) => smmu.write64(&mut mem, POKE[i], v),
                Op::R(i) => {
                    smmu.read32(&mem, POKE[i]);
                    smmu.read64(&mem, POKE[i]);
                }
                Op::Mem(a, v) => mem.write_u64(a, v),
                Op::Cmd(o, a, b) => {
                    let slot = H_CMDQ + u64::from(prod & 0xf) * 16;
                    mem.write_u64(slot, u64::from(o) | (a & !0xff));
                    mem.write_u64(slot + 8, b);
                    prod = (prod + 1) & 0x1f;
                    smmu.write32(&mut mem, CMDQ_PROD, prod);
                }
                Op::Clean(a, l) => mem.clean(a, l),
                Op::Dma(s, a, w) => {
                    let dir = if w { DmaDir::Write } else { DmaDir::Read };
                    if let Ok(ok) = smmu.dma(&mut mem, s, a, dir) {
                        prop_assert!(ok.pa == a || ok.pa >> 48 == 0, "{ok:?}");
                    }
                }
            }
        }
        let _ = smmu.stale_entries(&mem);
        let _ = smmu.take_violations();
        let _ = smmu.stats();
    }
}
