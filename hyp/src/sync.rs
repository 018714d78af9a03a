//! The synchronisation Warden's EL2 code needs: a fair spin lock for the
//! ownership components (every CPU may trap into Warden at once, and a
//! hostile host could starve a CPU of an unfair lock) and a write-once
//! cell for state built by the boot CPU before any other CPU runs.

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicU32, AtomicU8, Ordering};

use lock_api::{GuardSend, RawMutex};

/// A ticket lock: CPUs are served in the order they arrived, so none waits
/// forever while others keep taking the lock.
pub struct TicketLock {
    next: AtomicU32,
    serving: AtomicU32,
}

// SAFETY: `lock` returns only once this CPU's ticket is being served, and
// tickets are unique (fetch_add), so at most one holder exists; the Acquire
// load pairs with `unlock`'s Release so the holder sees the previous
// holder's writes.
unsafe impl RawMutex for TicketLock {
    #[allow(clippy::declare_interior_mutable_const)]
    const INIT: TicketLock = TicketLock {
        next: AtomicU32::new(0),
        serving: AtomicU32::new(0),
    };
    type GuardMarker = GuardSend;

    fn lock(&self) {
        let ticket = self.next.fetch_add(1, Ordering::Relaxed);
        while self.serving.load(Ordering::Acquire) != ticket {
            core::hint::spin_loop();
        }
    }

    fn try_lock(&self) -> bool {
        let now = self.serving.load(Ordering::Relaxed);
        self.next
            .compare_exchange(now, now.wrapping_add(1), Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    unsafe fn unlock(&self) {
        self.serving.fetch_add(1, Ordering::Release);
    }
}

const EMPTY: u8 = 0;
const WRITING: u8 = 1;
const READY: u8 = 2;

/// A value set once (by the boot CPU) and read by every CPU afterwards.
pub struct Once<T> {
    state: AtomicU8,
    value: UnsafeCell<MaybeUninit<T>>,
}

// SAFETY: the value is written once, before `state` becomes READY with
// Release ordering, and only shared references are handed out after an
// Acquire load sees READY; so sharing `Once<T>` across CPUs is sharing
// `&T`, which needs `T: Sync` (and `T: Send`, since the writer may be
// another CPU than the readers).
unsafe impl<T: Send + Sync> Sync for Once<T> {}

impl<T> Once<T> {
    /// An empty cell.
    pub const fn new() -> Self {
        Once {
            state: AtomicU8::new(EMPTY),
            value: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }

    /// Store `value` if the cell is empty and return a reference to it;
    /// give `value` back if it was already set (or being set).
    pub fn set(&self, value: T) -> Result<&T, T> {
        if self
            .state
            .compare_exchange(EMPTY, WRITING, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(value);
        }
        // SAFETY: the compare-exchange made this call the only writer, and
        // no reader dereferences the value before READY is published below.
        unsafe { (*self.value.get()).write(value) };
        self.state.store(READY, Ordering::Release);
        // SAFETY: just initialised; from now on it is only shared.
        Ok(unsafe { (*self.value.get()).assume_init_ref() })
    }

    /// The value, if set.
    pub fn get(&self) -> Option<&T> {
        match self.state.load(Ordering::Acquire) {
            // SAFETY: READY is stored only after the value was written
            // (Release/Acquire), and it is never written again.
            READY => Some(unsafe { (*self.value.get()).assume_init_ref() }),
            _ => None,
        }
    }
}

impl<T> Default for Once<T> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn the_ticket_lock_excludes_and_serves_everyone() {
        let m = Arc::new(lock_api::Mutex::<TicketLock, u64>::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let m = m.clone();
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        // A non-atomic read-modify-write: lost updates if
                        // two threads ever held the lock together.
                        let mut g = m.lock();
                        let v = *g;
                        std::hint::black_box(&v);
                        *g = v + 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*m.lock(), 80_000);
        let g = m.lock();
        assert!(m.try_lock().is_none(), "try_lock fails while held");
        drop(g);
        assert!(m.try_lock().is_some());
    }

    #[test]
    fn once_is_set_once() {
        let o = Once::new();
        assert_eq!(o.get(), None::<&u32>);
        assert_eq!(o.set(5), Ok(&5));
        assert_eq!(o.set(6), Err(6));
        assert_eq!(o.get(), Some(&5));
    }
}
