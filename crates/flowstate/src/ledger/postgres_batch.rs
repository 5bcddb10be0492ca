//! Batched PostgreSQL writes: concurrent registrations, transitions and document saves each
//! run as **one multi-row statement per batch** instead of one statement per request.
//!
//! PostgreSQL's cost here is per statement and per commit, not per row (measured with pgbench
//! on this kind of machine: 8.7k single-row transitions/s against 50k rows/s in batches of 16),
//! and at 16 concurrent clients the server, not the network, was the limit. So each kind of
//! write has a queue and one statement in flight: while it runs, requests gather, and the next
//! statement takes all of them at once. A lone request still goes out immediately, so nothing
//! waits for company. A second statement (up to a few) starts early only when the one in flight
//! is stuck, on a row lock say, for more than [`STALLED_AFTER`].
//!
//! Two rules keep the batched statements equivalent to the single ones:
//! - A batch never holds two requests for the same key (flow, or document), and no two batches
//!   in flight share a key. So a multi-row UPDATE sees each row once, and two batches can never
//!   lock the same rows in opposite orders (no deadlocks among batches).
//! - If a batch statement is refused because of its rows (a foreign key broken by a concurrent
//!   delete, text PostgreSQL cannot store, a deadlock with a delete), it rolled back whole, and
//!   every request is replayed alone, so each gets its own answer. Any other failure (server
//!   down, connection lost: outcome unknown) gives every request the retryable error. Once the
//!   statement has returned, nothing is replayed: it committed.
//! - A registration waits while its parent's registration is in a batch, so the parent is
//!   visible to its statement. Batches are sorted by key, so they lock rows in one order.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Map, Value};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use tokio::sync::{Notify, mpsc, oneshot};

use super::{FlowRow, cas_failure, flow_columns, insert_error, recorded, written_document};
use crate::documents::{DocKind, Document, Owner};
use crate::error::{Error, Result};
use crate::flows::Flow;
use crate::transitions::Transition;

/// Most requests in one statement.
const MAX_BATCH: usize = 128;

/// Requests waiting for a lane; beyond this, callers wait to enqueue (backpressure).
const QUEUE: usize = 4096;

/// One kind of batched write.
#[async_trait]
pub(super) trait BatchOp: Send + Sync + 'static {
    /// One request.
    type Req: Send + Sync + 'static;
    /// Its answer.
    type Out: Send + 'static;

    /// What two requests of one batch, or of two batches in flight, must not share.
    fn key(req: &Self::Req) -> String;

    /// A key whose write must have committed before this request's statement starts (a
    /// flow's parent): the request waits while that key is in a batch.
    fn depends_on(_req: &Self::Req) -> Option<&str> {
        None
    }

    /// Runs `reqs` (distinct keys) as one statement; one answer per request, in order.
    async fn batch(
        conn: &mut PgConnection,
        reqs: &[Self::Req],
    ) -> std::result::Result<Vec<Result<Self::Out>>, sqlx::Error>;

    /// Runs one request on its own: for batches that failed inside PostgreSQL.
    async fn single(pool: &PgPool, req: &Self::Req) -> Result<Self::Out>;
}

struct Job<Op: BatchOp> {
    req: Op::Req,
    reply: oneshot::Sender<Result<Op::Out>>,
}

/// The queue of one kind of write.
pub(super) struct Batcher<Op: BatchOp> {
    queue: mpsc::Sender<Job<Op>>,
}

impl<Op: BatchOp> Clone for Batcher<Op> {
    fn clone(&self) -> Self {
        Batcher {
            queue: self.queue.clone(),
        }
    }
}

impl<Op: BatchOp> std::fmt::Debug for Batcher<Op> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("op", &std::any::type_name::<Op>())
            .finish()
    }
}

impl<Op: BatchOp> Batcher<Op> {
    /// Starts the batching task with `max_lanes` statements in flight at most (see
    /// [`STALLED_AFTER`]). It ends when every clone of the returned batcher is dropped.
    pub(super) fn start(pool: PgPool, max_lanes: usize) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run::<Op>(pool, rx, max_lanes.max(1)));
        Batcher { queue }
    }

    /// Queues `req` and waits for its batch.
    pub(super) async fn submit(&self, req: Op::Req) -> Result<Op::Out> {
        let (reply, rx) = oneshot::channel();
        let gone = || unavailable("the ledger's write queue stopped");
        self.queue
            .send(Job { req, reply })
            .await
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

/// A batch whose statement has run for this long is taken to be waiting on a row lock (or a
/// stalled server), and no longer holds back the next batch. Statements take 0.5–2 ms when
/// nothing blocks them (measured). Time spent waiting for a pooled connection does not count:
/// another lane would only wait for one too.
const STALLED_AFTER: Duration = Duration::from_millis(10);

/// What the batches in flight hold.
#[derive(Default)]
struct InFlight {
    /// Their keys.
    keys: HashSet<String>,
    /// When each of them started its statement (`None`: still waiting for a connection), by
    /// batch number.
    started: HashMap<u64, Option<Instant>>,
}

/// When the next batch may start.
enum Lane {
    Free,
    /// Once the newest statement in flight has run for [`STALLED_AFTER`].
    At(Instant),
    /// Not before the batches in flight change (one starts its statement, or ends).
    Taken,
}

impl InFlight {
    fn lane(&self, max_lanes: usize) -> Lane {
        if self.started.len() >= max_lanes {
            return Lane::Taken;
        }
        let mut newest = None;
        for started in self.started.values() {
            match started {
                Some(at) => newest = newest.max(Some(*at)),
                None => return Lane::Taken,
            }
        }
        let Some(newest) = newest else {
            return Lane::Free;
        };
        let at = newest + STALLED_AFTER;
        if at <= Instant::now() {
            Lane::Free
        } else {
            Lane::At(at)
        }
    }
}

type Shared = Arc<Mutex<InFlight>>;

fn lock(in_flight: &Shared) -> std::sync::MutexGuard<'_, InFlight> {
    in_flight.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn run<Op: BatchOp>(pool: PgPool, mut rx: mpsc::Receiver<Job<Op>>, max_lanes: usize) {
    let in_flight: Shared = Arc::default();
    let changed = Arc::new(Notify::new());
    let mut pending: VecDeque<Job<Op>> = VecDeque::new();
    let mut open = true;
    let mut batches = 0u64;
    loop {
        if pending.is_empty() {
            match rx.recv().await {
                Some(job) => pending.push_back(job),
                None => return,
            }
        }
        // One statement in flight per kind of write makes the largest batches, and measured
        // fastest (1 lane against 2: transitions 16.8k/s against 9.5k/s at c=16). Waiting for
        // it is what lets a batch gather. Another lane opens only when that statement is
        // stuck, so one locked row cannot hold up every write of its kind.
        loop {
            let lane = lock(&in_flight).lane(max_lanes);
            match lane {
                Lane::Free => break,
                Lane::Taken => changed.notified().await,
                Lane::At(at) => tokio::select! {
                    () = changed.notified() => {}
                    () = tokio::time::sleep_until(at.into()) => {}
                },
            }
        }
        while open && pending.len() < QUEUE {
            match rx.try_recv() {
                Ok(job) => pending.push_back(job),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => open = false,
            }
        }
        batches += 1;
        let (batch, keys) = take_batch::<Op>(&mut pending, &in_flight, batches);
        if batch.is_empty() {
            // Everything waiting shares a key with a batch in flight: wait for one to end, or
            // for a new request, which may be free to go.
            tokio::select! {
                () = changed.notified() => {}
                job = rx.recv(), if open && pending.len() < QUEUE => match job {
                    Some(job) => pending.push_back(job),
                    None => open = false,
                },
            }
            continue;
        }
        metrics::histogram!("flowstate_ledger_batch_size", "op" => short_name::<Op>())
            .record(batch.len() as f64);
        let done = Release {
            batch: batches,
            keys,
            in_flight: in_flight.clone(),
            changed: changed.clone(),
        };
        let (pool, shared, changed, number) =
            (pool.clone(), in_flight.clone(), changed.clone(), batches);
        tokio::spawn(async move {
            let started = move || {
                lock(&shared).started.insert(number, Some(Instant::now()));
                changed.notify_one();
            };
            execute::<Op>(&pool, batch, started).await;
            drop(done);
        });
    }
}

/// Frees a batch's keys and lane when it ends, even if it panicked: otherwise every later
/// write to those keys would wait forever.
struct Release {
    batch: u64,
    keys: Vec<String>,
    in_flight: Shared,
    changed: Arc<Notify>,
}

impl Drop for Release {
    fn drop(&mut self) {
        let mut held = lock(&self.in_flight);
        for key in &self.keys {
            held.keys.remove(key);
        }
        held.started.remove(&self.batch);
        drop(held);
        self.changed.notify_one();
    }
}

/// Takes, in arrival order, up to [`MAX_BATCH`] requests whose key (and whose dependency, see
/// [`BatchOp::depends_on`]) is neither in flight nor already in the batch, and marks their
/// keys in flight; the rest stays pending in its order. The batch is sorted by key, so its
/// statement locks rows in the same order as every other batch and as deletes.
fn take_batch<Op: BatchOp>(
    pending: &mut VecDeque<Job<Op>>,
    in_flight: &Shared,
    number: u64,
) -> (Vec<Job<Op>>, Vec<String>) {
    let mut held = lock(in_flight);
    let mut batch = Vec::new();
    let mut rest = VecDeque::new();
    for job in pending.drain(..) {
        let key = Op::key(&job.req);
        let waits_on_dependency = Op::depends_on(&job.req).is_some_and(|d| held.keys.contains(d));
        if batch.len() < MAX_BATCH && !held.keys.contains(&key) && !waits_on_dependency {
            held.keys.insert(key.clone());
            batch.push((key, job));
        } else {
            rest.push_back(job);
        }
    }
    *pending = rest;
    if !batch.is_empty() {
        held.started.insert(number, None);
    }
    batch.sort_by(|a, b| a.0.cmp(&b.0));
    batch.into_iter().map(|(key, job)| (job, key)).unzip()
}

async fn execute<Op: BatchOp>(pool: &PgPool, batch: Vec<Job<Op>>, started: impl FnOnce()) {
    let (reqs, replies): (Vec<_>, Vec<_>) = batch.into_iter().map(|j| (j.req, j.reply)).unzip();
    let ran = match pool.acquire().await {
        Ok(mut conn) => {
            started();
            Op::batch(&mut conn, &reqs).await
        }
        Err(e) => Err(e),
    };
    match ran {
        Ok(results) => {
            for (reply, result) in replies.into_iter().zip(results) {
                // A caller that went away no longer needs its answer; its write stands.
                let _ = reply.send(result);
            }
        }
        Err(sqlx::Error::Database(e)) if rejected_rows(e.code().as_deref()) => {
            // The statement rolled back whole because of some row (or lost a deadlock):
            // replay each request alone for its own answer.
            tracing::debug!(error = %e, op = short_name::<Op>(), "batch failed; replaying alone");
            for (req, reply) in reqs.iter().zip(replies) {
                let _ = reply.send(Op::single(pool, req).await);
            }
        }
        Err(e) => {
            // The server is not serving (or the outcome is unknown): no replay, which would
            // only wait out the same failure once per request.
            let reason = e.to_string();
            for reply in replies {
                let _ = reply.send(Err(unavailable(&reason)));
            }
        }
    }
}

/// SQLSTATEs of a statement refused, and rolled back, because of its rows: data exceptions
/// (22), integrity constraints (23), serialization failures and deadlocks. Not 40003
/// (statement completion unknown): that outcome is unknown, and a replay could apply it twice.
fn rejected_rows(code: Option<&str>) -> bool {
    code.is_some_and(|c| {
        c.starts_with("22") || c.starts_with("23") || matches!(c, "40001" | "40P01")
    })
}

/// Puts rows returned with their request's position (`WITH ORDINALITY`, from 1) in request
/// order; a request without a row gets `None`.
fn by_ord<T>(requests: usize, rows: impl IntoIterator<Item = (i64, T)>) -> Vec<Option<T>> {
    let mut slots: Vec<Option<T>> = (0..requests).map(|_| None).collect();
    for (ord, value) in rows {
        if let Some(slot) = usize::try_from(ord - 1).ok().and_then(|i| slots.get_mut(i)) {
            *slot = Some(value);
        }
    }
    slots
}

/// "Not answered, retry": for each caller of a batch that got no answer of its own.
fn unavailable(reason: &str) -> Error {
    Error::LedgerUnavailable {
        reason: reason.to_string(),
        retry_after: Duration::from_secs(1),
    }
}

/// `Transitions` out of `flowstate::ledger::postgres_batch::Transitions`, for metrics.
fn short_name<Op>() -> &'static str {
    let name = std::any::type_name::<Op>();
    name.rsplit("::").next().unwrap_or(name)
}

/// Registrations: one `INSERT … SELECT FROM unnest(…)`. A row whose parent is missing is
/// filtered out and a duplicate id is skipped (`ON CONFLICT DO NOTHING`); which of the two it
/// was is looked up afterwards, only when some row was not inserted.
///
/// The parent check is a scalar subquery, not `EXISTS`: beside the `OR`, PostgreSQL may plan an
/// `EXISTS` as a hash of the whole `flows` table, and did on a new database, whose plan each
/// connection then kept while the table grew (registrations 3× slower, measured).
pub(super) struct Registrations;

#[async_trait]
impl BatchOp for Registrations {
    type Req = Flow;
    /// The registration number.
    type Out = i64;

    fn key(flow: &Flow) -> String {
        flow.flow_id.clone()
    }

    fn depends_on(flow: &Flow) -> Option<&str> {
        flow.parent_flow_id.as_deref()
    }

    async fn batch(
        conn: &mut PgConnection,
        flows: &[Flow],
    ) -> std::result::Result<Vec<Result<i64>>, sqlx::Error> {
        let inserted: Vec<(String, i64)> = sqlx::query_as(
            "INSERT INTO flows (flow_id, flow_type, parent_flow_id, status, metadata, \
               created_at, updated_at, version) \
             SELECT r.flow_id, r.flow_type, r.parent_flow_id, r.status, r.metadata, \
               r.created_at, r.updated_at, r.version \
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::jsonb[], \
               $6::timestamptz[], $7::timestamptz[], $8::int8[]) WITH ORDINALITY \
               AS r(flow_id, flow_type, parent_flow_id, status, metadata, created_at, \
                    updated_at, version, ord) \
             WHERE r.parent_flow_id IS NULL \
                OR (SELECT true FROM flows p WHERE p.flow_id = r.parent_flow_id) \
             ORDER BY r.ord \
             ON CONFLICT (flow_id) DO NOTHING \
             RETURNING flow_id, seq",
        )
        .bind(flows.iter().map(|f| f.flow_id.as_str()).collect::<Vec<_>>())
        .bind(
            flows
                .iter()
                .map(|f| f.flow_type.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            flows
                .iter()
                .map(|f| f.parent_flow_id.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(flows.iter().map(|f| f.status.as_str()).collect::<Vec<_>>())
        .bind(flows.iter().map(|f| Json(&f.metadata)).collect::<Vec<_>>())
        .bind(flows.iter().map(|f| f.created_at).collect::<Vec<_>>())
        .bind(flows.iter().map(|f| f.updated_at).collect::<Vec<_>>())
        .bind(flows.iter().map(|f| f.version).collect::<Vec<_>>())
        .fetch_all(&mut *conn)
        .await?;
        let inserted: HashMap<String, i64> = inserted.into_iter().collect();
        let refused: Vec<&str> = flows
            .iter()
            .map(|f| f.flow_id.as_str())
            .filter(|id| !inserted.contains_key(*id))
            .collect();
        // The batch has committed: from here on, a failure may only cost the refused requests
        // the reason for their refusal, never a replay.
        let existing: std::result::Result<HashSet<String>, String> = if refused.is_empty() {
            Ok(HashSet::new())
        } else {
            sqlx::query_scalar("SELECT flow_id FROM flows WHERE flow_id = ANY($1)")
                .bind(&refused)
                .fetch_all(&mut *conn)
                .await
                .map(|ids: Vec<String>| ids.into_iter().collect())
                .map_err(|e| e.to_string())
        };
        Ok(flows
            .iter()
            .map(|f| {
                if let Some(seq) = inserted.get(&f.flow_id) {
                    return Ok(*seq);
                }
                let existing = match &existing {
                    Ok(existing) => existing,
                    Err(reason) => return Err(unavailable(reason)),
                };
                if existing.contains(&f.flow_id) || f.parent_flow_id.is_none() {
                    Err(Error::FlowExists(f.flow_id.clone()))
                } else {
                    Err(Error::ParentNotFound(
                        f.parent_flow_id.clone().unwrap_or_default(),
                    ))
                }
            })
            .collect())
    }

    async fn single(pool: &PgPool, flow: &Flow) -> Result<i64> {
        sqlx::query_scalar(
            "INSERT INTO flows (flow_id, flow_type, parent_flow_id, status, metadata, \
             created_at, updated_at, version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             RETURNING seq",
        )
        .bind(&flow.flow_id)
        .bind(&flow.flow_type)
        .bind(&flow.parent_flow_id)
        .bind(&flow.status)
        .bind(Json(&flow.metadata))
        .bind(flow.created_at)
        .bind(flow.updated_at)
        .bind(flow.version)
        .fetch_one(pool)
        .await
        .map_err(|e| insert_error(e, flow))
    }
}

/// A compare-and-set transition waiting for its batch.
pub(super) struct TransitionReq {
    pub(super) flow_id: String,
    pub(super) from: String,
    pub(super) to: String,
    pub(super) metadata: Map<String, Value>,
    pub(super) at: OffsetDateTime,
}

/// A `flows` row updated by a batch, with the position of its request.
#[derive(sqlx::FromRow)]
struct UpdatedRow {
    ord: i64,
    #[sqlx(flatten)]
    flow: FlowRow,
}

/// Transitions: one `UPDATE … FROM unnest(…)` that moves every flow still in its `from`
/// status, and inserts their history rows in the same statement. The current status of the
/// flows that did not move is read afterwards, only when some did not.
pub(super) struct Transitions;

#[async_trait]
impl BatchOp for Transitions {
    type Req = TransitionReq;
    type Out = (Transition, Flow);

    fn key(req: &TransitionReq) -> String {
        req.flow_id.clone()
    }

    async fn batch(
        conn: &mut PgConnection,
        reqs: &[TransitionReq],
    ) -> std::result::Result<Vec<Result<(Transition, Flow)>>, sqlx::Error> {
        let rows: Vec<UpdatedRow> = sqlx::query_as(
            "WITH r AS ( \
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[], \
                 $5::timestamptz[]) WITH ORDINALITY \
                 AS r(flow_id, from_status, to_status, metadata, at, ord)), \
             upd AS ( \
               UPDATE flows f SET status = r.to_status, version = f.version + 1, \
                 updated_at = r.at \
               FROM r WHERE f.flow_id = r.flow_id AND f.status = r.from_status \
               RETURNING r.ord, f.seq, f.flow_id, f.flow_type, f.parent_flow_id, f.status, \
                 f.metadata, f.created_at, f.updated_at, f.version), \
             ins AS ( \
               INSERT INTO flow_transitions (flow_id, seq, from_status, to_status, metadata, at) \
               SELECT upd.flow_id, upd.version, r.from_status, r.to_status, r.metadata, r.at \
               FROM upd JOIN r ON r.ord = upd.ord) \
             SELECT * FROM upd",
        )
        .bind(reqs.iter().map(|r| r.flow_id.as_str()).collect::<Vec<_>>())
        .bind(reqs.iter().map(|r| r.from.as_str()).collect::<Vec<_>>())
        .bind(reqs.iter().map(|r| r.to.as_str()).collect::<Vec<_>>())
        .bind(reqs.iter().map(|r| Json(&r.metadata)).collect::<Vec<_>>())
        .bind(reqs.iter().map(|r| r.at).collect::<Vec<_>>())
        .fetch_all(&mut *conn)
        .await?;
        let moved = by_ord(
            reqs.len(),
            rows.into_iter().map(|r| (r.ord, r.flow.into_flow())),
        );
        let stuck: Vec<&str> = reqs
            .iter()
            .zip(&moved)
            .filter(|(_, m)| m.is_none())
            .map(|(r, _)| r.flow_id.as_str())
            .collect();
        // The batch has committed: from here on, a failure may only cost the stuck requests
        // their current status, never a replay.
        let current: std::result::Result<HashMap<String, String>, String> = if stuck.is_empty() {
            Ok(HashMap::new())
        } else {
            sqlx::query_as("SELECT flow_id, status FROM flows WHERE flow_id = ANY($1)")
                .bind(&stuck)
                .fetch_all(&mut *conn)
                .await
                .map(|rows: Vec<(String, String)>| rows.into_iter().collect())
                .map_err(|e| e.to_string())
        };
        Ok(reqs
            .iter()
            .zip(moved)
            .map(|(r, flow)| match (flow, &current) {
                (Some(flow), _) => Ok((recorded(&flow, &r.from, &r.to, &r.metadata, r.at), flow)),
                (None, Ok(current)) => Err(cas_failure(
                    current.get(&r.flow_id).cloned(),
                    &r.flow_id,
                    &r.from,
                )),
                (None, Err(reason)) => Err(unavailable(reason)),
            })
            .collect())
    }

    async fn single(pool: &PgPool, r: &TransitionReq) -> Result<(Transition, Flow)> {
        let updated: Option<FlowRow> = sqlx::query_as(concat!(
            "WITH upd AS ( \
               UPDATE flows SET status = $3, version = version + 1, updated_at = $5 \
               WHERE flow_id = $1 AND status = $2 RETURNING ",
            flow_columns!(),
            "), \
             ins AS ( \
               INSERT INTO flow_transitions (flow_id, seq, from_status, to_status, metadata, at) \
               SELECT flow_id, version, $2, $3, $4, $5 FROM upd) \
             SELECT ",
            flow_columns!(),
            " FROM upd"
        ))
        .bind(&r.flow_id)
        .bind(&r.from)
        .bind(&r.to)
        .bind(Json(&r.metadata))
        .bind(r.at)
        .fetch_optional(pool)
        .await?;
        let Some(row) = updated else {
            let current: Option<String> =
                sqlx::query_scalar("SELECT status FROM flows WHERE flow_id = $1")
                    .bind(&r.flow_id)
                    .fetch_optional(pool)
                    .await?;
            return Err(cas_failure(current, &r.flow_id, &r.from));
        };
        let flow = row.into_flow();
        Ok((recorded(&flow, &r.from, &r.to, &r.metadata, r.at), flow))
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
        // The unit separator cannot occur in ids (DESIGN §5 charset).
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
                    written_document(&r.flow_id, &r.name, &r.body, r.at, version),
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
        let doc = written_document(&r.flow_id, &r.name, &r.body, r.at, version);
        let owner = Owner {
            status,
            incarnation,
        };
        Ok((doc, owner))
    }
}
