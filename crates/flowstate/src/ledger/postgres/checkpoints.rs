//! LangGraph checkpoints on PostgreSQL: each request's statements in one transaction.

use async_trait::async_trait;
use futures::TryStreamExt;
use time::OffsetDateTime;

use super::PostgresLedger;
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

#[async_trait]
impl CheckpointLedger for PostgresLedger {
    async fn put_checkpoint(
        &self,
        thread_id: &str,
        checkpoint_id: &str,
        put: &PutCheckpoint,
        at: OffsetDateTime,
    ) -> Result<()> {
        sqlx::query(PUT)
            .bind(thread_id)
            .bind(&put.checkpoint_ns)
            .bind(checkpoint_id)
            .bind(&put.parent_checkpoint_id)
            .bind(&put.kind)
            .bind(&put.checkpoint)
            .bind(metadata_text(&put.metadata)?)
            .bind(run_id(&put.metadata))
            .bind(at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn put_writes(
        &self,
        thread_id: &str,
        checkpoint_id: &str,
        writes: &PutWrites,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for w in &writes.writes {
            let sql = if w.idx < 0 {
                PUT_SPECIAL_WRITE
            } else {
                PUT_WRITE
            };
            sqlx::query(sql)
                .bind(thread_id)
                .bind(&writes.checkpoint_ns)
                .bind(checkpoint_id)
                .bind(&writes.task_id)
                .bind(w.idx)
                .bind(&writes.task_path)
                .bind(&w.channel)
                .bind(&w.kind)
                .bind(&w.value)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
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
            let mut rows = query.fetch(&self.pool);
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
                .fetch_all(&self.pool)
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
                .fetch_all(&self.pool)
                .await?;
            let writes = writes.into_iter().map(PendingWrite::from).collect();
            tuples.push(row.into_tuple(metadata, writes));
        }
        Ok(tuples)
    }

    async fn delete_thread(&self, thread_id: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for sql in DELETE_THREAD {
            sqlx::query(sql).bind(thread_id).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn delete_runs(&self, run_ids: &[String]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for run_id in run_ids {
            for sql in DELETE_RUN {
                sqlx::query(sql).bind(run_id).execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn copy_thread(&self, from: &str, to: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for sql in COPY_THREAD {
            sqlx::query(sql)
                .bind(from)
                .bind(to)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn prune_threads(&self, thread_ids: &[String], strategy: PruneStrategy) -> Result<()> {
        let statements: &[&str] = match strategy {
            PruneStrategy::KeepLatest => &KEEP_LATEST,
            PruneStrategy::Delete => &DELETE_THREAD,
        };
        let mut tx = self.pool.begin().await?;
        for thread_id in thread_ids {
            for sql in statements {
                sqlx::query(*sql).bind(thread_id).execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }
}
