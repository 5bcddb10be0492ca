//! Named JSON documents attached to a flow: its state, its phase states and its agents' results
//! (the reference's §1.2 and §1.3). They share one storage shape, a JSON object per
//! (flow, kind, name); [`DocKind`] says which of the three a document is.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use super::flows::Flow;
use crate::error::Error;

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
    pub fn name_field(self) -> &'static str {
        self.as_str()
    }

    /// The "not found" error of a missing document of this kind on an existing flow.
    pub fn not_found(self, flow_id: &str, name: &str) -> Error {
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

impl Document {
    /// The document a write just stored as version `version` (both ledgers answer so).
    pub fn written(
        flow_id: &str,
        name: &str,
        body: &Map<String, Value>,
        at: OffsetDateTime,
        version: i64,
    ) -> Self {
        Document {
            flow_id: flow_id.to_string(),
            name: name.to_string(),
            body: body.clone(),
            saved_at: at,
            version,
        }
    }
}

/// The flow a document belongs to, as the ledger saw it in the same statement as the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// Its status (the state document's cache TTL depends on it).
    pub status: String,
    /// Its [`Flow::incarnation`]: the hot tier refuses a document of a flow that has since been
    /// deleted, or deleted and registered again.
    pub incarnation: i64,
}

impl Owner {
    /// The owner as recorded in `flow`.
    pub fn of(flow: &Flow) -> Self {
        Owner {
            status: flow.status.clone(),
            incarnation: flow.incarnation,
        }
    }
}
