//! The driver: takeover, per-stream configuration, and the shadow's TLB
//! operations turned into batched SMMU commands.

use warden_iommu::{HostShadow, IommuDriver, IommuError, IommuProt};
use warden_memprotect::Region;
use warden_pgtable::{Barrier, Error as PgError, MmOps, PageTable, Regime, TlbOps, Tlbi};

use crate::cmd::{self, Cmd};
use crate::event::{Event, EventQueue, EVENT_BYTES};
use crate::hw::{alloc_structure, CacheMaint, Mmio, SmmuMem};
use crate::probe::{probe, ps_encoding, Features};
use crate::queue::{CmdQueue, CmdStats, CMD_BYTES};
use crate::regs::{self, cr0, cr1, gbpa};
use crate::ste::{S2Config, StreamCfg, StreamTable};
use crate::walkmm::WalkMm;

/// Largest command queue Warden sets up (log2 entries): 256 entries, one
/// page; a shadow update needs a few.
const CMDQ_LOG2_MAX: u8 = 8;
/// Largest event queue (log2 records): 128 records, one page.
const EVTQ_LOG2_MAX: u8 = 7;
/// Past this many invalidation commands in one batch, one VMALL is
/// cheaper for the SMMU and the queue.
const MAX_TLBI_CMDS: u64 = 64;
/// Runs of invalidations remembered per batch before falling back to
/// VMALL.
const MAX_RUNS: usize = 16;

/// How Warden uses one SMMU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SmmuConfig {
    /// The machine's physical address size (the shadow's input and output
    /// size): at most the SMMU's OAS; a valid PS size (32, 36, 40, 42, 44,
    /// 48).
    pub pa_bits: u8,
    /// Streams `0..streams` translate through the shadow; every other
    /// stream aborts.
    pub streams: u32,
    /// VMID of the shadow in the SMMU's TLBs.
    pub vmid: u16,
    /// Bound on every register or queue poll (iterations).
    pub poll_limit: u32,
}

/// The SMMU's hardware side: registers, structure memory, command queue.
/// It is the shadow table's [`TlbOps`]: the engine's invalidations are
/// gathered into runs, and the barrier that completes them becomes one
/// batch of TLBI commands and one CMD_SYNC.
pub struct SmmuHw<R: Mmio, D: SmmuMem> {
    regs: R,
    mem: D,
    features: Features,
    vmid: u16,
    cmdq: Option<CmdQueue>,
    pending: Pending,
    /// The first failure since the last [`SmmuHw::take_error`]: TLB
    /// operations cannot return one, so the driver collects it after each
    /// table update.
    error: Option<IommuError>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Run {
    ipa: u64,
    count: u64,
    level: u8,
    leaf: bool,
}

#[derive(Clone, Copy, Debug, Default)]
struct Pending {
    runs: [Run; MAX_RUNS],
    n: usize,
    all: bool,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.n == 0 && !self.all
    }

    /// Remember an entry at `level` covering `ipa`, merged into the last
    /// run when it continues it.
    fn add(&mut self, ipa: u64, level: u8, leaf: bool) {
        if self.all || level > 3 {
            self.all = true;
            return;
        }
        let size = level_size(level);
        let ipa = ipa & !(size - 1);
        if let Some(last) = self.runs[..self.n].last_mut() {
            if last.level == level && last.leaf == leaf && last.ipa + last.count * size == ipa {
                last.count += 1;
                return;
            }
        }
        if self.n == MAX_RUNS {
            self.all = true;
            return;
        }
        self.runs[self.n] = Run {
            ipa,
            count: 1,
            level,
            leaf,
        };
        self.n += 1;
    }
}

const fn level_size(level: u8) -> u64 {
    1 << (12 + 9 * (3 - level as u32))
}

impl<R: Mmio, D: SmmuMem> SmmuHw<R, D> {
    /// The register interface.
    pub fn regs(&mut self) -> &mut R {
        &mut self.regs
    }

    /// The structure memory.
    pub fn mem(&mut self) -> &mut D {
        &mut self.mem
    }

    /// What has been issued so far.
    pub fn stats(&self) -> CmdStats {
        self.cmdq.as_ref().map(|q| q.stats).unwrap_or_default()
    }

    /// The failure collected since the last call, if any.
    pub fn take_error(&mut self) -> Option<IommuError> {
        self.error.take()
    }

    fn note(&mut self, r: Result<(), IommuError>) {
        if let Err(e) = r {
            self.error.get_or_insert(e);
        }
    }

    /// Issue `cmd` and wait for it (and everything before) to complete.
    fn command_sync(&mut self, cmd: Cmd) -> Result<(), IommuError> {
        let q = self.cmdq.as_mut().ok_or(IommuError::Inval)?;
        q.push(&mut self.regs, &mut self.mem, cmd)?;
        q.sync(&mut self.regs, &mut self.mem)
    }

    /// Turn the gathered invalidations into commands and one sync. Before
    /// the command queue exists the SMMU has never used the table (and
    /// takeover invalidates everything), so they are dropped.
    fn complete(&mut self) -> Result<(), IommuError> {
        let p = core::mem::take(&mut self.pending);
        if p.is_empty() {
            return Ok(());
        }
        let Some(q) = self.cmdq.as_mut() else {
            return Ok(());
        };
        let ril = self.features.ril;
        let vmid = self.vmid;
        let runs = &p.runs[..p.n];
        let mut cmds = 0;
        for r in runs {
            cmds += match ril {
                true => {
                    let mut n = 0;
                    cmd::ranges(r.count * (level_size(r.level) >> 12), |_, _| n += 1);
                    n
                }
                false => r.count,
            };
        }
        let (regs, mem) = (&mut self.regs, &mut self.mem);
        if p.all || cmds > MAX_TLBI_CMDS {
            q.push(regs, mem, Cmd::TlbiS12Vmall { vmid })?;
        } else {
            for r in runs {
                let size = level_size(r.level);
                let ttl = r.level;
                if ril {
                    let mut res = Ok(());
                    cmd::ranges(r.count * (size >> 12), |off, range| {
                        if res.is_ok() {
                            let c = Cmd::TlbiS2Ipa {
                                vmid,
                                ipa: r.ipa + (off << 12),
                                leaf: r.leaf,
                                ttl,
                                range: Some(range),
                            };
                            res = q.push(regs, mem, c);
                        }
                    });
                    res?;
                } else {
                    for i in 0..r.count {
                        let c = Cmd::TlbiS2Ipa {
                            vmid,
                            ipa: r.ipa + i * size,
                            leaf: r.leaf,
                            ttl,
                            range: None,
                        };
                        q.push(regs, mem, c)?;
                    }
                }
            }
        }
        q.sync(regs, mem)
    }
}

impl<R: Mmio, D: SmmuMem> TlbOps for SmmuHw<R, D> {
    fn barrier(&mut self, barrier: Barrier) {
        match barrier {
            // Table writes must be visible to the SMMU's walker before the
            // invalidation commands that follow them.
            Barrier::DsbIshSt => self.mem.publish(),
            Barrier::DsbIsh | Barrier::DsbNsh => {
                let r = self.complete();
                self.note(r);
            }
            Barrier::Isb => {}
        }
    }

    fn tlbi(&mut self, op: Tlbi) {
        match op {
            Tlbi::Stage2Ipa {
                ipa, level, last_level, ..
            } => self.pending.add(ipa, level, last_level),
            Tlbi::Stage2Vmid { .. } => self.pending.all = true,
            // The shadow is a stage-2 table: the engine never asks for
            // these. Be safe anyway.
            Tlbi::El2Va { .. } | Tlbi::El2All { .. } => self.pending.all = true,
        }
    }
}

/// An SMMUv3 whose streams translate the host's DMA through the host
/// stage-2 shadow.
pub struct Smmu<R: Mmio, D: SmmuMem, M: MmOps, C: CacheMaint> {
    shadow: HostShadow<WalkMm<M, C>, SmmuHw<R, D>>,
    cfg: SmmuConfig,
    features: Features,
    strtab: Option<StreamTable>,
    evtq: Option<EventQueue>,
    /// Set when all DMA has been blocked after a failure.
    blocked: Option<IommuError>,
}

impl<R: Mmio, D: SmmuMem, M: MmOps, C: CacheMaint> Smmu<R, D, M, C> {
    /// Probe the SMMU behind `regs` and prepare its shadow (empty until
    /// [`Smmu::snapshot`]), without writing any register. `table_mm` holds
    /// the shadow's table pages, `mem` the SMMU's structures, `cache` does
    /// cache maintenance for a non-coherent SMMU; `ram` is the machine's
    /// RAM map.
    pub fn new(
        mut regs: R,
        mem: D,
        table_mm: M,
        cache: C,
        ram: &[Region],
        cfg: SmmuConfig,
    ) -> Result<Self, IommuError> {
        let features = probe(&mut regs)?;
        if ps_encoding(cfg.pa_bits).is_none() || cfg.pa_bits > features.oas_bits {
            return Err(IommuError::Unsupported("PA size beyond the SMMU's output size"));
        }
        if !features.vmid16 && cfg.vmid > 0xff {
            return Err(IommuError::Inval);
        }
        if cfg.streams == 0 || u64::from(cfg.streams) > 1u64 << features.sid_bits || cfg.poll_limit == 0 {
            return Err(IommuError::Inval);
        }
        let regime = Regime::Stage2 {
            ipa_bits: cfg.pa_bits,
            vmid: cfg.vmid,
            fwb: false,
        };
        let hw = SmmuHw {
            regs,
            mem,
            features,
            vmid: cfg.vmid,
            cmdq: None,
            pending: Pending::default(),
            error: None,
        };
        let table =
            PageTable::new(regime, WalkMm::new(table_mm, cache, features.coherent), hw).map_err(|e| match e {
                PgError::NoMemory => IommuError::NoMem,
                _ => IommuError::Inval,
            })?;
        Ok(Smmu {
            shadow: HostShadow::new(table, ram, u32::from(cfg.pa_bits))?,
            cfg,
            features,
            strtab: None,
            evtq: None,
            blocked: None,
        })
    }

    /// What the SMMU offers.
    pub fn features(&self) -> &Features {
        &self.features
    }

    /// The host stage-2 shadow.
    pub fn shadow(&self) -> &HostShadow<WalkMm<M, C>, SmmuHw<R, D>> {
        &self.shadow
    }

    /// The host stage-2 shadow, mutably (snapshot, diagnostics).
    pub fn shadow_mut(&mut self) -> &mut HostShadow<WalkMm<M, C>, SmmuHw<R, D>> {
        &mut self.shadow
    }

    /// The hardware side.
    pub fn hw(&mut self) -> &mut SmmuHw<R, D> {
        self.shadow.table_mut().tlb_mut()
    }

    /// Commands issued so far.
    pub fn stats(&self) -> CmdStats {
        self.shadow.table().tlb().stats()
    }

    /// The stream table, once taken over.
    pub fn stream_table(&self) -> Option<&StreamTable> {
        self.strtab.as_ref()
    }

    /// Whether all DMA was blocked after a failure, and why.
    pub fn blocked(&self) -> Option<IommuError> {
        self.blocked
    }

    /// Fill the shadow from the host stage-2 (see
    /// [`HostShadow::snapshot`]).
    pub fn snapshot<HM: MmOps, HT: warden_pgtable::TlbOps>(
        &mut self,
        host_s2: &mut PageTable<HM, HT>,
    ) -> Result<(), IommuError> {
        self.shadow.snapshot(host_s2)?;
        self.collect()
    }

    fn collect(&mut self) -> Result<(), IommuError> {
        match self.hw().take_error() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn s2_config(&self) -> S2Config {
        let t = self.shadow.table();
        S2Config {
            vmid: self.cfg.vmid,
            root: t.root(),
            ia_bits: self.cfg.pa_bits,
            start_level: t.geometry().start_level,
            ps_enc: ps_encoding(self.cfg.pa_bits).unwrap_or(0),
            coherent: self.features.coherent,
        }
    }

    /// Poll a register until `(value & mask) == want`, within the bound.
    fn poll(&mut self, off: u64, mask: u32, want: u32) -> Result<(), IommuError> {
        let limit = self.cfg.poll_limit;
        let regs = self.hw().regs();
        for _ in 0..limit {
            if regs.read32(off) & mask == want {
                return Ok(());
            }
            regs.relax();
        }
        Err(IommuError::Timeout)
    }

    fn write_cr0(&mut self, val: u32) -> Result<(), IommuError> {
        self.hw().regs().write32(regs::CR0, val);
        self.poll(regs::CR0ACK, cr0::SMMUEN | cr0::EVENTQEN | cr0::CMDQEN, val)
    }

    /// Abort every transaction while translation is off.
    fn abort_bypass(&mut self) -> Result<(), IommuError> {
        let regs = self.hw().regs();
        let g = regs.read32(regs::GBPA);
        regs.write32(regs::GBPA, g | gbpa::ABORT | gbpa::UPDATE);
        self.poll(regs::GBPA, gbpa::UPDATE, 0)
    }

    fn takeover(&mut self) -> Result<(), IommuError> {
        // Nothing may pass while the SMMU is reconfigured: abort instead of
        // bypassing, then turn everything off.
        self.abort_bypass()?;
        self.write_cr0(0)?;
        let coherent = self.features.coherent;
        let s2 = self.s2_config();
        let hw = self.shadow.table_mut().tlb_mut();
        hw.regs.write32(regs::IRQ_CTRL, 0);
        let gerror = hw.regs.read32(regs::GERROR);
        hw.regs.write32(regs::GERRORN, gerror);
        let (cache, sh) = if coherent { (1, 3) } else { (0, 2) };
        hw.regs.write32(
            regs::CR1,
            cache << cr1::QUEUE_IC_SHIFT
                | cache << cr1::QUEUE_OC_SHIFT
                | sh << cr1::QUEUE_SH_SHIFT
                | cache << cr1::TABLE_IC_SHIFT
                | cache << cr1::TABLE_OC_SHIFT
                | sh << cr1::TABLE_SH_SHIFT,
        );
        hw.regs.write32(regs::CR2, regs::CR2_RECINVSID);

        // Stream table: sized to the streams Warden configures.
        let log2size = (32 - (self.cfg.streams - 1).leading_zeros()) as u8;
        let log2size = log2size.min(self.features.sid_bits);
        let mut strtab = StreamTable::new(&mut hw.mem, log2size, self.features.two_level, coherent)?;
        for sid in 0..self.cfg.streams {
            let at = strtab.ste_addr(&mut hw.mem, sid)?;
            strtab.write_ste(&mut hw.mem, at, StreamCfg::Translate(s2));
        }
        hw.mem.publish();
        hw.regs.write64(regs::STRTAB_BASE, strtab.base_reg());
        hw.regs.write32(regs::STRTAB_BASE_CFG, strtab.cfg_reg());

        // Queues.
        let cq_log2 = self.features.cmdq_log2.min(CMDQ_LOG2_MAX);
        let cq_base = alloc_structure(&mut hw.mem, CMD_BYTES << cq_log2, coherent)?;
        let cmdq = CmdQueue::new(cq_base, cq_log2, coherent, self.cfg.poll_limit);
        let eq_log2 = self.features.evtq_log2.min(EVTQ_LOG2_MAX);
        let eq_base = alloc_structure(&mut hw.mem, EVENT_BYTES << eq_log2, coherent)?;
        let evtq = EventQueue::new(eq_base, eq_log2, coherent);
        hw.regs.write64(regs::CMDQ_BASE, cmdq.base_reg());
        hw.regs.write32(regs::CMDQ_PROD, 0);
        hw.regs.write32(regs::CMDQ_CONS, 0);
        hw.regs.write64(regs::EVENTQ_BASE, evtq.base_reg());
        hw.regs.write32(regs::EVENTQ_PROD, 0);
        hw.regs.write32(regs::EVENTQ_CONS, 0);
        hw.cmdq = Some(cmdq);
        self.strtab = Some(strtab);
        self.evtq = Some(evtq);

        // Forget anything cached from before: configuration and TLBs.
        self.write_cr0(cr0::CMDQEN)?;
        let hw = self.hw();
        let q = hw.cmdq.as_mut().ok_or(IommuError::Inval)?;
        q.push(&mut hw.regs, &mut hw.mem, Cmd::CfgiAll)?;
        q.push(&mut hw.regs, &mut hw.mem, Cmd::TlbiNsnhAll)?;
        q.sync(&mut hw.regs, &mut hw.mem)?;
        self.write_cr0(cr0::CMDQEN | cr0::EVENTQEN)?;
        self.write_cr0(cr0::CMDQEN | cr0::EVENTQEN | cr0::SMMUEN)
    }

    /// Make stream `sid` translate through the shadow or abort, and wait
    /// until the SMMU uses the new entry.
    pub fn set_stream(&mut self, sid: u32, translate: bool) -> Result<(), IommuError> {
        if let Some(e) = self.blocked {
            return Err(e);
        }
        let s2 = self.s2_config();
        let Some(strtab) = self.strtab.as_mut() else {
            return Err(IommuError::Inval);
        };
        let hw = self.shadow.table_mut().tlb_mut();
        let at = strtab.ste_addr(&mut hw.mem, sid)?;
        let cfg = if translate {
            StreamCfg::Translate(s2)
        } else {
            StreamCfg::Abort
        };
        if crate::ste::translating(hw.mem.read64(at)) {
            // A live entry is never rewritten in place: abort first, make
            // the SMMU forget it, then write the new one.
            strtab.write_ste(&mut hw.mem, at, StreamCfg::Abort);
            hw.command_sync(Cmd::CfgiSte { sid })?;
        }
        strtab.write_ste(&mut hw.mem, at, cfg);
        hw.command_sync(Cmd::CfgiSte { sid })
    }

    /// Hand every recorded event to `f` (translation and permission
    /// faults of blocked DMA, bad streams); returns how many.
    pub fn drain_events(&mut self, f: impl FnMut(Event)) -> usize {
        let Some(q) = self.evtq.as_mut() else {
            return 0;
        };
        let hw = self.shadow.table_mut().tlb_mut();
        q.drain(&mut hw.regs, &mut hw.mem, f)
    }

    /// Events lost to a full event queue so far.
    pub fn event_overflows(&self) -> u32 {
        self.evtq.as_ref().map_or(0, |q| q.overflows)
    }
}

impl<R: Mmio, D: SmmuMem, M: MmOps, C: CacheMaint> IommuDriver for Smmu<R, D, M, C> {
    /// Take the SMMU over: abort while reconfiguring, stream table with
    /// streams `0..streams` translating through the shadow and the rest
    /// aborting, command and event queues, invalidate everything cached,
    /// enable. The shadow should be filled (snapshot) before; on failure
    /// the SMMU is left disabled with all DMA aborted.
    fn init(&mut self) -> Result<(), IommuError> {
        if self.strtab.is_some() {
            return Err(IommuError::Inval);
        }
        let r = self.takeover();
        if let Err(e) = r {
            self.block_all();
            self.blocked = Some(e);
        }
        r
    }

    fn idmap(&mut self, base: u64, size: u64, prot: IommuProt) -> Result<(), IommuError> {
        if let Some(e) = self.blocked {
            return Err(e);
        }
        let r = self.shadow.map(base, size, prot);
        // The engine completes its invalidations with a barrier; whatever
        // the hardware said then is the update's result.
        let hw = self.hw();
        let done = hw.complete();
        hw.note(done);
        let collected = self.collect();
        r.and(collected)
    }

    /// Translation off with global bypass set to abort: register writes
    /// only, so it works when the command queue does not.
    fn block_all(&mut self) {
        let _ = self.abort_bypass();
        let regs = self.hw().regs();
        regs.write32(regs::CR0, 0);
        let _ = self.poll(regs::CR0ACK, cr0::SMMUEN, 0);
        self.blocked
            .get_or_insert(IommuError::Hardware("DMA blocked after an SMMU failure"));
    }
}
