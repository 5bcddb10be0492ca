//! The health monitor (reference §2.2): a background task that checks the hot tier every
//! `health.interval_s`, compares its figures with the `[health]` thresholds, keeps the active
//! alerts (shown by `/v1/health`), logs each alert raised or resolved and POSTs it to
//! `FLOWSTATE_ALERT_WEBHOOK`, and appends each metric to its `metrics:redis:<metric>` series.
//!
//! Every instance checks (its `/v1/health` shows what it sees; the error rate is its own
//! client's), but only the instance holding `metrics:redis:leader` writes the series and posts
//! to the webhook, so N instances do not send N copies. (Not a flowstate lock: a lock would
//! extend the lock horizon, and so every pause of locks after Redis is lost.) When Redis cannot
//! be reached, every instance posts: the alert that Redis is unreachable must not depend on
//! Redis.
//! The webhook has a bounded queue and its own task: a receiver that is down or hangs delays
//! no check and no request (alerts beyond the queue are dropped and counted).

use std::sync::{Mutex, Weak};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{Flowstate, Inner, unpoisoned};
use crate::hot::HotError;
use crate::model::health::{Alert, Alerts, BudgetUsage, Check, Figures, Thresholds, breaches};
use crate::model::now;

/// Alerts waiting for the webhook.
const WEBHOOK_QUEUE: usize = 256;

/// Attempts per alert, and the timeout of each.
const WEBHOOK_ATTEMPTS: u32 = 3;
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);

/// What the monitor keeps between checks.
#[derive(Default)]
pub(super) struct MonitorState {
    alerts: Mutex<Alerts>,
    last: Mutex<Option<Figures>>,
}

impl Flowstate {
    /// The alerts active at the latest check.
    pub fn active_alerts(&self) -> Vec<Alert> {
        unpoisoned(&self.inner.monitor.alerts).active()
    }

    /// The latest check's figures, if one has run.
    pub fn latest_figures(&self) -> Option<Figures> {
        unpoisoned(&self.inner.monitor.last).clone()
    }
}

/// Runs the checks while the service lives (not at all with `health.interval_s = 0`).
pub(super) async fn run(inner: Weak<Inner>, webhook: Option<mpsc::Sender<Value>>) {
    let Some(interval) = inner
        .upgrade()
        .map(|i| Duration::from_secs(i.config.health.interval_s))
    else {
        return;
    };
    if interval.is_zero() {
        return;
    }
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut slowlog_after: Option<Option<i64>> = None;
    let mut counted = None;
    let mut sent = None;
    let mut last_budget = None;
    loop {
        tick.tick().await;
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let service = Flowstate { inner: strong };
        let mut check = service.check(&mut slowlog_after, &mut counted).await;
        service
            .add_budget(&mut check, &mut sent, &mut last_budget)
            .await;
        let ttl_ms = u64::try_from(interval.as_millis().saturating_mul(2)).unwrap_or(u64::MAX);
        let leads = service
            .hot()
            .lead_monitor(&service.inner.instance_id, ttl_ms)
            .await
            .unwrap_or(true);
        service.apply(check, leads, webhook.as_ref()).await;
    }
}

impl Flowstate {
    /// One check of the hot tier. `slowlog_after` is `None` until a check has read the slow
    /// log, then the newest id read (if any).
    async fn check(
        &self,
        slowlog_after: &mut Option<Option<i64>>,
        counted: &mut Option<(u64, u64)>,
    ) -> Check {
        let stats = self.hot().stats();
        let rate = counted.map(|(calls, errors)| {
            let calls = stats.round_trips.saturating_sub(calls);
            let errors = stats.errors.saturating_sub(errors);
            (calls > 0).then(|| errors as f64 * 100.0 / calls as f64)
        });
        *counted = Some((stats.round_trips, stats.errors));
        match self.hot().figures(slowlog_after.flatten()).await {
            Ok((mut figures, newest)) => {
                let first = slowlog_after.is_none();
                *slowlog_after = Some(newest);
                figures.error_rate_pct = rate.flatten();
                if first {
                    // What the slow log held before this process started is not news.
                    figures.slow_commands.clear();
                }
                Check::Measured(Box::new(figures))
            }
            Err(HotError::Unavailable) => Check::Unreachable("the circuit breaker is open".into()),
            Err(HotError::Redis(e))
                if e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal() =>
            {
                Check::Unreachable(e.to_string())
            }
            Err(e) => Check::Failed(e.to_string()),
        }
    }

    /// With a budget configured, adds what this instance sent since the previous check to the
    /// day's totals of every instance and puts today's use into the check.
    /// When the totals cannot be read, the last ones stand in (a budget alert must not be
    /// resolved by a missed read).
    async fn add_budget(
        &self,
        check: &mut Check,
        sent: &mut Option<(u64, u64)>,
        last: &mut Option<BudgetUsage>,
    ) {
        let Some(limits) = self.config().budget.limits() else {
            return;
        };
        let Check::Measured(figures) = check else {
            return;
        };
        let stats = self.hot().stats();
        let (commands, bytes) = match *sent {
            Some((c, b)) => (
                stats.commands_sent.saturating_sub(c),
                stats.bytes_sent.saturating_sub(b),
            ),
            None => (stats.commands_sent, stats.bytes_sent),
        };
        let at = now();
        let day = format!(
            "{:04}-{:02}-{:02}",
            at.year(),
            u8::from(at.month()),
            at.day()
        );
        match self.hot().add_usage(&day, commands, bytes).await {
            Ok((commands, bytes)) => {
                *sent = Some((stats.commands_sent, stats.bytes_sent));
                *last = Some(BudgetUsage {
                    day,
                    commands,
                    bytes,
                    commands_limit: limits.commands_per_day,
                    bytes_limit: limits.bytes_per_day,
                    memory_limit: limits.memory_bytes,
                    alert_pct: limits.alert_pct,
                });
            }
            Err(e) => tracing::debug!(error = %e, "budget usage not recorded"),
        }
        figures.budget = last.clone();
    }

    /// Updates the alerts with a check; the leader records the series and posts changes.
    async fn apply(&self, check: Check, leads: bool, webhook: Option<&mpsc::Sender<Value>>) {
        let h = &self.config().health;
        let thresholds = Thresholds {
            memory_pct: h.memory_pct,
            max_clients: h.max_clients,
            slow_command_ms: h.slow_command_ms,
            error_rate_pct: h.error_rate_pct,
        };
        let at = now();
        let measured = matches!(check, Check::Measured(_));
        let changes = unpoisoned(&self.inner.monitor.alerts).update(
            breaches(&check, &thresholds),
            measured,
            at,
        );
        for alert in &changes.raised {
            metrics::counter!("flowstate_alerts_total", "metric" => alert.metric.clone())
                .increment(1);
            tracing::warn!(
                metric = %alert.metric,
                value = alert.value,
                threshold = alert.threshold,
                "alert: {}",
                alert.message
            );
        }
        for alert in &changes.resolved {
            tracing::info!(metric = %alert.metric, "alert resolved: {}", alert.message);
        }
        if let Check::Measured(figures) = &check {
            if leads {
                let mut samples = vec![
                    ("connected_clients", figures.connected_clients as f64),
                    ("ops_per_sec", figures.ops_per_sec as f64),
                    ("keys", figures.keys as f64),
                ];
                if let Some(pct) = figures.memory_pct {
                    samples.push(("memory_pct", pct));
                }
                if let Some(rate) = figures.error_rate_pct {
                    samples.push(("error_rate_pct", rate));
                }
                let seconds = at.unix_timestamp();
                if let Err(e) = self.hot().record_series(seconds, &samples).await {
                    tracing::debug!(error = %e, "health series not recorded");
                }
            }
            *unpoisoned(&self.inner.monitor.last) = Some(figures.as_ref().clone());
        }
        let Some(webhook) = webhook.filter(|_| leads) else {
            return;
        };
        let posts = changes
            .raised
            .iter()
            .map(|a| ("firing", a))
            .chain(changes.resolved.iter().map(|a| ("resolved", a)));
        for (status, alert) in posts {
            let body = json!({
                "status": status,
                "metric": alert.metric,
                "value": alert.value,
                "threshold": alert.threshold,
                "since": alert.since.unix_timestamp(),
                "message": alert.message,
                "instance_id": self.inner.instance_id,
            });
            if webhook.try_send(body).is_err() {
                metrics::counter!("flowstate_alert_webhook_dropped_total").increment(1);
            }
        }
    }
}

/// Recycles the pooled Redis connections every `budget.connection_pool_recycle_s` when a
/// budget is set (managed services drop long-lived connections).
pub(super) async fn recycle(inner: Weak<Inner>) {
    let Some(every) = inner.upgrade().and_then(|i| {
        let b = &i.config.budget;
        (i.hot.shared() && b.limits().is_some() && b.connection_pool_recycle_s > 0)
            .then(|| Duration::from_secs(b.connection_pool_recycle_s))
    }) else {
        return;
    };
    loop {
        tokio::time::sleep(every).await;
        let Some(strong) = inner.upgrade() else {
            return;
        };
        match strong.hot.recycle_connections() {
            Ok(()) => tracing::info!("pooled Redis connections recycled"),
            Err(e) => tracing::warn!(error = %e, "pooled Redis connections not recycled"),
        }
    }
}

/// The webhook's queue and the task that drains it, when one is configured.
pub(super) fn webhook(url: Option<&str>) -> Option<mpsc::Sender<Value>> {
    let url = url?.to_string();
    let (tx, rx) = mpsc::channel(WEBHOOK_QUEUE);
    tokio::spawn(post_alerts(url, rx));
    Some(tx)
}

/// Posts each queued alert, with a few attempts; ends when the service is gone.
async fn post_alerts(url: String, mut rx: mpsc::Receiver<Value>) {
    let client = match reqwest::Client::builder().timeout(WEBHOOK_TIMEOUT).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "alert webhook client could not be built; alerts go to the log only");
            return;
        }
    };
    while let Some(body) = rx.recv().await {
        for attempt in 1..=WEBHOOK_ATTEMPTS {
            let sent = client.post(&url).json(&body).send().await;
            match sent.and_then(reqwest::Response::error_for_status) {
                Ok(_) => break,
                Err(e) => {
                    metrics::counter!("flowstate_alert_webhook_failures_total").increment(1);
                    // The URL may hold a secret: never logged.
                    tracing::warn!(attempt, error = %e.without_url(), "alert webhook failed");
                    if attempt < WEBHOOK_ATTEMPTS {
                        // 1 s, then 2 s.
                        tokio::time::sleep(Duration::from_secs(1 << (attempt - 1))).await;
                    }
                }
            }
        }
    }
}
