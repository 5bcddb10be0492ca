//! Snapshot statements, written once for both backends (`$n` placeholders work in SQLite too)
//! and expanded per connection type by [`snapshot_statements!`], because sqlx's executor traits
//! do not abstract over both databases without a wall of bounds. Each function runs inside the
//! caller's transaction (PostgreSQL) or write group (SQLite); every step after the first that
//! can fail on the caller's input is a read, so a rejected request never leaves half a write.

/// Expands `create`, `restore`, `fork`, `get` and `list` for connection type `$conn`; `$lock`
/// is the row-lock clause that serialises snapshot creation per flow (`" FOR UPDATE"` on
/// PostgreSQL; empty on SQLite, whose single writer serialises everything already).
macro_rules! snapshot_statements {
    ($conn:ty, $lock:literal) => {
        use serde_json::{Map, Value};
        use sqlx::types::Json;
        use time::OffsetDateTime;

        use crate::documents::{DocKind, Document};
        use crate::error::{Error, Result};
        use crate::flows::Flow;
        use crate::ledger::{FlowRow, PUT_DOCUMENT, flow_columns, insert_error};
        use crate::snapshots::Snapshot;

        #[derive(sqlx::FromRow)]
        struct SnapshotRow {
            snapshot_id: String,
            parent_snapshot_id: Option<String>,
            state: Json<Map<String, Value>>,
            created_at: OffsetDateTime,
        }

        impl SnapshotRow {
            fn into_snapshot(self, flow_id: &str) -> Snapshot {
                Snapshot {
                    flow_id: flow_id.to_string(),
                    snapshot_id: self.snapshot_id,
                    parent_snapshot_id: self.parent_snapshot_id,
                    state: self.state.0,
                    created_at: self.created_at,
                }
            }
        }

        /// "No such snapshot" or "no such flow".
        async fn missing(conn: &mut $conn, flow_id: &str, snapshot_id: &str) -> Error {
            let exists: std::result::Result<Option<i64>, _> =
                sqlx::query_scalar("SELECT seq FROM flows WHERE flow_id = $1")
                    .bind(flow_id)
                    .fetch_optional(&mut *conn)
                    .await;
            match exists {
                Ok(Some(_)) => Error::SnapshotNotFound {
                    flow_id: flow_id.to_string(),
                    snapshot_id: snapshot_id.to_string(),
                },
                Ok(None) => Error::FlowNotFound(flow_id.to_string()),
                Err(e) => e.into(),
            }
        }

        /// A snapshot's state, or why there is none.
        async fn snapshot_state(conn: &mut $conn, flow_id: &str, snapshot_id: &str) -> Result<Map<String, Value>> {
            let state: Option<Json<Map<String, Value>>> = sqlx::query_scalar(
                "SELECT state FROM flow_snapshots WHERE flow_id = $1 AND snapshot_id = $2",
            )
            .bind(flow_id)
            .bind(snapshot_id)
            .fetch_optional(&mut *conn)
            .await?;
            match state {
                Some(s) => Ok(s.0),
                None => Err(missing(conn, flow_id, snapshot_id).await),
            }
        }

        /// Writes a flow's state document; returns it.
        async fn write_state(conn: &mut $conn, flow_id: &str, state: &Map<String, Value>, at: OffsetDateTime) -> Result<Document> {
            let version: i64 = sqlx::query_scalar(PUT_DOCUMENT)
                .bind(flow_id)
                .bind(DocKind::State.as_str())
                .bind("")
                .bind(Json(state))
                .bind(at)
                .fetch_one(&mut *conn)
                .await?;
            Ok(Document {
                flow_id: flow_id.to_string(),
                name: String::new(),
                body: state.clone(),
                saved_at: at,
                version,
            })
        }

        /// Takes a snapshot after the flow's head; drops all but the newest `keep`; returns the
        /// snapshot and the ids dropped.
        pub(super) async fn create(
            conn: &mut $conn,
            flow_id: &str,
            snapshot_id: &str,
            state: &Map<String, Value>,
            at: OffsetDateTime,
            keep: u32,
        ) -> Result<(Snapshot, Vec<String>)> {
            let head: Option<Option<String>> =
                sqlx::query_scalar(concat!("SELECT head_snapshot_id FROM flows WHERE flow_id = $1", $lock))
                    .bind(flow_id)
                    .fetch_optional(&mut *conn)
                    .await?;
            let parent = head.ok_or_else(|| Error::FlowNotFound(flow_id.to_string()))?;
            sqlx::query(
                "INSERT INTO flow_snapshots (flow_id, snapshot_id, parent_snapshot_id, state, created_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(flow_id)
            .bind(snapshot_id)
            .bind(&parent)
            .bind(Json(state))
            .bind(at)
            .execute(&mut *conn)
            .await
            .map_err(|e| match &e {
                sqlx::Error::Database(db) if db.kind() == sqlx::error::ErrorKind::UniqueViolation => {
                    Error::SnapshotExists(snapshot_id.to_string())
                }
                _ => e.into(),
            })?;
            sqlx::query("UPDATE flows SET head_snapshot_id = $2 WHERE flow_id = $1")
                .bind(flow_id)
                .bind(snapshot_id)
                .execute(&mut *conn)
                .await?;
            let evicted: Vec<String> = sqlx::query_scalar(
                "DELETE FROM flow_snapshots WHERE flow_id = $1 AND seq NOT IN \
                 (SELECT seq FROM flow_snapshots WHERE flow_id = $1 ORDER BY seq DESC LIMIT $2) \
                 RETURNING snapshot_id",
            )
            .bind(flow_id)
            .bind(i64::from(keep))
            .fetch_all(&mut *conn)
            .await?;
            let snapshot = Snapshot {
                flow_id: flow_id.to_string(),
                snapshot_id: snapshot_id.to_string(),
                parent_snapshot_id: parent,
                state: state.clone(),
                created_at: at,
            };
            Ok((snapshot, evicted))
        }

        /// Replaces the flow's state with the snapshot's and makes it the flow's head.
        pub(super) async fn restore(
            conn: &mut $conn,
            flow_id: &str,
            snapshot_id: &str,
            at: OffsetDateTime,
        ) -> Result<(Flow, Document)> {
            let state = snapshot_state(conn, flow_id, snapshot_id).await?;
            let flow: FlowRow = sqlx::query_as(concat!(
                "UPDATE flows SET head_snapshot_id = $2 WHERE flow_id = $1 RETURNING ",
                flow_columns!()
            ))
            .bind(flow_id)
            .bind(snapshot_id)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or_else(|| Error::FlowNotFound(flow_id.to_string()))?;
            let doc = write_state(conn, flow_id, &state, at).await?;
            Ok((flow.into_flow(), doc))
        }

        /// Registers `child` (a child of the snapshot's flow, of its type unless given) with
        /// the snapshot's state.
        pub(super) async fn fork(
            conn: &mut $conn,
            flow_id: &str,
            snapshot_id: &str,
            child: &Flow,
        ) -> Result<(Flow, Document)> {
            let state = snapshot_state(conn, flow_id, snapshot_id).await?;
            let row: FlowRow = sqlx::query_as(concat!(
                "INSERT INTO flows (flow_id, flow_type, parent_flow_id, status, metadata, \
                 created_at, updated_at, version, head_snapshot_id) \
                 SELECT $1, CASE WHEN $2 = '' THEN flow_type ELSE $2 END, flow_id, $3, $4, $5, $5, 1, $6 \
                 FROM flows WHERE flow_id = $7 RETURNING ",
                flow_columns!()
            ))
            .bind(&child.flow_id)
            .bind(&child.flow_type)
            .bind(&child.status)
            .bind(Json(&child.metadata))
            .bind(child.created_at)
            .bind(snapshot_id)
            .bind(flow_id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| insert_error(e, child))?
            .ok_or_else(|| Error::FlowNotFound(flow_id.to_string()))?;
            let flow = row.into_flow();
            let doc = write_state(conn, &flow.flow_id, &state, flow.created_at).await?;
            Ok((flow, doc))
        }

        /// A snapshot.
        pub(super) async fn get(conn: &mut $conn, flow_id: &str, snapshot_id: &str) -> Result<Option<Snapshot>> {
            let row: Option<SnapshotRow> = sqlx::query_as(
                "SELECT snapshot_id, parent_snapshot_id, state, created_at FROM flow_snapshots \
                 WHERE flow_id = $1 AND snapshot_id = $2",
            )
            .bind(flow_id)
            .bind(snapshot_id)
            .fetch_optional(&mut *conn)
            .await?;
            Ok(row.map(|r| r.into_snapshot(flow_id)))
        }

        /// A flow's snapshot ids, newest first.
        pub(super) async fn list(conn: &mut $conn, flow_id: &str) -> Result<Vec<String>> {
            Ok(sqlx::query_scalar(
                "SELECT snapshot_id FROM flow_snapshots WHERE flow_id = $1 ORDER BY seq DESC",
            )
            .bind(flow_id)
            .fetch_all(&mut *conn)
            .await?)
        }
    };
}
pub(crate) use snapshot_statements;
