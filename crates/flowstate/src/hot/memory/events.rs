//! Event streams in process: the same API, resume and epoch rules as on Redis
//! (`redis/scripts/append_event.lua`, `event_history.lua`), with ids of the same `<ms>-<seq>`
//! form, so a client cannot tell the tiers apart. Events reach this process's subscribers
//! through the [`Hub`](crate::hot::fanout::Hub) directly.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{Entry, MemoryHot};
use crate::hot::fanout::Watch;
use crate::hot::{EventHot, HotResult, Posted, TOMBSTONE_TTL};
use crate::model::events::{Event, EventId, FLOW_DELETED, History, needs_reset};

/// Appends between two sweeps of expired streams.
const SWEEP_EVERY: u64 = 4096;

/// Every flow's stream.
pub(super) struct Streams {
    inner: Mutex<StreamMap>,
    maxlen: usize,
    ttl: Duration,
}

#[derive(Default)]
struct StreamMap {
    streams: HashMap<String, Stream>,
    appends: u64,
}

/// One flow's stream; without entries it only names the epoch the first event will start
/// (a subscriber found the stream missing), as the meta hash does on Redis.
struct Stream {
    epoch: String,
    /// Whether events were appended in this epoch (`live` in the meta hash).
    live: bool,
    entries: VecDeque<Event>,
    top: Option<EventId>,
    expires: Instant,
}

impl Stream {
    fn named(ttl: Duration) -> Stream {
        Stream {
            epoch: format!("{:016x}", rand::random::<u64>()),
            live: false,
            entries: VecDeque::new(),
            top: None,
            expires: Instant::now() + ttl,
        }
    }
}

impl Streams {
    pub(super) fn new(maxlen: u64, ttl: Duration) -> Streams {
        Streams {
            inner: Mutex::new(StreamMap::default()),
            maxlen: usize::try_from(maxlen).unwrap_or(usize::MAX).max(1),
            ttl,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StreamMap> {
        // A poisoned lock only means a panic between two complete map operations.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends an event under its id (the next one if the stream is past it; nothing if the
    /// stream holds it already), hands a newly stored event to `deliver` before another append
    /// can run (so subscribers get events in id order), and returns the stored event.
    pub(super) fn append(&self, event: &Event, deliver: impl FnOnce(Event)) -> Event {
        let now = Instant::now();
        let mut map = self.lock();
        map.appends += 1;
        if map.appends.is_multiple_of(SWEEP_EVERY) {
            map.streams.retain(|_, s| s.expires > now);
        }
        let ttl = self.ttl;
        let stream = map
            .streams
            .entry(event.flow_id.clone())
            .or_insert_with(|| Stream::named(ttl));
        if stream.expires <= now {
            *stream = Stream::named(ttl);
        }
        if stream.top.is_none() {
            // The stream starts afresh: a new epoch unless a subscriber named it already.
            if stream.live {
                *stream = Stream::named(ttl);
            }
            stream.live = true;
        } else if let Ok(i) = stream.entries.binary_search_by(|e| e.id.cmp(&event.id)) {
            // The same event again (a replay) is not stored twice; another event that happens to
            // carry the same id (two writers, one millisecond) takes the next id below.
            let held = &stream.entries[i];
            if held.event_type == event.event_type && held.payload == event.payload {
                stream.expires = now + ttl;
                return held.clone();
            }
        }
        let id = match stream.top {
            Some(top) if event.id <= top => top.successor(),
            _ => event.id,
        };
        let stored = Event::new(id, &event.flow_id, &event.event_type, event.payload.clone());
        stream.entries.push_back(stored.clone());
        while stream.entries.len() > self.maxlen {
            stream.entries.pop_front();
        }
        stream.top = Some(id);
        stream.expires = now + ttl;
        deliver(stored.clone());
        stored
    }

    #[cfg(test)]
    fn append_quiet(&self, event: &Event) -> Event {
        self.append(event, drop)
    }

    /// Shortens a stream's life (a deleted flow's, to its tombstone's).
    pub(super) fn expire_in(&self, flow_id: &str, ttl: Duration) {
        if let Some(stream) = self.lock().streams.get_mut(flow_id) {
            stream.expires = Instant::now() + ttl;
        }
    }

    fn history(&self, flow_id: &str, after: Option<EventId>) -> History {
        let now = Instant::now();
        let ttl = self.ttl;
        let mut map = self.lock();
        let stream = map
            .streams
            .entry(flow_id.to_string())
            .or_insert_with(|| Stream::named(ttl));
        if stream.expires <= now || (stream.top.is_none() && stream.live) {
            *stream = Stream::named(ttl);
        }
        let first = stream.entries.front().map(|e| e.id);
        let (reset, events) = match after {
            None => (false, Vec::new()),
            Some(after) if needs_reset(after, first, stream.top) => {
                (true, stream.entries.iter().cloned().collect())
            }
            Some(after) => {
                let from = stream.entries.partition_point(|e| e.id <= after);
                (false, stream.entries.range(from..).cloned().collect())
            }
        };
        History {
            epoch: stream.epoch.clone(),
            top: stream.top,
            reset,
            events,
        }
    }

    /// Bytes of the flow's stream (the JSON of its entries), if it has one.
    pub(super) fn bytes(&self, flow_id: &str) -> Option<u64> {
        let map = self.lock();
        let stream = map.streams.get(flow_id)?;
        (!stream.entries.is_empty()).then(|| stream.entries.iter().map(super::json_len).sum())
    }
}

#[async_trait]
impl EventHot for MemoryHot {
    async fn append_events(&self, events: &[Event]) -> HotResult<Vec<EventId>> {
        Ok(self.publish(events))
    }

    async fn post_event(&self, event: &Event, incarnation: Option<i64>) -> HotResult<Posted> {
        Ok(match self.flows.get(&event.flow_id) {
            None => Posted::FlowNotCached,
            Some(Entry { value: None, .. }) => Posted::FlowDeleted,
            Some(Entry {
                incarnation: cached,
                ..
            }) if incarnation.is_some_and(|i| i != cached) => Posted::OtherIncarnation,
            Some(_) => {
                let ids = self.publish(std::slice::from_ref(event));
                Posted::Stored(ids.into_iter().next().unwrap_or(event.id))
            }
        })
    }

    async fn history(&self, flow_id: &str, after: Option<EventId>) -> HotResult<History> {
        Ok(self.streams.history(flow_id, after))
    }

    async fn watch(&self, flow_id: &str) -> Watch {
        self.hub.watch(flow_id).0
    }

    fn deliver_locally(&self, event: Event) {
        self.hub.deliver(event);
    }
}

impl MemoryHot {
    /// Appends events and delivers them to this process's subscribers.
    pub(super) fn publish(&self, events: &[Event]) -> Vec<EventId> {
        events
            .iter()
            .map(|event| {
                let stored = self.streams.append(event, |e| self.hub.deliver(e));
                if event.event_type == FLOW_DELETED {
                    // As on Redis: the stream outlives the flow as long as its tombstone.
                    self.streams.expire_in(&event.flow_id, TOMBSTONE_TTL);
                }
                stored.id
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(ms: u64) -> Event {
        Event::new(EventId { ms, seq: 0 }, "f", "T", json!(ms))
    }

    #[test]
    fn resumes_exactly_within_history_and_resets_outside_it() {
        let streams = Streams::new(3, Duration::from_secs(60));
        let named = streams.history("f", None);
        assert_eq!(named.top, None);
        for ms in 1..=5 {
            streams.append_quiet(&event(ms));
        }
        let h = streams.history("f", Some(EventId { ms: 3, seq: 0 }));
        assert_eq!(
            h.epoch, named.epoch,
            "the named epoch is kept by the first event"
        );
        assert!(!h.reset);
        assert_eq!(h.events.iter().map(|e| e.id.ms).collect::<Vec<_>>(), [4, 5]);
        let h = streams.history("f", Some(EventId { ms: 1, seq: 0 }));
        assert!(h.reset, "trimmed past");
        assert_eq!(h.events.len(), 3);
        assert!(streams.history("f", Some(EventId { ms: 9, seq: 0 })).reset);
    }

    #[test]
    fn a_replayed_id_is_skipped_and_a_late_one_goes_next() {
        let streams = Streams::new(10, Duration::from_secs(60));
        streams.append_quiet(&event(5));
        assert_eq!(streams.append_quiet(&event(5)).id.ms, 5);
        assert_eq!(
            streams.history("f", Some(EventId::default())).events.len(),
            1
        );
        let late = streams.append_quiet(&event(2));
        assert_eq!(late.id, EventId { ms: 5, seq: 1 });
    }

    #[test]
    fn concurrent_appends_are_delivered_in_id_order() {
        let streams = std::sync::Arc::new(Streams::new(100_000, Duration::from_secs(60)));
        let delivered = std::sync::Arc::new(Mutex::new(Vec::new()));
        let ids = std::sync::Arc::new(crate::model::events::EventIds::default());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let (streams, delivered, ids) = (streams.clone(), delivered.clone(), ids.clone());
                std::thread::spawn(move || {
                    for i in 0..2000 {
                        let e = Event::new(ids.next(), "f", "T", json!([t, i]));
                        streams.append(&e, |stored| delivered.lock().unwrap().push(stored.id));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let delivered = delivered.lock().unwrap();
        assert_eq!(delivered.len(), 8000);
        assert!(
            delivered.windows(2).all(|w| w[0] < w[1]),
            "delivered out of id order"
        );
    }

    #[test]
    fn an_expired_stream_starts_a_new_epoch() {
        let streams = Streams::new(10, Duration::ZERO);
        streams.append_quiet(&event(1));
        let before = streams.history("f", None).epoch;
        streams.append_quiet(&event(2));
        let after = streams.history("f", Some(EventId { ms: 1, seq: 0 }));
        assert!(after.reset);
        assert_ne!(before, after.epoch);
    }
}
