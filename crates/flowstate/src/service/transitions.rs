//! Status transitions (the reference's state manager, §1.3): `from -> to` is a compare-and-set
//! on the flow's current status, durable in the ledger first (status change and history row in
//! one statement or transaction), then appended to `flow:transitions:{id}` and the cached flow
//! updated in one Redis round trip.

use serde_json::json;

use super::Flowstate;
use crate::error::Result;
use crate::model::events::STATE_TRANSITION;
use crate::model::transitions::MAX_HISTORY;
use crate::model::{Flow, Transition, TransitionRequest, ids, now};

impl Flowstate {
    /// Moves a flow from `req.from` to `req.to` if it is still in `req.from`; otherwise
    /// [`crate::Error::StaleTransition`] with the current status. Of concurrent transitions from
    /// the same status exactly one wins.
    pub async fn transition(
        &self,
        flow_id: &str,
        req: TransitionRequest,
    ) -> Result<(Transition, Flow)> {
        ids::validate("flow_id", flow_id)?;
        ids::validate("from", &req.from)?;
        ids::validate("to", &req.to)?;
        let (this, flow_id) = (self.clone(), flow_id.to_string());
        self.detached(async move { this.transition_now(&flow_id, req).await })
            .await
    }

    async fn transition_now(
        &self,
        flow_id: &str,
        req: TransitionRequest,
    ) -> Result<(Transition, Flow)> {
        let metadata = req.metadata.unwrap_or_default();
        let written = self
            .ledger()
            .transition(flow_id, &req.from, &req.to, &metadata, now())
            .await;
        let (transition, flow) = self.unless_unknown(written, flow_id, None).await?;
        let event = self.event(
            flow_id,
            STATE_TRANSITION,
            json!({
                "from": transition.from,
                "to": transition.to,
                "metadata": transition.metadata,
                "version": flow.version,
            }),
        );
        let events = self.events_to_carry(vec![event]).await;
        self.hot_write_with_events(
            "transitions.record",
            events.clone(),
            self.hot().record_transition(&flow, &transition, &events),
        )
        .await;
        Ok((transition, flow))
    }

    /// A flow's transitions with id greater than `after`, oldest first, at most `limit`.
    pub async fn transitions(
        &self,
        flow_id: &str,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Transition>> {
        ids::validate("flow_id", flow_id)?;
        if limit == 0 || limit > MAX_HISTORY {
            return Err(crate::Error::InvalidInput(format!(
                "limit must be within 1..={MAX_HISTORY}"
            )));
        }
        let history = self
            .ledger()
            .transitions(flow_id, after.unwrap_or(0), limit)
            .await?;
        // An empty page is ambiguous: no (more) transitions, or no such flow. Only then ask.
        if history.is_empty() && self.ledger().get_flow(flow_id).await?.is_none() {
            return Err(crate::Error::FlowNotFound(flow_id.to_string()));
        }
        Ok(history)
    }
}
