//! Flow events: publishing them with the writes that cause them, custom events, and
//! subscriptions that resume exactly.
//!
//! Every event gets its id here, before it is written anywhere ([`EventIds`]), and travels in
//! the same hot-tier round trip as its write. When that fails (Redis down) the event goes to
//! the ledger outbox (`outbox.rs` replays it later under the same id) and straight to this
//! instance's subscribers, so they miss nothing while Redis is away.
//!
//! A [`Subscription`] delivers each event once and in order: it starts listening before it
//! reads what it missed, skips live events it has already delivered (ids only grow), and
//! whenever it may have missed live events (it fell behind, or the instance's Redis
//! subscription was re-established) reads the stream again after the last event it delivered.
//! History that is gone is reported as a reset, never skipped silently.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Flowstate;
use super::connections::Registration;
use crate::error::{Error, Result};
use crate::hot::{Live, LiveEvent, Posted, Watch};
use crate::model::events::{Event, EventId, FLOW_DELETED, History, NewEvent, RESERVED_TYPES};
use crate::model::ids;
use crate::security::envelope::envelope_text;

/// How long a subscription that cannot read the stream (Redis down) waits before trying again
/// when nothing tells it to sooner.
const RETRY_HISTORY: Duration = Duration::from_millis(500);

/// Ids a subscription remembers having delivered, to recognise an event that arrives late.
const RECENT: usize = 1024;

/// How long a subscription that must read the stream waits for the outbox to drain first.
const OUTBOX_PATIENCE: Duration = Duration::from_secs(10);

/// What a subscriber receives.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// An event of the flow.
    Event(Arc<LiveEvent>),
    /// The history the subscriber asked to resume from is gone (trimmed, expired, or from an
    /// earlier epoch): events may have been missed, so it should reload the flow's state. The
    /// events still kept follow.
    Reset {
        /// The stream's current epoch.
        epoch: String,
    },
}

impl Flowstate {
    /// A new event of `flow_id`, with its id.
    pub(crate) fn event(&self, flow_id: &str, event_type: &str, payload: Value) -> Event {
        Event::new(self.inner.event_ids.next(), flow_id, event_type, payload)
    }

    /// The events a write should carry to the hot tier: all of them, unless older events wait
    /// in the outbox, in which case these join them there (and reach local subscribers now), so
    /// that no stream receives a newer event before an older one.
    pub(crate) async fn events_to_carry(&self, events: Vec<Event>) -> Vec<Event> {
        if events.is_empty() || !self.inner.outbox.is_pending() {
            return events;
        }
        self.divert_events(events).await;
        Vec::new()
    }

    /// Runs a hot-tier write that carries `events` (see [`Flowstate::hot_write`]); when it
    /// fails, the events go to the outbox and to local subscribers.
    pub(crate) async fn hot_write_with_events(
        &self,
        op: &'static str,
        events: Vec<Event>,
        fut: impl std::future::Future<Output = crate::hot::HotResult<()>>,
    ) {
        if !self.hot_write(op, fut).await && !events.is_empty() {
            self.divert_events(events).await;
        }
    }

    /// Keeps events the hot tier did not take in the ledger outbox, and delivers them to this
    /// instance's subscribers.
    pub(crate) async fn divert_events(&self, events: Vec<Event>) {
        match self.ledger().enqueue_events(&events).await {
            Ok(()) => {
                self.inner.outbox.enqueued();
                metrics::counter!("flowstate_events_outboxed_total").increment(events.len() as u64);
            }
            Err(e) => {
                metrics::counter!("flowstate_events_lost_total").increment(events.len() as u64);
                tracing::error!(error = %e, events = events.len(), "events reach only this instance's subscribers: neither Redis nor the ledger took them");
            }
        }
        for event in events {
            self.hot().deliver_locally(event);
        }
    }

    /// Publishes a custom event on a flow; returns its id.
    pub async fn post_event(&self, flow_id: &str, new: NewEvent) -> Result<EventId> {
        ids::validate("flow_id", flow_id)?;
        ids::validate("event_type", &new.event_type)?;
        if RESERVED_TYPES.contains(&new.event_type.as_str()) {
            return Err(Error::InvalidInput(format!(
                "event_type {} is reserved for the events flowstate publishes itself",
                new.event_type
            )));
        }
        let payload = serde_json::to_string(&new.payload)
            .map_err(|e| Error::InvalidInput(format!("payload: {e}")))?;
        let size = payload.len() + new.event_type.len();
        let max = self.config().events.max_event_bytes;
        if size > max {
            return Err(Error::TooLarge(format!(
                "event of {size} bytes is larger than events.max_event_bytes ({max})"
            )));
        }
        // A sensitive flow's payload is sealed; its type stays readable (subscribers filter
        // on it).
        if let Value::Object(map) = &new.payload {
            super::sealing::refuse_envelope_lookalike(map)?;
        }
        let known = self.sensitivity(flow_id).await?;
        let payload = match known {
            Some((_, true)) => Value::Object(self.seal_value(&new.payload)?),
            _ => new.payload.clone(),
        };
        let event = self.event(flow_id, &new.event_type, payload);
        let this = self.clone();
        self.detached(async move { this.post_event_now(event, known, new.payload).await })
            .await
    }

    /// One round trip when the flow is cached: the append checks the flow itself.
    /// `event` was sealed, or not, as `known` says its flow's registration needs; `plain` is
    /// its payload in the clear, for when that turns out to be another registration.
    async fn post_event_now(
        &self,
        mut event: Event,
        known: Option<(i64, bool)>,
        plain: Value,
    ) -> Result<EventId> {
        let (id, flow_id) = (event.id, event.flow_id.clone());
        // With encryption keys, the event may only land on the registration whose sensitivity
        // chose its payload's form: the append checks the cached record's incarnation.
        let keyed = !self.inner.sealing.keyring.is_empty();
        if !self.inner.outbox.is_pending() && (!keyed || known.is_some()) {
            let incarnation = known.map(|(incarnation, _)| incarnation);
            match self
                .hot_read("events.post", self.hot().post_event(&event, incarnation))
                .await
            {
                Some(Posted::Stored(id)) => return Ok(id),
                Some(Posted::FlowDeleted) => return Err(Error::FlowNotFound(flow_id)),
                Some(Posted::FlowNotCached | Posted::OtherIncarnation) | None => {}
            }
        }
        if keyed && let Some(flow) = self.ledger().get_flow(&flow_id).await? {
            let (_, sensitive) = self.remember(&flow_id, flow.incarnation, flow.sensitive);
            event.payload = if sensitive {
                Value::Object(self.seal_value(&plain)?)
            } else {
                plain
            };
        }
        // Not cached, or Redis away: the ledger says whether the flow exists (and the read
        // caches it again).
        self.get_flow(&flow_id).await?;
        let events = self.events_to_carry(vec![event]).await;
        if events.is_empty() {
            return Ok(id);
        }
        match self
            .hot_read("events.append", self.hot().append_events(&events))
            .await
        {
            Some(ids) => Ok(ids.first().copied().unwrap_or(id)),
            None => {
                self.divert_events(events).await;
                Ok(id)
            }
        }
    }

    /// Subscribes to a flow's events: live ones, after what was missed since `after` when
    /// given. Fails only for a flow that does not exist (or a ledger that cannot say).
    pub async fn subscribe(&self, flow_id: &str, after: Option<EventId>) -> Result<Subscription> {
        ids::validate("flow_id", flow_id)?;
        self.get_flow(flow_id).await?;
        let watch = self.hot().watch(flow_id).await;
        let registration = self.register_connection(flow_id, after).await;
        let mut sub = Subscription {
            service: self.clone(),
            watch,
            cursor: after,
            floor: after,
            recent: VecDeque::with_capacity(RECENT),
            synced: false,
            queue: VecDeque::new(),
            ended: false,
            unsynced_since: None,
            soft_anchor: false,
            registration,
        };
        if after.is_none() {
            // Anchor at the stream's top, so that a later resync knows where "live" began;
            // when the stream cannot be read (Redis away), at this instant: a stand-in that a
            // later resync does not take for history the client had.
            match self.hot().history(flow_id, None).await {
                Ok(history) => sub.cursor = history.top,
                Err(_) => {
                    sub.cursor = Some(self.inner.event_ids.next());
                    sub.soft_anchor = true;
                }
            }
            sub.floor = sub.cursor;
            sub.synced = true;
        } else {
            sub.sync().await;
        }
        Ok(sub)
    }
}

/// One subscriber's ordered, exactly-once feed of a flow's events.
pub struct Subscription {
    service: Flowstate,
    watch: Watch,
    /// The last event delivered (or the point resumed from).
    cursor: Option<EventId>,
    /// Where this subscription started: the client had everything up to it.
    floor: Option<EventId>,
    /// The ids delivered last, newest at the back.
    recent: VecDeque<EventId>,
    /// Whether everything up to `cursor` has been delivered and live events follow on.
    synced: bool,
    queue: VecDeque<Delivery>,
    /// Set once the flow's deletion has been delivered.
    ended: bool,
    /// When the subscription last found itself behind (for [`OUTBOX_PATIENCE`]).
    unsynced_since: Option<Instant>,
    /// Whether the cursor is only the time the subscription started (the stream could not be
    /// read then), not a position in the stream.
    soft_anchor: bool,
    registration: Registration,
}

impl Subscription {
    /// The next delivery; `None` once the flow has been deleted.
    pub async fn next(&mut self) -> Option<Delivery> {
        loop {
            if let Some(delivery) = self.queue.pop_front() {
                let Some(delivery) = self.opened(delivery) else {
                    continue;
                };
                if let Delivery::Event(e) = &delivery
                    && e.event.event_type == FLOW_DELETED
                {
                    self.ended = true;
                    self.queue.clear();
                }
                return Some(delivery);
            }
            if self.ended {
                return None;
            }
            if !self.synced {
                if self.sync().await {
                    continue;
                }
                // The stream cannot be read: wait to be told it can, or retry a little later.
                // Live events meanwhile are in the stream by then, and read from it.
                tokio::select! {
                    _ = self.watch.recv() => {}
                    () = tokio::time::sleep(RETRY_HISTORY) => {}
                }
                continue;
            }
            match self.watch.recv().await {
                Live::Event(e) => {
                    let id = e.event.id;
                    if self.cursor.is_some_and(|c| id <= c) {
                        // Behind the cursor: delivered already, unless it is an event that
                        // reached this instance late (two writes racing while Redis was away):
                        // then better out of order than never.
                        let late = self.floor.is_none_or(|f| id > f) && !self.recent.contains(&id);
                        if !late {
                            continue;
                        }
                        self.remember(id);
                        self.queue.push_back(Delivery::Event(e));
                        continue;
                    }
                    self.cursor = Some(id);
                    self.remember(id);
                    self.queue.push_back(Delivery::Event(e));
                }
                Live::Resync => self.synced = false,
            }
        }
    }

    /// Reads what was missed since the cursor into the queue; false if the stream cannot be
    /// read now.
    async fn sync(&mut self) -> bool {
        // Events this instance published while Redis was away are about to be replayed into
        // the stream; reading it before would report their ids as lost. Not for long, though:
        // an outbox that cannot drain must not stall subscribers.
        let since = *self.unsynced_since.get_or_insert_with(Instant::now);
        if self.service.inner.outbox.is_pending() && since.elapsed() < OUTBOX_PATIENCE {
            return false;
        }
        let flow_id = self.watch.flow_id().to_string();
        let hot = self.service.hot();
        // Without a cursor (nothing delivered, no anchor) this is a fresh start at the top.
        let history = hot.history(&flow_id, self.cursor).await;
        let Ok(History {
            epoch,
            top,
            reset,
            events,
        }) = history
        else {
            return false;
        };
        // From a stand-in anchor, the kept events after it are exactly what was missed when
        // the history reaches back to it; a reset only when it does not (trimmed past).
        let soft = std::mem::take(&mut self.soft_anchor);
        let reset = reset
            && !(soft
                && self
                    .cursor
                    .is_some_and(|c| events.first().is_none_or(|e| e.id <= c)));
        if reset {
            metrics::counter!("flowstate_sse_resets_total").increment(1);
            self.queue.push_back(Delivery::Reset { epoch });
            // Everything kept follows, whatever the id asked for.
            self.cursor = None;
        }
        for event in events {
            if self.cursor.is_some_and(|c| event.id <= c) {
                continue;
            }
            self.cursor = Some(event.id);
            self.remember(event.id);
            self.queue.push_back(Delivery::Event(LiveEvent::new(event)));
        }
        if self.cursor.is_none() {
            self.cursor = top;
        }
        self.synced = true;
        self.unsynced_since = None;
        true
    }

    /// `delivery` with a sealed payload opened; `None` (logged and counted) if it cannot be.
    fn opened(&self, delivery: Delivery) -> Option<Delivery> {
        let Delivery::Event(e) = &delivery else {
            return Some(delivery);
        };
        let Value::Object(map) = &e.event.payload else {
            return Some(delivery);
        };
        if envelope_text(map).is_none() {
            return Some(delivery);
        }
        let payload = self.service.open_value(e.event.payload.clone()).ok()?;
        Some(Delivery::Event(LiveEvent::new(Event {
            payload,
            ..e.event.clone()
        })))
    }

    /// Remembers a delivered id.
    fn remember(&mut self, id: EventId) {
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(id);
    }

    /// The flow subscribed to.
    pub fn flow_id(&self) -> &str {
        self.watch.flow_id()
    }

    /// The connection's id in the registry.
    pub fn connection_id(&self) -> &str {
        self.registration.id()
    }
}
