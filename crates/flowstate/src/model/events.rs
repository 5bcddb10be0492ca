//! Flow events: what is published when something happens to a flow, how events are named
//! (`<ms>-<seq>` ids, the form of a Redis stream id, in every tier) and what a subscriber that
//! resumes is told ([`History`]), including the `reset` it gets when the history it asks for is
//! gone.

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::error::{Error, Result};

/// Published when a flow is registered (a fork's child included).
pub const FLOW_REGISTERED: &str = "FLOW_REGISTERED";
/// Published on every status transition (`from`, `to`, `metadata`).
pub const STATE_TRANSITION: &str = "STATE_TRANSITION";
/// Published when a flow's state is rolled back to a snapshot.
pub const STATE_RESTORED: &str = "STATE_RESTORED";
/// Published on the parent when a snapshot is forked into a child flow.
pub const FLOW_FORKED: &str = "FLOW_FORKED";
/// Published when a flow is deleted; its SSE streams end after it.
pub const FLOW_DELETED: &str = "FLOW_DELETED";

/// Event types only flowstate publishes (and `reset`, the SSE frame of lost history): a
/// custom event cannot take them, or it could end streams or fake a write.
pub const RESERVED_TYPES: [&str; 6] = [
    FLOW_REGISTERED,
    STATE_TRANSITION,
    STATE_RESTORED,
    FLOW_FORKED,
    FLOW_DELETED,
    "reset",
];

/// An event's id: milliseconds since the Unix epoch and a sequence number within that
/// millisecond, written `<ms>-<seq>` (a Redis stream id). Ids of one flow's events strictly
/// increase in publication order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EventId {
    /// Milliseconds since the Unix epoch.
    pub ms: u64,
    /// Sequence number within the millisecond.
    pub seq: u64,
}

impl EventId {
    /// The id right after this one.
    pub fn successor(self) -> EventId {
        match self.seq.checked_add(1) {
            Some(seq) => EventId { ms: self.ms, seq },
            None => EventId {
                ms: self.ms + 1,
                seq: 0,
            },
        }
    }

    /// When the event was published (the millisecond in its id).
    pub fn timestamp(self) -> OffsetDateTime {
        let nanos = i128::from(self.ms) * 1_000_000;
        OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl FromStr for EventId {
    type Err = Error;

    /// Parses `<ms>-<seq>`; a bare `<ms>` means `<ms>-0`, as Redis reads it.
    fn from_str(s: &str) -> Result<Self> {
        let invalid =
            || Error::InvalidInput(format!("event id {s:?} is not of the form <ms>-<seq>"));
        let digits = |p: &str| -> Result<u64> {
            if p.is_empty() || p.len() > 20 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid());
            }
            p.parse().map_err(|_| invalid())
        };
        match s.split_once('-') {
            Some((ms, seq)) => Ok(EventId {
                ms: digits(ms)?,
                seq: digits(seq)?,
            }),
            None => Ok(EventId {
                ms: digits(s)?,
                seq: 0,
            }),
        }
    }
}

impl Serialize for EventId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Hands out event ids in this process: never below the clock, never twice, always
/// increasing. An event's id is chosen before it is written anywhere, so that the same event
/// keeps its id whichever way it travels (the stream, or the ledger outbox while Redis is down
/// and the stream later), and a subscriber that saw it once recognises it again.
#[derive(Debug, Default)]
pub struct EventIds {
    last: Mutex<EventId>,
}

impl EventIds {
    /// A fresh id above every id handed out before and no earlier than now.
    pub fn next(&self) -> EventId {
        let now_ms = u64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
            .unwrap_or_default();
        // A poisoned lock only means another thread panicked between two plain stores.
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let id = if now_ms > last.ms {
            EventId { ms: now_ms, seq: 0 }
        } else {
            last.successor()
        };
        *last = id;
        id
    }
}

/// One published event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    /// The event's id in its flow's stream (`<ms>-<seq>`), also its SSE `id:`.
    #[schema(value_type = String, example = "1732990000000-0")]
    pub id: EventId,
    /// The flow it belongs to.
    pub flow_id: String,
    /// What happened (`FLOW_REGISTERED`, `STATE_TRANSITION`, ... or a custom type).
    pub event_type: String,
    /// Details; any JSON value.
    #[schema(value_type = Object)]
    pub payload: Value,
    /// When it was published (the millisecond in its id).
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
}

impl Event {
    /// An event with its timestamp taken from its id.
    pub fn new(id: EventId, flow_id: &str, event_type: &str, payload: Value) -> Event {
        Event {
            id,
            flow_id: flow_id.to_string(),
            event_type: event_type.to_string(),
            payload,
            timestamp: id.timestamp(),
        }
    }
}

/// A custom event posted to a flow.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEvent {
    /// What happened; the id rules apply (letters, digits, `_-.:`, at most 128 characters).
    #[schema(pattern = r"^[A-Za-z0-9_.:-]{1,128}$")]
    pub event_type: String,
    /// Details; any JSON value (`null` when absent).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub payload: Value,
}

/// What a subscriber resuming after an event id is told: the events it missed or, when the
/// history it asks for is gone, a reset and everything still kept.
#[derive(Debug, Clone, PartialEq)]
pub struct History {
    /// The stream's epoch: it changes whenever the stream's history is lost as a whole
    /// (expired, Redis restarted empty, evicted).
    pub epoch: String,
    /// The last id the stream has handed out, if it exists.
    pub top: Option<EventId>,
    /// Set when the id asked for is not in the history kept (trimmed past the stream's
    /// length, or from an earlier epoch): events may have been missed, so the subscriber
    /// should reload the flow's state. `events` is then the whole history kept.
    pub reset: bool,
    /// Events after the id asked for (or all kept, on a reset), oldest first.
    pub events: Vec<Event>,
}

/// Decides what a subscriber resuming after `after` gets from a stream whose oldest kept
/// entry is `first` and newest id handed out `top`: the rule both tiers follow. The resume is
/// exact when `after` lies within the kept history; anything else (older than everything
/// kept, or beyond the top, i.e. from an earlier epoch) is a reset.
pub fn needs_reset(after: EventId, first: Option<EventId>, top: Option<EventId>) -> bool {
    match (first, top) {
        (Some(first), Some(top)) => after < first || after > top,
        // An empty or missing stream: whatever `after` named is gone.
        _ => true,
    }
}

/// An open SSE connection, as listed in the connection registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SseConnection {
    /// The connection's id (fresh per connection).
    pub connection_id: String,
    /// The flow it watches.
    pub flow_id: String,
    /// The instance serving it.
    pub instance_id: String,
    /// When it was opened.
    #[serde(with = "time::serde::rfc3339")]
    pub connected_at: OffsetDateTime,
    /// The `Last-Event-ID` it resumed from, if any.
    pub resumed_from: Option<String>,
}

/// The connections of `flow_id` among `conns`, oldest first.
pub fn connections_of<'a>(
    conns: impl IntoIterator<Item = &'a SseConnection>,
    flow_id: &str,
) -> Vec<SseConnection> {
    let mut listed: Vec<SseConnection> = conns
        .into_iter()
        .filter(|c| c.flow_id == flow_id)
        .cloned()
        .collect();
    listed.sort_by_key(|c| c.connected_at);
    listed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_print_and_order() {
        let id: EventId = "1732990000000-7".parse().unwrap();
        assert_eq!(id.to_string(), "1732990000000-7");
        assert_eq!("5".parse::<EventId>().unwrap(), EventId { ms: 5, seq: 0 });
        for bad in [
            "",
            "-",
            "1-",
            "-1",
            "a-1",
            "1-2-3",
            "1 -2",
            "+1-2",
            "99999999999999999999999-0",
        ] {
            assert!(bad.parse::<EventId>().is_err(), "{bad:?} parsed");
        }
        assert!(EventId { ms: 1, seq: 9 } < EventId { ms: 2, seq: 0 });
        assert_eq!(
            EventId {
                ms: 1,
                seq: u64::MAX
            }
            .successor(),
            EventId { ms: 2, seq: 0 }
        );
    }

    #[test]
    fn generated_ids_strictly_increase() {
        let ids = EventIds::default();
        let mut last = ids.next();
        for _ in 0..10_000 {
            let id = ids.next();
            assert!(id > last);
            last = id;
        }
    }

    #[test]
    fn resets_only_outside_the_kept_history() {
        let id = |ms| EventId { ms, seq: 0 };
        assert!(!needs_reset(id(5), Some(id(5)), Some(id(9))));
        assert!(!needs_reset(id(9), Some(id(5)), Some(id(9))));
        assert!(needs_reset(id(4), Some(id(5)), Some(id(9))));
        assert!(needs_reset(id(10), Some(id(5)), Some(id(9))));
        assert!(needs_reset(id(5), None, None));
    }
}
