//! The flow registry (the reference's "orchestrator", §1.1): register, get, list, children,
//! delete.
//!
//! Writes go to the ledger in one statement, then to the hot tier in one round trip; a hot-tier
//! failure never fails a write the ledger accepted. Reads try the hot tier, fall through to the
//! ledger and repopulate the hot tier (newer versions always win there, so a slow repopulation
//! can never overwrite a fresher write).

use super::Flowstate;
use super::audit::Audited;
use crate::error::{Error, Result};
use crate::hot::CachedFlow;
use crate::hot::keys::Keys;
use crate::model::flows::{INITIAL_STATUS, MAX_PAGE};
use serde_json::json;

use crate::model::events::{FLOW_DELETED, FLOW_REGISTERED};
use crate::model::{Flow, FlowFilter, FlowPage, NewFlow, ids, now};

impl Flowstate {
    /// Registers a flow: status `initializing`, version 1; the parent must exist.
    pub async fn register_flow(&self, new: NewFlow) -> Result<Flow> {
        let this = self.clone();
        self.detached(async move { this.register_flow_now(new).await })
            .await
    }

    pub(super) async fn register_flow_now(&self, new: NewFlow) -> Result<Flow> {
        let flow_id = match new.flow_id {
            Some(id) => {
                ids::validate("flow_id", &id)?;
                id
            }
            None => uuid::Uuid::now_v7().to_string(),
        };
        ids::validate("flow_type", &new.flow_type)?;
        if let Some(parent) = &new.parent_flow_id {
            ids::validate("parent_flow_id", parent)?;
            if *parent == flow_id {
                return Err(Error::InvalidInput(
                    "a flow cannot be its own parent".into(),
                ));
            }
        }
        if new.sensitive && self.inner.sealing.keyring.is_empty() {
            return Err(Error::InvalidInput(
                "sensitive flows need encryption keys (FLOWSTATE_ENCRYPTION_KEYS), and none is configured".into(),
            ));
        }
        let at = now();
        let mut flow = Flow {
            flow_id,
            flow_type: new.flow_type,
            parent_flow_id: new.parent_flow_id,
            status: INITIAL_STATUS.to_string(),
            metadata: new.metadata.unwrap_or_default(),
            created_at: at,
            updated_at: at,
            version: 1,
            sensitive: new.sensitive,
            incarnation: 0,
        };
        flow.incarnation = self.ledger().insert_flow(&flow).await?;
        self.remember(&flow.flow_id, flow.incarnation, flow.sensitive);
        let registered = self.event(&flow.flow_id, FLOW_REGISTERED, registered_payload(&flow));
        let events = self.events_to_carry(vec![registered]).await;
        self.hot_write_with_events(
            "flows.register",
            events.clone(),
            self.hot().register_flow(&flow, &events),
        )
        .await;
        Ok(flow)
    }

    /// The flow with this id, from the hot tier when cached.
    pub async fn get_flow(&self, flow_id: &str) -> Result<Flow> {
        ids::validate("flow_id", flow_id)?;
        let epoch = self.hot().epoch();
        let started = std::time::Instant::now();
        let found = self
            .hot_read("flows.get", self.hot().get_flow(flow_id))
            .await;
        let audited = match &found {
            Some(CachedFlow::Present(_) | CachedFlow::Deleted) => Audited::Hit,
            Some(CachedFlow::Missing) => Audited::Miss,
            None => Audited::Failed("hot tier unavailable"),
        };
        self.audit(
            flow_id,
            &Keys::default().flow(flow_id),
            "GET",
            started,
            audited,
        );
        match found {
            Some(CachedFlow::Present(flow)) => return Ok(flow),
            Some(CachedFlow::Deleted) => return Err(Error::FlowNotFound(flow_id.to_string())),
            Some(CachedFlow::Missing) | None => {}
        }
        let flow = self
            .ledger()
            .get_flow(flow_id)
            .await?
            .ok_or_else(|| Error::FlowNotFound(flow_id.to_string()))?;
        self.hot_fill(epoch, "flows.cache", self.hot().cache_flow(&flow))
            .await;
        Ok(flow)
    }

    /// Flows matching `filter`, oldest registration first, one page at a time.
    pub async fn list_flows(&self, filter: &FlowFilter) -> Result<FlowPage> {
        for (field, value) in [
            ("status", &filter.status),
            ("flow_type", &filter.flow_type),
            ("parent_flow_id", &filter.parent_flow_id),
        ] {
            if let Some(v) = value {
                ids::validate(field, v)?;
            }
        }
        let limit = filter.limit.unwrap_or(100);
        if limit == 0 || limit > MAX_PAGE {
            return Err(Error::InvalidInput(format!(
                "limit must be within 1..={MAX_PAGE}"
            )));
        }
        let after = match &filter.cursor {
            None => None,
            Some(c) => Some(decode_cursor(c)?),
        };
        let mut rows = self.ledger().list_flows(filter, after, limit + 1).await?;
        let next_cursor = if rows.len() > limit as usize {
            rows.truncate(limit as usize);
            rows.last().map(|(seq, _)| encode_cursor(*seq))
        } else {
            None
        };
        Ok(FlowPage {
            flows: rows.into_iter().map(|(_, flow)| flow).collect(),
            next_cursor,
        })
    }

    /// Ids of the children of a flow: direct ones, or the whole subtree when `recursive`
    /// (breadth-first: children before grandchildren).
    pub async fn children(&self, flow_id: &str, recursive: bool) -> Result<Vec<String>> {
        ids::validate("flow_id", flow_id)?;
        let children = self.ledger().children(flow_id, recursive).await?;
        // An empty answer is ambiguous: a leaf, or no such flow. Only then ask.
        if children.is_empty() && self.ledger().get_flow(flow_id).await?.is_none() {
            return Err(Error::FlowNotFound(flow_id.to_string()));
        }
        Ok(children)
    }

    /// Deletes a flow with its transitions. A flow with children is refused unless
    /// `recursive`, which deletes the whole subtree.
    pub async fn delete_flow(&self, flow_id: &str, recursive: bool) -> Result<()> {
        ids::validate("flow_id", flow_id)?;
        let (this, flow_id) = (self.clone(), flow_id.to_string());
        self.detached(async move { this.delete_flow_now(&flow_id, recursive).await })
            .await
    }

    pub(super) async fn delete_flow_now(&self, flow_id: &str, recursive: bool) -> Result<()> {
        let deleted = self.ledger().delete_flow(flow_id, recursive).await?;
        for d in &deleted {
            self.forget_sensitivity(&d.flow.flow_id);
            // A LangGraph thread's flow: the thread goes with it.
            if d.flow.flow_type == super::checkpoints::THREAD_FLOW_TYPE {
                self.forget_thread(&d.flow.flow_id);
                self.ledger().delete_thread(&d.flow.flow_id).await?;
            }
        }
        let events = deleted
            .iter()
            .map(|d| {
                self.event(
                    &d.flow.flow_id,
                    FLOW_DELETED,
                    json!({"requested_for": flow_id, "recursive": recursive}),
                )
            })
            .collect();
        let events = self.events_to_carry(events).await;
        self.hot_write_with_events(
            "flows.delete",
            events.clone(),
            self.hot().remove_flows(&deleted, &events),
        )
        .await;
        Ok(())
    }
}

/// What `FLOW_REGISTERED` says of a new flow.
pub(super) fn registered_payload(flow: &Flow) -> serde_json::Value {
    json!({
        "flow_type": flow.flow_type,
        "parent_flow_id": flow.parent_flow_id,
        "status": flow.status,
        "incarnation": flow.incarnation,
    })
}

/// Cursors are opaque to callers; inside they are the ledger's registration sequence.
fn encode_cursor(seq: i64) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("s{seq}"))
}

fn decode_cursor(cursor: &str) -> Result<i64> {
    use base64::Engine as _;
    let invalid = || Error::InvalidInput(format!("cursor {cursor:?} is not valid"));
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| invalid())?;
    std::str::from_utf8(&bytes)
        .ok()
        .and_then(|s| s.strip_prefix('s'))
        .and_then(|s| s.parse().ok())
        .ok_or_else(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        assert_eq!(decode_cursor(&encode_cursor(42)).unwrap(), 42);
        assert!(decode_cursor("not a cursor").is_err());
        assert!(decode_cursor("").is_err());
    }
}
