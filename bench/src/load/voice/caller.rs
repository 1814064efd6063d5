//! The voice scenario's callers: one WebSocket each, streaming µ-law frames on a
//! schedule and logging what the gateway plays back.

use super::*;

/// Opens `n` call legs, each started: `(socket, stream)`. Against the echo server the
/// stream is the caller's index (its `session.start` comes back as is).
pub(super) async fn open_callers(
    target: Target,
    addr: std::net::SocketAddr,
    n: usize,
    label: &str,
) -> Result<Vec<(Ws, u32)>> {
    let opened = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(format!("{label}: calling"), None, opened.clone(), "calls");
    let permits = Arc::new(Semaphore::new(256));
    let sources = Sources::for_connections(n + 1);
    let mut set = JoinSet::new();
    for i in 0..n {
        let permit = permits.clone().acquire_owned().await?;
        let opened = opened.clone();
        set.spawn(async move {
            let r = open_caller(target, addr, sources.pick(i), i).await;
            drop(permit);
            opened.fetch_add(1, Ordering::Relaxed);
            r.map(|c| (i, c))
        });
    }
    let mut legs: Vec<Option<(Ws, u32)>> = (0..n).map(|_| None).collect();
    while let Some(done) = set.join_next().await {
        let (i, leg) = done?.context("opening call legs")?;
        legs[i] = Some(leg);
    }
    progress.finish();
    Ok(legs.into_iter().flatten().collect())
}

pub(super) async fn open_caller(
    target: Target,
    addr: std::net::SocketAddr,
    source: Option<std::net::Ipv4Addr>,
    i: usize,
) -> Result<(Ws, u32)> {
    let mut attempt = 0;
    let mut ws = loop {
        match wire::connect(addr, "/v1/voice", None, source).await {
            Ok(ws) => break ws,
            Err(_) if attempt < 3 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
            }
            Err(e) => return Err(e),
        }
    };
    ws.send(session_start()).await?;
    while let Some(msg) = ws.next().await {
        if let Message::Text(t) = msg? {
            let a = Activity::parse(t.as_str())?;
            if let Some(e) = a.error() {
                bail!("session.start refused: {e}");
            }
            match target {
                Target::Gateway if a.is_event("session.started") => {
                    let stream = stream_in_value(&a, &["stream"]).context("session.started without value.stream")?;
                    return Ok((ws, stream));
                }
                Target::Echo if a.is_event("session.start") => {
                    return Ok((ws, u32::try_from(i).unwrap_or(u32::MAX)));
                }
                _ => {}
            }
        }
    }
    bail!("connection closed before the call started")
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

pub(super) async fn caller(
    (ws, stream): (Ws, u32),
    frames: Arc<Vec<Bytes>>,
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
    let mut due = first;
    // One timer for the whole call, moved on after each frame (not one per loop turn).
    let timer = tokio::time::sleep_until(due.into());
    tokio::pin!(timer);
    loop {
        let sending = due < sched.end;
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            m = source.next() => match m.context("call leg closed")?? {
                // Nothing comes back before the caller's first frame; hold audio played
                // before the call was assigned does not count.
                Message::Binary(audio) if !log.sent.is_empty() => {
                    let k = log.received.len();
                    log.received.push(Instant::now());
                    if audio.len() != CALLER_FRAME_BYTES || mark_ulaw(&audio) != Some(mark_of(k)) {
                        log.out_of_sequence += 1;
                    }
                    counts.down_received.fetch_add(1, Ordering::Relaxed);
                }
                Message::Text(t) => {
                    if let Ok(a) = Activity::parse(t.as_str())
                        && let Some(e) = a.error()
                        && log.errors.len() < 3
                    {
                        log.errors.push(e);
                    }
                }
                Message::Close(c) => bail!("call leg closed by the server: {c:?}"),
                _ => {}
            },
            _ = &mut timer, if sending => {
                let now = Instant::now();
                if due >= sched.window {
                    log.lag.push(now - due);
                }
                let k = log.sent.len();
                log.sent.push(now);
                counts.up_sent.fetch_add(1, Ordering::Relaxed);
                sink.send(Message::Binary(frames[k % frames.len()].clone())).await?;
                due += FRAME;
                timer.as_mut().reset(due.into());
            }
        }
    }
    log.ws = sink.reunite(source).ok();
    Ok(log)
}

// ---------------------------------------------------------------------------------------
// The bot.
