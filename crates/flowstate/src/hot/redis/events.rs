//! Each flow's event stream on Redis: `flow:events:{id}` (XADD trimmed to about
//! `events.maxlen` entries, with the stream's TTL) and its epoch in `flow:events:{id}:meta`,
//! written by `scripts/append_event.lua`, which also PUBLISHes the event on the channel of the
//! same name; `scripts/event_history.lua` answers a subscriber that resumes. Both are one
//! round trip, and an append rides in the pipeline of the write that caused it.
//!
//! Live delivery: the instance's single subscriber connection (`subscriber.rs`) listens to the
//! channels of the flows watched here and hands their events to the local
//! [`Hub`](crate::hot::fanout::Hub).

use std::sync::LazyLock;

use ::redis::{Pipeline, Script};
use async_trait::async_trait;

use super::RedisHot;
use crate::hot::fanout::Watch;
use crate::hot::{EventHot, HotError, HotResult, Posted, TOMBSTONE_TTL};
use crate::model::events::{Event, EventId, FLOW_DELETED, History};

/// `scripts/append_event.lua`.
pub(super) const APPEND_EVENT_SRC: &str = include_str!("scripts/append_event.lua");
const EVENT_HISTORY_SRC: &str = include_str!("scripts/event_history.lua");
/// This capability's scripts, loaded at startup.
pub(super) const SCRIPTS: &[&str] = &[APPEND_EVENT_SRC, EVENT_HISTORY_SRC];
static APPEND_EVENT: LazyLock<Script> = LazyLock::new(|| Script::new(APPEND_EVENT_SRC));
static EVENT_HISTORY: LazyLock<Script> = LazyLock::new(|| Script::new(EVENT_HISTORY_SRC));

/// A fresh epoch name, proposed to the scripts, which keep it only when the stream starts
/// afresh.
fn epoch_candidate() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// A stream entry as the scripts return it: id and field/value pairs.
type RawEntry = (String, Vec<String>);

impl RedisHot {
    /// Adds the append of each event to `pipe` (replies ignored).
    pub(super) fn push_events(&self, pipe: &mut Pipeline, events: &[Event]) -> HotResult<()> {
        for event in events {
            self.push_event(pipe, event, None, true)?;
        }
        Ok(())
    }

    /// Adds an event's append (its reply ignored if `ignore`); `check_flow` makes it
    /// conditional on the flow's cached record (and, with an incarnation, on its being that
    /// registration).
    fn push_event(
        &self,
        pipe: &mut Pipeline,
        event: &Event,
        check_flow: Option<Option<i64>>,
        ignore: bool,
    ) -> HotResult<()> {
        let payload = serde_json::to_string(&event.payload).map_err(|e| HotError::Corrupt {
            key: self.keys.events(&event.flow_id),
            reason: e.to_string(),
        })?;
        let stream = self.keys.events(&event.flow_id);
        let tag = self
            .signer
            .tag_hex(&stream, &[event.event_type.as_bytes(), payload.as_bytes()]);
        pipe.cmd("EVALSHA")
            .arg(APPEND_EVENT.get_hash())
            .arg(3)
            .arg(&stream)
            .arg(self.keys.events_meta(&event.flow_id))
            .arg(self.keys.flow(&event.flow_id))
            .arg(event.id.to_string())
            .arg(&event.event_type)
            .arg(payload)
            .arg(self.events.maxlen)
            .arg(self.ttls.events())
            .arg(epoch_candidate())
            .arg(&stream)
            .arg(if check_flow.is_some() { "1" } else { "0" })
            .arg(tag)
            .arg(
                check_flow
                    .flatten()
                    .map(|i| i.to_string())
                    .unwrap_or_default(),
            );
        if ignore {
            pipe.ignore();
        }
        if event.event_type == FLOW_DELETED {
            // A deleted flow's stream outlives it only as long as its tombstone, replayed or not.
            for key in [stream, self.keys.events_meta(&event.flow_id)] {
                pipe.expire(key, TOMBSTONE_TTL.as_secs() as i64).ignore();
            }
        }
        Ok(())
    }

    /// An event of `flow_id` from a stream entry.
    fn decode_entry(&self, flow_id: &str, (id, fields): RawEntry) -> HotResult<Event> {
        let corrupt = |reason: String| HotError::Corrupt {
            key: self.keys.events(flow_id),
            reason,
        };
        let id: EventId = id.parse().map_err(|e| corrupt(format!("{e}")))?;
        let (mut event_type, mut payload, mut tag) = (None, None, "");
        for pair in fields.chunks_exact(2) {
            match pair[0].as_str() {
                "t" => event_type = Some(pair[1].as_str()),
                "p" => payload = Some(pair[1].as_str()),
                "s" => tag = pair[1].as_str(),
                _ => {}
            }
        }
        let (Some(event_type), Some(payload)) = (event_type, payload) else {
            return Err(corrupt(format!("entry {id} lacks its type or payload")));
        };
        let stream = self.keys.events(flow_id);
        if !self
            .signer
            .verify_hex(&stream, &[event_type.as_bytes(), payload.as_bytes()], tag)
        {
            return Err(HotError::unverified(
                stream,
                "event entry tag does not verify",
            ));
        }
        let payload = serde_json::from_str(payload).map_err(|e| corrupt(e.to_string()))?;
        Ok(Event::new(id, flow_id, event_type, payload))
    }
}

/// Parses an optional id the history script returned (`''` when the stream is missing).
fn optional_id(id: &str) -> Option<EventId> {
    id.parse().ok()
}

#[async_trait]
impl EventHot for RedisHot {
    async fn append_events(&self, events: &[Event]) -> HotResult<Vec<EventId>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = ::redis::pipe();
        for event in events {
            self.push_event(&mut pipe, event, None, false)?;
        }
        // No key is cached state to invalidate: a failed append goes to the ledger outbox.
        let ids: Vec<String> = self
            .core
            .write_query(&pipe, &[APPEND_EVENT_SRC], Vec::new())
            .await?;
        ids.iter()
            .map(|id| {
                id.parse().map_err(|_| HotError::Corrupt {
                    key: self.keys.events(&events[0].flow_id),
                    reason: format!("XADD answered {id:?}"),
                })
            })
            .collect()
    }

    async fn post_event(&self, event: &Event, incarnation: Option<i64>) -> HotResult<Posted> {
        let mut pipe = ::redis::pipe();
        self.push_event(&mut pipe, event, Some(incarnation), false)?;
        let (answer,): (String,) = self
            .core
            .write_query(&pipe, &[APPEND_EVENT_SRC], Vec::new())
            .await?;
        Ok(match answer.as_str() {
            "~missing" => Posted::FlowNotCached,
            "~deleted" => Posted::FlowDeleted,
            "~other" => Posted::OtherIncarnation,
            id => Posted::Stored(id.parse().map_err(|_| HotError::Corrupt {
                key: self.keys.events(&event.flow_id),
                reason: format!("XADD answered {id:?}"),
            })?),
        })
    }

    async fn history(&self, flow_id: &str, after: Option<EventId>) -> HotResult<History> {
        let mut pipe = ::redis::pipe();
        pipe.cmd("EVALSHA")
            .arg(EVENT_HISTORY.get_hash())
            .arg(2)
            .arg(self.keys.events(flow_id))
            .arg(self.keys.events_meta(flow_id))
            .arg(after.map(|a| a.to_string()).unwrap_or_default())
            .arg(epoch_candidate())
            .arg(self.ttls.events());
        let ((epoch, top, _first, reset, entries),): ((
            String,
            String,
            String,
            i64,
            Vec<RawEntry>,
        ),) = self.core.read_pipeline(&pipe, &[EVENT_HISTORY_SRC]).await?;
        // An entry that does not verify or decode is skipped (counted and logged), never
        // served; one bad entry must not keep a subscriber from the rest.
        let events = entries
            .into_iter()
            .filter_map(|entry| match self.decode_entry(flow_id, entry) {
                Ok(event) => Some(event),
                Err(HotError::Corrupt { key, reason }) => {
                    metrics::counter!("flowstate_redis_undecodable_events_total").increment(1);
                    tracing::warn!(%key, %reason, "undecodable event entry skipped");
                    None
                }
                Err(_) => None,
            })
            .collect::<Vec<_>>();
        Ok(History {
            epoch,
            top: optional_id(&top),
            reset: reset == 1,
            events,
        })
    }

    async fn watch(&self, flow_id: &str) -> Watch {
        let (watch, _) = self.hub.watch(flow_id);
        self.subscriber.subscribe(self.keys.events(flow_id)).await;
        watch
    }

    fn deliver_locally(&self, event: Event) {
        self.hub.deliver(event);
    }
}
