//! The few parts of the NATS client protocol the generator needs to play the NATS peer:
//! `INFO`, `CONNECT` (`pedantic` off; `verbose` off unless `--nats-verbose`), `PING`/`PONG`, `SUB`, `PUB`, `MSG` and
//! `+OK`/`-ERR`, over nats-server's WebSocket listener.
//!
//! Hand-written on purpose, rather than a NATS client crate: such a client brings its own
//! transport, buffering and tasks, so the client side of a run would cost something else
//! than it does against the gateway and the echo. Here every NATS connection is opened by
//! [`wire::connect`](super::wire::connect) and driven by the same tokio-tungstenite loops as
//! the other targets', so a ratio compares the servers, not their clients.
//!
//! On its WebSocket transport nats-server carries the protocol in binary frames: it writes
//! whatever it has pending for a connection as one frame, so a frame may hold several
//! operations, and nothing promises an operation does not span frames. [`Reader`] therefore
//! parses a byte stream, keeping a partial operation for the next frame. The generator
//! sends one operation per binary frame, as it sends one activity per text frame elsewhere.

use anyhow::{Context as _, Result, bail, ensure};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::{Bytes, Message};

use super::wire::Ws;

/// The subject a customer publishes on; the bot subscribes to them all ([`BOT_SUBSCRIPTION`]).
pub fn bot_subject(customer: usize) -> String {
    format!("chat.bot.{customer}")
}

/// A customer's own subject: it subscribes to it, and the bot answers on it.
pub fn customer_subject(customer: usize) -> String {
    format!("chat.cust.{customer}")
}

/// The bot's one subscription: every customer's subject.
pub const BOT_SUBSCRIPTION: &str = "chat.bot.>";

/// The longest control line (an operation's first line) accepted without its end: the
/// server's own default limit is 4 KiB, and its `INFO` is well under that.
const MAX_CONTROL_LINE: usize = 16 * 1024;

/// How long the handshake may take.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// An operation from the server.
#[derive(Debug, PartialEq, Eq)]
pub enum Op<'a> {
    /// The server's `INFO` (its JSON, unread).
    Info(&'a str),
    Msg(Msg<'a>),
    Ping,
    Pong,
    Ok,
    /// `-ERR` and its text.
    Err(&'a str),
}

/// A message delivered on a subscription.
#[derive(Debug, PartialEq, Eq)]
pub struct Msg<'a> {
    pub subject: &'a str,
    pub sid: &'a str,
    pub reply_to: Option<&'a str>,
    pub payload: &'a [u8],
}

/// Reads the server's side of a connection from its frames, in order.
#[derive(Debug, Default)]
pub struct Reader {
    /// The start of an operation the last frame ended in.
    pending: Vec<u8>,
}

impl Reader {
    /// Hands every whole operation in `frame` (after what earlier frames left) to `on`, in
    /// order; a partial one at the end waits for the next frame.
    pub fn read(&mut self, frame: &[u8], mut on: impl FnMut(Op<'_>) -> Result<()>) -> Result<()> {
        if self.pending.is_empty() {
            let used = parse_all(frame, &mut on)?;
            self.pending.extend_from_slice(&frame[used..]);
        } else {
            let mut buf = std::mem::take(&mut self.pending);
            buf.extend_from_slice(frame);
            let used = parse_all(&buf, &mut on)?;
            buf.drain(..used);
            self.pending = buf;
        }
        Ok(())
    }

    /// No partial operation is waiting.
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty()
    }
}

fn parse_all(buf: &[u8], on: &mut impl FnMut(Op<'_>) -> Result<()>) -> Result<usize> {
    let mut at = 0;
    while let Some((op, len)) = parse(&buf[at..])? {
        on(op)?;
        at += len;
    }
    Ok(at)
}

/// The first operation of `buf` and its length in bytes; `None` while it is incomplete.
pub fn parse(buf: &[u8]) -> Result<Option<(Op<'_>, usize)>> {
    let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
        ensure!(buf.len() <= MAX_CONTROL_LINE, "a NATS control line longer than {MAX_CONTROL_LINE} bytes");
        return Ok(None);
    };
    let line = buf[..nl].strip_suffix(b"\r").unwrap_or(&buf[..nl]);
    let line = std::str::from_utf8(line).context("a NATS control line that is not UTF-8")?;
    let (verb, args) = line.split_once([' ', '\t']).unwrap_or((line, ""));
    let args = args.trim_start();
    let after = nl + 1;
    let op = if verb.eq_ignore_ascii_case("MSG") {
        return msg(buf, args, after);
    } else if verb.eq_ignore_ascii_case("PING") {
        Op::Ping
    } else if verb.eq_ignore_ascii_case("PONG") {
        Op::Pong
    } else if verb.eq_ignore_ascii_case("+OK") {
        Op::Ok
    } else if verb.eq_ignore_ascii_case("-ERR") {
        Op::Err(args)
    } else if verb.eq_ignore_ascii_case("INFO") {
        Op::Info(args)
    } else {
        bail!("an unexpected NATS operation: {}", clip(line))
    };
    Ok(Some((op, after)))
}

/// `MSG <subject> <sid> [reply-to] <#bytes>`, then the payload and CRLF.
fn msg<'a>(buf: &'a [u8], args: &'a str, after: usize) -> Result<Option<(Op<'a>, usize)>> {
    let fields: Vec<&str> = args.split_ascii_whitespace().collect();
    let (subject, sid, reply_to, size) = match fields[..] {
        [subject, sid, size] => (subject, sid, None, size),
        [subject, sid, reply_to, size] => (subject, sid, Some(reply_to), size),
        _ => bail!("a NATS MSG with {} arguments: {}", fields.len(), clip(args)),
    };
    let size: usize = size.parse().with_context(|| format!("a NATS MSG size of {size:?}"))?;
    let end = after + size;
    if buf.len() < end + 2 {
        return Ok(None);
    }
    ensure!(&buf[end..end + 2] == b"\r\n", "a NATS MSG payload not followed by CRLF");
    Ok(Some((Op::Msg(Msg { subject, sid, reply_to, payload: &buf[after..end] }), end + 2)))
}

fn clip(s: &str) -> &str {
    let end = s.char_indices().nth(120).map_or(s.len(), |(i, _)| i);
    &s[..end]
}

pub const PING: &[u8] = b"PING\r\n";
pub const PONG: &[u8] = b"PONG\r\n";

/// Whether clients ask the server to acknowledge every message (`+OK`): `--nats-verbose`.
static VERBOSE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes every later [`connect`] ask for the server's acknowledgements, or not.
pub fn set_verbose(on: bool) {
    VERBOSE.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether [`set_verbose`] is on.
pub fn verbose() -> bool {
    VERBOSE.load(std::sync::atomic::Ordering::Relaxed)
}

/// `CONNECT` with strict checks off and, as clients run in production, the server's
/// acknowledgements (`+OK`) off too, unless [`set_verbose`].
pub fn connect(name: &str) -> String {
    let name = serde_json::Value::from(name);
    let verbose = verbose();
    format!(
        "CONNECT {{\"verbose\":{verbose},\"pedantic\":false,\"tls_required\":false,\"name\":{name},\
         \"lang\":\"rust\",\"version\":\"{}\",\"protocol\":1}}\r\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// `SUB <subject> <sid>`.
pub fn subscribe(subject: &str, sid: u32) -> String {
    format!("SUB {subject} {sid}\r\n")
}

/// `PUB <subject> [reply-to] <#bytes>`, the payload and CRLF: one operation.
pub fn publish(subject: &str, reply_to: Option<&str>, payload: &[u8]) -> Bytes {
    let head = match reply_to {
        Some(r) => format!("PUB {subject} {r} {}\r\n", payload.len()),
        None => format!("PUB {subject} {}\r\n", payload.len()),
    };
    let mut out = Vec::with_capacity(head.len() + payload.len() + 2);
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
    Bytes::from(out)
}

/// The bytes of a frame from the server (nats-server sends binary frames; a text frame is
/// read the same way); `None` for WebSocket control frames.
pub fn frame_bytes(m: &Message) -> Option<&[u8]> {
    match m {
        Message::Binary(b) => Some(b),
        Message::Text(t) => Some(t.as_bytes()),
        _ => None,
    }
}

/// Opens a NATS session on a WebSocket: waits for the server's `INFO`, sends `CONNECT`, the
/// subscriptions and a `PING` in one frame, and returns at the `PONG`, by which time the
/// server has every subscription in place.
pub async fn handshake(ws: &mut Ws, name: &str, subscriptions: &[(&str, u32)]) -> Result<()> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake_inner(ws, name, subscriptions))
        .await
        .with_context(|| format!("no NATS handshake within {} s", HANDSHAKE_TIMEOUT.as_secs()))?
}

async fn handshake_inner(ws: &mut Ws, name: &str, subscriptions: &[(&str, u32)]) -> Result<()> {
    let mut reader = Reader::default();
    let mut sent = false;
    while let Some(m) = ws.next().await {
        let m = m.context("NATS handshake")?;
        let Some(data) = frame_bytes(&m) else { continue };
        let (mut info, mut ping, mut pong) = (false, false, false);
        reader.read(data, |op| {
            match op {
                Op::Info(_) => info = true,
                Op::Ping => ping = true,
                Op::Pong => pong = true,
                Op::Ok => {}
                Op::Err(e) => bail!("nats-server: -ERR {e}"),
                Op::Msg(m) => bail!("a NATS message on {} before the handshake ended", m.subject),
            }
            Ok(())
        })?;
        if ping {
            ws.send(Message::Binary(Bytes::from_static(PONG))).await?;
        }
        if info && !sent {
            let mut hello = connect(name);
            for (subject, sid) in subscriptions {
                hello.push_str(&subscribe(subject, *sid));
            }
            hello.push_str("PING\r\n");
            ws.send(Message::Binary(Bytes::from(hello))).await?;
            sent = true;
        }
        if pong && sent {
            ensure!(reader.is_idle(), "unexpected bytes after the NATS handshake's PONG");
            return Ok(());
        }
    }
    bail!("the connection closed during the NATS handshake")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(reader: &mut Reader, frame: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        reader
            .read(frame, |op| {
                out.push(format!("{op:?}"));
                Ok(())
            })
            .unwrap();
        out
    }

    #[test]
    fn parses_several_operations_in_one_frame() {
        let frame = b"INFO {\"server_id\":\"x\",\"max_payload\":1048576}\r\nPING\r\n+OK\r\n\
                      MSG chat.cust.7 1 5\r\nhello\r\nMSG chat.bot.7 1 chat.cust.7 2\r\nhi\r\nPONG\r\n";
        let mut all = Vec::new();
        let mut rest: &[u8] = frame;
        while let Some((op, len)) = parse(rest).unwrap() {
            all.push(format!("{op:?}"));
            rest = &rest[len..];
        }
        assert!(rest.is_empty());
        assert_eq!(all.len(), 6);
        assert_eq!(all[0], r#"Info("{\"server_id\":\"x\",\"max_payload\":1048576}")"#);
        assert_eq!(all[1], "Ping");
        assert_eq!(all[2], "Ok");
        let (op, _) = parse(b"MSG chat.bot.7 1 chat.cust.7 2\r\nhi\r\n").unwrap().unwrap();
        assert_eq!(op, Op::Msg(Msg { subject: "chat.bot.7", sid: "1", reply_to: Some("chat.cust.7"), payload: b"hi" }));
        assert_eq!(all[5], "Pong");
    }

    #[test]
    fn an_operation_may_span_frames() {
        let stream = b"MSG chat.cust.1 1 12\r\nhello\r\nworld\r\nPING\r\nMSG a 2 0\r\n\r\n-ERR 'Slow Consumer'\r\n";
        // Cut the stream at every place, and in many pieces: the same operations come out.
        let whole = ops(&mut Reader::default(), stream);
        assert_eq!(whole.len(), 4);
        assert!(whole[0].contains("payload: [104, 101, 108, 108, 111, 13, 10, 119, 111, 114, 108, 100]"));
        assert_eq!(whole[3], r#"Err("'Slow Consumer'")"#);
        for cut in 0..stream.len() {
            let mut r = Reader::default();
            let mut got = ops(&mut r, &stream[..cut]);
            got.extend(ops(&mut r, &stream[cut..]));
            assert_eq!(got, whole, "cut at {cut}");
            assert!(r.is_idle());
        }
        let mut r = Reader::default();
        let got: Vec<String> = stream.chunks(3).flat_map(|c| ops(&mut r, c)).collect();
        assert_eq!(got, whole);
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        assert!(parse(b"HMSG a 1 10 10\r\n").is_err());
        assert!(parse(b"MSG a 1 x\r\n").is_err());
        assert!(parse(b"MSG a 1 2\r\nhiXX").is_err());
        assert!(parse(&[b'A'; MAX_CONTROL_LINE + 1]).is_err());
        assert!(parse(b"PIN").unwrap().is_none());
    }

    #[test]
    fn writes_the_client_side() {
        assert_eq!(&publish("chat.bot.3", Some("chat.cust.3"), b"{}")[..], b"PUB chat.bot.3 chat.cust.3 2\r\n{}\r\n");
        assert_eq!(&publish("chat.cust.3", None, b"")[..], b"PUB chat.cust.3 0\r\n\r\n");
        assert_eq!(subscribe(BOT_SUBSCRIPTION, 1), "SUB chat.bot.> 1\r\n");
        let c = connect("load \"bot\"");
        let json: serde_json::Value = serde_json::from_str(c.strip_prefix("CONNECT ").unwrap().trim_end()).unwrap();
        assert_eq!(json["verbose"], false);
        assert_eq!(json["pedantic"], false);
        assert_eq!(json["name"], "load \"bot\"");
        assert!(c.ends_with("\r\n"));
    }
}
