//! The in-process tier's figures for the health monitor: cached entries and their size. No
//! series are kept here (they live in Redis when there is one).

use async_trait::async_trait;

use super::MemoryHot;
use crate::hot::{HotResult, MonitorHot};
use crate::model::health::Figures;
use crate::model::now;

#[async_trait]
impl MonitorHot for MemoryHot {
    async fn figures(&self, _slowlog_after: Option<i64>) -> HotResult<(Figures, Option<i64>)> {
        let (keys, used_memory) = self.footprint();
        let figures = Figures {
            backend: "memory".into(),
            used_memory,
            maxmemory: 0,
            memory_pct: None,
            connected_clients: 0,
            ops_per_sec: 0,
            keys,
            error_rate_pct: None,
            slow_commands: Vec::new(),
            budget: None,
            at: now(),
        };
        Ok((figures, None))
    }

    async fn lead_monitor(&self, _instance_id: &str, _ttl_ms: u64) -> HotResult<bool> {
        Ok(true)
    }

    async fn add_usage(&self, _day: &str, commands: u64, bytes: u64) -> HotResult<(u64, u64)> {
        Ok((commands, bytes))
    }

    async fn record_series(&self, _at_s: i64, _samples: &[(&str, f64)]) -> HotResult<()> {
        Ok(())
    }
}
