//! `idle`: many open conversations doing nothing; what each costs the server in resident
//! memory. Through the gateway each one is a customer socket, a conversation (held by the
//! bot, so it has a routing entry and a holder) and its transcript so far; against the echo
//! baseline it is a socket whose `session.start` frame was echoed.

use std::time::Duration;

use anyhow::{Result, bail};
use serde::Serialize;

use super::Run;
use super::peers::{self, EchoBot, Member};
use super::progress::say;
use super::target::{Server, Target};
use super::wire::Sources;

#[derive(Debug, Clone, Serialize)]
pub struct Idle {
    pub conversations: usize,
    pub source_addresses: usize,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub kib_per_conversation: f64,
    /// Seconds to open them all (handshake and `session.start`, 256 at a time).
    pub open_seconds: f64,
}

pub async fn idle(run: &Run, target: Target) -> Result<Idle> {
    let n = run.opts.idle_conversations;
    let server = Server::start(target, &run.launch, "idle").await?;
    let label = format!("idle {target}");
    let (bot, assigned) = match target {
        Target::Gateway => {
            let handler = EchoBot::default();
            let assigned = handler.assigned.clone();
            (Some(peers::sign_in(server.addr, Member::Bot, handler).await?), Some(assigned))
        }
        Target::Echo => (None, None),
        Target::Nats => bail!("{label}: the NATS peer runs chat-relay and open-loop only"),
    };
    // Let the process settle (allocator arenas, the bot's connection) before the baseline reading.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before_kib = server.rss_kib()?;
    let sources = Sources::for_connections(n);
    let t0 = std::time::Instant::now();
    let customers = peers::open_customers(target, server.customer_addrs(), n, &label, sources).await?;
    let open_seconds = t0.elapsed().as_secs_f64();
    if let Some(assigned) = &assigned
        && !assigned.wait_for(n, Duration::from_secs(60)).await
    {
        bail!("{label}: the bot was assigned {} of {n} conversations", assigned.get());
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after_kib = server.rss_kib()?;
    let r = Idle {
        conversations: n,
        source_addresses: sources.count(),
        rss_before_kib,
        rss_after_kib,
        kib_per_conversation: rss_after_kib.saturating_sub(rss_before_kib) as f64 / n as f64,
        open_seconds,
    };
    say(&format!(
        "  idle {target}: {n} conversations, RSS {:.1} → {:.1} MiB: {:.2} KiB each (opened in {:.1} s)",
        r.rss_before_kib as f64 / 1024.0,
        r.rss_after_kib as f64 / 1024.0,
        r.kib_per_conversation,
        r.open_seconds
    ));
    drop(customers);
    if let Some(bot) = bot {
        let _ = bot.finish().await;
    }
    server.stop().await;
    Ok(r)
}
