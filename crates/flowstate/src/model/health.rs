//! The health monitor's figures, thresholds and alerts: what a check of the hot tier measured,
//! which thresholds it crossed, and the alerts that stay active (with when they began) until
//! a check finds the metric back under its threshold.

use std::collections::BTreeMap;

use serde::Serialize;
use time::OffsetDateTime;

/// A command Redis logged as slow (its name only: arguments may hold user data).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SlowCommand {
    /// The slow log entry's id.
    pub id: i64,
    /// The command's name.
    pub command: String,
    /// How long it ran, in ms.
    pub duration_ms: f64,
    /// When it ran (Unix seconds).
    pub at: i64,
}

/// What one check of the hot tier measured.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Figures {
    /// `redis` or `memory`.
    pub backend: String,
    /// Bytes in use (Redis `used_memory`; in process, the size of the cached agent results).
    pub used_memory: u64,
    /// Redis `maxmemory` (0: no limit).
    pub maxmemory: u64,
    /// `used_memory` in % of `maxmemory`, when there is one.
    pub memory_pct: Option<f64>,
    /// Connected clients.
    pub connected_clients: u64,
    /// Commands per second (Redis `instantaneous_ops_per_sec`).
    pub ops_per_sec: u64,
    /// Keys (Redis: every database's; in process: cached entries).
    pub keys: u64,
    /// % of this instance's Redis calls that failed since the previous check.
    pub error_rate_pct: Option<f64>,
    /// The slowest commands logged since the previous check, slowest first (at most 5).
    pub slow_commands: Vec<SlowCommand>,
    /// Today's use of a managed Redis plan, when a budget is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetUsage>,
    /// When this was measured.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// What every instance sent to Redis today (UTC), against the plan's limits.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct BudgetUsage {
    /// The UTC day (`YYYY-MM-DD`).
    pub day: String,
    /// Commands sent today.
    pub commands: u64,
    /// Bytes sent today.
    pub bytes: u64,
    /// The daily command limit.
    pub commands_limit: Option<u64>,
    /// The daily byte limit.
    pub bytes_limit: Option<u64>,
    /// The memory limit, in bytes.
    pub memory_limit: Option<u64>,
    /// Alert at this % of a limit.
    pub alert_pct: f64,
}

/// The thresholds a check compares with (`[health]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// `memory_pct`.
    pub memory_pct: f64,
    /// `max_clients`.
    pub max_clients: u64,
    /// `slow_command_ms`.
    pub slow_command_ms: u64,
    /// `error_rate_pct`.
    pub error_rate_pct: f64,
}

/// A metric over its threshold.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Alert {
    /// `memory_pct`, `connected_clients`, `slow_command_ms`, `error_rate_pct`,
    /// `daily_commands_pct`, `daily_bandwidth_pct`, `plan_memory_pct`, `redis_unreachable` or
    /// `health_check_failed`.
    pub metric: String,
    /// Its value at the latest check.
    pub value: f64,
    /// The threshold it crossed.
    pub threshold: f64,
    /// Since when it has been over.
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    /// For people.
    pub message: String,
}

/// What a check found: figures, or the tier did not answer, or answered with an error.
#[derive(Debug, Clone)]
pub enum Check {
    /// Measured.
    Measured(Box<Figures>),
    /// Redis did not answer (the error, without secrets).
    Unreachable(String),
    /// Redis answered the check with an error (a managed Redis that refuses `SLOWLOG`, say).
    Failed(String),
}

/// Every threshold `check` crosses: (metric, value, threshold, message).
pub fn breaches(check: &Check, t: &Thresholds) -> Vec<(&'static str, f64, f64, String)> {
    let f = match check {
        Check::Unreachable(error) => {
            return vec![(
                "redis_unreachable",
                1.0,
                0.0,
                format!("the health check could not reach Redis: {error}"),
            )];
        }
        Check::Failed(error) => {
            return vec![(
                "health_check_failed",
                1.0,
                0.0,
                format!("Redis answered the health check with an error: {error}"),
            )];
        }
        Check::Measured(f) => f,
    };
    let mut out = Vec::new();
    if let Some(pct) = f.memory_pct
        && pct > t.memory_pct
    {
        out.push((
            "memory_pct",
            pct,
            t.memory_pct,
            format!("Redis uses {pct:.1} % of maxmemory"),
        ));
    }
    if f.connected_clients > t.max_clients {
        out.push((
            "connected_clients",
            f.connected_clients as f64,
            t.max_clients as f64,
            format!("{} clients connected to Redis", f.connected_clients),
        ));
    }
    if let Some(slow) = f.slow_commands.first()
        && slow.duration_ms > t.slow_command_ms as f64
    {
        out.push((
            "slow_command_ms",
            slow.duration_ms,
            t.slow_command_ms as f64,
            format!("{} took {:.1} ms", slow.command, slow.duration_ms),
        ));
    }
    if let Some(b) = &f.budget {
        let pct = |used: u64, limit: Option<u64>| {
            limit
                .filter(|l| *l > 0)
                .map(|l| used as f64 * 100.0 / l as f64)
        };
        let checks = [
            (
                "daily_commands_pct",
                pct(b.commands, b.commands_limit),
                "of the plan's daily commands",
            ),
            (
                "daily_bandwidth_pct",
                pct(b.bytes, b.bytes_limit),
                "of the plan's daily bandwidth",
            ),
            (
                "plan_memory_pct",
                pct(f.used_memory, b.memory_limit),
                "of the plan's memory",
            ),
        ];
        for (metric, used, what) in checks {
            if let Some(used) = used
                && used >= b.alert_pct
            {
                out.push((
                    metric,
                    used,
                    b.alert_pct,
                    format!("{used:.1} % {what} used"),
                ));
            }
        }
    }
    if let Some(rate) = f.error_rate_pct
        && rate > t.error_rate_pct
    {
        out.push((
            "error_rate_pct",
            rate,
            t.error_rate_pct,
            format!("{rate:.1} % of this instance's Redis calls failed"),
        ));
    }
    out
}

/// The alerts that are active, by metric.
#[derive(Debug, Clone, Default)]
pub struct Alerts {
    active: BTreeMap<String, Alert>,
}

/// How the active alerts changed with a check.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlertChanges {
    /// Newly over their threshold.
    pub raised: Vec<Alert>,
    /// Back under it (with their last value).
    pub resolved: Vec<Alert>,
}

impl Alerts {
    /// Applies a check's breaches at `now`. A check that measured nothing (`measured` false)
    /// resolves no other alert: it does not know they are over.
    pub fn update(
        &mut self,
        breaches: Vec<(&'static str, f64, f64, String)>,
        measured: bool,
        now: OffsetDateTime,
    ) -> AlertChanges {
        let mut changes = AlertChanges::default();
        let over: Vec<&str> = breaches.iter().map(|b| b.0).collect();
        let failures = ["redis_unreachable", "health_check_failed"];
        let gone: Vec<String> = self
            .active
            .keys()
            .filter(|m| !over.contains(&m.as_str()))
            .filter(|m| measured || failures.contains(&m.as_str()))
            .cloned()
            .collect();
        for metric in gone {
            if let Some(alert) = self.active.remove(&metric) {
                changes.resolved.push(alert);
            }
        }
        for (metric, value, threshold, message) in breaches {
            match self.active.get_mut(metric) {
                Some(alert) => {
                    alert.value = value;
                    alert.message = message;
                }
                None => {
                    let alert = Alert {
                        metric: metric.to_string(),
                        value,
                        threshold,
                        since: now,
                        message,
                    };
                    self.active.insert(metric.to_string(), alert.clone());
                    changes.raised.push(alert);
                }
            }
        }
        changes
    }

    /// The active alerts, by metric.
    pub fn active(&self) -> Vec<Alert> {
        self.active.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Thresholds = Thresholds {
        memory_pct: 80.0,
        max_clients: 40,
        slow_command_ms: 100,
        error_rate_pct: 5.0,
    };

    fn figures(memory_pct: Option<f64>, clients: u64) -> Check {
        Check::Measured(Box::new(Figures {
            backend: "redis".into(),
            used_memory: 0,
            maxmemory: 0,
            memory_pct,
            connected_clients: clients,
            ops_per_sec: 0,
            keys: 0,
            error_rate_pct: Some(0.0),
            slow_commands: vec![],
            budget: None,
            at: OffsetDateTime::UNIX_EPOCH,
        }))
    }

    #[test]
    fn budgets_alert_at_their_pct() {
        let Check::Measured(mut f) = figures(None, 0) else {
            unreachable!()
        };
        f.used_memory = 90;
        f.budget = Some(BudgetUsage {
            day: "2026-11-30".into(),
            commands: 8,
            bytes: 10,
            commands_limit: Some(10),
            bytes_limit: Some(100),
            memory_limit: Some(100),
            alert_pct: 80.0,
        });
        let b = breaches(&Check::Measured(f), &T);
        let metrics: Vec<&str> = b.iter().map(|x| x.0).collect();
        assert_eq!(
            metrics,
            ["daily_commands_pct", "plan_memory_pct"],
            "80 % reached, 10 % not"
        );
    }

    #[test]
    fn alerts_rise_stay_and_resolve() {
        let mut alerts = Alerts::default();
        let t0 = OffsetDateTime::UNIX_EPOCH;
        let t1 = t0 + time::Duration::minutes(1);
        let c = alerts.update(breaches(&figures(Some(90.0), 41), &T), true, t0);
        assert_eq!(c.raised.len(), 2);
        let c = alerts.update(breaches(&figures(Some(95.0), 10), &T), true, t1);
        assert!(c.raised.is_empty());
        assert_eq!(c.resolved.len(), 1, "clients back under");
        let active = alerts.active();
        assert_eq!(active.len(), 1);
        assert_eq!(
            (active[0].value, active[0].since),
            (95.0, t0),
            "since stays"
        );
        assert!(
            breaches(&figures(None, 0), &T).is_empty(),
            "no maxmemory: no %"
        );
        let down = breaches(&Check::Unreachable("refused".into()), &T);
        assert_eq!(down[0].0, "redis_unreachable");
        let c = alerts.update(down, false, t1);
        assert_eq!(
            (c.raised.len(), c.resolved.len()),
            (1, 0),
            "memory stays active"
        );
        let c = alerts.update(breaches(&figures(Some(95.0), 10), &T), true, t1);
        assert_eq!(c.resolved[0].metric, "redis_unreachable");
        assert_eq!(alerts.active()[0].since, t0, "memory_pct kept its start");
    }
}
