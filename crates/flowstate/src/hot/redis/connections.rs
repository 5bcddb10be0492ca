//! The SSE connection registry on Redis: `sse:connections:<id>` holds each open connection
//! (JSON, expiring after `ttl.sse_connection` unless a heartbeat refreshes it) and
//! `sse:connections:flow:{flow_id}` lists a flow's connections, scored by when they lapse, so
//! that the entries of an instance that died drop out of the listing by themselves.

use async_trait::async_trait;

use super::RedisHot;
use crate::hot::{ConnectionHot, HotError, HotResult};
use crate::model::events::SseConnection;

/// Registrations refreshed per round trip.
const REFRESH_CHUNK: usize = 1000;

impl RedisHot {
    /// Milliseconds since the epoch at which a registration made now lapses.
    fn lapses_at(&self) -> i64 {
        let now_ms = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        i64::try_from(now_ms).unwrap_or(i64::MAX) + self.ttls.config().sse_connection as i64 * 1000
    }

    /// Adds the (re)registration of `conn` to `pipe`. The value is written each time, not
    /// just given a new TTL: after Redis restarted empty a refresh brings it back.
    fn push_registration(
        &self,
        pipe: &mut ::redis::Pipeline,
        conn: &SseConnection,
    ) -> HotResult<()> {
        let ttl = self.ttls.config().sse_connection;
        let key = self.keys.sse_connection(&conn.connection_id);
        let value = serde_json::to_string(conn).map_err(|e| HotError::Corrupt {
            key: key.clone(),
            reason: e.to_string(),
        })?;
        pipe.set_ex(&key, value, ttl).ignore();
        let ttl = ttl as i64;
        let listing = self.keys.sse_flow_connections(&conn.flow_id);
        pipe.zadd(&listing, &conn.connection_id, self.lapses_at())
            .ignore();
        pipe.expire(&listing, ttl).ignore();
        Ok(())
    }
}

#[async_trait]
impl ConnectionHot for RedisHot {
    async fn add_connection(&self, conn: &SseConnection) -> HotResult<()> {
        let mut pipe = ::redis::pipe();
        self.push_registration(&mut pipe, conn)?;
        self.core.read_pipeline(&pipe, &[]).await
    }

    async fn refresh_connections(&self, conns: &[SseConnection]) -> HotResult<()> {
        for chunk in conns.chunks(REFRESH_CHUNK) {
            let mut pipe = ::redis::pipe();
            for conn in chunk {
                self.push_registration(&mut pipe, conn)?;
            }
            self.core.read_pipeline::<()>(&pipe, &[]).await?;
        }
        Ok(())
    }

    async fn remove_connection(&self, conn: &SseConnection) -> HotResult<()> {
        let mut pipe = ::redis::pipe();
        pipe.del(self.keys.sse_connection(&conn.connection_id))
            .ignore();
        pipe.zrem(
            self.keys.sse_flow_connections(&conn.flow_id),
            &conn.connection_id,
        )
        .ignore();
        self.core.read_pipeline(&pipe, &[]).await
    }

    async fn connections(&self, flow_id: &str) -> HotResult<Vec<SseConnection>> {
        let listing = self.keys.sse_flow_connections(flow_id);
        let now_ms = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        let mut pipe = ::redis::pipe();
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(&listing)
            .arg("-inf")
            .arg(format!("({now_ms}"))
            .ignore();
        pipe.zrange(&listing, 0, -1);
        let (ids,): (Vec<String>,) = self.core.read_pipeline(&pipe, &[]).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| self.keys.sse_connection(id)).collect();
        let values: Vec<Option<String>> = self.core.read(::redis::cmd("MGET").arg(&keys)).await?;
        // A registration that lapsed between the two reads is simply not listed.
        Ok(values
            .into_iter()
            .flatten()
            .filter_map(|v| serde_json::from_str(&v).ok())
            .collect())
    }
}
