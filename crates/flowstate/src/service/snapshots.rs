//! Snapshots with lineage and time travel (reference §1.3 `save_state_snapshot`): take, read,
//! list, restore (roll the flow's state back, emitting `STATE_RESTORED`) and fork (a new child
//! flow whose state starts from the snapshot), as LangGraph and CrewAI users expect. The newest
//! [`KEEP_SNAPSHOTS`] per flow are kept, in both tiers.

use serde_json::{Map, Value, json};

use super::Flowstate;
use super::sealing::refuse_envelope_lookalike;
use crate::error::{Error, Result};
use crate::model::events::{FLOW_FORKED, FLOW_REGISTERED, STATE_RESTORED};
use crate::model::flows::INITIAL_STATUS;
use crate::model::snapshots::{KEEP_SNAPSHOTS, RESERVED_SNAPSHOT_ID};
use crate::model::{DocKind, Document, Flow, ForkRequest, Owner, Snapshot, ids, now};

impl Flowstate {
    /// Takes a snapshot of `state`; older snapshots beyond [`KEEP_SNAPSHOTS`] are dropped.
    pub async fn create_snapshot(
        &self,
        flow_id: &str,
        snapshot_id: Option<String>,
        state: Map<String, Value>,
    ) -> Result<Snapshot> {
        ids::validate("flow_id", flow_id)?;
        let snapshot_id = match snapshot_id {
            Some(id) => {
                ids::validate("snapshot_id", &id)?;
                if id == RESERVED_SNAPSHOT_ID {
                    return Err(Error::InvalidId {
                        field: "snapshot_id",
                        reason: format!(
                            "{RESERVED_SNAPSHOT_ID:?} is reserved (it names the snapshot list in Redis)"
                        ),
                    });
                }
                id
            }
            None => uuid::Uuid::now_v7().to_string(),
        };
        refuse_envelope_lookalike(&state)?;
        let (this, flow_id) = (self.clone(), flow_id.to_string());
        self.detached(async move {
            let known = this.sensitivity(&flow_id).await?;
            let stored = this.seal_if(known.is_some_and(|(_, s)| s), state.clone())?;
            let mut taken = this
                .ledger()
                .create_snapshot(&flow_id, &snapshot_id, &stored, now(), KEEP_SNAPSHOTS)
                .await?;
            // Taken for another registration of the id than the one looked up, which is
            // sensitive: sealed now, before any tier serves it.
            if this
                .reseal(&flow_id, known, taken.owner.incarnation)
                .await?
                .is_some()
            {
                let sealed = this.seal_if(true, state.clone())?;
                this.ledger()
                    .replace_snapshot_state(&flow_id, &snapshot_id, &sealed)
                    .await?;
                taken.snapshot.state = sealed;
            }
            this.hot_write(
                "snapshots.create",
                this.hot()
                    .put_snapshot(&taken.snapshot, &taken.evicted, &taken.owner, true),
            )
            .await;
            Ok(Snapshot {
                state,
                ..taken.snapshot
            })
        })
        .await
    }

    /// A snapshot.
    pub async fn get_snapshot(&self, flow_id: &str, snapshot_id: &str) -> Result<Snapshot> {
        ids::validate("flow_id", flow_id)?;
        ids::validate("snapshot_id", snapshot_id)?;
        let epoch = self.hot().epoch();
        if let Some(Some(s)) = self
            .hot_read(
                "snapshots.get",
                self.hot().get_snapshot(flow_id, snapshot_id),
            )
            .await
        {
            return self.opened_snapshot(s);
        }
        match self.ledger().get_snapshot(flow_id, snapshot_id).await? {
            Some((s, owner)) => {
                self.hot_fill(
                    epoch,
                    "snapshots.cache",
                    self.hot().put_snapshot(&s, &[], &owner, false),
                )
                .await;
                self.opened_snapshot(s)
            }
            None => Err(self.snapshot_missing(flow_id, snapshot_id).await),
        }
    }

    /// A flow's snapshot ids, newest first.
    pub async fn list_snapshots(&self, flow_id: &str) -> Result<Vec<String>> {
        ids::validate("flow_id", flow_id)?;
        let ids = self.ledger().list_snapshots(flow_id).await?;
        if ids.is_empty() && self.ledger().get_flow(flow_id).await?.is_none() {
            return Err(Error::FlowNotFound(flow_id.to_string()));
        }
        Ok(ids)
    }

    /// Rolls the flow's state back to a snapshot; the flow's next snapshot descends from it.
    /// Emits `STATE_RESTORED` on the flow's event stream.
    pub async fn restore_snapshot(
        &self,
        flow_id: &str,
        snapshot_id: &str,
    ) -> Result<(Flow, Document)> {
        ids::validate("flow_id", flow_id)?;
        ids::validate("snapshot_id", snapshot_id)?;
        let (this, flow_id, snapshot_id) =
            (self.clone(), flow_id.to_string(), snapshot_id.to_string());
        self.detached(async move { this.restore_snapshot_now(&flow_id, &snapshot_id).await })
            .await
    }

    async fn restore_snapshot_now(
        &self,
        flow_id: &str,
        snapshot_id: &str,
    ) -> Result<(Flow, Document)> {
        let written = self
            .ledger()
            .restore_snapshot(flow_id, snapshot_id, now())
            .await;
        let (flow, state) = self
            .unless_unknown(written, flow_id, Some((DocKind::State, "")))
            .await?;
        let restored = self.event(
            flow_id,
            STATE_RESTORED,
            json!({"snapshot_id": snapshot_id, "state_version": state.version}),
        );
        let events = self.events_to_carry(vec![restored]).await;
        self.hot_write_with_events(
            "snapshots.restore",
            events.clone(),
            self.hot()
                .put_document(DocKind::State, &state, &Owner::of(&flow), true, &events),
        )
        .await;
        Ok((flow, self.opened(state)?))
    }

    /// `s` with its state opened if sealed.
    fn opened_snapshot(&self, s: Snapshot) -> Result<Snapshot> {
        let state = self.open_body(s.state)?;
        Ok(Snapshot { state, ..s })
    }

    /// Branches a new child flow whose state starts from a snapshot.
    pub async fn fork_snapshot(
        &self,
        flow_id: &str,
        snapshot_id: &str,
        req: ForkRequest,
    ) -> Result<(Flow, Document)> {
        ids::validate("flow_id", flow_id)?;
        ids::validate("snapshot_id", snapshot_id)?;
        let child_id = match req.flow_id {
            Some(id) => {
                ids::validate("flow_id", &id)?;
                id
            }
            None => uuid::Uuid::now_v7().to_string(),
        };
        if let Some(t) = &req.flow_type {
            ids::validate("flow_type", t)?;
        }
        let at = now();
        let mut metadata = Map::new();
        metadata.insert(
            "forked_from".into(),
            json!({"flow_id": flow_id, "snapshot_id": snapshot_id}),
        );
        let child = Flow {
            flow_id: child_id,
            flow_type: req.flow_type.unwrap_or_default(),
            parent_flow_id: Some(flow_id.to_string()),
            status: INITIAL_STATUS.to_string(),
            metadata,
            created_at: at,
            updated_at: at,
            version: 1,
            sensitive: false, // the source flow's, copied by the ledger
            incarnation: 0,   // assigned by the ledger
        };
        let (this, flow_id, snapshot_id) =
            (self.clone(), flow_id.to_string(), snapshot_id.to_string());
        self.detached(async move {
            let (child, state) = this
                .ledger()
                .fork_snapshot(&flow_id, &snapshot_id, &child)
                .await?;
            this.remember(&child.flow_id, child.incarnation, child.sensitive);
            let events = vec![
                this.event(
                    &child.flow_id,
                    FLOW_REGISTERED,
                    super::flows::registered_payload(&child),
                ),
                this.event(
                    &flow_id,
                    FLOW_FORKED,
                    json!({"child_flow_id": child.flow_id, "snapshot_id": snapshot_id}),
                ),
            ];
            let events = this.events_to_carry(events).await;
            this.hot_write_with_events(
                "snapshots.fork",
                events.clone(),
                this.hot().register_flow(&child, &events),
            )
            .await;
            this.hot_write(
                "snapshots.fork_state",
                this.hot()
                    .put_document(DocKind::State, &state, &Owner::of(&child), true, &[]),
            )
            .await;
            let state = this.opened(state)?;
            Ok((child, state))
        })
        .await
    }

    async fn snapshot_missing(&self, flow_id: &str, snapshot_id: &str) -> Error {
        match self.ledger().get_flow(flow_id).await {
            Ok(Some(_)) => Error::SnapshotNotFound {
                flow_id: flow_id.to_string(),
                snapshot_id: snapshot_id.to_string(),
            },
            Ok(None) => Error::FlowNotFound(flow_id.to_string()),
            Err(e) => e,
        }
    }
}
