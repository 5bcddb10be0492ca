//! Named JSON documents attached to a flow — its state, its phase states and its agents' results
//! (the reference's §1.2 and §1.3). They share one storage shape: a JSON object per
//! (flow, kind, name), written through (ledger, then hot tier in one round trip) and read
//! through (hot tier, then ledger, repopulating). Their differences — key names, TTL rules, the
//! index set that lists them, what a write invalidates — live in [`DocKind`] and the hot tier.
//! [`crate::state`], [`crate::phases`] and [`crate::agents`] are the public faces.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::ids;
use crate::service::Flowstate;

/// Which kind of document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DocKind {
    /// The flow's state (one per flow, name `""`).
    State,
    /// A phase's state (name = phase).
    Phase,
    /// An agent's results for this flow (name = agent).
    Agent,
}

impl DocKind {
    /// Stored name of the kind.
    pub fn as_str(self) -> &'static str {
        match self {
            DocKind::State => "state",
            DocKind::Phase => "phase",
            DocKind::Agent => "agent",
        }
    }

    /// Parses a stored kind name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "state" => Some(DocKind::State),
            "phase" => Some(DocKind::Phase),
            "agent" => Some(DocKind::Agent),
            _ => None,
        }
    }

    /// What the document's name is called in ids and errors.
    fn name_field(self) -> &'static str {
        match self {
            DocKind::State => "state",
            DocKind::Phase => "phase",
            DocKind::Agent => "agent",
        }
    }

    fn not_found(self, flow_id: &str, name: &str) -> Error {
        match self {
            DocKind::State => Error::DocumentNotFound {
                code: "state_not_found",
                message: format!("flow {flow_id} has no state"),
            },
            DocKind::Phase => Error::DocumentNotFound {
                code: "phase_not_found",
                message: format!("flow {flow_id} has no phase {name}"),
            },
            DocKind::Agent => Error::DocumentNotFound {
                code: "agent_results_not_found",
                message: format!("flow {flow_id} has no results of agent {name}"),
            },
        }
    }
}

/// A stored document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Document {
    /// The flow it belongs to.
    pub flow_id: String,
    /// Phase or agent name; empty for the state.
    pub name: String,
    /// The JSON object.
    pub body: Map<String, Value>,
    /// When it was written.
    #[serde(with = "time::serde::rfc3339")]
    pub saved_at: OffsetDateTime,
    /// Grows with every write of this document.
    pub version: i64,
}

/// The flow a document belongs to, as the ledger saw it in the same statement as the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// Its status (the state document's cache TTL depends on it).
    pub status: String,
    /// Its [`Flow::incarnation`](crate::flows::Flow::incarnation): the hot tier refuses a
    /// document of a flow that has since been deleted, or deleted and registered again.
    pub incarnation: i64,
}

impl Owner {
    /// The owner as recorded in `flow`.
    pub fn of(flow: &crate::flows::Flow) -> Self {
        Owner {
            status: flow.status.clone(),
            incarnation: flow.incarnation,
        }
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
        let written = self
            .ledger()
            .put_document(kind, flow_id, name, &body, crate::flows::now())
            .await;
        let (doc, owner) = self
            .unless_unknown(written, flow_id, Some((kind, name)))
            .await?;
        self.hot_write(
            "documents.put",
            self.hot().put_document(kind, &doc, &owner, true),
        )
        .await;
        Ok(doc)
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
        if let Some(Some(doc)) = self
            .hot_read(
                "documents.get",
                self.hot().get_document(kind, flow_id, name),
            )
            .await
        {
            return Ok(doc);
        }
        match self.ledger().get_document(kind, flow_id, name).await? {
            Some((doc, owner)) => {
                self.hot_fill(
                    epoch,
                    "documents.cache",
                    self.hot().put_document(kind, &doc, &owner, false),
                )
                .await;
                Ok(doc)
            }
            None => Err(self.missing(kind, flow_id, name).await),
        }
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
