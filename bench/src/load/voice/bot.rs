//! The voice scenario's bot: one connection for every call, reading the callers' audio
//! and sending it straight back on its stream.

use super::*;

/// What the bot's connection read.
#[derive(Debug, Default)]
pub(super) struct BotIn {
    pub(super) received: HashMap<u32, Vec<Instant>>,
    pub(super) out_of_sequence: u64,
    pub(super) errors: Vec<String>,
}

/// The calls assigned to the bot so far: how many, and for Twilio calls (whose callers are
/// not told their stream), which stream each caller's call is on, by the caller's index.
#[derive(Debug, Default)]
pub(super) struct Assignments {
    pub(super) count: AtomicUsize,
    pub(super) by_caller: std::sync::Mutex<HashMap<usize, u32>>,
}

impl Assignments {
    pub(super) fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// The stream of caller `i`'s call, if it was assigned with the caller's index.
    pub(super) fn stream_of_caller(&self, i: usize) -> Option<u32> {
        self.by_caller.lock().ok()?.get(&i).copied()
    }

    /// One `conversation.assigned`: its stream, and the caller's index where the call's
    /// context carries it.
    fn record(&self, a: &Activity<'_>) -> Option<u32> {
        let stream = stream_in_value(a, &["media", "stream"]);
        let caller = a
            .value
            .and_then(|v| serde_json::from_str::<serde_json::Value>(v.get()).ok())
            .and_then(|v| v["context"][CALLER_REF].as_str()?.parse::<usize>().ok());
        if let (Some(s), Some(i)) = (stream, caller)
            && let Ok(mut m) = self.by_caller.lock()
        {
            m.insert(i, s);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        stream
    }
}

/// What the bot's connection wrote: per stream, when each frame was written.
#[derive(Debug, Default)]
pub(super) struct BotOut {
    pub(super) sent: HashMap<u32, Vec<Instant>>,
}

type Sink = futures_util::stream::SplitSink<Ws, Message>;
type Source = futures_util::stream::SplitStream<Ws>;

/// Reads the bot's connection until stopped. With `echo_back`, sends every audio frame
/// straight back (the gateway run); the assignments are recorded.
pub(super) async fn bot_reader(
    mut source: Source,
    audio: Format,
    echo_back: Option<mpsc::UnboundedSender<Bytes>>,
    counts: Arc<Counts>,
    assigned: Arc<Assignments>,
    mut stop: watch::Receiver<bool>,
) -> Result<BotIn> {
    let mut r = BotIn::default();
    loop {
        let m = tokio::select! {
            biased;
            _ = stop.changed() => break,
            m = source.next() => m,
        };
        match m.context("bot connection closed")?? {
            Message::Binary(frame) => {
                let now = Instant::now();
                let Some(stream) = stream_of(&frame) else {
                    r.out_of_sequence += 1;
                    continue;
                };
                let log = r.received.entry(stream).or_default();
                let k = log.len();
                log.push(now);
                if frame.len() != 4 + audio.bytes_per_frame() || mark(audio, &frame[4..]) != Some(mark_of(k)) {
                    r.out_of_sequence += 1;
                }
                counts.up_received.fetch_add(1, Ordering::Relaxed);
                if let Some(tx) = &echo_back {
                    let _ = tx.send(frame);
                }
            }
            Message::Text(t) => {
                let a = Activity::parse(t.as_str())?;
                if a.is_event("conversation.assigned") && a.from.is_none() {
                    if assigned.record(&a).is_none() && r.errors.len() < 10 {
                        r.errors.push("bot: conversation.assigned without value.media.stream".to_owned());
                    }
                } else if let Some(e) = a.error()
                    && r.errors.len() < 10
                {
                    r.errors.push(format!("bot: {e}"));
                }
            }
            Message::Close(c) => bail!("bot connection closed by the server: {c:?}"),
            _ => {}
        }
    }
    Ok(r)
}

/// Writes the bot's frames as they are queued, flushing once per batch, and logs when
/// each frame of each stream was written.
pub(super) async fn bot_writer(
    mut sink: Sink,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    counts: Arc<Counts>,
) -> Result<BotOut> {
    let mut out = BotOut::default();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut batch = 0;
        while let Some(frame) = next.take() {
            if let Some(stream) = stream_of(&frame) {
                out.sent.entry(stream).or_default().push(Instant::now());
            }
            counts.down_sent.fetch_add(1, Ordering::Relaxed);
            sink.feed(Message::Binary(frame)).await?;
            batch += 1;
            if batch < 256 {
                next = rx.try_recv().ok();
            }
        }
        sink.flush().await?;
    }
    let _ = sink.close().await;
    Ok(out)
}

/// The echo baseline's bot: the frames the gateway run's bot would send (one per call
/// every 20 ms, spread evenly), on a 1 ms clock.
pub(super) async fn bot_clock(tx: mpsc::UnboundedSender<Bytes>, audio: Format, streams: Vec<u32>, sched: Schedule) {
    if streams.is_empty() {
        return;
    }
    let per_sec = streams.len() as f64 / FRAME.as_secs_f64();
    tokio::time::sleep_until(sched.start.into()).await;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let mut sent = 0usize;
    loop {
        tick.tick().await;
        let now = Instant::now().min(sched.end);
        let due = ((now - sched.start).as_secs_f64() * per_sec) as usize;
        while sent < due {
            let (k, i) = (sent / streams.len(), sent % streams.len());
            if tx.send(bot_frame(audio, streams[i], k)).is_err() {
                return;
            }
            sent += 1;
        }
        if now >= sched.end {
            return;
        }
    }
}
