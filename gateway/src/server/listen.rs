//! The accept loop: every socket the gateway accepts, from its first byte to its last.
//!
//! Our own loop over hyper's HTTP/1 connections (rather than `axum::serve`) so that a
//! client cannot hold a socket, and so a descriptor, for nothing:
//!
//! - a connection has `request_timeout_secs` to send a complete request head, when it opens
//!   and again after each response (keep-alive); then it is closed. A slowloris client and
//!   one that connects and says nothing are both cut off.
//! - every accepted socket holds a permit of `max_sockets` for its whole life, past a
//!   WebSocket upgrade too (the permit travels inside the upgraded IO). With none free a
//!   new socket is closed at once: the loop never waits for a permit.
//! - when accepting fails for want of descriptors (EMFILE, ENFILE) the loop backs off, from
//!   100 ms doubling to 1 s, instead of spinning on a listener that stays readable.
//!
//! - the endpoint, once it knows who is at the other end, may bound the socket's kernel send
//!   buffer ([`SendBuffer`]): a customer or caller that stops reading then holds some
//!   tens of KiB of the kernel's memory, not the 4 MiB loopback's autotuning grows to, and
//!   is found to be a slow consumer within seconds.
//!
//! What is refused is logged: rejected sockets and accept failures at warn, at most once a
//! second with a count; a connection closed for its head timeout at debug.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::proxy::TrustedProxies;
use crate::hub::Hub;

/// The first pause after an accept failure, doubled on each one that follows.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Where connections come from: the gateway's own listener, or (a cluster's leader) a
/// channel the cluster layer feeds with sockets it accepted and connections tunnelled from
/// other nodes.
pub enum Source {
    Tcp(TcpListener),
    Handed(tokio::sync::mpsc::Receiver<(Socket, SocketAddr)>),
}

/// A client's byte stream: a TCP socket, or one end of an in-process pipe whose other end
/// is a connection tunnelled from another node of the cluster.
pub enum Socket {
    Tcp(TcpStream),
    Tunnel(tokio::io::DuplexStream),
}

/// Accepts until the hub's shutdown, serving `app` on each connection. Connections run on
/// `hub.tasks`, so shutdown waits for them; at shutdown each is told to finish its request
/// in flight and close (an idle one closes at once).
pub(super) async fn serve(source: Source, app: Router, hub: Arc<Hub>) -> io::Result<()> {
    let server = &hub.server;
    let max_sockets = server.max_sockets;
    let head_timeout = Duration::from_secs(server.request_timeout_secs);
    let sockets = Arc::new(Semaphore::new(max_sockets));
    let proxies = TrustedProxies::new(&server.trusted_proxies);
    let mut http = http1::Builder::new();
    // hyper arms this timer whenever it waits for a request head: on a new connection and
    // between requests on a kept-alive one.
    http.timer(TokioTimer::new()).header_read_timeout(head_timeout);
    let stop = hub.shutdown_child();
    let mut refused = Tally::default();
    let mut exhausted = Tally::default();
    let mut failed = Tally::default();
    let mut backoff: Option<Duration> = None;
    let (listener, mut handed) = match source {
        Source::Tcp(l) => (Some(l), None),
        Source::Handed(rx) => (None, Some(rx)),
    };
    loop {
        let accepted = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            r = async { listener.as_ref().expect("a listener").accept().await }, if listener.is_some() => {
                r.map(|(tcp, peer)| (Socket::Tcp(tcp), peer))
            }
            r = async { handed.as_mut().expect("a channel").recv().await }, if handed.is_some() => match r {
                Some(s) => Ok(s),
                None => break,
            },
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) if is_connection_error(&e) => {
                // The client gave up before we accepted it; nothing is held.
                tracing::debug!("accept: {e}");
                continue;
            }
            Err(e) => {
                let delay = backoff.map_or(FIRST_BACKOFF, |d| (d * 2).min(MAX_BACKOFF));
                backoff = Some(delay);
                if is_out_of_descriptors(&e) {
                    if let Some(n) = exhausted.hit() {
                        tracing::warn!(
                            "accept: too many open files ({e}): {n} failure(s) since the last warning; \
                             retrying in {} ms (raise the descriptor limit or lower max_sockets)",
                            delay.as_millis()
                        );
                    }
                } else if let Some(n) = failed.hit() {
                    tracing::warn!(
                        "accept failed ({e}): {n} failure(s) since the last warning; retrying in {} ms",
                        delay.as_millis()
                    );
                }
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(delay) => continue,
                }
            }
        };
        backoff = None;
        let Ok(permit) = sockets.clone().try_acquire_owned() else {
            drop(tcp);
            if let Some(n) = refused.hit() {
                tracing::warn!(
                    "sockets: {n} connection(s) closed on arrival since the last warning: {max_sockets} open (max_sockets)"
                );
            }
            continue;
        };
        // Small frames (an ack, then a reply) must not wait for Nagle's algorithm.
        if let Socket::Tcp(t) = &tcp {
            let _ = t.set_nodelay(true);
        }
        let send_buffer = SendBuffer::default();
        let io = TokioIo::new(Counted { tcp, _permit: permit, send_buffer: Some(send_buffer.clone()) });
        let conn = http.serve_connection(io, service(app.clone(), peer, send_buffer, proxies.clone())).with_upgrades();
        let stop = stop.clone();
        hub.tasks.spawn(async move {
            tokio::pin!(conn);
            let ended = tokio::select! {
                r = conn.as_mut() => r,
                () = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            match ended {
                Ok(()) => {}
                Err(e) if e.is_timeout() => tracing::debug!(
                    "{peer}: closed: no complete request head within {} s (request_timeout_secs)",
                    head_timeout.as_secs()
                ),
                Err(e) => tracing::debug!("{peer}: connection ended: {e}"),
            }
        });
    }
    Ok(())
}

/// The router for one connection: each request carries the client's address (axum's
/// `ConnectInfo<SocketAddr>`: the peer's, or behind a trusted proxy the one it forwarded
/// for that request) and the connection's [`SendBuffer`].
fn service(
    app: Router,
    peer: SocketAddr,
    send_buffer: SendBuffer,
    proxies: TrustedProxies,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = axum::response::Response,
    Error = Infallible,
    Future = impl Future<Output = Result<axum::response::Response, Infallible>> + Send,
> + Send
+ 'static {
    hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let client = proxies.client(peer, req.headers());
        req.extensions_mut().insert(ConnectInfo(client));
        req.extensions_mut().insert(send_buffer.clone());
        // `Router` is always ready (its `poll_ready` returns `Ready`); a clone is an `Arc`.
        tower_service::Service::call(&mut app.clone(), req)
    })
}

/// Accept errors that concern one connection only (the peer reset it before we took it,
/// or the kernel says to retry): go on at once.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    ) || e.raw_os_error().is_some_and(|n| {
        // accept(2), Linux: errors of the new socket that "should be treated like EAGAIN".
        [libc::EPROTO, libc::ENETDOWN, libc::ENOPROTOOPT, libc::EHOSTDOWN, libc::EHOSTUNREACH, libc::ENETUNREACH]
            .contains(&n)
    })
}

fn is_out_of_descriptors(e: &io::Error) -> bool {
    e.raw_os_error().is_some_and(|n| n == libc::EMFILE || n == libc::ENFILE)
}

/// Counts events and says when to log them: at most once a second, with how many there
/// were since the last time.
#[derive(Default)]
struct Tally {
    count: u64,
    last: Option<Instant>,
}

impl Tally {
    fn hit(&mut self) -> Option<u64> {
        self.hit_at(Instant::now())
    }

    fn hit_at(&mut self, now: Instant) -> Option<u64> {
        self.count += 1;
        if self.last.is_some_and(|l| now.duration_since(l) < Duration::from_secs(1)) {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.count))
    }
}

/// A request's handle on its connection's kernel send buffer (a request extension). The
/// socket itself is hyper's by then, so the size asked for is applied by the socket's
/// next write.
#[derive(Clone, Default)]
pub struct SendBuffer(Arc<AtomicUsize>);

impl SendBuffer {
    /// Not decided yet (a plain HTTP request): each write looks again.
    const UNDECIDED: usize = 0;
    /// The kernel's autotuning stays (a bot or agent): the next write stops looking.
    const AUTOTUNED: usize = usize::MAX;

    /// Bounds the socket's kernel send buffer to `bytes` (the kernel doubles it for its
    /// own bookkeeping), which also stops the kernel growing it; `None` leaves it to the
    /// kernel. Either way the socket's writes stop looking here once one has seen it.
    pub fn limit(&self, bytes: Option<usize>) {
        self.0.store(bytes.unwrap_or(Self::AUTOTUNED), Ordering::Relaxed);
    }
}

/// An accepted socket with its `max_sockets` permit, released when the socket closes
/// (after an upgrade, when the WebSocket drops the upgraded IO).
struct Counted {
    tcp: Socket,
    _permit: OwnedSemaphorePermit,
    /// Dropped once decided: a WebSocket's writes then look no further.
    send_buffer: Option<SendBuffer>,
}

impl Counted {
    /// Applies a send buffer size an endpoint asked for.
    fn tune(&mut self) {
        let Some(asked) = &self.send_buffer else { return };
        let bytes = asked.0.load(Ordering::Relaxed);
        if bytes == SendBuffer::UNDECIDED {
            return;
        }
        self.send_buffer = None;
        if bytes != SendBuffer::AUTOTUNED
            && let Socket::Tcp(t) = &self.tcp
            && let Err(e) = socket2::SockRef::from(t).set_send_buffer_size(bytes)
        {
            tracing::debug!("SO_SNDBUF {bytes}: {e}");
        }
    }
}

macro_rules! both {
    ($s:expr, $t:ident => $e:expr) => {
        match $s {
            Socket::Tcp($t) => $e,
            Socket::Tunnel($t) => $e,
        }
    };
}

impl AsyncRead for Socket {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        both!(self.get_mut(), t => Pin::new(t).poll_read(cx, buf))
    }
}

impl AsyncWrite for Socket {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        both!(self.get_mut(), t => Pin::new(t).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        both!(self.get_mut(), t => Pin::new(t).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        both!(self, t => t.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        both!(self.get_mut(), t => Pin::new(t).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        both!(self.get_mut(), t => Pin::new(t).poll_shutdown(cx))
    }
}

impl AsyncRead for Counted {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.tune();
        Pin::new(&mut this.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.tune();
        Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_speaks_at_most_once_a_second_with_the_count() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut t = Tally::default();
        assert_eq!(t.hit_at(ms(0)), Some(1));
        assert_eq!((t.hit_at(ms(1)), t.hit_at(ms(2))), (None, None));
        assert_eq!(t.hit_at(ms(999)), None);
        assert_eq!(t.hit_at(ms(1000)), Some(4));
        assert_eq!(t.hit_at(ms(1001)), None);
    }

    #[test]
    fn descriptor_exhaustion_is_told_apart() {
        assert!(is_out_of_descriptors(&io::Error::from_raw_os_error(libc::EMFILE)));
        assert!(is_out_of_descriptors(&io::Error::from_raw_os_error(libc::ENFILE)));
        assert!(!is_out_of_descriptors(&io::Error::from_raw_os_error(libc::ECONNABORTED)));
        assert!(is_connection_error(&io::Error::from_raw_os_error(libc::ECONNABORTED)));
        assert!(is_connection_error(&io::Error::from_raw_os_error(libc::EPROTO)));
        assert!(!is_connection_error(&io::Error::from_raw_os_error(libc::EMFILE)));
        assert!(!is_connection_error(&io::Error::from_raw_os_error(libc::ENOBUFS)));
    }
}
