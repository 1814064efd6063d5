//! The voice scenario's callers: one WebSocket each, speaking either dialect
//! (`dialect.rs`), streaming µ-law frames on a schedule and logging what the gateway plays
//! back.

use super::*;

/// A started call leg. `stream` is the call's stream number on the bot's connection:
/// from `session.started` (native), from the bot's assignment (Twilio, filled in by the
/// driver), or the caller's index against the echo server.
#[derive(Debug)]
pub(super) struct Leg {
    pub(super) ws: Ws,
    pub(super) index: usize,
    pub(super) stream: Option<u32>,
}

/// Opens `n` call legs and starts their calls: the legs started, in the callers' order,
/// and how many calls the gateway refused (known here on native legs only; a Twilio leg
/// is not told, see `voice`).
pub(super) async fn open_callers(
    target: Target,
    dialect: Dialect,
    addr: std::net::SocketAddr,
    n: usize,
    label: &str,
) -> Result<(Vec<Leg>, usize)> {
    let opened = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(format!("{label}: calling"), None, opened.clone(), "calls");
    let permits = Arc::new(Semaphore::new(256));
    let sources = Sources::for_connections(n + 1);
    let mut set = JoinSet::new();
    for i in 0..n {
        let permit = permits.clone().acquire_owned().await?;
        let opened = opened.clone();
        set.spawn(async move {
            let r = open_caller(target, dialect, addr, sources.pick(i), i).await;
            drop(permit);
            opened.fetch_add(1, Ordering::Relaxed);
            r
        });
    }
    let mut legs = Vec::with_capacity(n);
    let mut refused = 0;
    while let Some(done) = set.join_next().await {
        match done?.context("opening call legs")? {
            Some(leg) => legs.push(leg),
            None => refused += 1,
        }
    }
    legs.sort_by_key(|l| l.index);
    progress.finish();
    Ok((legs, refused))
}

/// Opens call leg `i` and starts its call: `None` when the gateway answered with
/// `unavailable` (it is carrying all the calls it can: its pacer is falling behind).
pub(super) async fn open_caller(
    target: Target,
    dialect: Dialect,
    addr: std::net::SocketAddr,
    source: Option<std::net::Ipv4Addr>,
    i: usize,
) -> Result<Option<Leg>> {
    let mut attempt = 0;
    let mut ws = loop {
        match wire::connect(addr, &dialect.path(), None, source).await {
            Ok(ws) => break ws,
            Err(_) if attempt < 3 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
            }
            Err(e) => return Err(e),
        }
    };
    for m in dialect.start(i) {
        ws.feed(m).await?;
    }
    ws.flush().await?;
    let index = u32::try_from(i).unwrap_or(u32::MAX);
    // The gateway says nothing to a Twilio stream that started: its stream number comes
    // with the bot's assignment.
    if target == Target::Gateway && dialect == Dialect::Twilio {
        return Ok(Some(Leg { ws, index: i, stream: None }));
    }
    while let Some(msg) = ws.next().await {
        if let Message::Text(t) = msg? {
            if target == Target::Echo {
                if dialect.is_echoed_start(t.as_str()) {
                    return Ok(Some(Leg { ws, index: i, stream: Some(index) }));
                }
                continue;
            }
            let a = Activity::parse(t.as_str())?;
            if let Some(e) = a.error() {
                if refused_as_unavailable(&a) {
                    return Ok(None);
                }
                bail!("session.start refused: {e}");
            }
            if a.is_event("session.started") {
                let stream = stream_in_value(&a, &["stream"]).context("session.started without value.stream")?;
                return Ok(Some(Leg { ws, index: i, stream: Some(stream) }));
            }
        }
    }
    bail!("connection closed before the call started")
}

/// Whether an `error` event is the gateway's admission control turning the call away.
fn refused_as_unavailable(a: &Activity<'_>) -> bool {
    let code = a.value.and_then(|v| serde_json::from_str::<serde_json::Value>(v.get()).ok());
    code.is_some_and(|v| v["code"] == "unavailable")
}

/// What one caller saw.
#[derive(Debug)]
pub(super) struct CallerLog {
    pub(super) ws: Option<Ws>,
    pub(super) stream: u32,
    /// When each frame was written.
    pub(super) sent: Vec<Instant>,
    /// When each audio frame was read.
    pub(super) received: Vec<Instant>,
    pub(super) out_of_sequence: u64,
    pub(super) lag: Samples,
    pub(super) errors: Vec<String>,
}

/// Streams one call's audio on the schedule in its dialect until stopped. `media` is the
/// call's 8 media messages ([`Dialect::media`]).
pub(super) async fn caller(
    (ws, stream): (Ws, u32),
    dialect: Dialect,
    media: Vec<Message>,
    first: Instant,
    sched: Schedule,
    counts: Arc<Counts>,
    mut stop: watch::Receiver<bool>,
) -> Result<CallerLog> {
    let (mut sink, mut source) = ws.split();
    let expected = ((sched.end - sched.start).as_millis() / FRAME.as_millis() + 2) as usize;
    let mut log = CallerLog {
        ws: None,
        stream,
        sent: Vec::with_capacity(expected),
        received: Vec::with_capacity(expected),
        out_of_sequence: 0,
        lag: Samples::with_capacity(expected),
        errors: Vec::new(),
    };
    let mut audio = Vec::with_capacity(CALLER_FRAME_BYTES);
    let mut due = first;
    // One timer for the whole call, moved on after each frame (not one per loop turn).
    let timer = tokio::time::sleep_until(due.into());
    tokio::pin!(timer);
    loop {
        let sending = due < sched.end;
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            m = source.next() => {
                let m = m.context("call leg closed")??;
                if let Message::Close(c) = m {
                    bail!("call leg closed by the server: {c:?}");
                }
                match dialect.hear(&m, &mut audio) {
                    // Nothing comes back before the caller's first frame; hold audio played
                    // before the call was assigned does not count.
                    Heard::Audio if !log.sent.is_empty() => {
                        let k = log.received.len();
                        log.received.push(Instant::now());
                        if audio.len() != CALLER_FRAME_BYTES || mark(Format::PCMU, &audio) != Some(mark_of(k)) {
                            log.out_of_sequence += 1;
                        }
                        counts.down_received.fetch_add(1, Ordering::Relaxed);
                    }
                    Heard::Error(e) if log.errors.len() < 3 => log.errors.push(e),
                    _ => {}
                }
            },
            _ = &mut timer, if sending => {
                let now = Instant::now();
                if due >= sched.window {
                    log.lag.push(now - due);
                }
                let k = log.sent.len();
                log.sent.push(now);
                counts.up_sent.fetch_add(1, Ordering::Relaxed);
                sink.send(media[k % media.len()].clone()).await?;
                due += FRAME;
                timer.as_mut().reset(due.into());
            }
        }
    }
    log.ws = sink.reunite(source).ok();
    Ok(log)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unavailable_is_a_refusal() {
        let refused = r#"{"type":"event","name":"error","value":{"code":"unavailable","message":"try again shortly"}}"#;
        let bad = r#"{"type":"event","name":"error","value":{"code":"bad_request","message":"no workstream"}}"#;
        assert!(refused_as_unavailable(&Activity::parse(refused).unwrap()));
        assert!(!refused_as_unavailable(&Activity::parse(bad).unwrap()));
    }
}
