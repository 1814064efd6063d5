//! The cluster's conversation log: a JetStream stream, written by the routing leader only.
//!
//! Subjects (the stream's name is their first token, `sb` below; the stream holds
//! `sb.log.>`, while the cluster's core NATS traffic uses other subjects under `sb`):
//!
//! - `sb.log.conv.<id>.state`: a conversation's saved state (`{"open":…,"state":…}`),
//!   written with `Nats-Rollup: sub`, so the stream keeps only the latest;
//! - `sb.log.conv.<id>.act`: one activity (the frame's JSON), its `seq` and client key in
//!   the headers `Sb-Seq` and `Sb-Key`;
//! - `sb.log.meta.signing_key`, `sb.log.meta.channel_key`: the token signing key and the
//!   Bot Framework channel's RSA key;
//! - `sb.log.term`: the marker each new leader writes before anything else (header
//!   `Sb-Node`).
//!
//! **Fencing.** Every message is published with `Nats-Expected-Last-Sequence`: JetStream
//! stores it only if the stream's last message is the one this leader expects, i.e. no
//! one else has written since. A new leader first writes its term marker expecting the
//! stream's last sequence ([`fence`]); from then on a deposed leader's writes (it may not
//! know yet that its lease ran out) are refused, so it can never acknowledge an activity
//! the new leader does not have. Then it reads the log up to its marker ([`read`]): a
//! message that is there, so the read ends on it. (The stream's own counts cannot say
//! where the log ends: its last sequence may have been purged with a closed conversation,
//! and nats-server 2.9 counts a consumer's pending messages too high once whole blocks of
//! the stream have been purged, so a reader waiting for "none pending" waits forever.)
//!
//! An activity is acknowledged to its sender only after JetStream's publish
//! acknowledgement (the `Done` callback), as with SQLite's commit. Any failure (a refused
//! expectation, a timed out acknowledgement while NATS restarts) breaks the store: the
//! records in flight are reported failed (their senders were not acknowledged) and the
//! node gives up leadership; the next leader reads the log again. Recovery replays the log
//! the way the hub wrote it: an activity with `seq` n replaces n and drops what followed
//! (the hub reuses a sequence number after a failed write), the last state of a
//! conversation wins, and conversations whose last state is closed are left out. A closed
//! conversation's subjects are purged once its closing is acknowledged, so the log holds
//! open conversations, not history.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::store::{Commit, Done, Record, Recovered, RecoveredConversation, Store, StoreError};

/// How long a write may wait for JetStream's acknowledgement before the store counts it
/// failed (and the leader steps down).
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Writes in flight (published, not yet acknowledged) at most.
const IN_FLIGHT: usize = 8192;

/// The stream's configuration: file storage, `replicas` copies, every subject under its name.
pub fn stream_config(name: &str, replicas: usize) -> stream::Config {
    stream::Config {
        name: name.to_owned(),
        subjects: vec![format!("{name}.log.>")],
        storage: stream::StorageType::File,
        num_replicas: replicas,
        max_messages_per_subject: -1,
        // A conversation's new state replaces the older ones (`Nats-Rollup: sub`).
        allow_rollup: true,
        ..Default::default()
    }
}

#[derive(Default)]
struct Conv {
    first: u64,
    open: bool,
    state: Option<String>,
    activities: Vec<(u64, String, Option<String>)>,
}

fn header<'a>(h: Option<&'a HeaderMap>, name: &str) -> Option<&'a str> {
    h?.get(name).map(|v| v.as_str())
}

fn err(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError(format!("JetStream: {what}: {e}"))
}

/// A new leader's first write: its term marker (header `Sb-Node`), expecting the stream's
/// last sequence. Returns the marker's sequence, where the log to read ends. Fails if
/// anyone wrote in between (a deposed leader's last words): fence again.
pub async fn fence(js: &jetstream::Context, name: &str, node: &str) -> Result<u64, StoreError> {
    let s = js.get_stream_no_info(name).await.map_err(|e| err("stream", e))?;
    let last = s.get_info().await.map_err(|e| err("stream info", e))?.state.last_sequence;
    let mut h = HeaderMap::new();
    h.insert("Sb-Node", node);
    fenced(js, format!("{name}.log.term"), h, Bytes::new(), last, "term marker").await
}

/// Reads the log (what is left of it: closed conversations are purged) up to the sequence
/// `to`, the reader's own term marker ([`fence`]).
///
/// Nothing is written after the marker until this leader starts its writer, but a deposed
/// leader may still be purging a conversation it closed before the fence. A purge while
/// the log is read spoils the read: nats-server 2.9 moves every reader to the end of the
/// stream (past the marker, so the read stalls), and a server without that flaw would
/// show the conversation open, its closing gone. So a read that stalls, or that ends,
/// checks whether the stream has lost messages since it began, and if so reads again (a
/// deposed leader has only so many closings left to purge).
pub async fn read(js: &jetstream::Context, name: &str, to: u64) -> Result<Recovered, StoreError> {
    let s = js.get_stream_no_info(name).await.map_err(|e| err("stream", e))?;
    for _ in 0..READS {
        if let Some(recovered) = read_once(&s, name, to).await? {
            return Ok(recovered);
        }
        tracing::info!("cluster: messages were purged while the log was read: reading it again");
    }
    Err(StoreError(format!("JetStream: purged while read, {READS} times in a row")))
}

/// Reads of the log a new leader tries while purges spoil them.
const READS: usize = 5;
/// How long a read waits for its next message before it looks for a purge.
const STALL: Duration = Duration::from_millis(500);

/// One pass of [`read`]: what it recovered, or None if a purge spoiled it.
async fn read_once(s: &stream::Stream<()>, name: &str, to: u64) -> Result<Option<Recovered>, StoreError> {
    let messages =
        async || Ok::<u64, StoreError>(s.get_info().await.map_err(|e| err("stream info", e))?.state.messages);
    let before = messages().await?;
    let mut convs: HashMap<String, Conv> = HashMap::new();
    let mut recovered = Recovered::default();
    let c = s
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| err("reader", e))?;
    let mut msgs = c.messages().await.map_err(|e| err("reader", e))?;
    let prefix = format!("{name}.log.");
    let mut waited = Duration::ZERO;
    loop {
        let m = match tokio::time::timeout(STALL, msgs.next()).await {
            Ok(Some(Ok(m))) => m,
            Ok(Some(Err(e))) => return Err(err("reading", e)),
            Ok(None) => return Err(StoreError("JetStream: the log ended before its term marker".into())),
            Err(_) if messages().await? < before => return Ok(None),
            Err(_) if waited + STALL >= ACK_TIMEOUT => {
                return Err(StoreError("JetStream: reading the log timed out".into()));
            }
            Err(_) => {
                waited += STALL;
                continue;
            }
        };
        waited = Duration::ZERO;
        let seq = m.info().map_err(|e| err("reading", e))?.stream_sequence;
        if seq >= to {
            break;
        }
        let subject = m.subject.as_str().strip_prefix(&prefix).unwrap_or_default();
        apply(&mut convs, &mut recovered, subject, m.headers.as_ref(), &m.payload, seq);
    }
    if messages().await? < before {
        return Ok(None);
    }
    let mut open: Vec<(String, Conv)> = convs.into_iter().filter(|(_, c)| c.open && c.state.is_some()).collect();
    open.sort_by_key(|(_, c)| c.first);
    recovered.conversations = open
        .into_iter()
        .map(|(id, c)| RecoveredConversation { id, state: c.state.unwrap_or_default(), activities: c.activities })
        .collect();
    Ok(Some(recovered))
}

fn apply(
    convs: &mut HashMap<String, Conv>,
    recovered: &mut Recovered,
    subject: &str,
    headers: Option<&HeaderMap>,
    payload: &Bytes,
    seq: u64,
) {
    let mut parts = subject.split('.');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("conv"), Some(id), Some(kind)) => {
            let c = convs.entry(id.to_owned()).or_insert_with(|| Conv { first: seq, ..Default::default() });
            match kind {
                "state" => {
                    #[derive(serde::Deserialize)]
                    struct S {
                        open: bool,
                        state: String,
                    }
                    if let Ok(s) = serde_json::from_slice::<S>(payload) {
                        c.open = s.open;
                        c.state = Some(s.state);
                    }
                }
                "act" => {
                    let Some(n) = header(headers, "Sb-Seq").and_then(|v| v.parse::<u64>().ok()) else { return };
                    let Ok(frame) = std::str::from_utf8(payload) else { return };
                    // A rewound write is followed by another with the same seq: it replaces it.
                    let keep = usize::try_from(n.saturating_sub(1)).unwrap_or(usize::MAX).min(c.activities.len());
                    c.activities.truncate(keep);
                    if c.activities.len() as u64 + 1 == n {
                        c.activities.push((n, frame.to_owned(), header(headers, "Sb-Key").map(str::to_owned)));
                    }
                }
                _ => {}
            }
        }
        (Some("meta"), Some("signing_key"), None) => {
            if let Ok(k) = <[u8; 32]>::try_from(payload.as_ref()) {
                recovered.signing_key = Some(k);
            }
        }
        (Some("meta"), Some("channel_key"), None) => recovered.channel_key = Some(payload.to_vec()),
        _ => {}
    }
}

/// One write expecting the stream's last sequence to be `last`, awaited: its sequence.
async fn fenced(
    js: &jetstream::Context,
    subject: String,
    mut headers: HeaderMap,
    payload: Bytes,
    last: u64,
    what: &str,
) -> Result<u64, StoreError> {
    headers.insert("Nats-Expected-Last-Sequence", last.to_string().as_str());
    let ack = js.publish_with_headers(subject, headers, payload).await.map_err(|e| err(what, e))?;
    Ok(ack.await.map_err(|e| err(what, e))?.sequence)
}

enum Op {
    Write { subject: String, headers: HeaderMap, payload: Bytes, done: Option<Done>, purge: Option<String> },
    Flush(tokio::sync::oneshot::Sender<Result<(), StoreError>>),
}

/// The leader's [`Store`]: every record a fenced JetStream publish, acknowledged in order.
pub struct JetStreamStore {
    tx: mpsc::UnboundedSender<Op>,
    name: String,
    /// Cancelled when a write fails: the leader must step down.
    pub broken: CancellationToken,
}

impl std::fmt::Debug for JetStreamStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamStore").field("stream", &self.name).finish()
    }
}

impl JetStreamStore {
    /// Starts the writer after the new leader's term marker (`fence`, its sequence), writing
    /// a token signing key first if the log had none.
    pub async fn start(
        js: jetstream::Context,
        name: &str,
        fence: u64,
        signing_key: Option<[u8; 32]>,
    ) -> Result<(JetStreamStore, [u8; 32]), StoreError> {
        let mut expected = fence;
        let key = match signing_key {
            Some(k) => k,
            None => {
                let k: [u8; 32] = rand::random();
                let subject = format!("{name}.log.meta.signing_key");
                let payload = Bytes::copy_from_slice(&k);
                expected = fenced(&js, subject, HeaderMap::new(), payload, expected, "signing key").await?;
                k
            }
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let broken = CancellationToken::new();
        tokio::spawn(writer(js, rx, expected, broken.clone()));
        Ok((JetStreamStore { tx, name: name.to_owned(), broken }, key))
    }

    fn send(&self, op: Op) {
        if let Err(mpsc::error::SendError(op)) = self.tx.send(op) {
            let e = StoreError("JetStream: the log writer has stopped".into());
            match op {
                Op::Write { done: Some(d), .. } => d(Err(e)),
                Op::Flush(tx) => {
                    let _ = tx.send(Err(e));
                }
                Op::Write { done: None, .. } => {}
            }
        }
    }
}

impl Store for JetStreamStore {
    fn synchronous(&self) -> bool {
        false
    }

    fn record(&self, rec: Record, done: Option<Done>) {
        let name = &self.name;
        let mut headers = HeaderMap::new();
        let (subject, payload, purge) = match rec {
            Record::Conversation { id, open, state } => {
                let body = serde_json::json!({ "open": open, "state": state }).to_string();
                // Once its closing is stored, a closed conversation's subjects are purged.
                let purge = (!open).then(|| format!("{name}.log.conv.{id}.>"));
                headers.insert("Nats-Rollup", "sub");
                (format!("{name}.log.conv.{id}.state"), Bytes::from(body), purge)
            }
            Record::Activity { conversation, seq, frame, client_key } => {
                headers.insert("Sb-Seq", seq.to_string().as_str());
                if let Some(k) = &client_key {
                    headers.insert("Sb-Key", k.as_str());
                }
                (format!("{name}.log.conv.{conversation}.act"), frame.into_bytes(), None)
            }
            Record::ChannelKey(der) => (format!("{name}.log.meta.channel_key"), Bytes::from(der), None),
        };
        self.send(Op::Write { subject, headers, payload, done, purge });
    }

    fn flush(&self) -> Commit {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Op::Flush(tx));
        Commit::Pending(Box::pin(async move {
            rx.await.unwrap_or_else(|_| Err(StoreError("JetStream: the log writer has stopped".into())))
        }))
    }
}

type Acked = Box<dyn Future<Output = Result<(), StoreError>> + Send + Unpin>;

enum Pending {
    Write(Acked, Option<Done>, Option<String>),
    Flush(tokio::sync::oneshot::Sender<Result<(), StoreError>>),
}

/// Publishes in order, each expecting the sequence of the one before; a second task
/// awaits the acknowledgements in the same order and calls each record's `done`.
async fn writer(
    js: jetstream::Context,
    mut rx: mpsc::UnboundedReceiver<Op>,
    mut expected: u64,
    broken: CancellationToken,
) {
    let (ptx, prx) = mpsc::channel::<Pending>(IN_FLIGHT);
    tokio::spawn(completer(js.clone(), prx, broken.clone()));
    while let Some(op) = rx.recv().await {
        let p = match op {
            Op::Flush(tx) => Pending::Flush(tx),
            Op::Write { subject, mut headers, payload, done, purge } => {
                if broken.is_cancelled() {
                    if let Some(d) = done {
                        d(Err(StoreError("JetStream: the log is fenced or unreachable".into())));
                    }
                    continue;
                }
                headers.insert("Nats-Expected-Last-Sequence", expected.to_string().as_str());
                expected += 1;
                let started = std::time::Instant::now();
                let acked: Acked = match js.publish_with_headers(subject, headers, payload).await {
                    Ok(ack) => Box::new(Box::pin(async move {
                        match tokio::time::timeout(ACK_TIMEOUT, ack).await {
                            Ok(Ok(_)) => {
                                // One record per JetStream write: its time to the PubAck.
                                crate::metrics::STORE_COMMIT.observe(started.elapsed().as_secs_f64());
                                crate::metrics::STORE_BATCH.observe(1.0);
                                Ok(())
                            }
                            Ok(Err(e)) => Err(err("write", e)),
                            Err(_) => Err(StoreError("JetStream: no acknowledgement within 5 s".into())),
                        }
                    })),
                    Err(e) => {
                        let e = err("publish", e);
                        Box::new(std::future::ready(Err(e)))
                    }
                };
                Pending::Write(acked, done, purge)
            }
        };
        if ptx.send(p).await.is_err() {
            break;
        }
    }
}

async fn completer(js: jetstream::Context, mut rx: mpsc::Receiver<Pending>, broken: CancellationToken) {
    let mut failed: Option<StoreError> = None;
    while let Some(p) = rx.recv().await {
        match p {
            Pending::Flush(tx) => {
                let _ = tx.send(failed.clone().map_or(Ok(()), Err));
            }
            Pending::Write(acked, done, purge) => {
                let r = match &failed {
                    Some(e) => Err(e.clone()),
                    None => acked.await,
                };
                if let Err(e) = &r
                    && failed.is_none()
                {
                    tracing::error!("cluster: {e}: giving up leadership");
                    failed = Some(e.clone());
                    broken.cancel();
                }
                if r.is_ok()
                    && let Some(filter) = purge
                {
                    let js = js.clone();
                    tokio::spawn(purge_closed(js, filter));
                }
                if let Some(d) = done {
                    d(r);
                }
            }
        }
    }
}

/// Drops a closed conversation's subjects from the stream (its state says closed; losing
/// this purge only leaves a closed conversation for recovery to skip).
async fn purge_closed(js: jetstream::Context, filter: String) {
    let name = filter.split('.').next().unwrap_or_default().to_owned();
    if let Ok(s) = js.get_stream_no_info(&name).await
        && let Err(e) = s.purge().filter(&filter).await
    {
        tracing::debug!("cluster: purge {filter}: {e}");
    }
}

/// Shared so the hub can hold it as `Arc<dyn Store>` while the node watches `broken`.
pub fn shared(s: JetStreamStore) -> (Arc<dyn Store>, CancellationToken) {
    let broken = s.broken.clone();
    (Arc::new(s), broken)
}
