//! `flowstate bench-fanout`: one flow's events fanned out to N concurrent SSE subscribers on
//! one instance. Opens N event streams, measures the server's resident memory before and
//! after (`--server-pid`), then publishes events carrying their send time and records, for
//! every subscriber, the delay from just before the publishing request to the event's
//! receipt. Subscribers are plain TCP connections on one thread, so the load generator takes
//! as little of a shared machine as it can; its own queueing is part of the delay measured.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Settings of one fan-out run.
#[derive(Debug, Clone, clap::Args)]
pub struct FanoutArgs {
    /// Base URL of the flowstate server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Comma-separated subscriber counts, run one after the other.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    pub subscribers: Vec<usize>,
    /// Events published per run.
    #[arg(long, default_value_t = 50)]
    pub events: u64,
    /// Milliseconds between two events.
    #[arg(long, default_value_t = 100)]
    pub interval_ms: u64,
    /// The server's process id, to report its resident memory per connection.
    #[arg(long)]
    pub server_pid: Option<u32>,
}

/// Microseconds since the Unix epoch.
fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Resident memory of a process in KiB (`VmRSS`), if it can be read.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// One request on a fresh connection; returns the status and body.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> anyhow::Result<(u16, String)> {
    let mut conn = TcpStream::connect(addr).await?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(head.as_bytes()).await?;
    let mut out = Vec::new();
    conn.read_to_end(&mut out).await?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// A subscriber: opens the stream, reports when it is open, then collects the delay of each
/// event until it has `events` of them (or the stream ends).
async fn subscribe(
    addr: SocketAddr,
    flow: String,
    events: u64,
    opened: tokio::sync::mpsc::Sender<()>,
) -> anyhow::Result<Vec<u64>> {
    let mut conn = TcpStream::connect(addr).await?;
    let head = format!("GET /v1/flows/{flow}/events HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    conn.write_all(head.as_bytes()).await?;
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    let mut open = false;
    let mut delays = Vec::with_capacity(events as usize);
    const MARK: &[u8] = b"\"sent_us\":";
    while (delays.len() as u64) < events {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        let received = now_us();
        buf.extend_from_slice(&chunk[..n]);
        if !open && buf.windows(11).any(|w| w == b": connected") {
            open = true;
            let _ = opened.send(()).await;
        }
        // Each event's data carries its send time; take every one complete in the buffer.
        let mut consumed = 0;
        while let Some(at) = buf[consumed..].windows(MARK.len()).position(|w| w == MARK) {
            let start = consumed + at + MARK.len();
            let digits = buf[start..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            if start + digits >= buf.len() {
                break; // the number may continue in the next read
            }
            let sent: u64 = std::str::from_utf8(&buf[start..start + digits])?.parse()?;
            delays.push(received.saturating_sub(sent));
            consumed = start + digits;
        }
        buf.drain(..consumed);
        if buf.len() > 1 << 16 {
            bail!("unparsable stream");
        }
    }
    Ok(delays)
}

/// Runs every subscriber count of `args` and prints a table.
pub async fn run(args: &FanoutArgs) -> anyhow::Result<()> {
    let authority = args
        .url
        .trim_end_matches('/')
        .strip_prefix("http://")
        .context("--url must be http://host:port")?;
    let addr: SocketAddr = tokio::net::lookup_host(authority)
        .await?
        .next()
        .context("--url resolves to no address")?;
    println!(
        "{:>11} {:>7} {:>10} {:>8} {:>8} {:>8} {:>8} {:>12}",
        "subscribers",
        "events",
        "delivered",
        "p50 ms",
        "p99 ms",
        "p999 ms",
        "max ms",
        "RSS/conn KiB"
    );
    for &n in &args.subscribers {
        let flow = format!("fanout-{}", uuid::Uuid::now_v7().simple());
        let (status, body) = request(
            addr,
            "POST",
            "/v1/flows",
            &json!({"flow_id": flow, "flow_type": "bench"}).to_string(),
        )
        .await?;
        if status != 201 {
            bail!("registering {flow}: {status} {body}");
        }
        let rss_before = args.server_pid.and_then(rss_kib);
        let (opened_tx, mut opened) = tokio::sync::mpsc::channel(1024);
        let mut subscribers = tokio::task::JoinSet::new();
        // Connect in waves, so the listen backlog never overflows.
        for wave in (0..n).collect::<Vec<_>>().chunks(500) {
            for _ in wave {
                subscribers.spawn(subscribe(
                    addr,
                    flow.clone(),
                    args.events,
                    opened_tx.clone(),
                ));
            }
            for _ in wave {
                tokio::time::timeout(Duration::from_secs(30), opened.recv())
                    .await
                    .context("a subscriber did not open within 30 s")?;
            }
        }
        // Let the server settle before reading its memory.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss_after = args.server_pid.and_then(rss_kib);
        for i in 0..args.events {
            let event = json!({"event_type": "BENCH", "payload": {"sent_us": now_us(), "i": i}});
            let (status, body) = request(
                addr,
                "POST",
                &format!("/v1/flows/{flow}/events"),
                &event.to_string(),
            )
            .await?;
            if status != 202 {
                bail!("publishing: {status} {body}");
            }
            tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
        }
        let mut hist = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
        let mut delivered = 0u64;
        let deadline = Duration::from_secs(30);
        while let Ok(Some(joined)) = tokio::time::timeout(deadline, subscribers.join_next()).await {
            if let Ok(Ok(delays)) = joined {
                delivered += delays.len() as u64;
                for d in delays {
                    hist.record(d.max(1))?;
                }
            }
        }
        subscribers.abort_all();
        let per_conn = match (rss_before, rss_after) {
            (Some(b), Some(a)) => format!("{:.1}", a.saturating_sub(b) as f64 / n as f64),
            _ => "-".into(),
        };
        let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "{:>11} {:>7} {:>10} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>12}",
            n,
            args.events,
            format!(
                "{:.1}%",
                100.0 * delivered as f64 / (n as u64 * args.events) as f64
            ),
            ms(0.5),
            ms(0.99),
            ms(0.999),
            hist.max() as f64 / 1000.0,
            per_conn
        );
        // Deleting the flow ends its streams.
        request(addr, "DELETE", &format!("/v1/flows/{flow}"), "").await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(())
}
