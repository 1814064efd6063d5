//! `switchboard-echo`: the baseline every gateway figure is compared with. A minimal
//! tokio-tungstenite WebSocket echo server, built with the same profile and the same
//! buffer settings as the gateway (its own `ws_config`), on the same kind of runtime (one
//! worker per core). Like the gateway's writer, it sends back everything that is ready to
//! read and then flushes once, so both batch writes the same way.
//!
//! It answers any path, echoes text and binary frames, and logs
//! `listening on ws://ADDR` on stderr when ready.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Parser)]
#[command(name = "switchboard-echo", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async move {
        let listener = match TcpListener::bind(args.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("cannot listen on {}: {e}", args.listen);
                return ExitCode::from(1);
            }
        };
        match listener.local_addr() {
            Ok(addr) => eprintln!("listening on ws://{addr}"),
            Err(e) => {
                eprintln!("no local address: {e}");
                return ExitCode::from(1);
            }
        }
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(echo(stream));
                }
                // Out of file descriptors, say: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    })
}

async fn echo(stream: TcpStream) {
    let config = switchboard_bench::load::wire::ws_config(switchboard::server::ws::CUSTOMER.read);
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else { return };
    let (mut sink, stream) = ws.split();
    let mut ready = stream.ready_chunks(64);
    while let Some(batch) = ready.next().await {
        for msg in batch {
            match msg {
                Ok(m @ (Message::Text(_) | Message::Binary(_))) => {
                    if sink.feed(m).await.is_err() {
                        return;
                    }
                }
                Ok(Message::Close(_)) | Err(_) => return,
                Ok(_) => {}
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
}
