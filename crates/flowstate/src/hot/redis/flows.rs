//! Flow records, the registry and hierarchy sets, and the transitions stream on Redis. Every
//! write is one round trip: a pipeline whose per-flow part is a script (`scripts/put_flow.lua`,
//! `record_transition.lua`, `remove_flow.lua`, `forget.lua`) that orders writes by
//! (incarnation, version) and keeps tombstones of deleted flows.

use std::collections::HashMap;
use std::sync::LazyLock;

use ::redis::{Pipeline, Script};
use async_trait::async_trait;

use super::events::APPEND_EVENT_SRC;
use super::{RedisHot, lua, rfc3339};
use crate::hot::{CachedFlow, FlowHot, HotError, HotResult, TOMBSTONE_TTL, codec};
use crate::model::events::Event;
use crate::model::{DeletedFlow, DocKind, Flow, Transition};

const PUT_FLOW_SRC: &str = lua!("put_flow.lua");
const RECORD_TRANSITION_SRC: &str = lua!("record_transition.lua");
const REMOVE_FLOW_SRC: &str = lua!("remove_flow.lua");
const FORGET_SRC: &str = lua!("forget.lua");
/// This capability's scripts, loaded at startup.
pub(super) const SCRIPTS: &[&str] = &[
    PUT_FLOW_SRC,
    RECORD_TRANSITION_SRC,
    REMOVE_FLOW_SRC,
    FORGET_SRC,
];
static PUT_FLOW: LazyLock<Script> = LazyLock::new(|| Script::new(PUT_FLOW_SRC));
static RECORD_TRANSITION: LazyLock<Script> = LazyLock::new(|| Script::new(RECORD_TRANSITION_SRC));
static REMOVE_FLOW: LazyLock<Script> = LazyLock::new(|| Script::new(REMOVE_FLOW_SRC));
static FORGET: LazyLock<Script> = LazyLock::new(|| Script::new(FORGET_SRC));

/// What a tombstone's tag covers besides its key and incarnation (a record's covers its data).
const TOMBSTONE_TAG_PART: &[u8] = b"tombstone";

/// Version written into tombstones: above any real flow version, exact as a Lua number.
const TOMBSTONE_VERSION: i64 = 1 << 53;

impl RedisHot {
    /// Adds the version-guarded write of a flow record to `pipe`.
    fn push_put_flow(&self, pipe: &mut Pipeline, flow: &Flow) -> HotResult<()> {
        let (data, tag) = self.encode_flow(flow)?;
        pipe.cmd("EVALSHA")
            .arg(PUT_FLOW.get_hash())
            .arg(1)
            .arg(self.keys.flow(&flow.flow_id))
            .arg(flow.incarnation)
            .arg(flow.version)
            .arg(self.ttls.flow())
            .arg(data)
            .arg(&flow.status)
            .arg(rfc3339(flow.updated_at))
            .arg(tag)
            .ignore();
        Ok(())
    }
}

#[async_trait]
impl FlowHot for RedisHot {
    async fn register_flow(&self, flow: &Flow, events: &[Event]) -> HotResult<()> {
        let mut pipe = ::redis::pipe();
        self.push_put_flow(&mut pipe, flow)?;
        pipe.sadd(self.keys.registry(), &flow.flow_id).ignore();
        if let Some(parent) = &flow.parent_flow_id {
            let hierarchy = self.keys.hierarchy(parent);
            pipe.sadd(&hierarchy, &flow.flow_id).ignore();
            pipe.expire(&hierarchy, self.ttls.hierarchy() as i64)
                .ignore();
        }
        self.push_events(&mut pipe, events)?;
        let dirty = vec![self.keys.flow(&flow.flow_id)];
        self.core
            .write(&pipe, &[PUT_FLOW_SRC, APPEND_EVENT_SRC], dirty)
            .await
    }

    async fn cache_flow(&self, flow: &Flow) -> HotResult<()> {
        let mut pipe = ::redis::pipe();
        self.push_put_flow(&mut pipe, flow)?;
        self.core.fill(&pipe, &[PUT_FLOW_SRC]).await
    }

    async fn get_flow(&self, flow_id: &str) -> HotResult<CachedFlow> {
        let key = self.keys.flow(flow_id);
        let fields: HashMap<String, String> =
            self.core.read(::redis::cmd("HGETALL").arg(&key)).await?;
        let inc = fields.get("inc").map_or("0", String::as_str);
        let tag = fields.get("tag").map_or("", String::as_str);
        if fields.contains_key("deleted") {
            // A tombstone answers "not found" without the ledger: it must be flowstate's too.
            if !self
                .signer
                .verify_hex(&key, &[TOMBSTONE_TAG_PART, inc.as_bytes()], tag)
            {
                let err = codec::DecodeError::Unverified("tombstone tag does not verify");
                return Err(self.undecodable(key, err).await);
            }
            return Ok(CachedFlow::Deleted);
        }
        let Some(data) = fields.get("data") else {
            return Ok(CachedFlow::Missing);
        };
        let corrupt = |reason: String| HotError::Corrupt {
            key: key.clone(),
            reason,
        };
        if !self
            .signer
            .verify_hex(&key, &[inc.as_bytes(), data.as_bytes()], tag)
        {
            let err = codec::DecodeError::Unverified("flow record tag does not verify");
            return Err(self.undecodable(key, err).await);
        }
        let mut flow: Flow = serde_json::from_str(data).map_err(|e| corrupt(e.to_string()))?;
        // Records written before incarnations were recorded have none: 0.
        flow.incarnation = inc
            .parse()
            .map_err(|_| corrupt(format!("incarnation {inc:?}")))?;
        Ok(CachedFlow::Present(flow))
    }

    async fn record_transition(
        &self,
        flow: &Flow,
        transition: &Transition,
        events: &[Event],
    ) -> HotResult<()> {
        let metadata =
            serde_json::to_string(&transition.metadata).map_err(|e| HotError::Corrupt {
                key: flow.flow_id.clone(),
                reason: e.to_string(),
            })?;
        let (data, tag) = self.encode_flow(flow)?;
        let mut pipe = ::redis::pipe();
        pipe.cmd("EVALSHA")
            .arg(RECORD_TRANSITION.get_hash())
            .arg(2)
            .arg(self.keys.flow(&flow.flow_id))
            .arg(self.keys.transitions(&flow.flow_id))
            .arg(flow.version)
            .arg(self.ttls.flow())
            .arg(data)
            .arg(&flow.status)
            .arg(rfc3339(flow.updated_at))
            .arg(self.ttls.transitions())
            .arg(self.ttls.config().transitions_maxlen)
            .arg(&transition.from)
            .arg(&transition.to)
            .arg(metadata)
            .arg(flow.incarnation)
            .arg(tag)
            .ignore();
        self.push_events(&mut pipe, events)?;
        let dirty = vec![
            self.keys.flow(&flow.flow_id),
            self.keys.transitions(&flow.flow_id),
        ];
        self.core
            .write(&pipe, &[RECORD_TRANSITION_SRC, APPEND_EVENT_SRC], dirty)
            .await
    }

    async fn remove_flows(&self, flows: &[DeletedFlow], events: &[Event]) -> HotResult<()> {
        let mut pipe = ::redis::pipe();
        let mut dirty = Vec::new();
        for deleted in flows {
            let id = &deleted.flow.flow_id;
            // Everything that may still hold this flow's data goes.
            let mut gone: Vec<String> = deleted
                .documents
                .iter()
                .map(|(kind, name)| self.keys.document(*kind, id, name))
                .collect();
            gone.extend(
                [DocKind::Phase, DocKind::Agent]
                    .into_iter()
                    .filter_map(|kind| self.keys.document_index(kind, id)),
            );
            gone.extend(
                deleted
                    .snapshots
                    .iter()
                    .map(|sid| self.keys.snapshot(id, sid)),
            );
            gone.push(self.keys.snapshot_list(id));
            gone.push(self.keys.hierarchy(id));
            gone.push(self.keys.transitions(id));
            // The record becomes a tombstone, so a racing repopulation cannot revive it (unless
            // the id has been registered again meanwhile: then it is the new flow's).
            let key = self.keys.flow(id);
            let inc = deleted.flow.incarnation.to_string();
            let tag = self
                .signer
                .tag_hex(&key, &[TOMBSTONE_TAG_PART, inc.as_bytes()]);
            pipe.cmd("EVALSHA")
                .arg(REMOVE_FLOW.get_hash())
                .arg(1 + gone.len())
                .arg(&key)
                .arg(&gone)
                .arg(deleted.flow.incarnation)
                .arg(TOMBSTONE_VERSION)
                .arg(TOMBSTONE_TTL.as_secs())
                .arg(tag)
                .ignore();
            // The registry and hierarchy sets mirror the ledger for other readers of this
            // layout (flowstate reads neither); they hold ids, not incarnations.
            pipe.srem(self.keys.registry(), id).ignore();
            if let Some(parent) = &deleted.flow.parent_flow_id {
                pipe.srem(self.keys.hierarchy(parent), id).ignore();
            }
            dirty.extend(gone);
            dirty.push(key);
        }
        // FLOW_DELETED keeps the event streams a little (as long as the tombstones), for
        // subscribers to learn of the delete.
        self.push_events(&mut pipe, events)?;
        self.core
            .write(&pipe, &[REMOVE_FLOW_SRC, APPEND_EVENT_SRC], dirty)
            .await
    }

    async fn forget(&self, flow_id: &str, document: Option<(DocKind, &str)>) -> HotResult<()> {
        let flow = self.keys.flow(flow_id);
        let document = document.map(|(kind, name)| self.keys.document(kind, flow_id, name));
        let mut pipe = ::redis::pipe();
        pipe.cmd("EVALSHA")
            .arg(FORGET.get_hash())
            .arg(2)
            .arg(&flow)
            .arg(document.as_ref().unwrap_or(&flow))
            .ignore();
        let mut keys = vec![flow];
        keys.extend(document);
        self.core.write(&pipe, &[FORGET_SRC], keys).await
    }
}
