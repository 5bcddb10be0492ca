//! LangGraph checkpoints: what a checkpoint saver needs (put a checkpoint, put a task's
//! writes, get the latest or one checkpoint with its writes, list newest first with `before`,
//! `limit` and metadata filters, delete a thread or runs, copy a thread, prune), kept in the
//! ledger until deleted or pruned, as LangGraph expects. They are durable state, read back on
//! resume, not a cache: the hot tier is not involved.
//!
//! A thread is a flow: its first checkpoint (or a copy to it) registers a flow of the same id
//! and type [`THREAD_FLOW_TYPE`] unless one exists, so threads are listed, watched (events)
//! and locked like any flow; deleting the thread deletes that flow, and deleting that flow
//! deletes the thread. A flow of another type with the thread's id is left as it is. Which threads are known
//! to be registered is remembered for a minute, so a thread costs one registration per
//! instance, not one per checkpoint.

use std::time::Duration;

use super::Flowstate;
use crate::error::{Error, Result};
use crate::model::checkpoints::{
    CheckpointSearch, CheckpointTuple, MAX_LIST, MAX_WRITES, PruneStrategy, PutCheckpoint,
    PutWrites, validate_text,
};
use crate::model::{NewFlow, ids, now};

/// The flow type of a flow registered for a LangGraph thread.
pub const THREAD_FLOW_TYPE: &str = "langgraph.thread";

/// Threads this instance registered as flows or found registered, for a minute (another
/// instance may delete one meanwhile; after a minute it is looked at again).
pub(super) struct KnownThreads(moka::sync::Cache<String, ()>);

impl Default for KnownThreads {
    fn default() -> Self {
        KnownThreads(
            moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(60))
                .build(),
        )
    }
}

impl Flowstate {
    /// Stores a checkpoint of `thread_id`, replacing one of the same id.
    pub async fn put_checkpoint(
        &self,
        thread_id: &str,
        checkpoint_id: &str,
        put: PutCheckpoint,
    ) -> Result<()> {
        ids::validate("thread_id", thread_id)?;
        ids::validate("checkpoint_id", checkpoint_id)?;
        validate_text("checkpoint_ns", &put.checkpoint_ns)?;
        validate_text("type", &put.kind)?;
        if let Some(parent) = &put.parent_checkpoint_id {
            ids::validate("parent_checkpoint_id", parent)?;
        }
        let (this, thread_id, checkpoint_id) = (
            self.clone(),
            thread_id.to_string(),
            checkpoint_id.to_string(),
        );
        self.detached(async move {
            this.thread_is_a_flow(&thread_id).await?;
            this.ledger()
                .put_checkpoint(&thread_id, &checkpoint_id, &put, now())
                .await
        })
        .await
    }

    /// Forgets that `thread_id` is registered (its flow was deleted).
    pub(super) fn forget_thread(&self, thread_id: &str) {
        self.inner.threads.0.invalidate(thread_id);
    }

    /// Registers `thread_id` as a flow unless it is known to be one.
    async fn thread_is_a_flow(&self, thread_id: &str) -> Result<()> {
        let known = &self.inner.threads.0;
        if known.contains_key(thread_id) {
            return Ok(());
        }
        let new = NewFlow {
            flow_id: Some(thread_id.to_string()),
            flow_type: THREAD_FLOW_TYPE.to_string(),
            ..NewFlow::default()
        };
        match self.register_flow_now(new).await {
            Ok(_) | Err(Error::FlowExists(_)) => {
                known.insert(thread_id.to_string(), ());
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Stores a task's pending writes on a checkpoint.
    pub async fn put_checkpoint_writes(
        &self,
        thread_id: &str,
        checkpoint_id: &str,
        writes: PutWrites,
    ) -> Result<()> {
        ids::validate("thread_id", thread_id)?;
        ids::validate("checkpoint_id", checkpoint_id)?;
        validate_text("checkpoint_ns", &writes.checkpoint_ns)?;
        validate_text("task_id", &writes.task_id)?;
        validate_text("task_path", &writes.task_path)?;
        if writes.writes.len() > MAX_WRITES {
            return Err(Error::InvalidInput(format!(
                "at most {MAX_WRITES} writes per request, got {}",
                writes.writes.len()
            )));
        }
        for w in &writes.writes {
            validate_text("channel", &w.channel)?;
            validate_text("type", &w.kind)?;
        }
        let (this, thread_id, checkpoint_id) = (
            self.clone(),
            thread_id.to_string(),
            checkpoint_id.to_string(),
        );
        self.detached(async move {
            this.ledger()
                .put_writes(&thread_id, &checkpoint_id, &writes)
                .await
        })
        .await
    }

    /// One checkpoint of a thread's namespace (the newest without `checkpoint_id`), with its
    /// pending writes.
    pub async fn get_checkpoint(
        &self,
        thread_id: &str,
        checkpoint_ns: &str,
        checkpoint_id: Option<&str>,
    ) -> Result<CheckpointTuple> {
        ids::validate("thread_id", thread_id)?;
        validate_text("checkpoint_ns", checkpoint_ns)?;
        if let Some(id) = checkpoint_id {
            ids::validate("checkpoint_id", id)?;
        }
        let search = CheckpointSearch {
            thread_id: Some(thread_id.to_string()),
            checkpoint_ns: Some(checkpoint_ns.to_string()),
            checkpoint_id: checkpoint_id.map(str::to_string),
            limit: Some(1),
            ..CheckpointSearch::default()
        };
        self.ledger()
            .list_checkpoints(&search)
            .await?
            .pop()
            .ok_or_else(|| Error::CheckpointNotFound(thread_id.to_string()))
    }

    /// Checkpoints matching `search`, newest first.
    pub async fn list_checkpoints(&self, search: CheckpointSearch) -> Result<Vec<CheckpointTuple>> {
        if let Some(thread_id) = &search.thread_id {
            ids::validate("thread_id", thread_id)?;
        }
        if let Some(ns) = &search.checkpoint_ns {
            validate_text("checkpoint_ns", ns)?;
        }
        for id in [&search.checkpoint_id, &search.before]
            .into_iter()
            .flatten()
        {
            ids::validate("checkpoint_id", id)?;
        }
        if search.limit.is_some_and(|l| l > MAX_LIST) {
            return Err(Error::InvalidInput(format!(
                "limit must be at most {MAX_LIST}"
            )));
        }
        self.ledger().list_checkpoints(&search).await
    }

    /// Deletes a thread's checkpoints and writes, and its flow if it is a thread's (nothing to
    /// delete is fine; a flow with children stays, with a warning: the checkpoints are gone).
    pub async fn delete_checkpoint_thread(&self, thread_id: &str) -> Result<()> {
        ids::validate("thread_id", thread_id)?;
        let (this, thread_id) = (self.clone(), thread_id.to_string());
        self.detached(async move {
            let flow = this.ledger().get_flow(&thread_id).await?;
            if flow.is_some_and(|f| f.flow_type == THREAD_FLOW_TYPE) {
                // Deleting the thread's flow deletes the thread with it.
                match this.delete_flow_now(&thread_id, false).await {
                    Ok(()) => return Ok(()),
                    Err(Error::FlowNotFound(_)) => {}
                    Err(Error::HasChildren(_)) => {
                        tracing::warn!(
                            thread_id,
                            "thread deleted; its flow has children and stays"
                        );
                    }
                    Err(e) => return Err(e),
                }
            }
            this.ledger().delete_thread(&thread_id).await?;
            this.forget_thread(&thread_id);
            Ok(())
        })
        .await
    }

    /// Deletes the checkpoints (and writes) of these runs.
    pub async fn delete_checkpoint_runs(&self, run_ids: Vec<String>) -> Result<()> {
        for run_id in &run_ids {
            validate_text("run_id", run_id)?;
        }
        let this = self.clone();
        self.detached(async move { this.ledger().delete_runs(&run_ids).await })
            .await
    }

    /// Copies a thread's checkpoints and writes, under the same ids, to another thread.
    pub async fn copy_checkpoint_thread(&self, from: &str, to: &str) -> Result<()> {
        ids::validate("thread_id", from)?;
        ids::validate("target_thread_id", to)?;
        let (this, from, to) = (self.clone(), from.to_string(), to.to_string());
        self.detached(async move {
            this.thread_is_a_flow(&to).await?;
            this.ledger().copy_thread(&from, &to).await
        })
        .await
    }

    /// Prunes threads: keeps each namespace's newest checkpoint, or nothing.
    pub async fn prune_checkpoint_threads(
        &self,
        thread_ids: Vec<String>,
        strategy: PruneStrategy,
    ) -> Result<()> {
        for thread_id in &thread_ids {
            ids::validate("thread_ids", thread_id)?;
        }
        let this = self.clone();
        self.detached(async move { this.ledger().prune_threads(&thread_ids, strategy).await })
            .await
    }
}
