//! The instance's one Redis subscription: a dedicated pub/sub connection listening to the
//! channels of the flows that have subscribers here and of the locks that have waiters here
//! (SUBSCRIBE when the first local watcher arrives, UNSUBSCRIBE when the last leaves), feeding
//! the local [`Hub`] and [`LockHub`]. However many SSE connections watch a flow, or requests
//! wait for a lock, Redis sends this instance each message once.
//!
//! Pub/sub delivers at most once: whatever is published while the connection is down is lost
//! to it. So whenever the connection comes (back) up, every local watcher is told to
//! [`Live::Resync`](crate::hot::Live::Resync): it reads the stream after the last event it
//! delivered, and misses nothing; and every lock waiter is woken to ask again. A ping every few seconds notices a Redis that hangs rather
//! than closes the connection.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::redis::Client;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};

use crate::hot::HotError;
use crate::hot::fanout::{Hub, LockHub};
use crate::hot::keys::Keys;
use crate::model::events::{Event, EventId};
use crate::security::Signer;

/// How often an idle subscription is pinged.
const PING_EVERY: Duration = Duration::from_secs(5);
/// First and longest wait between connection attempts.
const FIRST_DELAY: Duration = Duration::from_millis(50);
const MAX_DELAY: Duration = Duration::from_secs(2);

/// Asks the subscriber task to listen to a channel; answered once it does.
struct Request {
    channel: String,
    done: oneshot::Sender<()>,
}

/// The handle the tier keeps; dropping it ends the task.
pub(super) struct Subscriber {
    requests: mpsc::UnboundedSender<Request>,
    /// Channels the current connection listens to.
    listening: Arc<Mutex<HashSet<String>>>,
    timeout: Duration,
}

/// What the task needs to (re)connect and route messages.
pub(super) struct Setup {
    pub client: Client,
    pub keys: Keys,
    pub hub: Arc<Hub>,
    pub locks: Arc<LockHub>,
    /// Flows whose last local watcher left.
    pub unwatched: mpsc::UnboundedReceiver<String>,
    /// Locks whose last local waiter left.
    pub unwatched_locks: mpsc::UnboundedReceiver<String>,
    /// Checks each message's tag.
    pub signer: Signer,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
}

fn lock(set: &Mutex<HashSet<String>>) -> std::sync::MutexGuard<'_, HashSet<String>> {
    // A poisoned lock only means a panic between two set operations, each complete.
    set.lock().unwrap_or_else(|p| p.into_inner())
}

impl Subscriber {
    /// Starts the subscriber task.
    pub(super) fn start(setup: Setup) -> Subscriber {
        let (requests, rx) = mpsc::unbounded_channel();
        let listening = Arc::new(Mutex::new(HashSet::new()));
        let timeout = setup.command_timeout;
        tokio::spawn(run(setup, rx, Arc::clone(&listening)));
        Subscriber {
            requests,
            listening,
            timeout,
        }
    }

    /// Returns once the connection listens to `channel`, or at once if it is down (watchers
    /// are then told to resync, waiters woken, when it is back).
    pub(super) async fn subscribe(&self, channel: String) {
        if lock(&self.listening).contains(&channel) {
            return;
        }
        let (done, answered) = oneshot::channel();
        let request = Request { channel, done };
        if self.requests.send(request).is_ok() {
            let _ = tokio::time::timeout(self.timeout, answered).await;
        }
    }
}

/// Connects, listens, and reconnects until the tier is dropped.
async fn run(
    mut setup: Setup,
    mut requests: mpsc::UnboundedReceiver<Request>,
    listening: Arc<Mutex<HashSet<String>>>,
) {
    let mut delay = FIRST_DELAY;
    loop {
        match listen(&mut setup, &mut requests, &listening).await {
            Ended::Dropped => return,
            Ended::Served => delay = FIRST_DELAY,
            Ended::Failed => {}
        }
        lock(&listening).clear();
        // Waiting watchers go on at once: they resync when the connection is back.
        while let Ok(request) = requests.try_recv() {
            drop(request.done);
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            closed = wait_closed(&mut requests) => if closed { return },
        }
        delay = (delay * 2).min(MAX_DELAY);
    }
}

/// Answers requests with "not now" while waiting; true once the tier is dropped.
async fn wait_closed(requests: &mut mpsc::UnboundedReceiver<Request>) -> bool {
    while let Some(request) = requests.recv().await {
        drop(request.done);
    }
    true
}

enum Ended {
    /// The tier was dropped.
    Dropped,
    /// A connection served, then failed.
    Served,
    /// No connection could be made.
    Failed,
}

/// One connection's life.
async fn listen(
    setup: &mut Setup,
    requests: &mut mpsc::UnboundedReceiver<Request>,
    listening: &Mutex<HashSet<String>>,
) -> Ended {
    let Ok(Ok(pubsub)) =
        tokio::time::timeout(setup.connect_timeout, setup.client.get_async_pubsub()).await
    else {
        return Ended::Failed;
    };
    let (mut sink, mut stream) = pubsub.split();
    let channels: Vec<String> = (setup.hub.flows().iter())
        .map(|f| setup.keys.events(f))
        .chain(setup.locks.names().iter().map(|l| setup.keys.lock(l)))
        .collect();
    if !channels.is_empty() {
        if !bounded(setup.command_timeout, sink.subscribe(&channels)).await {
            return Ended::Failed;
        }
        lock(listening).extend(channels);
    }
    // Whatever was published before now did not reach this connection.
    setup.hub.resync_all();
    setup.locks.wake_all();
    tracing::debug!("event subscription up");
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.reset();
    loop {
        tokio::select! {
            msg = stream.next() => {
                let Some(msg) = msg else { break };
                let channel = msg.get_channel_name();
                if let Some(name) = setup.keys.lock_name(channel) {
                    setup.locks.wake(name);
                    continue;
                }
                match decode(&setup.keys, &setup.signer, channel, msg.get_payload_bytes()) {
                    Ok(event) => setup.hub.deliver(event),
                    Err(Undelivered::Unverified) => {
                        // Counted and logged; the subscriber never sees it.
                        HotError::unverified(channel.to_string(), "event message tag does not verify");
                    }
                    Err(Undelivered::Undecodable) => {
                        tracing::warn!(channel, "undecodable event message skipped");
                    }
                }
            }
            request = requests.recv() => {
                let Some(request) = request else { return Ended::Dropped };
                // Nobody waits for it any more (left before it was served): nothing to do.
                if !watched(setup, &request.channel) {
                    continue;
                }
                let listens = lock(listening).contains(&request.channel);
                if !listens {
                    if !bounded(setup.command_timeout, sink.subscribe(&request.channel)).await {
                        break;
                    }
                    lock(listening).insert(request.channel.clone());
                }
                if request.done.send(()).is_err() {
                    // The watcher stopped waiting (timed out) and read the stream without
                    // listening: what was published since reached it neither way.
                    catch_up(setup, &request.channel);
                }
            }
            flow_id = setup.unwatched.recv() => {
                let Some(flow_id) = flow_id else { return Ended::Dropped };
                let channel = setup.keys.events(&flow_id);
                {
                    // Under the listening lock, so that a new watcher either sees the channel
                    // still listed (and is covered: the check below keeps it) or asks again.
                    let mut listens = lock(listening);
                    if setup.hub.is_watched(&flow_id) {
                        continue;
                    }
                    listens.remove(&channel);
                }
                if !bounded(setup.command_timeout, sink.unsubscribe(channel)).await {
                    break;
                }
            }
            name = setup.unwatched_locks.recv() => {
                let Some(name) = name else { return Ended::Dropped };
                let channel = setup.keys.lock(&name);
                {
                    let mut listens = lock(listening);
                    if setup.locks.is_watched(&name) {
                        continue;
                    }
                    listens.remove(&channel);
                }
                if !bounded(setup.command_timeout, sink.unsubscribe(channel)).await {
                    break;
                }
            }
            _ = ping.tick() => {
                if !bounded(setup.command_timeout, sink.ping::<::redis::Value>()).await {
                    break;
                }
            }
        }
    }
    tracing::warn!("event subscription lost; reconnecting");
    Ended::Served
}

/// Whether anyone here still watches the flow or waits for the lock of `channel`.
fn watched(setup: &Setup, channel: &str) -> bool {
    match (
        setup.keys.events_flow(channel),
        setup.keys.lock_name(channel),
    ) {
        (Some(flow), _) => setup.hub.is_watched(flow),
        (_, Some(name)) => setup.locks.is_watched(name),
        _ => false,
    }
}

/// Makes the watchers of `channel` catch up on what they may have missed.
fn catch_up(setup: &Setup, channel: &str) {
    if let Some(flow) = setup.keys.events_flow(channel) {
        setup.hub.resync(flow);
    } else if let Some(name) = setup.keys.lock_name(channel) {
        setup.locks.wake(name);
    }
}

/// Runs a pub/sub command within `timeout`; whether it succeeded.
async fn bounded<T>(
    timeout: Duration,
    fut: impl std::future::Future<Output = ::redis::RedisResult<T>>,
) -> bool {
    matches!(tokio::time::timeout(timeout, fut).await, Ok(Ok(_)))
}

/// Why a message was not delivered.
#[derive(Debug, PartialEq, Eq)]
enum Undelivered {
    /// Not a message `append_event.lua` publishes.
    Undecodable,
    /// Its tag does not verify under the secret key.
    Unverified,
}

/// An event from a message of `append_event.lua`: `<id>\n<type>\n<tag>\n<payload>` (the tag
/// empty without a secret key).
fn decode(
    keys: &Keys,
    signer: &Signer,
    channel: &str,
    payload: &[u8],
) -> Result<Event, Undelivered> {
    let parse = || {
        let flow_id = keys.events_flow(channel)?;
        let text = std::str::from_utf8(payload).ok()?;
        let mut parts = text.splitn(4, '\n');
        let id: EventId = parts.next()?.parse().ok()?;
        let event_type = parts.next()?;
        let third = parts.next()?;
        // `<id>\n<type>\n<payload>` from an instance of an earlier version (a rolling
        // upgrade): unsigned, so accepted only without a secret key.
        match parts.next() {
            Some(json) => Some((flow_id, id, event_type, third, json)),
            None => Some((flow_id, id, event_type, "", third)),
        }
    };
    let (flow_id, id, event_type, tag, json) = parse().ok_or(Undelivered::Undecodable)?;
    if !signer.verify_hex(channel, &[event_type.as_bytes(), json.as_bytes()], tag) {
        return Err(Undelivered::Unverified);
    }
    let payload = serde_json::from_str(json).map_err(|_| Undelivered::Undecodable)?;
    Ok(Event::new(id, flow_id, event_type, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_what_the_script_publishes() {
        let keys = Keys::new("p:");
        let plain = Signer::default();
        let event = decode(
            &keys,
            &plain,
            &keys.events("f1"),
            b"17-3\nSTATE_TRANSITION\n\n{\"a\":\"x\\ny\"}",
        )
        .unwrap();
        assert_eq!(event.id, EventId { ms: 17, seq: 3 });
        assert_eq!(event.flow_id, "f1");
        assert_eq!(event.payload["a"], "x\ny");
        let undecodable = Err(Undelivered::Undecodable);
        assert_eq!(
            decode(&keys, &plain, "other", b"17-3\nT\n\nnull"),
            undecodable
        );
        assert_eq!(
            decode(&keys, &plain, &keys.events("f1"), b"17-3\nT\n"),
            undecodable
        );
        // The earlier three-part form still decodes, unsigned.
        let old = decode(&keys, &plain, &keys.events("f1"), b"17-3\nT\n{\"a\":1}").unwrap();
        assert_eq!(old.payload["a"], 1);
        let signer = Signer::new(Some(b"0123456789abcdef0123456789abcdef")).unwrap();
        let channel = keys.events("f1");
        assert_eq!(
            decode(&keys, &signer, &channel, b"17-3\nT\n{}"),
            Err(Undelivered::Unverified)
        );
        let tag = signer.tag_hex(&channel, &[b"T", b"{}"]);
        let signed = format!("17-3\nT\n{tag}\n{{}}");
        assert!(decode(&keys, &signer, &channel, signed.as_bytes()).is_ok());
        let forged = format!("17-3\nT\n{tag}\n{{\"x\":1}}");
        let unverified = Err(Undelivered::Unverified);
        assert_eq!(
            decode(&keys, &signer, &channel, forged.as_bytes()),
            unverified
        );
        assert_eq!(
            decode(&keys, &signer, &channel, b"17-3\nT\n\n{}"),
            unverified
        );
    }
}
