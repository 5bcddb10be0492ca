//! LangGraph checkpoints on SQLite: writes on the writer thread (a request's statements commit
//! together), reads on the pool.

use async_trait::async_trait;
use futures::TryStreamExt;
use rusqlite::{Connection, params};
use time::OffsetDateTime;

use super::SqliteLedger;
use super::writer::{sql_err, ts};
use crate::error::Result;
use crate::ledger::CheckpointLedger;
use crate::ledger::sql::checkpoints::{
    COPY_THREAD, CheckpointRow, DELETE_RUN, DELETE_THREAD, Found, KEEP_LATEST, PUT,
    PUT_SPECIAL_WRITE, PUT_WRITE, THREAD_WRITES, ThreadWriteRow, WRITES, WriteRow, list_query,
    metadata_text, run_id, thread_range, with_thread_writes,
};
use crate::model::checkpoints::{
    CheckpointSearch, CheckpointTuple, MAX_LIST, PendingWrite, PruneStrategy, PutCheckpoint,
    PutWrites, matches,
};

/// Runs `statements` with `$1`, `$2`, ... bound by name: rusqlite numbers `$n` parameters in
/// order of appearance, and the copy names `$2` before `$1`.
fn run(conn: &Connection, statements: &[&str], args: &[&dyn rusqlite::ToSql]) -> Result<()> {
    let names: Vec<String> = (1..=args.len()).map(|i| format!("${i}")).collect();
    for sql in statements {
        let mut stmt = conn.prepare_cached(sql).map_err(sql_err)?;
        let named: Vec<(&str, &dyn rusqlite::ToSql)> = names
            .iter()
            .map(String::as_str)
            .zip(args.iter().copied())
            .filter(|(name, _)| stmt.parameter_index(name).ok().flatten().is_some())
            .collect();
        stmt.execute(named.as_slice()).map_err(sql_err)?;
    }
    Ok(())
}

#[async_trait]
impl CheckpointLedger for SqliteLedger {
    async fn put_checkpoint(
        &self,
        thread_id: &str,
        checkpoint_id: &str,
        put: &PutCheckpoint,
        at: OffsetDateTime,
    ) -> Result<()> {
        let metadata = metadata_text(&put.metadata)?;
        let run = run_id(&put.metadata);
        let (thread_id, checkpoint_id, put, at) = (
            thread_id.to_string(),
            checkpoint_id.to_string(),
            put.clone(),
            ts(at)?,
        );
        self.writer
            .submit(move |c| {
                c.prepare_cached(PUT)
                    .map_err(sql_err)?
                    .execute(params![
                        thread_id,
                        put.checkpoint_ns,
                        checkpoint_id,
                        put.parent_checkpoint_id,
                        put.kind,
                        put.checkpoint,
                        metadata,
                        run,
                        at
                    ])
                    .map_err(sql_err)?;
                Ok(())
            })
            .await
    }

    async fn put_writes(
        &self,
        thread_id: &str,
        checkpoint_id: &str,
        writes: &PutWrites,
    ) -> Result<()> {
        let (thread_id, checkpoint_id, writes) = (
            thread_id.to_string(),
            checkpoint_id.to_string(),
            writes.clone(),
        );
        self.writer
            .submit(move |c| {
                for w in &writes.writes {
                    let sql = if w.idx < 0 {
                        PUT_SPECIAL_WRITE
                    } else {
                        PUT_WRITE
                    };
                    c.prepare_cached(sql)
                        .map_err(sql_err)?
                        .execute(params![
                            thread_id,
                            writes.checkpoint_ns,
                            checkpoint_id,
                            writes.task_id,
                            w.idx,
                            writes.task_path,
                            w.channel,
                            w.kind,
                            w.value
                        ])
                        .map_err(sql_err)?;
                }
                Ok(())
            })
            .await
    }

    async fn list_checkpoints(&self, search: &CheckpointSearch) -> Result<Vec<CheckpointTuple>> {
        let limit = search.limit.unwrap_or(MAX_LIST).min(MAX_LIST) as usize;
        let mut found: Found = Vec::new();
        {
            let (sql, binds) = list_query(search, limit);
            let mut query = sqlx::query_as::<_, CheckpointRow>(sqlx::AssertSqlSafe(sql));
            for value in binds {
                query = query.bind(value);
            }
            let mut rows = query.fetch(&self.reader);
            while found.len() < limit {
                let Some(row) = rows.try_next().await? else {
                    break;
                };
                let metadata = row.metadata()?;
                if matches(&metadata, &search.filter) {
                    found.push((row, metadata));
                }
            }
        }
        if let Some((thread, low, high)) = thread_range(search, &found) {
            let writes: Vec<ThreadWriteRow> = sqlx::query_as(THREAD_WRITES)
                .bind(thread)
                .bind(low)
                .bind(high)
                .fetch_all(&self.reader)
                .await?;
            return Ok(with_thread_writes(found, writes));
        }
        let mut tuples = Vec::with_capacity(found.len());
        for (row, metadata) in found {
            let (thread, ns, id) = row.key();
            let writes: Vec<WriteRow> = sqlx::query_as(WRITES)
                .bind(thread)
                .bind(ns)
                .bind(id)
                .fetch_all(&self.reader)
                .await?;
            let writes = writes.into_iter().map(PendingWrite::from).collect();
            tuples.push(row.into_tuple(metadata, writes));
        }
        Ok(tuples)
    }

    async fn delete_thread(&self, thread_id: &str) -> Result<()> {
        let thread_id = thread_id.to_string();
        self.writer
            .submit(move |c| run(c, &DELETE_THREAD, &[&thread_id]))
            .await
    }

    async fn delete_runs(&self, run_ids: &[String]) -> Result<()> {
        let run_ids = run_ids.to_vec();
        self.writer
            .submit(move |c| {
                for run_id in &run_ids {
                    run(c, &DELETE_RUN, &[run_id])?;
                }
                Ok(())
            })
            .await
    }

    async fn copy_thread(&self, from: &str, to: &str) -> Result<()> {
        let (from, to) = (from.to_string(), to.to_string());
        self.writer
            .submit(move |c| run(c, &COPY_THREAD, &[&from, &to]))
            .await
    }

    async fn prune_threads(&self, thread_ids: &[String], strategy: PruneStrategy) -> Result<()> {
        let thread_ids = thread_ids.to_vec();
        self.writer
            .submit(move |c| {
                let statements: &[&str] = match strategy {
                    PruneStrategy::KeepLatest => &KEEP_LATEST,
                    PruneStrategy::Delete => &DELETE_THREAD,
                };
                for thread_id in &thread_ids {
                    run(c, statements, &[thread_id])?;
                }
                Ok(())
            })
            .await
    }
}
