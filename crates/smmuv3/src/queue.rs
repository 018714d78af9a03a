//! The command queue: a ring of 16-byte entries in Warden's memory that
//! the SMMU consumes. Commands are written ahead of the producer index and
//! published in one register write; a CMD_SYNC completes them, and its
//! completion is observed by polling the consumer index, with a bound.

use warden_iommu::IommuError;

use crate::cmd::Cmd;
use crate::hw::{Mmio, SmmuMem};
use crate::regs;

/// Bytes per command-queue entry.
pub const CMD_BYTES: u64 = 16;

/// Counts of what the driver put in the queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CmdStats {
    /// Every command, syncs included.
    pub commands: u64,
    /// CMD_SYNCs.
    pub syncs: u64,
    /// TLB invalidations (by IPA, range or VMID).
    pub tlbis: u64,
    /// Configuration invalidations.
    pub cfgis: u64,
}

/// Driver state of the command queue.
#[derive(Debug)]
pub struct CmdQueue {
    base: u64,
    log2: u8,
    /// Next entry to write: index and wrap bit, as in CMDQ_PROD.
    prod: u32,
    /// Last observed consumer index and wrap bit.
    cons: u32,
    /// Commands written but not yet published.
    unpublished: bool,
    /// Once a sync timed out the queue's state is unknown: every later use
    /// fails at once instead of spinning again.
    broken: bool,
    coherent: bool,
    poll_limit: u32,
    /// What has been issued.
    pub stats: CmdStats,
}

impl CmdQueue {
    /// A queue of `1 << log2` entries at `base` (zeroed, aligned to its
    /// size), empty; `poll_limit` bounds every wait.
    pub fn new(base: u64, log2: u8, coherent: bool, poll_limit: u32) -> Self {
        CmdQueue {
            base,
            log2,
            prod: 0,
            cons: 0,
            unpublished: false,
            broken: false,
            coherent,
            poll_limit,
            stats: CmdStats::default(),
        }
    }

    /// The CMDQ_BASE value: address, size, read-allocate when coherent.
    pub fn base_reg(&self) -> u64 {
        let ra = if self.coherent { regs::BASE_RA } else { 0 };
        ra | (self.base & regs::BASE_ADDR_MASK) | u64::from(self.log2)
    }

    fn wrap_mask(&self) -> u32 {
        (2u32 << self.log2) - 1
    }

    fn used(&self) -> u32 {
        self.prod.wrapping_sub(self.cons) & self.wrap_mask()
    }

    fn full(&self) -> bool {
        self.used() == 1 << self.log2
    }

    /// Append `cmd` (not yet visible to the SMMU). Waits for room if the
    /// queue is full.
    pub fn push<R: Mmio, D: SmmuMem>(&mut self, regs: &mut R, mem: &mut D, cmd: Cmd) -> Result<(), IommuError> {
        if self.broken {
            return Err(IommuError::Timeout);
        }
        if self.full() {
            self.publish(regs, mem);
            self.wait(regs, mem, |q| !q.full())?;
        }
        let slot = self.base + u64::from(self.prod & ((1 << self.log2) - 1)) * CMD_BYTES;
        let [w0, w1] = cmd.encode();
        mem.write64(slot, w0);
        mem.write64(slot + 8, w1);
        if !self.coherent {
            mem.clean(slot, CMD_BYTES);
        }
        self.prod = (self.prod + 1) & self.wrap_mask();
        self.unpublished = true;
        self.stats.commands += 1;
        match cmd {
            Cmd::Sync => self.stats.syncs += 1,
            Cmd::CfgiSte { .. } | Cmd::CfgiAll => self.stats.cfgis += 1,
            Cmd::TlbiS2Ipa { .. } | Cmd::TlbiS12Vmall { .. } | Cmd::TlbiNsnhAll => self.stats.tlbis += 1,
        }
        Ok(())
    }

    /// Make the written commands visible: a barrier so the entries are
    /// observable, then the producer index.
    fn publish<R: Mmio, D: SmmuMem>(&mut self, regs: &mut R, mem: &mut D) {
        if self.unpublished {
            mem.publish();
            regs.write32(regs::CMDQ_PROD, self.prod);
            self.unpublished = false;
        }
    }

    /// Append a CMD_SYNC, publish, and wait until the SMMU has consumed it:
    /// every earlier command has then completed.
    pub fn sync<R: Mmio, D: SmmuMem>(&mut self, regs: &mut R, mem: &mut D) -> Result<(), IommuError> {
        self.push(regs, mem, Cmd::Sync)?;
        self.publish(regs, mem);
        self.wait(regs, mem, |q| q.used() == 0)
    }

    /// Poll the consumer index until `done`, at most `poll_limit` times,
    /// handling a command error on the way.
    fn wait<R: Mmio, D: SmmuMem>(
        &mut self,
        regs: &mut R,
        mem: &mut D,
        done: fn(&Self) -> bool,
    ) -> Result<(), IommuError> {
        for _ in 0..self.poll_limit {
            let cons = regs.read32(regs::CMDQ_CONS);
            let idx = cons & self.wrap_mask();
            // A consumer index that claims more than was produced is a
            // hardware fault: do not believe it.
            if self.prod.wrapping_sub(idx) & self.wrap_mask() > self.used() {
                self.broken = true;
                return Err(IommuError::Hardware("command queue: consumer index beyond producer"));
            }
            self.cons = idx;
            if done(self) {
                return Ok(());
            }
            let gerror = regs.read32(regs::GERROR);
            let gerrorn = regs.read32(regs::GERRORN);
            if (gerror ^ gerrorn) & regs::GERROR_CMDQ_ERR != 0 {
                return Err(self.recover(regs, mem, cons, gerrorn));
            }
            regs.relax();
        }
        self.broken = true;
        Err(IommuError::Timeout)
    }

    /// The SMMU stopped at a bad command (CMDQ_CONS points at it, ERR says
    /// why): overwrite it with a CMD_SYNC so nothing else is lost, then
    /// acknowledge (GERRORN's bit made equal to GERROR's) so the SMMU
    /// resumes. The update that issued it has failed all the same.
    fn recover<R: Mmio, D: SmmuMem>(&mut self, regs: &mut R, mem: &mut D, cons: u32, gerrorn: u32) -> IommuError {
        let slot = self.base + u64::from(cons & ((1 << self.log2) - 1)) * CMD_BYTES;
        let [w0, w1] = Cmd::Sync.encode();
        mem.write64(slot, w0);
        mem.write64(slot + 8, w1);
        if !self.coherent {
            mem.clean(slot, CMD_BYTES);
        }
        mem.publish();
        regs.write32(regs::GERRORN, gerrorn ^ regs::GERROR_CMDQ_ERR);
        match (cons >> regs::CONS_ERR_SHIFT) & 0x7f {
            1 => IommuError::Hardware("command queue: illegal command"),
            2 => IommuError::Hardware("command queue: abort fetching a command"),
            3 => IommuError::Hardware("command queue: ATC invalidation timeout"),
            _ => IommuError::Hardware("command queue: error"),
        }
    }
}
