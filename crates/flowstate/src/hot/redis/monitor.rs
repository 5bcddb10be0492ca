//! What the health monitor reads of Redis (`INFO` and `SLOWLOG GET`, one round trip) and its
//! series (`metrics:redis:<metric>`, one round trip per check).

use std::sync::LazyLock;

use ::redis::{Script, Value};
use async_trait::async_trait;

use super::{RedisHot, reply_int};
use crate::hot::{HotResult, MonitorHot};
use crate::model::health::{Figures, SlowCommand};
use crate::model::now;

const MONITOR_LEAD_SRC: &str = include_str!("scripts/monitor_lead.lua");
/// This capability's scripts, loaded at startup.
pub(super) const SCRIPTS: &[&str] = &[MONITOR_LEAD_SRC];
static MONITOR_LEAD: LazyLock<Script> = LazyLock::new(|| Script::new(MONITOR_LEAD_SRC));

/// Slow log entries read per check.
const SLOWLOG_READ: usize = 32;

/// Samples older than this are dropped from a series.
const SERIES_SPAN_S: i64 = 24 * 3600;

fn info_u64(info: &str, field: &str) -> u64 {
    info.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Keys over every database (`db0:keys=12,expires=3,...`).
fn keyspace_keys(info: &str) -> u64 {
    info.lines()
        .filter(|l| l.starts_with("db"))
        .filter_map(|l| {
            l.split_once(":keys=")?
                .1
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// The newest slow log entry's id.
fn newest_id(reply: &Value) -> Option<i64> {
    let Value::Array(entries) = reply else {
        return None;
    };
    entries
        .iter()
        .filter_map(|e| match e {
            Value::Array(fields) => reply_int(fields.first()?),
            _ => None,
        })
        .max()
}

/// Slow log entries after `after`, slowest first: `[id, time, micros, [args...], ...]`.
fn slow_commands(reply: &Value, after: Option<i64>) -> Vec<SlowCommand> {
    let Value::Array(entries) = reply else {
        return Vec::new();
    };
    let mut out: Vec<SlowCommand> = entries
        .iter()
        .filter_map(|e| {
            let Value::Array(fields) = e else { return None };
            let id = reply_int(fields.first()?)?;
            if after.is_some_and(|a| id <= a) {
                return None;
            }
            let command = match fields.get(3)? {
                Value::Array(args) => match args.first()? {
                    Value::BulkString(b) => String::from_utf8_lossy(b).to_uppercase(),
                    _ => return None,
                },
                _ => return None,
            };
            Some(SlowCommand {
                id,
                command,
                duration_ms: reply_int(fields.get(2)?)? as f64 / 1000.0,
                at: reply_int(fields.get(1)?)?,
            })
        })
        .collect();
    out.sort_by(|a, b| b.duration_ms.total_cmp(&a.duration_ms));
    out
}

#[async_trait]
impl MonitorHot for RedisHot {
    async fn figures(&self, slowlog_after: Option<i64>) -> HotResult<(Figures, Option<i64>)> {
        let mut pipe = ::redis::pipe();
        pipe.cmd("INFO").arg("everything");
        pipe.cmd("SLOWLOG").arg("GET").arg(SLOWLOG_READ);
        let (info, slowlog): (String, Value) = self.core.read_pipeline(&pipe, &[]).await?;
        let used_memory = info_u64(&info, "used_memory");
        let maxmemory = info_u64(&info, "maxmemory");
        // Ids start again when Redis restarts: an after-id above every id there is forgotten.
        let top = newest_id(&slowlog);
        let after = slowlog_after.filter(|a| top.is_some_and(|t| t >= *a));
        let mut slow = slow_commands(&slowlog, after);
        // The next check reads only what came after the newest entry seen.
        let newest = top.or(after);
        slow.truncate(5);
        let figures = Figures {
            backend: "redis".into(),
            used_memory,
            maxmemory,
            memory_pct: (maxmemory > 0).then(|| used_memory as f64 * 100.0 / maxmemory as f64),
            connected_clients: info_u64(&info, "connected_clients"),
            ops_per_sec: info_u64(&info, "instantaneous_ops_per_sec"),
            keys: keyspace_keys(&info),
            error_rate_pct: None,
            slow_commands: slow,
            budget: None,
            at: now(),
        };
        Ok((figures, newest))
    }

    async fn lead_monitor(&self, instance_id: &str, ttl_ms: u64) -> HotResult<bool> {
        let mut pipe = ::redis::pipe();
        pipe.cmd("EVALSHA")
            .arg(MONITOR_LEAD.get_hash())
            .arg(1)
            .arg(self.keys.monitor_leader())
            .arg(instance_id)
            .arg(ttl_ms);
        let (leads,): (i64,) = self.core.read_pipeline(&pipe, &[MONITOR_LEAD_SRC]).await?;
        Ok(leads == 1)
    }

    async fn add_usage(&self, day: &str, commands: u64, bytes: u64) -> HotResult<(u64, u64)> {
        let key = self.keys.budget(day);
        let mut pipe = ::redis::pipe();
        pipe.cmd("HINCRBY").arg(&key).arg("commands").arg(commands);
        pipe.cmd("HINCRBY").arg(&key).arg("bytes").arg(bytes);
        pipe.cmd("EXPIRE").arg(&key).arg(2 * 86_400).ignore();
        let (commands, bytes): (u64, u64) = self.core.read_pipeline(&pipe, &[]).await?;
        Ok((commands, bytes))
    }

    async fn record_series(&self, at_s: i64, samples: &[(&str, f64)]) -> HotResult<()> {
        let mut pipe = ::redis::pipe();
        for (metric, value) in samples {
            let key = self.keys.metric_series(metric);
            pipe.cmd("ZADD")
                .arg(&key)
                .arg(at_s)
                .arg(format!("{at_s}:{value}"))
                .ignore();
            pipe.cmd("ZREMRANGEBYSCORE")
                .arg(&key)
                .arg("-inf")
                .arg(format!("({}", at_s - SERIES_SPAN_S))
                .ignore();
        }
        let () = self.core.read_pipeline(&pipe, &[]).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_and_slowlog_parse() {
        let info = "used_memory:1024\r\nmaxmemory:0\r\ndb0:keys=12,expires=3,avg_ttl=0\r\ndb2:keys=3,expires=0\r\n";
        assert_eq!(info_u64(info, "used_memory"), 1024);
        assert_eq!(info_u64(info, "used_memory_peak"), 0);
        assert_eq!(keyspace_keys(info), 15);
        let entry = |id: i64, micros: i64, cmd: &str| {
            Value::Array(vec![
                Value::Int(id),
                Value::Int(1_700_000_000),
                Value::Int(micros),
                Value::Array(vec![Value::BulkString(cmd.as_bytes().to_vec())]),
            ])
        };
        let reply = Value::Array(vec![
            entry(7, 150_000, "get"),
            entry(6, 300_000, "keys"),
            entry(5, 1, "set"),
        ]);
        let slow = slow_commands(&reply, Some(5));
        assert_eq!(slow.iter().map(|s| s.id).collect::<Vec<_>>(), [6, 7]);
        assert_eq!(
            (slow[0].command.as_str(), slow[0].duration_ms),
            ("KEYS", 300.0)
        );
    }
}
