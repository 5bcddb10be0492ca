//! The event outbox's replay. Events the hot tier could not take wait in the ledger
//! (`event_outbox`, in publication order); every instance replays them into their streams
//! under their own ids once Redis answers (at startup, on a tick, and when an event is
//! diverted), then forgets them. A replayed id the stream holds already is skipped, so two
//! instances replaying at once, or an append whose outcome was unknown, deliver each event
//! once; and while the outbox holds anything, this instance's new events queue behind it
//! ([`Flowstate::events_to_carry`]), so no stream gets a newer event before an older one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Notify;

#[cfg(doc)]
use super::Flowstate;
use super::Inner;

/// How often the outbox is looked at when nothing happens.
const REPLAY_EVERY: Duration = Duration::from_secs(1);

/// Events replayed per round trip.
const REPLAY_CHUNK: u32 = 500;

/// Whether this instance's events must queue behind the outbox.
#[derive(Default)]
pub(super) struct Outbox {
    /// 0 when the outbox is (as far as this instance knows) empty; grows with every event
    /// diverted, so a replay that read an empty outbox before a diversion cannot clear it.
    pending: AtomicU64,
    wake: Arc<Notify>,
}

impl Outbox {
    /// Whether events wait in the outbox.
    pub(super) fn is_pending(&self) -> bool {
        self.pending.load(Ordering::Acquire) != 0
    }

    /// Records that events were diverted to the outbox.
    pub(super) fn enqueued(&self) {
        self.pending.fetch_add(1, Ordering::AcqRel);
        self.wake.notify_one();
    }
}

/// Replays the outbox while the service lives.
pub(super) async fn replay_outbox(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(REPLAY_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        // A diversion while this replays leaves a permit: the next wait ends at once.
        let wake = Arc::clone(&strong.outbox.wake);
        replay_once(&strong).await;
        drop(strong);
        tokio::select! {
            _ = tick.tick() => {}
            () = wake.notified() => {}
        }
    }
}

/// Replays the outbox in order until it is empty or the hot tier fails.
pub(super) async fn replay_once(inner: &Inner) {
    if !inner.hot.shared() {
        return;
    }
    loop {
        if inner.hot.stats().breaker_open {
            return;
        }
        let seen = inner.outbox.pending.load(Ordering::Acquire);
        let pending = match inner.ledger.pending_events(REPLAY_CHUNK).await {
            Ok(pending) => pending,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the event outbox");
                return;
            }
        };
        if pending.is_empty() {
            // Unless an event was diverted since the read, nothing waits any more.
            let _ =
                inner
                    .outbox
                    .pending
                    .compare_exchange(seen, 0, Ordering::AcqRel, Ordering::Acquire);
            return;
        }
        // Found (perhaps another instance's): queue this instance's events behind it.
        let _ = inner
            .outbox
            .pending
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire);
        let (seqs, events): (Vec<i64>, Vec<_>) = pending.into_iter().unzip();
        if let Err(e) = inner.hot.append_events(&events).await {
            tracing::debug!(error = %e, "event outbox not replayed yet");
            return;
        }
        if let Err(e) = inner.ledger.clear_events(&seqs).await {
            // Replayed again later: skipped as duplicates then.
            tracing::warn!(error = %e, "cannot forget replayed events");
            return;
        }
        metrics::counter!("flowstate_events_replayed_total").increment(seqs.len() as u64);
        tracing::info!(events = seqs.len(), "replayed events from the outbox");
    }
}
