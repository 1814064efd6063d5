//! The Direct Line stream: `GET conversations/{id}/stream?watermark=&t=` (WebSocket).
//!
//! Every non-empty frame is an ActivitySet `{"activities":[…],"watermark":"N"}`; an empty
//! text frame is a keep-alive. On connecting, the activities after the watermark are sent
//! (the resume); then the stream follows the transcript. The connection takes the
//! customer's seat in the conversation (an older stream is closed, 4001): one socket per
//! conversation. Its writer does not forward the hub's frames but treats each as "the
//! transcript grew" and reads the committed activities after its own cursor, so the
//! customer's own activities (which the hub sends nobody's connection back) come too, in
//! `seq` order, each once. Only `queue.position`, which is not in the transcript, is
//! forwarded as an `event` activity. What clients send on the socket is ignored (Direct
//! Line takes activities by POST; directlinejs sends empty frames as pings).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use futures_util::SinkExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_util::sync::CancellationToken;

use super::{Base, committed_after, conversation, parse_watermark, translate};
use crate::hub::outbox::{Outgoing, Reason};
use crate::hub::{Conversation, Hub, Outbox};
use crate::server::ws::{self, Session, Sink};

pub(super) async fn upgrade(
    State(hub): State<Arc<Hub>>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    req: Request,
) -> Response {
    let checked = super::auth::check_stream(&hub, q.get("t").map(String::as_str), &id)
        .and_then(|()| conversation(&hub, &id))
        .and_then(|c| parse_watermark(q.get("watermark").map(String::as_str)).map(|w| (c, w)));
    let (conv, watermark) = match checked {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    let base = Base::of(req.headers());
    let h = hub.clone();
    ws::upgrade(&hub, req, ws::CUSTOMER, move |socket| run(h, socket, conv, watermark, base))
}

async fn run(hub: Arc<Hub>, socket: ws::WsStream, conv: Arc<Conversation>, watermark: u64, base: Base) {
    let (outbox, rx) = Outbox::new(hub.server.outbound_queue);
    hub.attach_customer(&conv, &outbox);
    let keep_alive = Duration::from_secs((hub.server.idle_timeout_secs / 3).max(1));
    let (h, c) = (hub.clone(), conv.clone());
    let boxed: ws::Writer = Box::new(move |sink, rx, outbox, done| {
        let writer = Writer { hub: h, conv: c, base, cursor: watermark, keep_alive, outbox };
        Box::pin(writer.run(sink, rx, done))
    });
    let session = StreamSession { hub: hub.clone(), conv, outbox: outbox.clone() };
    ws::run_with(hub, socket, outbox, rx, session, None, boxed).await;
}

struct StreamSession {
    hub: Arc<Hub>,
    conv: Arc<Conversation>,
    outbox: Outbox,
}

impl Session for StreamSession {
    fn on_text(&mut self, _text: &str) {}

    fn role(&self) -> &'static str {
        "customer"
    }

    fn rate(&self) -> (f64, u32) {
        (self.hub.server.customer_rate, self.hub.server.customer_burst)
    }

    fn on_close(&mut self) {
        self.hub.customer_left(&self.conv, &self.outbox);
    }
}

struct Writer {
    hub: Arc<Hub>,
    conv: Arc<Conversation>,
    base: Base,
    /// Every activity up to this `seq` has been sent.
    cursor: u64,
    keep_alive: Duration,
    /// The stream's own outbox (its kick ends the stream; a send that stalls kicks it as a
    /// slow consumer).
    outbox: Outbox,
}

impl Writer {
    async fn run(mut self, mut sink: Sink, mut rx: crate::hub::outbox::Inbox, done: CancellationToken) {
        let (outbox, hub) = (self.outbox.clone(), self.hub.clone());
        // Pinned once: the loop's waits and every write race the same two.
        let (kicked, stopping) = (outbox.kicked(), hub.stopping());
        tokio::pin!(kicked, stopping);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + self.keep_alive, self.keep_alive);
        let mut ok = self.catch_up(&mut sink, Vec::new(), kicked.as_mut(), Some(stopping.as_mut())).await;
        while ok {
            let out = tokio::select! {
                biased;
                _ = &mut kicked => break,
                _ = &mut stopping => break,
                _ = done.cancelled() => {
                    let _ = tokio::time::timeout(Duration::from_secs(2), sink.close()).await;
                    return;
                }
                _ = tick.tick() => {
                    // The keep-alive Direct Line sends, and a ping whose pong keeps the reader's
                    // idle timer happy.
                    let write = async {
                        sink.feed(Message::Text("".into())).await?;
                        sink.feed(Message::Ping(Bytes::new())).await?;
                        sink.flush().await
                    };
                    ok = ws::bounded_write(write, &self.outbox, kicked.as_mut(), Some(stopping.as_mut()), SEND_STALL).await;
                    continue;
                }
                m = rx.recv() => m,
            };
            let Some(first) = out else { break };
            // Everything queued is one wake-up: one read of the transcript, one set.
            let mut live = Vec::new();
            let mut close = None;
            let mut next = Some(first);
            let mut taken = 0;
            while let Some(item) = next.take() {
                match item {
                    Outgoing::Text(f) => live.extend(self.live_event(f.as_str())),
                    Outgoing::Close(reason, detail) => close = Some((reason, detail)),
                    Outgoing::Batch(_) | Outgoing::Binary(_) | Outgoing::Play | Outgoing::Error(_) => {}
                }
                taken += 1;
                if close.is_none() && taken < 256 {
                    next = rx.try_recv().ok();
                }
            }
            ok = self.catch_up(&mut sink, live, kicked.as_mut(), Some(stopping.as_mut())).await;
            if let Some((reason, detail)) = close {
                ws::close_with(&mut sink, reason, &detail).await;
                return;
            }
        }
        if self.outbox.is_kicked() {
            ws::close_kicked(&mut sink, &hub, &self.outbox, SEND_STALL).await;
            return;
        }
        if hub.is_shutting_down() {
            // What is committed goes out before the goodbye, if the client takes it.
            let flush = self.catch_up(&mut sink, Vec::new(), kicked.as_mut(), None);
            let _ = tokio::time::timeout(Duration::from_secs(2), flush).await;
            ws::close_with(&mut sink, Reason::ShuttingDown, "server shutting down").await;
        } else {
            ws::close_with(&mut sink, Reason::Internal, "write failed").await;
        }
    }

    /// A frame the hub sent that is not in the transcript (a `queue.position`), as an
    /// activity; transcript frames and wake-ups are read from the transcript instead.
    fn live_event(&self, frame: &str) -> Option<Value> {
        let v: Value = serde_json::from_str(frame).ok()?;
        (v["type"] == "event" && v.get("seq").is_none() && v["name"] == "queue.position")
            .then(|| super::activity::to_bot_framework(&v, &self.conv, &self.base, self.hub.clock.now_ms()))
    }

    /// Sends the committed activities after the cursor, and `live` events, as one set,
    /// through [`ws::bounded_write`] as every writer's writes: one that makes no progress
    /// for [`SEND_STALL`] means the client has stopped reading, a slow consumer (4008,
    /// resume from the watermark), and a kick (a newer stream took the seat, 4001) or the
    /// shutdown ends the wait at once.
    async fn catch_up(
        &mut self,
        sink: &mut Sink,
        live: Vec<Value>,
        kicked: ws::Cancelled<'_, '_>,
        stopping: Option<ws::Cancelled<'_, '_>>,
    ) -> bool {
        let (frames, committed) = committed_after(&self.conv, self.cursor);
        let mut list = translate(&frames, &self.conv, &self.base, self.hub.clock.now_ms());
        list.extend(live);
        self.cursor = self.cursor.max(committed);
        if list.is_empty() {
            return true;
        }
        let set = super::activity::activity_set(list, self.cursor);
        let write = sink.send(Message::Text(set.to_string().into()));
        ws::bounded_write(write, &self.outbox, kicked, stopping, SEND_STALL).await
    }
}

/// How long one write to the stream may stall before its client counts as a slow consumer
/// (Direct Line clients resume from their watermark, so a short bound loses nothing).
const SEND_STALL: Duration = Duration::from_secs(10);
