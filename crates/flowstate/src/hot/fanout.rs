//! In-process fan-out of live events to this instance's subscribers, shared by both hot tiers.
//!
//! Every flow with local subscribers has one broadcast channel; an event reaches it once
//! (from the instance's single Redis subscription, or straight from the writer in memory) and
//! is shared by all of them: one allocation per event, and its SSE frame rendered once
//! ([`LiveEvent::frame`]), however many connections watch. A subscriber that falls behind the
//! channel's capacity, or that may have missed events while the Redis subscription was down,
//! is told to [`Live::Resync`] from the stream instead of silently skipping events.
//!
//! Lock waiters use the same pattern ([`LockHub`]): one wake-up per release, shared by every
//! waiter of that lock here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use tokio::sync::{Notify, broadcast, mpsc};

use crate::model::events::Event;

/// An event on its way to local subscribers, with its wire form cached.
#[derive(Debug)]
pub struct LiveEvent {
    /// The event.
    pub event: Event,
    frame: OnceLock<Bytes>,
}

impl LiveEvent {
    /// Wraps an event.
    pub fn new(event: Event) -> Arc<LiveEvent> {
        Arc::new(LiveEvent {
            event,
            frame: OnceLock::new(),
        })
    }

    /// The event's wire form, rendered by the first subscriber that asks and shared by the
    /// rest.
    pub fn frame(&self, render: impl FnOnce(&Event) -> Bytes) -> Bytes {
        self.frame.get_or_init(|| render(&self.event)).clone()
    }
}

/// What a local subscriber receives.
#[derive(Debug, Clone)]
pub enum Live {
    /// A new event of the flow.
    Event(Arc<LiveEvent>),
    /// Events may have been missed (the Redis subscription was re-established): read the
    /// stream after the last event delivered.
    Resync,
}

/// Asks the Redis subscriber to stop listening to a flow nobody here watches any more.
pub(crate) type Unwatched = mpsc::UnboundedSender<String>;

/// The local subscribers of every flow.
pub(crate) struct Hub {
    flows: Mutex<HashMap<String, Channel>>,
    capacity: usize,
    /// Told the flow id when its last local watcher leaves (Redis: to unsubscribe).
    unwatched: Option<Unwatched>,
}

struct Channel {
    tx: broadcast::Sender<Live>,
    watchers: usize,
}

impl Hub {
    /// A hub whose per-flow channels hold `capacity` events for a slow subscriber.
    pub(crate) fn new(capacity: usize, unwatched: Option<Unwatched>) -> Arc<Hub> {
        Arc::new(Hub {
            flows: Mutex::new(HashMap::new()),
            capacity: capacity.max(16),
            unwatched,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Channel>> {
        // A poisoned lock only means a panic between two map operations, each complete.
        self.flows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts watching a flow; `true` when this instance had no watcher of it yet.
    pub(crate) fn watch(self: &Arc<Self>, flow_id: &str) -> (Watch, bool) {
        let mut flows = self.lock();
        let (rx, first) = match flows.get_mut(flow_id) {
            Some(channel) => {
                channel.watchers += 1;
                (channel.tx.subscribe(), false)
            }
            None => {
                let (tx, rx) = broadcast::channel(self.capacity);
                flows.insert(flow_id.to_string(), Channel { tx, watchers: 1 });
                (rx, true)
            }
        };
        let watch = Watch {
            rx,
            hub: Arc::clone(self),
            flow_id: flow_id.to_string(),
        };
        (watch, first)
    }

    fn unwatch(&self, flow_id: &str) {
        let mut flows = self.lock();
        let Some(channel) = flows.get_mut(flow_id) else {
            return;
        };
        channel.watchers -= 1;
        if channel.watchers == 0 {
            flows.remove(flow_id);
            if let Some(unwatched) = &self.unwatched {
                // The subscriber is gone only when the tier is: nothing left to unsubscribe.
                let _ = unwatched.send(flow_id.to_string());
            }
        }
    }

    /// Delivers an event to the flow's local subscribers, if any.
    pub(crate) fn deliver(&self, event: Event) {
        let flows = self.lock();
        if let Some(channel) = flows.get(&event.flow_id) {
            // No receiver left is not an error: the last one is leaving.
            let _ = channel.tx.send(Live::Event(LiveEvent::new(event)));
        }
    }

    /// Whether anyone here watches the flow.
    pub(crate) fn is_watched(&self, flow_id: &str) -> bool {
        self.lock().contains_key(flow_id)
    }

    /// The flows watched here.
    pub(crate) fn flows(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Tells the flow's subscribers to read the stream after their last event.
    pub(crate) fn resync(&self, flow_id: &str) {
        if let Some(channel) = self.lock().get(flow_id) {
            let _ = channel.tx.send(Live::Resync);
        }
    }

    /// Tells every subscriber to read the stream after its last event.
    pub(crate) fn resync_all(&self) {
        for channel in self.lock().values() {
            let _ = channel.tx.send(Live::Resync);
        }
    }
}

/// One subscriber's feed of a flow's live events; leaving is dropping it.
pub struct Watch {
    rx: broadcast::Receiver<Live>,
    hub: Arc<Hub>,
    flow_id: String,
}

impl Watch {
    /// The next live item; a subscriber that fell too far behind gets [`Live::Resync`].
    pub async fn recv(&mut self) -> Live {
        match self.rx.recv().await {
            Ok(live) => live,
            Err(broadcast::error::RecvError::Lagged(_)) => Live::Resync,
            // The sender lives as long as a watcher (this one) does.
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        }
    }

    /// The flow watched.
    pub fn flow_id(&self) -> &str {
        &self.flow_id
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.hub.unwatch(&self.flow_id);
    }
}

/// The local waiters of every lock, woken when it is released.
pub(crate) struct LockHub {
    locks: Mutex<HashMap<String, (Arc<Notify>, usize)>>,
    /// Told the name when its last local waiter leaves (Redis: to unsubscribe).
    unwatched: Option<Unwatched>,
}

impl LockHub {
    /// An empty hub.
    pub(crate) fn new(unwatched: Option<Unwatched>) -> Arc<LockHub> {
        Arc::new(LockHub {
            locks: Mutex::new(HashMap::new()),
            unwatched,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Arc<Notify>, usize)>> {
        // A poisoned lock only means a panic between two map operations, each complete.
        self.locks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts waiting for a lock; `true` when nobody here waited for it yet.
    pub(crate) fn watch(self: &Arc<Self>, name: &str) -> (LockWatch, bool) {
        let mut locks = self.lock();
        let first = !locks.contains_key(name);
        let entry = locks
            .entry(name.to_string())
            .or_insert_with(|| (Arc::new(Notify::new()), 0));
        entry.1 += 1;
        let watch = LockWatch {
            notify: Arc::clone(&entry.0),
            hub: Arc::clone(self),
            name: name.to_string(),
        };
        (watch, first)
    }

    fn unwatch(&self, name: &str) {
        let mut locks = self.lock();
        let Some(entry) = locks.get_mut(name) else {
            return;
        };
        entry.1 -= 1;
        if entry.1 == 0 {
            locks.remove(name);
            if let Some(unwatched) = &self.unwatched {
                let _ = unwatched.send(name.to_string());
            }
        }
    }

    /// Wakes the lock's waiters here.
    pub(crate) fn wake(&self, name: &str) {
        if let Some((notify, _)) = self.lock().get(name) {
            notify.notify_waiters();
        }
    }

    /// Wakes every waiter (releases may have been missed).
    pub(crate) fn wake_all(&self) {
        for (notify, _) in self.lock().values() {
            notify.notify_waiters();
        }
    }

    /// Whether anyone here waits for the lock.
    pub(crate) fn is_watched(&self, name: &str) -> bool {
        self.lock().contains_key(name)
    }

    /// The locks waited for here.
    pub(crate) fn names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }
}

/// One waiter's wake-ups for a lock; leaving is dropping it.
pub struct LockWatch {
    notify: Arc<Notify>,
    hub: Arc<LockHub>,
    name: String,
}

impl LockWatch {
    /// A future that completes at the next release of the lock (or a wake-all). Create it
    /// before asking for the lock, so that a release in between is not missed.
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }
}

impl Drop for LockWatch {
    fn drop(&mut self) {
        self.hub.unwatch(&self.name);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::events::EventId;

    fn event(flow: &str, ms: u64) -> Event {
        Event::new(EventId { ms, seq: 0 }, flow, "T", json!(null))
    }

    #[tokio::test]
    async fn delivers_to_watchers_of_the_flow_and_unsubscribes_the_last() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let hub = Hub::new(16, Some(tx));
        let (mut a, first) = hub.watch("f");
        assert!(first);
        let (mut b, first) = hub.watch("f");
        assert!(!first);
        hub.deliver(event("other", 1));
        hub.deliver(event("f", 2));
        for w in [&mut a, &mut b] {
            match w.recv().await {
                Live::Event(e) => assert_eq!(e.event.id.ms, 2),
                Live::Resync => panic!("resync"),
            }
        }
        drop(a);
        assert!(rx.try_recv().is_err());
        drop(b);
        assert_eq!(rx.try_recv().unwrap(), "f");
        assert!(!hub.is_watched("f"));
    }

    #[tokio::test]
    async fn lock_waiters_are_woken_by_a_release_and_the_last_unsubscribes() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let hub = LockHub::new(Some(tx));
        let (a, first) = hub.watch("l");
        assert!(first);
        let (b, _) = hub.watch("l");
        let (wa, wb) = (a.notified(), b.notified());
        hub.wake("other");
        hub.wake("l");
        tokio::time::timeout(std::time::Duration::from_secs(1), async {
            wa.await;
            wb.await
        })
        .await
        .unwrap();
        drop(a);
        assert!(rx.try_recv().is_err());
        drop(b);
        assert_eq!(rx.try_recv().unwrap(), "l");
    }

    #[tokio::test]
    async fn a_lagging_watcher_is_told_to_resync() {
        let hub = Hub::new(16, None);
        let (mut w, _) = hub.watch("f");
        for ms in 0..40 {
            hub.deliver(event("f", ms));
        }
        assert!(matches!(w.recv().await, Live::Resync));
    }
}
