//! The SSE connection registry in process: one process serves every connection of the
//! embedded setup, so registrations need no expiry; a closed connection is removed at once.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::MemoryHot;
use crate::hot::{ConnectionHot, HotResult};
use crate::model::events::{SseConnection, connections_of};

/// Open connections by id.
#[derive(Default)]
pub(super) struct Registry {
    conns: Mutex<HashMap<String, SseConnection>>,
}

impl Registry {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, SseConnection>> {
        // A poisoned lock only means a panic between two complete map operations.
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl ConnectionHot for MemoryHot {
    async fn add_connection(&self, conn: &SseConnection) -> HotResult<()> {
        self.connections
            .lock()
            .insert(conn.connection_id.clone(), conn.clone());
        Ok(())
    }

    async fn refresh_connections(&self, _conns: &[SseConnection]) -> HotResult<()> {
        Ok(())
    }

    async fn remove_connection(&self, conn: &SseConnection) -> HotResult<()> {
        self.connections.lock().remove(&conn.connection_id);
        Ok(())
    }

    async fn connections(&self, flow_id: &str) -> HotResult<Vec<SseConnection>> {
        Ok(connections_of(self.connections.lock().values(), flow_id))
    }
}
