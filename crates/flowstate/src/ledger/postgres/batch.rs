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
use sqlx::{PgConnection, PgPool};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::error::{Error, Result};

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
            let timer = Instant::now();
            execute::<Op>(&pool, batch, started).await;
            metrics::histogram!("flowstate_ledger_write_seconds", "op" => short_name::<Op>())
                .record(timer.elapsed().as_secs_f64());
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
pub(super) fn by_ord<T>(
    requests: usize,
    rows: impl IntoIterator<Item = (i64, T)>,
) -> Vec<Option<T>> {
    let mut slots: Vec<Option<T>> = (0..requests).map(|_| None).collect();
    for (ord, value) in rows {
        if let Some(slot) = usize::try_from(ord - 1).ok().and_then(|i| slots.get_mut(i)) {
            *slot = Some(value);
        }
    }
    slots
}

/// "Not answered, retry": for each caller of a batch that got no answer of its own.
pub(super) fn unavailable(reason: &str) -> Error {
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
