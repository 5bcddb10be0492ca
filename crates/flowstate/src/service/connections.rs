//! The registry of open SSE connections: each is registered in the hot tier when it opens
//! (listed across instances by [`Flowstate::connections`]), refreshed by the instance's
//! heartbeat every `events.heartbeat_s` (registrations lapse after `ttl.sse_connection`
//! without one, so a crashed instance's connections drop out), and removed the moment it
//! closes.

use std::collections::HashMap;
use std::sync::{Mutex, Weak};

use super::{Flowstate, Inner};
use crate::error::Result;
use crate::model::events::{EventId, SseConnection, connections_of};
use crate::model::ids;

/// This instance's open connections.
#[derive(Default)]
pub(super) struct Local {
    conns: Mutex<HashMap<String, SseConnection>>,
}

impl Local {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, SseConnection>> {
        // A poisoned lock only means a panic between two complete map operations.
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// An open connection's registration; dropping it removes it.
pub(super) struct Registration {
    service: Flowstate,
    conn: SseConnection,
}

impl Registration {
    /// The connection's id.
    pub(super) fn id(&self) -> &str {
        &self.conn.connection_id
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        metrics::gauge!("flowstate_sse_connections").decrement(1);
        self.service
            .inner
            .connections
            .lock()
            .remove(&self.conn.connection_id);
        // Removal needs a round trip; without a runtime (shutting down) the entry lapses.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (service, conn) = (self.service.clone(), self.conn.clone());
            rt.spawn(async move {
                service
                    .hot_read("connections.remove", service.hot().remove_connection(&conn))
                    .await;
            });
        }
    }
}

impl Flowstate {
    /// Registers a connection that opens now.
    pub(super) async fn register_connection(
        &self,
        flow_id: &str,
        resumed_from: Option<EventId>,
    ) -> Registration {
        let conn = SseConnection {
            connection_id: uuid::Uuid::now_v7().to_string(),
            flow_id: flow_id.to_string(),
            instance_id: self.inner.instance_id.clone(),
            connected_at: crate::model::now(),
            resumed_from: resumed_from.map(|id| id.to_string()),
        };
        self.inner
            .connections
            .lock()
            .insert(conn.connection_id.clone(), conn.clone());
        metrics::gauge!("flowstate_sse_connections").increment(1);
        // The guard first: should this request be dropped during the round trip, it still
        // removes the connection.
        let registration = Registration {
            service: self.clone(),
            conn,
        };
        self.hot_read(
            "connections.add",
            self.hot().add_connection(&registration.conn),
        )
        .await;
        registration
    }

    /// A flow's open SSE connections on every instance (only this instance's while the hot
    /// tier is unreachable).
    pub async fn connections(&self, flow_id: &str) -> Result<Vec<SseConnection>> {
        ids::validate("flow_id", flow_id)?;
        self.get_flow(flow_id).await?;
        if let Some(mut listed) = self
            .hot_read("connections.list", self.hot().connections(flow_id))
            .await
        {
            listed.sort_by_key(|c| c.connected_at);
            return Ok(listed);
        }
        Ok(connections_of(
            self.inner.connections.lock().values(),
            flow_id,
        ))
    }
}

/// Refreshes this instance's registrations every heartbeat while the service lives.
pub(super) async fn heartbeat(inner: Weak<Inner>) {
    let every = match inner.upgrade() {
        Some(inner) => inner.config.events.heartbeat(),
        None => return,
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let open: Vec<SseConnection> = inner.connections.lock().values().cloned().collect();
        if open.is_empty() {
            continue;
        }
        if let Err(e) = inner.hot.refresh_connections(&open).await {
            tracing::debug!(error = %e, connections = open.len(), "connection registry not refreshed");
        }
        // A connection that closed while the refresh was on its way may have been written
        // back after its removal: remove it again.
        let closed: Vec<SseConnection> = {
            let local = inner.connections.lock();
            open.into_iter()
                .filter(|c| !local.contains_key(&c.connection_id))
                .collect()
        };
        for conn in closed {
            let _ = inner.hot.remove_connection(&conn).await;
        }
    }
}
