//! The circuit breaker in front of Redis, and the record of what must be invalidated before
//! Redis may serve reads again.
//!
//! Closed, every call goes to Redis. A write that could not reach Redis, a timeout, or
//! [`Breaker::READ_FAILURES_TO_OPEN`] consecutive unreachable reads open it; open, calls fail at once
//! (an atomic load, no waiting on timeouts) and the callers serve from the ledger. A background
//! prober (in the Redis tier) PINGs with capped exponential backoff; when Redis answers it
//! deletes every key a write could not reach ([`Breaker::take_dirty`]) and only then closes the
//! breaker, so no reader sees a value the ledger has since replaced.
//!
//! The dirty set and the open flag change under one lock, so a write can never slip between
//! "the prober invalidated everything" and "the breaker closed".

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// Breaker state and dirty keys.
#[derive(Debug, Default)]
pub struct Breaker {
    open: AtomicBool,
    /// Consecutive failed reads while closed.
    read_failures: AtomicU32,
    /// Keys whose cached value may be stale: writes that failed or were skipped.
    dirty: Mutex<HashSet<String>>,
    /// Wakes the prober when the breaker opens (or the tier shuts down).
    wake: Arc<Notify>,
    /// Times the breaker opened.
    opened_total: AtomicU64,
}

impl Breaker {
    /// Consecutive failed reads (other than timeouts) that open the breaker.
    pub const READ_FAILURES_TO_OPEN: u32 = 3;

    /// Whether calls currently skip Redis.
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// How often the breaker has opened.
    pub fn opened_total(&self) -> u64 {
        self.opened_total.load(Ordering::Relaxed)
    }

    /// Keys waiting to be invalidated.
    pub fn dirty_len(&self) -> usize {
        self.lock().len()
    }

    /// The prober waits on this.
    pub fn wake_handle(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    fn lock(&self) -> MutexGuard<'_, HashSet<String>> {
        // The set stays consistent even if a holder panicked: it only ever gains whole keys.
        self.dirty
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Whether a read may go to Redis.
    pub fn admit_read(&self) -> bool {
        !self.is_open()
    }

    /// Whether a write may go to Redis; when not, its keys are marked dirty and those not
    /// dirty already are returned (the caller records them once, not once per write).
    pub fn admit_write(&self, keys: impl FnOnce() -> Vec<String>) -> Result<(), Vec<String>> {
        let mut dirty = self.lock();
        if self.is_open() {
            Err(keys()
                .into_iter()
                .filter(|k| dirty.insert(k.clone()))
                .collect())
        } else {
            Ok(())
        }
    }

    /// A call succeeded.
    pub fn succeeded(&self) {
        self.read_failures.store(0, Ordering::Relaxed);
    }

    /// A write failed: its keys may hold anything now, so mark them and open. Returns the
    /// keys that were not dirty already.
    pub fn write_failed(&self, keys: Vec<String>) -> Vec<String> {
        let mut dirty = self.lock();
        let new = keys
            .into_iter()
            .filter(|k| dirty.insert(k.clone()))
            .collect();
        self.trip();
        new
    }

    /// A read failed because Redis is unreachable or slow; `timeout` opens at once.
    pub fn read_failed(&self, timeout: bool) {
        let n = self.read_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if timeout || n >= Self::READ_FAILURES_TO_OPEN {
            let _dirty = self.lock();
            self.trip();
        }
    }

    /// Opens (caller holds the dirty lock).
    fn trip(&self) {
        if !self.open.swap(true, Ordering::AcqRel) {
            self.opened_total.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("redis circuit breaker open: serving from the ledger");
            self.wake.notify_one();
        }
    }

    /// Takes the keys to invalidate; the breaker stays open.
    pub fn take_dirty(&self) -> Vec<String> {
        self.lock().drain().collect()
    }

    /// Puts back keys whose invalidation failed.
    pub fn restore_dirty(&self, keys: Vec<String>) {
        self.lock().extend(keys);
    }

    /// Closes the breaker if nothing became dirty since the last [`Breaker::take_dirty`].
    pub fn try_close(&self) -> bool {
        let dirty = self.lock();
        if !dirty.is_empty() {
            return false;
        }
        self.read_failures.store(0, Ordering::Relaxed);
        self.open.store(false, Ordering::Release);
        tracing::info!("redis circuit breaker closed: hot tier serving again");
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_open_at_once_reads_after_three_or_a_timeout() {
        let b = Breaker::default();
        b.read_failed(false);
        b.read_failed(false);
        assert!(!b.is_open());
        b.succeeded();
        b.read_failed(false);
        b.read_failed(false);
        assert!(!b.is_open(), "a success resets the count");
        b.read_failed(false);
        assert!(b.is_open());

        let b = Breaker::default();
        b.read_failed(true);
        assert!(b.is_open(), "a timeout opens at once");

        let b = Breaker::default();
        assert_eq!(b.write_failed(vec!["k".into()]), ["k"]);
        assert!(b.is_open());
        assert_eq!(b.dirty_len(), 1);
    }

    #[test]
    fn closes_only_when_everything_written_meanwhile_was_invalidated() {
        let b = Breaker::default();
        b.write_failed(vec!["a".into()]);
        assert_eq!(
            b.admit_write(|| vec!["a".into(), "b".into()]),
            Err(vec!["b".to_string()]),
            "open: writes are skipped, and only keys not dirty yet are new"
        );
        assert!(!b.admit_read());
        let mut taken = b.take_dirty();
        taken.sort();
        assert_eq!(taken, ["a", "b"]);
        // A write skipped while the prober was invalidating keeps it open.
        assert!(b.admit_write(|| vec!["c".into()]).is_err());
        assert!(!b.try_close());
        assert_eq!(b.take_dirty(), ["c"]);
        assert!(b.try_close());
        assert!(b.admit_read() && b.admit_write(Vec::new).is_ok());
        assert_eq!(b.opened_total(), 1);
    }
}
