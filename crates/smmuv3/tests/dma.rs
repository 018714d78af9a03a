//! The driver on the SMMUv3 model: DMA through the shadow follows every
//! ownership change the moment the transition returns (the model's TLB
//! keeps whatever is not invalidated and synced), attributes are right,
//! and the commands are batched.

mod support;

use support::*;
use warden_archmodel::smmu::{DmaDir, DmaErr, SmmuConfig as ModelConfig};
use warden_archmodel::MemType as MType;
use warden_iommu::IommuDriver;
use warden_memprotect::harness::{ArenaTables as Tables, GuestTables, RAM};
use warden_smmuv3::regs;

fn ram_pfn(i: u64) -> u64 {
    (RAM[0].base >> 12) + i
}

#[test]
fn takeover_translates_every_stream_through_the_shadow_and_aborts_the_rest() {
    for two_level in [false, true] {
        // 8 streams fit a linear table either way.
        let r = Rig::new(ModelConfig {
            two_level,
            ..ModelConfig::default()
        });
        // Before takeover the model bypasses (its reset state).
        assert!(r.hw.dma(0, ram_pfn(0), DmaDir::Read).is_ok());
        r.takeover();
        let mmio = 0x0900_0000 >> 12;
        for sid in 0..STREAMS {
            assert_eq!(r.hw.reach(sid, ram_pfn(5)), Some(MType::NormalWb), "RAM is cacheable");
            assert_eq!(r.hw.reach(sid, mmio), Some(MType::DeviceNGnRE), "MMIO is device");
        }
        // Streams Warden did not configure never reach memory.
        for sid in [STREAMS, 255, 256, 4096, u32::MAX] {
            assert!(r.hw.dma(sid, ram_pfn(5), DmaDir::Write).is_err(), "stream {sid:#x}");
        }
        let mut regs = r.hw.regs();
        use warden_smmuv3::Mmio;
        assert_eq!(regs.read32(regs::CR0ACK) & 0xd, 0xd, "SMMUEN, EVENTQEN, CMDQEN");
        assert_eq!(
            regs.read32(regs::GBPA) & regs::gbpa::ABORT,
            regs::gbpa::ABORT,
            "bypass aborts"
        );
        let t = r.with_driver(|d| {
            (
                d.stream_table().unwrap().two_level(),
                d.stream_table().unwrap().log2size(),
            )
        });
        assert_eq!(t, (false, 3));
        r.hw.assert_clean();
    }
}

#[test]
fn donation_blocks_dma_at_once_and_reclaim_restores_it() {
    let r = Rig::new(ModelConfig::default());
    r.takeover();
    let pfn = ram_pfn(700);
    // Every stream has the 2 MiB block in the SMMU's TLB.
    for sid in 0..STREAMS {
        assert_eq!(r.hw.reach(sid, pfn), Some(MType::NormalWb));
    }
    r.mp.host_donate_hyp(pfn, 1).unwrap();
    for sid in 0..STREAMS {
        match r.hw.dma(sid, pfn, DmaDir::Write) {
            Err(DmaErr::Fault { event, recorded }) => {
                assert!(recorded);
                assert_eq!(
                    (event.code, event.sid, event.addr, event.write),
                    (0x10, sid, pfn << 12, true)
                );
            }
            other => panic!("stream {sid}: DMA into a donated page gave {other:?}"),
        }
        assert_eq!(r.hw.reach(sid, pfn + 1), Some(MType::NormalWb), "the neighbour");
    }
    // Warden's view of the faults.
    let mut events = Vec::new();
    r.with_driver(|d| d.drain_events(|e| events.push(e)));
    assert_eq!(events.len(), STREAMS as usize);
    for (sid, e) in events.iter().enumerate() {
        assert_eq!(e.kind, warden_smmuv3::EventKind::Translation);
        assert_eq!((e.sid, e.addr, e.write, e.stage2), (sid as u32, pfn << 12, true, true));
    }
    r.mp.hyp_donate_host(pfn, 1).unwrap();
    for sid in 0..STREAMS {
        assert_eq!(r.hw.reach(sid, pfn), Some(MType::NormalWb), "after reclaim");
    }
    // A guest's page, and the SMMU's own registers once donated.
    let h =
        r.mp.init_vm(
            GuestTables::<Dma>::new_s2(&mut Tables(1), 40, 1),
            true,
            (RAM[1].end() >> 12) - 1,
            1,
        )
        .unwrap();
    r.mp.host_donate_guest(h, pfn + 2, 0).unwrap();
    assert_eq!(r.hw.reach(3, pfn + 2), None);
    let smmu_regs = 0x0905_0000 >> 12;
    assert_eq!(r.hw.reach(0, smmu_regs), Some(MType::DeviceNGnRE));
    r.mp.host_donate_hyp_mmio(smmu_regs, 32).unwrap();
    for i in [0, 16, 31] {
        assert_eq!(r.hw.reach(0, smmu_regs + i), None, "DMA into the SMMU's registers");
    }
    r.mp.hyp_donate_host_mmio(smmu_regs, 32).unwrap();
    assert_eq!(r.hw.reach(0, smmu_regs), Some(MType::DeviceNGnRE));
    r.hw.assert_clean();
    assert_eq!(r.mp.with_host(|h| h.hook.failure()), None);
}

#[test]
fn one_donation_is_one_batch_and_one_sync() {
    for ril in [false, true] {
        let r = Rig::new(ModelConfig {
            ril,
            ..ModelConfig::default()
        });
        r.takeover();
        let pfn = ram_pfn(1024);
        // The first page out of a 2 MiB block splits it: the block's
        // invalidation is completed before the table replaces it, then the
        // page's own.
        let before = r.with_driver(|d| d.stats());
        r.mp.host_donate_hyp(pfn, 1).unwrap();
        let split = r.with_driver(|d| d.stats());
        assert_eq!(
            (split.tlbis - before.tlbis, split.syncs - before.syncs),
            (2, 2),
            "ril {ril}"
        );
        // A neighbour in the now split block: one TLBI, one sync.
        r.mp.host_donate_hyp(pfn + 1, 1).unwrap();
        let one = r.with_driver(|d| d.stats());
        assert_eq!((one.tlbis - split.tlbis, one.syncs - split.syncs), (1, 1), "ril {ril}");
        assert_eq!(one.commands - split.commands, 2);
        // 8 pages at once: with range invalidation one command covers
        // them; without, one per page (still one sync).
        r.mp.host_donate_hyp(pfn + 64, 8).unwrap();
        let run = r.with_driver(|d| d.stats());
        let want = if ril { 1 } else { 8 };
        assert_eq!((run.tlbis - one.tlbis, run.syncs - one.syncs), (want, 1), "ril {ril}");
        // Past 8 entries the engine asks for the whole VMID: one VMALL.
        r.mp.host_donate_hyp(pfn + 128, 64).unwrap();
        let all = r.with_driver(|d| d.stats());
        assert_eq!((all.tlbis - run.tlbis, all.syncs - run.syncs), (1, 1), "ril {ril}");
        for p in [pfn, pfn + 1, pfn + 64, pfn + 71, pfn + 128, pfn + 191] {
            assert_eq!(r.hw.reach(0, p), None);
        }
        for p in [pfn + 72, pfn + 127, pfn + 192] {
            assert_eq!(r.hw.reach(0, p), Some(MType::NormalWb));
        }
        r.hw.assert_clean();
    }
}

#[test]
fn non_coherent_smmu_reads_only_cleaned_structures() {
    let cfg = ModelConfig {
        coherent: false,
        ..ModelConfig::default()
    };
    let r = Rig::new(cfg);
    r.takeover();
    let pfn = ram_pfn(3);
    assert_eq!(r.hw.reach(1, pfn), Some(MType::NormalWb));
    r.mp.host_donate_hyp(pfn, 1).unwrap();
    assert_eq!(r.hw.reach(1, pfn), None);
    r.mp.hyp_donate_host(pfn, 1).unwrap();
    assert_eq!(r.hw.reach(1, pfn), Some(MType::NormalWb));
    r.hw.assert_clean();

    // A 2-level table: the SMMU also reads the level-1 descriptors of
    // spans never configured, which only the allocator's zeroing wrote
    // (4100 streams: 32 descriptors, the last cache line of them never
    // written again; stream 7000 reads it).
    let hw = Hw::new(cfg);
    let mut two = Hw::config();
    two.streams = 4100;
    let mut d = hw.driver_with(two, hw.cache()).unwrap();
    d.init().unwrap();
    assert!(hw.dma(7000, ram_pfn(3), DmaDir::Read).is_err());
    hw.assert_clean();

    // The check has teeth: the same driver without cache maintenance is
    // caught reading uncleaned lines.
    let hw = Hw::new(cfg);
    let mut cache = hw.cache();
    cache.skip = true;
    let mut d = hw.driver_with(Hw::config(), cache).unwrap();
    d.init().unwrap();
    let _ = hw.dma(0, ram_pfn(3), DmaDir::Read);
    assert!(
        !hw.smmu.borrow().violations().is_empty(),
        "uncleaned reads go unnoticed"
    );
}

#[test]
fn stream_reconfiguration_waits_for_the_smmu() {
    let r = Rig::new(ModelConfig::default());
    r.takeover();
    let pfn = ram_pfn(9);
    assert!(r.hw.reach(2, pfn).is_some());
    r.with_driver(|d| d.set_stream(2, false)).unwrap();
    assert!(matches!(r.hw.dma(2, pfn, DmaDir::Read), Err(DmaErr::Abort)));
    assert!(r.hw.reach(3, pfn).is_some(), "other streams unaffected");
    r.with_driver(|d| d.set_stream(2, true)).unwrap();
    assert_eq!(r.hw.reach(2, pfn), Some(MType::NormalWb));
    // Beyond the stream table: refused, nothing changed.
    assert_eq!(
        r.with_driver(|d| d.set_stream(1 << 20, true)),
        Err(warden_iommu::IommuError::Inval)
    );
    r.hw.assert_clean();
}

#[test]
fn two_level_stream_table_grows_on_demand() {
    let hw = Hw::new(ModelConfig::default());
    let mut cfg = Hw::config();
    cfg.streams = 600;
    let mut d = hw.driver_with(cfg, hw.cache()).unwrap();
    d.idmap(RAM[0].base, RAM[0].size, warden_iommu::IommuProt::MEM).unwrap();
    d.init().unwrap();
    let t = d.stream_table().unwrap();
    assert_eq!((t.two_level(), t.log2size()), (true, 10));
    let pfn = ram_pfn(1);
    for sid in [0, 255, 256, 599] {
        assert_eq!(hw.reach(sid, pfn), Some(MType::NormalWb), "stream {sid}");
    }
    // 600..767 share a level-2 table with configured streams; 768..1023
    // have none yet (the SMMU may have cached its invalid level-1
    // descriptor); 1024 and up are beyond the table.
    for sid in [600, 767, 768, 1023, 1024] {
        assert!(hw.reach(sid, pfn).is_none(), "stream {sid}");
    }
    d.set_stream(900, true).unwrap();
    assert_eq!(hw.reach(900, pfn), Some(MType::NormalWb));
    assert!(hw.reach(901, pfn).is_none());
    hw.assert_clean();
}
