//! SQL both ledgers share for documents (state, phases, agent results).

use serde_json::{Map, Value};
use sqlx::types::Json;
use time::OffsetDateTime;

use crate::model::{Document, Owner};

/// SQL of a document read (shared: `$n` placeholders work in SQLite too).
pub(in crate::ledger) const GET_DOCUMENT: &str = "SELECT d.flow_id, d.name, d.body, d.saved_at, d.version, f.status, \
     f.seq AS incarnation FROM flow_documents d JOIN flows f ON f.flow_id = d.flow_id \
     WHERE d.flow_id = $1 AND d.kind = $2 AND d.name = $3";

/// SQL of a document upsert; the version grows by one per write.
pub(in crate::ledger) const PUT_DOCUMENT: &str = "INSERT INTO flow_documents (flow_id, kind, name, body, saved_at, version) \
     VALUES ($1, $2, $3, $4, $5, 1) \
     ON CONFLICT (flow_id, kind, name) DO UPDATE \
     SET body = excluded.body, saved_at = excluded.saved_at, version = flow_documents.version + 1 \
     RETURNING version";

/// SQL of a document listing.
pub(in crate::ledger) const LIST_DOCUMENTS: &str =
    "SELECT name FROM flow_documents WHERE flow_id = $1 AND kind = $2 ORDER BY name";

/// A `flow_documents` row joined with its flow's status and registration number.
#[derive(sqlx::FromRow)]
pub(in crate::ledger) struct DocumentRow {
    flow_id: String,
    name: String,
    body: Json<Map<String, Value>>,
    saved_at: OffsetDateTime,
    version: i64,
    status: String,
    incarnation: i64,
}

impl DocumentRow {
    pub(in crate::ledger) fn into_document(self) -> (Document, Owner) {
        (
            Document {
                flow_id: self.flow_id,
                name: self.name,
                body: self.body.0,
                saved_at: self.saved_at,
                version: self.version,
            },
            Owner {
                status: self.status,
                incarnation: self.incarnation,
            },
        )
    }
}
