//! A flow's documents: its state (reference §1.2 `flow_state_cache`), its phase states
//! (`save_phase_state`) and its agents' results (`cache_agent_results`). All three are written
//! through (ledger, then hot tier in one round trip) and read through (hot tier, then ledger,
//! repopulating); their differences (key names, TTL rules, the index set that lists them, what
//! a write invalidates) live in [`DocKind`] and the hot tier.
//!
//! - The state's TTL follows the flow's status (active 300 s, completed 3600 s, failed 1800 s
//!   by default); saving a phase invalidates it, as the reference does.
//! - Phases have a TTL per phase name and are listed in `discovery:state:{id}:phases`.
//! - Agent results live 3600 s for agents named `*analyzer*`, else 1800 s. (The cross-flow
//!   agent result cache, keyed by a hash of the input, is a separate capability.)

use serde_json::{Map, Value};

use super::Flowstate;
use super::audit::Audited;
use super::sealing::refuse_envelope_lookalike;
use crate::error::{Error, Result};
use crate::hot::keys::Keys;
use crate::model::{DocKind, Document, ids, now};

impl Flowstate {
    /// Replaces the flow's state.
    pub async fn put_state(&self, flow_id: &str, state: Map<String, Value>) -> Result<Document> {
        self.put_document(DocKind::State, flow_id, "", state).await
    }

    /// The flow's state.
    pub async fn get_state(&self, flow_id: &str) -> Result<Document> {
        self.get_document(DocKind::State, flow_id, "").await
    }

    /// Saves a phase's state.
    pub async fn put_phase(
        &self,
        flow_id: &str,
        phase: &str,
        state: Map<String, Value>,
    ) -> Result<Document> {
        self.put_document(DocKind::Phase, flow_id, phase, state)
            .await
    }

    /// A phase's state.
    pub async fn get_phase(&self, flow_id: &str, phase: &str) -> Result<Document> {
        self.get_document(DocKind::Phase, flow_id, phase).await
    }

    /// The phases saved for a flow.
    pub async fn list_phases(&self, flow_id: &str) -> Result<Vec<String>> {
        self.list_documents(DocKind::Phase, flow_id).await
    }

    /// Stores an agent's results for a flow.
    pub async fn put_agent_results(
        &self,
        flow_id: &str,
        agent: &str,
        results: Map<String, Value>,
    ) -> Result<Document> {
        self.put_document(DocKind::Agent, flow_id, agent, results)
            .await
    }

    /// An agent's results for a flow.
    pub async fn get_agent_results(&self, flow_id: &str, agent: &str) -> Result<Document> {
        self.get_document(DocKind::Agent, flow_id, agent).await
    }

    /// The agents with results for a flow.
    pub async fn list_agents(&self, flow_id: &str) -> Result<Vec<String>> {
        self.list_documents(DocKind::Agent, flow_id).await
    }
}

impl Flowstate {
    /// Writes a document: ledger first, then the hot tier.
    pub(crate) async fn put_document(
        &self,
        kind: DocKind,
        flow_id: &str,
        name: &str,
        body: Map<String, Value>,
    ) -> Result<Document> {
        ids::validate("flow_id", flow_id)?;
        if kind != DocKind::State {
            ids::validate(kind.name_field(), name)?;
        }
        let (this, flow_id, name) = (self.clone(), flow_id.to_string(), name.to_string());
        self.detached(async move { this.put_document_now(kind, &flow_id, &name, body).await })
            .await
    }

    async fn put_document_now(
        &self,
        kind: DocKind,
        flow_id: &str,
        name: &str,
        body: Map<String, Value>,
    ) -> Result<Document> {
        refuse_envelope_lookalike(&body)?;
        let mut known = self.sensitivity(flow_id).await?;
        let (doc, owner) = loop {
            let stored = self.seal_if(known.is_some_and(|(_, s)| s), body.clone())?;
            let written = self
                .ledger()
                .put_document(kind, flow_id, name, &stored, now())
                .await;
            let (doc, owner) = self
                .unless_unknown(written, flow_id, Some((kind, name)))
                .await?;
            if let Some(relearned) = self.reseal(flow_id, known, owner.incarnation).await? {
                known = Some(relearned);
                continue;
            }
            break (doc, owner);
        };
        let started = std::time::Instant::now();
        let written = self
            .hot_write(
                "documents.put",
                self.hot().put_document(kind, &doc, &owner, true, &[]),
            )
            .await;
        let key = Keys::default().document(kind, flow_id, name);
        let audited = if written {
            Audited::Done
        } else {
            Audited::Failed("hot tier unavailable")
        };
        self.audit(flow_id, &key, "SET", started, audited);
        Ok(Document { body, ..doc })
    }

    /// Reads a document: hot tier first, then the ledger (repopulating the hot tier).
    pub(crate) async fn get_document(
        &self,
        kind: DocKind,
        flow_id: &str,
        name: &str,
    ) -> Result<Document> {
        ids::validate("flow_id", flow_id)?;
        if kind != DocKind::State {
            ids::validate(kind.name_field(), name)?;
        }
        let epoch = self.hot().epoch();
        let started = std::time::Instant::now();
        let found = self
            .hot_read(
                "documents.get",
                self.hot().get_document(kind, flow_id, name),
            )
            .await;
        let audited = match &found {
            Some(Some(_)) => Audited::Hit,
            Some(None) => Audited::Miss,
            None => Audited::Failed("hot tier unavailable"),
        };
        let key = Keys::default().document(kind, flow_id, name);
        self.audit(flow_id, &key, "GET", started, audited);
        if let Some(Some(doc)) = found {
            return self.opened(doc);
        }
        match self.ledger().get_document(kind, flow_id, name).await? {
            Some((doc, owner)) => {
                self.hot_fill(
                    epoch,
                    "documents.cache",
                    self.hot().put_document(kind, &doc, &owner, false, &[]),
                )
                .await;
                self.opened(doc)
            }
            None => Err(self.missing(kind, flow_id, name).await),
        }
    }

    /// `doc` with its body opened if sealed.
    pub(super) fn opened(&self, doc: Document) -> Result<Document> {
        let body = self.open_body(doc.body)?;
        Ok(Document { body, ..doc })
    }

    /// Names of a flow's documents of one kind, sorted.
    pub(crate) async fn list_documents(&self, kind: DocKind, flow_id: &str) -> Result<Vec<String>> {
        ids::validate("flow_id", flow_id)?;
        let names = self.ledger().list_documents(kind, flow_id).await?;
        if names.is_empty() && self.ledger().get_flow(flow_id).await?.is_none() {
            return Err(Error::FlowNotFound(flow_id.to_string()));
        }
        Ok(names)
    }

    /// The right "not found": no such flow, or no such document.
    async fn missing(&self, kind: DocKind, flow_id: &str, name: &str) -> Error {
        match self.ledger().get_flow(flow_id).await {
            Ok(Some(_)) => kind.not_found(flow_id, name),
            Ok(None) => Error::FlowNotFound(flow_id.to_string()),
            Err(e) => e,
        }
    }
}
