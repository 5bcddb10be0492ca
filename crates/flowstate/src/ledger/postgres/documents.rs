//! A flow's documents on PostgreSQL: saves that arrive together share one upsert
//! ([`super::batch`]); reads are single statements joined with the flow.

use async_trait::async_trait;
use serde_json::{Map, Value};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;

use super::PostgresLedger;
use super::batch::{BatchOp, by_ord};
use crate::error::{Error, Result};
use crate::ledger::DocumentLedger;
use crate::ledger::sql::documents::{DocumentRow, GET_DOCUMENT, LIST_DOCUMENTS};
use crate::model::{DocKind, Document, Owner};

#[async_trait]
impl DocumentLedger for PostgresLedger {
    async fn put_document(
        &self,
        kind: DocKind,
        flow_id: &str,
        name: &str,
        body: &Map<String, Value>,
        at: OffsetDateTime,
    ) -> Result<(Document, Owner)> {
        self.documents
            .submit(DocumentReq {
                kind,
                flow_id: flow_id.to_string(),
                name: name.to_string(),
                body: body.clone(),
                at,
            })
            .await
    }

    async fn get_document(
        &self,
        kind: DocKind,
        flow_id: &str,
        name: &str,
    ) -> Result<Option<(Document, Owner)>> {
        let row: Option<DocumentRow> = sqlx::query_as(GET_DOCUMENT)
            .bind(flow_id)
            .bind(kind.as_str())
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(DocumentRow::into_document))
    }

    async fn list_documents(&self, kind: DocKind, flow_id: &str) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(LIST_DOCUMENTS)
            .bind(flow_id)
            .bind(kind.as_str())
            .fetch_all(&self.pool)
            .await?)
    }
}

/// A document save waiting for its batch.
pub(super) struct DocumentReq {
    pub(super) kind: DocKind,
    pub(super) flow_id: String,
    pub(super) name: String,
    pub(super) body: Map<String, Value>,
    pub(super) at: OffsetDateTime,
}

/// Document saves: one upsert over `unnest(…)`, joined to `flows` so a missing flow inserts
/// nothing, returning each new version with the flow's status from the same snapshot.
pub(super) struct Documents;

#[async_trait]
impl BatchOp for Documents {
    type Req = DocumentReq;
    type Out = (Document, Owner);

    fn key(req: &DocumentReq) -> String {
        // The unit separator cannot occur in ids (see `model::ids`).
        format!(
            "{}\u{1f}{}\u{1f}{}",
            req.flow_id,
            req.kind.as_str(),
            req.name
        )
    }

    async fn batch(
        conn: &mut PgConnection,
        reqs: &[DocumentReq],
    ) -> std::result::Result<Vec<Result<(Document, Owner)>>, sqlx::Error> {
        let rows: Vec<(i64, i64, String, i64)> = sqlx::query_as(
            "WITH r AS ( \
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[], \
                 $5::timestamptz[]) WITH ORDINALITY AS r(flow_id, kind, name, body, at, ord)), \
             up AS ( \
               INSERT INTO flow_documents (flow_id, kind, name, body, saved_at, version) \
               SELECT r.flow_id, r.kind, r.name, r.body, r.at, 1 \
               FROM r JOIN flows f ON f.flow_id = r.flow_id ORDER BY r.ord \
               ON CONFLICT (flow_id, kind, name) DO UPDATE \
               SET body = excluded.body, saved_at = excluded.saved_at, \
                   version = flow_documents.version + 1 \
               RETURNING flow_id, kind, name, version) \
             SELECT r.ord, up.version, f.status, f.seq FROM up \
             JOIN r ON r.flow_id = up.flow_id AND r.kind = up.kind AND r.name = up.name \
             JOIN flows f ON f.flow_id = r.flow_id",
        )
        .bind(reqs.iter().map(|r| r.flow_id.as_str()).collect::<Vec<_>>())
        .bind(reqs.iter().map(|r| r.kind.as_str()).collect::<Vec<_>>())
        .bind(reqs.iter().map(|r| r.name.as_str()).collect::<Vec<_>>())
        .bind(reqs.iter().map(|r| Json(&r.body)).collect::<Vec<_>>())
        .bind(reqs.iter().map(|r| r.at).collect::<Vec<_>>())
        .fetch_all(&mut *conn)
        .await?;
        let saved = by_ord(
            reqs.len(),
            rows.into_iter().map(|(ord, version, status, incarnation)| {
                (
                    ord,
                    (
                        version,
                        Owner {
                            status,
                            incarnation,
                        },
                    ),
                )
            }),
        );
        Ok(reqs
            .iter()
            .zip(saved)
            .map(|(r, saved)| match saved {
                Some((version, owner)) => Ok((
                    Document::written(&r.flow_id, &r.name, &r.body, r.at, version),
                    owner,
                )),
                None => Err(Error::FlowNotFound(r.flow_id.clone())),
            })
            .collect())
    }

    async fn single(pool: &PgPool, r: &DocumentReq) -> Result<(Document, Owner)> {
        // One statement: the upsert, and the flow read in the same snapshot.
        let row: Option<(i64, String, i64)> = sqlx::query_as(
            "WITH up AS (INSERT INTO flow_documents (flow_id, kind, name, body, saved_at, version) \
               SELECT flow_id, $2, $3, $4, $5, 1 FROM flows WHERE flow_id = $1 \
               ON CONFLICT (flow_id, kind, name) DO UPDATE \
               SET body = excluded.body, saved_at = excluded.saved_at, \
                   version = flow_documents.version + 1 \
               RETURNING version) \
             SELECT up.version, f.status, f.seq FROM up, flows f WHERE f.flow_id = $1",
        )
        .bind(&r.flow_id)
        .bind(r.kind.as_str())
        .bind(&r.name)
        .bind(Json(&r.body))
        .bind(r.at)
        .fetch_optional(pool)
        .await?;
        let (version, status, incarnation) =
            row.ok_or_else(|| Error::FlowNotFound(r.flow_id.clone()))?;
        let doc = Document::written(&r.flow_id, &r.name, &r.body, r.at, version);
        let owner = Owner {
            status,
            incarnation,
        };
        Ok((doc, owner))
    }
}
