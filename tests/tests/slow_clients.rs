//! Clients that open sockets and never finish a request: slowloris, silent connections and
//! idle keep-alives are closed after `request_timeout_secs`, sockets beyond `max_sockets`
//! are closed on arrival, and the gateway keeps answering everybody else.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use serde_json::json;
use switchboard_tests::{EXTERNAL_BOT, TestServer, WAIT, http, start_server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The external-bot sample with extra `[server]` settings.
fn config(server: &str) -> String {
    let text = EXTERNAL_BOT.replacen("[server]\n", &format!("[server]\n{server}\n"), 1);
    assert_ne!(text, EXTERNAL_BOT, "the sample has a [server] table");
    text
}

/// Reads until the server closes the socket (EOF or reset), within `WAIT`; returns what it
/// sent before closing.
async fn until_closed(tcp: &mut TcpStream) -> Result<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(WAIT, tcp.read(&mut buf)).await {
            Err(_) => bail!("still open after {WAIT:?}; received {:?}", String::from_utf8_lossy(&got)),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// A head timeout answers nothing, or at most a 408.
fn assert_no_answer_but_408(got: &[u8], who: &str) {
    let text = String::from_utf8_lossy(got);
    assert!(text.is_empty() || text.starts_with("HTTP/1.1 408"), "{who} got {text:?}");
}

#[tokio::test]
async fn a_client_that_never_finishes_its_request_head_is_closed_after_request_timeout_secs() -> Result<()> {
    let s = start_server(Some(&config("request_timeout_secs = 1"))).await;
    // A customer whose WebSocket is older than the head timeout by the end: an upgraded
    // connection is no longer subject to it.
    let mut ann = s.start_chat("ChatWorkStream", "Ann", json!({})).await?;

    let opened = Instant::now();
    let mut slowloris = TcpStream::connect(s.addr).await?;
    slowloris.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await?;
    let mut silent = TcpStream::connect(s.addr).await?;

    // Meanwhile a well-behaved client is answered.
    let (status, body) = http(s.addr, "GET", "/healthz", "text/plain", "").await?;
    assert_eq!((status, body.as_str()), (200, "ok\n"));

    let got = until_closed(&mut slowloris).await.context("the slowloris client")?;
    assert_no_answer_but_408(&got, "the slowloris client");
    let got = until_closed(&mut silent).await.context("the silent client")?;
    assert_no_answer_but_408(&got, "the silent client");
    assert!(opened.elapsed() >= Duration::from_millis(950), "closed before the timeout: {:?}", opened.elapsed());

    ann.send(json!({"type":"message","text":"still here"})).await?;
    ann.event("ack").await?;
    let (status, _) = http(s.addr, "GET", "/healthz", "text/plain", "").await?;
    assert_eq!(status, 200);
    Ok(())
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_after_request_timeout_secs() -> Result<()> {
    let s = start_server(Some(&config("request_timeout_secs = 1"))).await;
    let mut tcp = TcpStream::connect(s.addr).await?;
    // Two requests on one connection, then nothing: the wait for a third head is bounded
    // like the wait for the first.
    for _ in 0..2 {
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await?;
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        while !got.ends_with(b"\r\n\r\nok\n") {
            let n = tokio::time::timeout(WAIT, tcp.read(&mut buf)).await.context("a response")??;
            if n == 0 {
                bail!("closed before answering: {:?}", String::from_utf8_lossy(&got));
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got.starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&got));
    }
    let idle_since = Instant::now();
    let got = until_closed(&mut tcp).await.context("the idle keep-alive")?;
    assert_no_answer_but_408(&got, "the idle keep-alive");
    assert!(idle_since.elapsed() >= Duration::from_millis(950), "closed early: {:?}", idle_since.elapsed());
    Ok(())
}

/// Opens `n` connections that send nothing; each reports its index on the channel once the
/// server has closed it.
async fn silent_connections(s: &TestServer, n: usize) -> Result<mpsc::UnboundedReceiver<usize>> {
    let (tx, rx) = mpsc::unbounded_channel();
    for i in 0..n {
        let mut tcp = TcpStream::connect(s.addr).await?;
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut sink = Vec::new();
            let _ = tcp.read_to_end(&mut sink).await;
            let _ = tx.send(i);
        });
    }
    Ok(rx)
}

async fn closed(rx: &mut mpsc::UnboundedReceiver<usize>, n: usize, why: &str) -> Result<()> {
    for k in 0..n {
        tokio::time::timeout(WAIT, rx.recv())
            .await
            .with_context(|| format!("{why}: {k} of {n} closed within {WAIT:?}"))?
            .context("reader gone")?;
    }
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn sockets_beyond_max_sockets_are_closed_on_arrival_and_service_resumes_after_the_head_timeout() -> Result<()> {
    // The head timeout is long in real time, so the 50 held sockets stay held while the
    // test looks; it is then passed at once on tokio's paused clock.
    let s = start_server(Some(&config("max_sockets = 50\nmax_connections = 50\nrequest_timeout_secs = 30"))).await;
    let mut rx = silent_connections(&s, 60).await?;
    closed(&mut rx, 10, "the 10 sockets beyond max_sockets").await?;

    // With all 50 held, one more (a well-behaved client) is closed without an answer too.
    let probe = http(s.addr, "GET", "/healthz", "text/plain", "").await;
    assert!(probe.is_err(), "answered with every socket taken: {probe:?}");
    assert!(rx.try_recv().is_err(), "a held socket was closed before its head timeout");

    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(31)).await;
    tokio::time::resume();
    closed(&mut rx, 50, "the held sockets, after their head timeout").await?;

    let (status, _) = http(s.addr, "GET", "/healthz", "text/plain", "").await?;
    assert_eq!(status, 200);
    let mut ann = s.start_chat("ChatWorkStream", "Ann", json!({})).await?;
    ann.send(json!({"type":"message","text":"hello"})).await?;
    ann.event("ack").await?;
    Ok(())
}
