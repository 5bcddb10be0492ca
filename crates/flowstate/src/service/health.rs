//! Health of both tiers (`/v1/health`, `/readyz`), whether the hot tier is being bypassed, and
//! the memory a flow takes in the hot tier (Redis `MEMORY USAGE`).

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

use super::Flowstate;
use crate::error::{Error, Result};
use crate::hot::{FlowKeys, HotStats};
use crate::model::health::{Alert, Figures};
use crate::model::ids;

/// Health of both tiers.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `healthy`, `degraded` (hot tier unreachable) or `unavailable` (ledger unreachable).
    #[schema(value_type = String)]
    pub status: &'static str,
    /// The hot tier (named `redis` as in the reference design; its `backend` says `memory` when embedded).
    pub redis: TierHealth,
    /// The ledger.
    pub ledger: TierHealth,
    /// The health monitor's active alerts (metrics over their `[health]` thresholds).
    pub alerts: Vec<Alert>,
    /// The figures of the monitor's latest check of the hot tier, once one has run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monitor: Option<Figures>,
}

/// Health of one tier.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TierHealth {
    /// Backend name.
    #[schema(value_type = String)]
    pub backend: &'static str,
    /// Whether it answered.
    pub ok: bool,
    /// Round-trip latency of the check, in milliseconds.
    pub latency_ms: f64,
    /// Why it did not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Counters (hot tier only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats: Option<HotStats>,
}

impl Flowstate {
    /// Checks both tiers.
    pub async fn health(&self) -> Health {
        let started = Instant::now();
        let ledger = self.ledger().ping().await;
        let ledger = TierHealth {
            backend: self.ledger().backend(),
            ok: ledger.is_ok(),
            latency_ms: started.elapsed().as_secs_f64() * 1e3,
            error: ledger.err().map(|e| self.config().redact(&e.to_string())),
            stats: None,
        };
        let hot = self.hot().ping().await;
        let redis = TierHealth {
            backend: self.hot().backend(),
            ok: hot.is_ok(),
            latency_ms: hot.as_ref().map(|d| d.as_secs_f64() * 1e3).unwrap_or(0.0),
            error: hot.err().map(|e| self.config().redact(&e.to_string())),
            stats: Some(self.hot().stats()),
        };
        let status = match (ledger.ok, redis.ok) {
            (false, _) => "unavailable",
            (true, false) => "degraded",
            (true, true) => "healthy",
        };
        Health {
            status,
            redis,
            ledger,
            alerts: self.active_alerts(),
            monitor: self.latest_figures(),
        }
    }

    /// The hot tier's counters since start.
    pub fn hot_stats(&self) -> HotStats {
        self.hot().stats()
    }

    /// Whether the hot tier is being bypassed right now (circuit breaker open).
    pub fn is_degraded(&self) -> bool {
        self.hot().stats().breaker_open
    }

    /// Bytes each of a flow's hot-tier keys uses (Redis `MEMORY USAGE`), and their total.
    pub async fn memory(&self, flow_id: &str) -> Result<(BTreeMap<String, u64>, u64)> {
        ids::validate("flow_id", flow_id)?;
        if self.ledger().get_flow(flow_id).await?.is_none() {
            return Err(Error::FlowNotFound(flow_id.to_string()));
        }
        let keys = FlowKeys {
            flow_id: flow_id.to_string(),
            phases: self.list_phases(flow_id).await?,
            agents: self.list_agents(flow_id).await?,
            snapshots: self.list_snapshots(flow_id).await?,
        };
        let sizes = self
            .hot_read("flows.memory", self.hot().memory(&keys))
            .await
            .unwrap_or_default();
        let total = sizes.values().sum();
        Ok((sizes, total))
    }

    /// Whether the ledger answers (readiness).
    pub async fn ready(&self) -> Result<()> {
        self.ledger().ping().await
    }
}
