//! Malformed and failing hardware: the driver refuses what it cannot use
//! before writing anything, bounds every wait, turns command-queue errors
//! and sync timeouts into errors, and when an ownership update cannot
//! complete it blocks all DMA instead of leaving a stale translation.

mod support;

use proptest::prelude::*;
use support::*;
use warden_archmodel::smmu::{DmaDir, SmmuConfig as ModelConfig, SmmuInject};
use warden_iommu::{IommuDriver, IommuError, IommuProt};
use warden_memprotect::harness::RAM;
use warden_smmuv3::{regs, Mmio};

fn ram_pfn(i: u64) -> u64 {
    (RAM[0].base >> 12) + i
}

fn probe_error(hw: &Hw) -> IommuError {
    let before = (hw.regs().read32(regs::CR0), hw.regs().read32(regs::GBPA));
    let e = hw.driver_with(Hw::config(), hw.cache()).err().expect("refused");
    assert_eq!(
        (hw.regs().read32(regs::CR0), hw.regs().read32(regs::GBPA)),
        before,
        "a refused SMMU is left alone"
    );
    e
}

#[test]
fn smmu_without_stage_2_is_refused_with_a_reason() {
    let hw = Hw::new(ModelConfig {
        stage2: false,
        ..ModelConfig::default()
    });
    assert_eq!(
        probe_error(&hw),
        IommuError::Unsupported("SMMU without stage-2 translation")
    );
}

#[test]
fn reserved_and_unusable_id_values_are_refused() {
    let cases: [(u64, u32, u32, &str); 6] = [
        (regs::IDR0, 0b11 << 27, 0b11 << 27, "ST_LEVEL reserved"),
        (regs::IDR0, 0b11 << 2, 0b01 << 2, "AArch32 tables only"),
        (regs::IDR5, 0x7, 0x7, "OAS reserved"),
        (regs::IDR5, 1 << 4, 0, "no 4K granule"),
        (regs::IDR1, 1 << 30, 1 << 30, "fixed table base"),
        (regs::IDR1, 0x1f << 21, 20 << 21, "command queue above 2^19"),
    ];
    for (reg, mask, val, what) in cases {
        let hw = Hw::new(ModelConfig::default());
        let real = hw.regs().read32(reg);
        hw.smmu.borrow_mut().override_reg(reg, (real & !mask) | val);
        let e = probe_error(&hw);
        assert!(
            matches!(e, IommuError::Unsupported(_) | IommuError::Hardware(_)),
            "{what}: {e:?}"
        );
    }
    // More stream ID bits than exist.
    let hw = Hw::new(ModelConfig::default());
    let real = hw.regs().read32(regs::IDR1);
    hw.smmu.borrow_mut().override_reg(regs::IDR1, (real & !0x3f) | 40);
    assert_eq!(probe_error(&hw), IommuError::Hardware("IDR1.SIDSIZE above 32"));
    // A PA size the SMMU cannot output.
    let hw = Hw::new(ModelConfig {
        oas_bits: 36,
        ..ModelConfig::default()
    });
    assert!(matches!(probe_error(&hw), IommuError::Unsupported(_)));
}

#[test]
fn stalled_command_queue_times_out_and_blocks_all_dma() {
    let r = Rig::new(ModelConfig::default());
    r.takeover();
    let pfn = ram_pfn(40);
    assert!(r.hw.reach(0, pfn).is_some());
    r.hw.smmu.borrow_mut().inject(Some(SmmuInject::StallCommandQueue));
    // The transition itself succeeds (ownership is Warden's to decide);
    // the IOMMU could not confirm, so DMA is off altogether.
    r.mp.host_donate_hyp(pfn, 1).unwrap();
    assert_eq!(r.mp.with_host(|h| h.hook.failure()), Some(IommuError::Timeout));
    for sid in [0, 3, STREAMS - 1, STREAMS] {
        for p in [pfn, pfn + 1, ram_pfn(0), 0x0900_0000 >> 12] {
            assert!(r.hw.dma(sid, p, DmaDir::Read).is_err(), "stream {sid} pfn {p:#x}");
        }
    }
    // Later transitions still work; the driver stays blocked and says so.
    r.mp.hyp_donate_host(pfn, 1).unwrap();
    assert!(r.hw.dma(0, pfn, DmaDir::Read).is_err());
    assert!(r.with_driver(|d| d.idmap(pfn, 4096, IommuProt::MEM)).is_err());
}

#[test]
fn command_error_is_reported_and_the_queue_recovers() {
    let hw = Hw::new(ModelConfig::default());
    let mut d = hw.driver();
    d.init().unwrap();
    let pfn = ram_pfn(100);
    d.idmap(RAM[0].base, RAM[0].size, IommuProt::MEM).unwrap();
    assert!(hw.reach(0, pfn).is_some());
    hw.smmu.borrow_mut().inject(Some(SmmuInject::CommandError));
    let e = d.idmap(pfn << 12, 4096, IommuProt::NONE);
    assert_eq!(e, Err(IommuError::Hardware("command queue: illegal command")));
    hw.smmu.borrow_mut().inject(None);
    let mut regs = hw.regs();
    assert_eq!(
        regs.read32(regs::GERROR) & 1,
        regs.read32(regs::GERRORN) & 1,
        "error acknowledged"
    );
    // The queue runs again: the next update completes.
    d.idmap((pfn + 1) << 12, 4096, IommuProt::NONE).unwrap();
    assert!(hw.smmu.borrow().violations().is_empty());
    // But the invalidation that failed is lost: the SMMU still caches the
    // block the failed update broke. This is why a failed update under
    // the ownership hook blocks all DMA (next test).
    assert!(!hw.smmu.borrow().stale_entries(&hw.m.borrow().mem).is_empty());
}

#[test]
fn command_error_under_a_transition_blocks_all_dma() {
    let r = Rig::new(ModelConfig::default());
    r.takeover();
    let pfn = ram_pfn(41);
    assert!(r.hw.reach(1, pfn).is_some());
    r.hw.smmu.borrow_mut().inject(Some(SmmuInject::CommandError));
    r.mp.host_donate_hyp(pfn, 1).unwrap();
    assert!(matches!(
        r.mp.with_host(|h| h.hook.failure()),
        Some(IommuError::Hardware(_))
    ));
    assert!(r.hw.dma(1, pfn, DmaDir::Write).is_err());
    assert!(r.hw.dma(1, pfn + 5, DmaDir::Write).is_err());
}

#[test]
fn takeover_on_a_stalled_smmu_fails_closed() {
    let hw = Hw::new(ModelConfig::default());
    let mut d = hw.driver();
    hw.smmu.borrow_mut().inject(Some(SmmuInject::StallCommandQueue));
    assert_eq!(d.init(), Err(IommuError::Timeout));
    assert!(hw.dma(0, ram_pfn(1), DmaDir::Read).is_err(), "aborted, not bypassed");
    assert_eq!(d.blocked(), Some(IommuError::Timeout));
    assert_eq!(d.init(), Err(IommuError::Inval), "no second takeover");
}

#[test]
fn consumer_index_beyond_the_producer_is_a_hardware_error() {
    let hw = Hw::new(ModelConfig::default());
    let mut d = hw.driver();
    d.init().unwrap();
    d.idmap(RAM[0].base, 4096, IommuProt::MEM).unwrap();
    hw.smmu.borrow_mut().override_reg(regs::CMDQ_CONS, 0x55);
    let e = d.idmap(RAM[0].base, 4096, IommuProt::NONE);
    assert!(matches!(e, Err(IommuError::Hardware(_))), "{e:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any ID register values: probing refuses or accepts, never panics,
    /// and what it accepts it can take over and translate with.
    #[test]
    fn any_id_registers(idr0 in any::<u32>(), idr1 in any::<u32>(), idr3 in any::<u32>(), idr5 in any::<u32>()) {
        let hw = Hw::new(ModelConfig::default());
        {
            let mut s = hw.smmu.borrow_mut();
            s.override_reg(regs::IDR0, idr0);
            s.override_reg(regs::IDR1, idr1);
            s.override_reg(regs::IDR3, idr3);
            s.override_reg(regs::IDR5, idr5);
        }
        let mut cfg = Hw::config();
        cfg.streams = 1;
        if let Ok(mut d) = hw.driver_with(cfg, hw.cache()) {
            let f = *d.features();
            prop_assert!(f.sid_bits <= 32 && f.cmdq_log2 >= 1 && f.cmdq_log2 <= 19 && f.oas_bits >= PA_BITS);
            // The model behind the lies is the default one; the driver must
            // still not panic, whatever it makes of it.
            let _ = d.init();
            let _ = d.idmap(RAM[0].base, 4096, IommuProt::NONE);
        }
    }
}
