//! The run as Markdown tables ready for BENCHMARKS.md: every figure with the gateway, the
//! echo baseline measured in the same run, their ratio, and the target it is held to.
//!
//! The NATS peer of the chat scenarios gets rows of its own: its figures in the gateway's
//! column against the same echo ("NATS peer in the gateway's place"), then the gateway's
//! against NATS's, with NATS in the baseline column ("baseline: NATS").

use std::fmt::Write as _;

use super::chat::{ClosedLoop, OpenPoint};
use super::cluster::{Cluster, Clustered, nodes};
use super::handoff::{Handoff, RunCpuWait};
use super::recovery::Recovery;
use super::voice::{Dialect, Direction, GAP_P99_TARGET_MS, P99_TARGET_MS, VoicePoint, largest_holding};
use super::wire::StoreStalls;
use super::{Pair, Results};

struct Row {
    scenario: String,
    measure: String,
    gateway: String,
    baseline: String,
    ratio: String,
    target: String,
    met: String,
}

fn num(x: f64, digits: usize) -> String {
    if x.is_nan() {
        return "–".to_owned();
    }
    let s = format!("{x:.digits$}");
    // Thousands separators for the integer part, for figures a reader compares at a glance.
    let (int, frac) = s.split_once('.').map_or((s.as_str(), None), |(i, f)| (i, Some(f)));
    let (sign, digits_only) = int.strip_prefix('-').map_or(("", int), |d| ("-", d));
    let mut grouped = String::new();
    for (i, c) in digits_only.chars().enumerate() {
        if i > 0 && (digits_only.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    match frac {
        Some(f) => format!("{sign}{grouped}.{f}"),
        None => format!("{sign}{grouped}"),
    }
}

fn ratio(g: f64, e: f64) -> String {
    if e == 0.0 || g.is_nan() || e.is_nan() { "–".to_owned() } else { format!("{:.2}×", g / e) }
}

fn verdict(ok: bool) -> String {
    if ok { "yes".to_owned() } else { "**no**".to_owned() }
}

fn missing<T>(p: &Pair<T>) -> String {
    if p.errors.is_empty() { "not measured".to_owned() } else { format!("failed: {}", p.errors.join("; ")) }
}

/// The NATS peer's failure, when its run failed.
fn nats_failure<T>(p: &Pair<T>) -> Option<String> {
    let errors: Vec<&str> = p.errors.iter().filter(|e| e.starts_with("nats:")).map(String::as_str).collect();
    (!errors.is_empty()).then(|| format!("failed: {}", errors.join("; ")))
}

const NATS_PEER: &str = "NATS peer in the gateway's place";

fn rows(r: &Results) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut row = |scenario: &str, measure: &str, g: String, e: String, ratio: String, target: &str, met: String| {
        rows.push(Row {
            scenario: scenario.to_owned(),
            measure: measure.to_owned(),
            gateway: g,
            baseline: e,
            ratio,
            target: target.to_owned(),
            met,
        });
    };
    if let Some(p) = &r.chat_relay {
        chat_rows(&mut row, p, "durable store (SQLite, sync full)", "≥ 0.40× echo");
    }
    if let Some(p) = &r.chat_relay_memory {
        chat_rows(&mut row, p, "in-memory store", "");
    }
    if let Some(p) = &r.chat_relay {
        nats_chat_rows(&mut row, p, r.chat_relay_memory.as_ref());
    }
    if let (Some(acked), Some(echo)) = (&r.chat_relay_nats_acked, r.chat_relay.as_ref().and_then(|p| p.echo.as_ref())) {
        nats_acked_rows(&mut row, acked, echo, r.chat_relay_memory.as_ref().and_then(|p| p.gateway.as_ref()));
    }
    if let Some(ol) = &r.open_loop {
        let half = ol.loads.iter().position(|&f| (f - 0.5).abs() < 1e-9);
        match (ol.points.both(), half) {
            (Some((g, e)), Some(i)) if i < g.len() && i < e.len() => {
                let (g, e) = (&g[i], &e[i]);
                let s = format!("open-loop at ½ max ({} / s offered)", num(g.offered_per_sec, 0));
                row(
                    &s,
                    "p99 round trip (ms)",
                    num(g.latency.p99_ms, 2),
                    num(e.latency.p99_ms, 2),
                    ratio(g.latency.p99_ms, e.latency.p99_ms),
                    "gateway ≤ 2 ms",
                    verdict(g.latency.p99_ms <= 2.0 && g.unanswered == 0),
                );
                figure(&mut row, &s, "p50 round trip (ms)", g.latency.p50_ms, e.latency.p50_ms, 2);
                if let Some(m) = &ol.memory_half {
                    let s = format!("open-loop at ½ max ({} / s), in-memory store", num(m.offered_per_sec, 0));
                    for (measure, gv, ev) in [
                        ("p99 round trip (ms)", m.latency.p99_ms, e.latency.p99_ms),
                        ("p50 round trip (ms)", m.latency.p50_ms, e.latency.p50_ms),
                    ] {
                        figure(&mut row, &s, measure, gv, ev, 2);
                    }
                }
                match ol.points.nats.as_ref().and_then(|n| n.get(i)) {
                    Some(n) => {
                        let s = format!("open-loop at ½ max ({} / s), {NATS_PEER}", num(n.offered_per_sec, 0));
                        figure(&mut row, &s, "p99 round trip (ms)", n.latency.p99_ms, e.latency.p99_ms, 2);
                        figure(&mut row, &s, "p50 round trip (ms)", n.latency.p50_ms, e.latency.p50_ms, 2);
                        let s =
                            format!("open-loop at ½ max ({} / s), against the NATS peer", num(n.offered_per_sec, 0));
                        let p99 = n.latency.p99_ms;
                        figure(&mut row, &s, "p99 (ms), durable store, baseline: NATS", g.latency.p99_ms, p99, 2);
                        if let Some(m) = &ol.memory_half {
                            figure(&mut row, &s, "p99 (ms), in-memory store, baseline: NATS", m.latency.p99_ms, p99, 2);
                        }
                    }
                    None => {
                        if let Some(f) = nats_failure(&ol.points) {
                            let s = format!("open-loop, {NATS_PEER}");
                            row(&s, "p99 round trip (ms)", f, String::new(), String::new(), "", String::new());
                        }
                    }
                }
                if let Some(c) = &ol.slow_commits {
                    let s = "open-loop, durable store: commits over 50 ms (all loads)";
                    let v = format!("{} (longest {} ms, {} ms in all)", c.count, num(c.max_ms, 0), num(c.total_ms, 0));
                    row(s, "count", v, String::new(), String::new(), "", String::new());
                }
                if let Some(d) = &ol.disk {
                    let s = format!("disk: {} KiB append + fdatasync", d.bytes / 1024);
                    for (measure, v) in
                        [("p50 (ms)", d.sync.p50_ms), ("p99 (ms)", d.sync.p99_ms), ("max over 5 s (ms)", d.sync.max_ms)]
                    {
                        row(&s, measure, num(v, 2), String::new(), String::new(), "", String::new());
                    }
                }
            }
            (None, _) => {
                row("open-loop", "p99 round trip", missing(&ol.points), String::new(), String::new(), "", String::new())
            }
            _ => {}
        }
    }
    if let Some(p) = &r.idle {
        match p.both() {
            Some((g, e)) => {
                let s = format!("idle, {} conversations", num(g.conversations as f64, 0));
                row(
                    &s,
                    "RSS per conversation (KiB)",
                    num(g.kib_per_conversation, 2),
                    num(e.kib_per_conversation, 2),
                    ratio(g.kib_per_conversation, e.kib_per_conversation),
                    "gateway ≤ 10 KiB",
                    verdict(g.kib_per_conversation <= 10.0),
                );
                let at =
                    |x: &super::idle::Idle| (x.rss_before_kib as f64 + 100_000.0 * x.kib_per_conversation) / 1024.0;
                row(
                    &s,
                    "RSS projected to 100,000 (MiB)",
                    num(at(g), 0),
                    num(at(e), 0),
                    ratio(at(g), at(e)),
                    "gateway ≤ 2,048 MiB",
                    verdict(at(g) <= 2048.0),
                );
            }
            None => row("idle", "RSS per conversation", missing(p), String::new(), String::new(), "", String::new()),
        }
    }
    if let Some(p) = &r.handoff {
        handoff_rows(&mut row, p, None);
    }
    if let Some(p) = &r.handoff_steady {
        handoff_rows(&mut row, p, p.gateway.as_ref().and_then(|g| g.rate));
    }
    let sweeps =
        [(&r.voice, &r.voice_cpu, &r.voice_hold), (&r.voice_twilio, &r.voice_twilio_cpu, &r.voice_twilio_hold)];
    for (sweep, repeats, hold) in sweeps {
        if let Some(sweep) = sweep {
            let (repeats, hold) = (repeats.as_deref().unwrap_or_default(), hold.as_deref().unwrap_or_default());
            voice_rows(&mut row, sweep, hold, repeats, r.options.voice_cpu_calls);
        }
    }
    if let Some(x) = &r.recovery {
        recovery_rows(&mut row, x);
    } else if let Some(e) = &r.recovery_error {
        row("recovery", "ready", format!("failed: {e}"), String::new(), String::new(), "", String::new());
    }
    rows
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// `recovery` has no baseline: its figures are the gateway's own, against the target.
fn recovery_rows(row: &mut RowFn<'_>, x: &Recovery) {
    let none = || String::new();
    let s = format!(
        "recovery, {} open conversations × {} messages",
        num(x.conversations as f64, 0),
        num(x.messages_per_conversation as f64, 0)
    );
    let base = "(no baseline)".to_owned();
    let secs = |v: Option<f64>| v.map_or_else(|| "–".to_owned(), |v| num(v, 2));
    row(
        &s,
        "restart → listening, every conversation recovered (s)",
        num(x.ready_seconds, 2),
        base.clone(),
        none(),
        "≤ 10 s",
        verdict(x.ready_seconds <= 10.0 && x.ready()),
    );
    row(&s, "… store open, its log read (s)", secs(x.store_read_seconds), none(), none(), "", none());
    row(&s, "… hub restored (s)", secs(x.recovered_seconds), none(), none(), "", none());
    let count = |v: Option<u64>| v.map_or_else(|| "–".to_owned(), |v| num(v as f64, 0));
    row(
        &s,
        "recovered before listening: conversations / activities",
        format!(
            "{} / {} ({})",
            count(x.recovered_conversations),
            count(x.recovered_activities),
            if x.recovered_before_listening { "before" } else { "**not before**" }
        ),
        format!("of {} / {}", num(x.conversations as f64, 0), num((x.conversations * x.activities_each()) as f64, 0)),
        none(),
        "every one",
        verdict(
            x.ready() && x.recovered_activities.is_some_and(|a| a >= (x.conversations * x.activities_each()) as u64),
        ),
    );
    row(
        &s,
        "store: customer messages + bot replies; file size (MiB)",
        format!(
            "{} + {}; {}",
            num(x.customer_messages as f64, 0),
            num(x.bot_replies as f64, 0),
            num(x.store_bytes as f64 / (1024.0 * 1024.0), 0)
        ),
        none(),
        none(),
        "",
        none(),
    );
    row(&s, "RSS before the crash (MiB)", num(mib(x.rss_before_crash_kib), 1), none(), none(), "", none());
    for (measure, kib) in
        [("RSS at ready (MiB)", x.rss_ready_kib), ("RSS with the bot back (MiB)", x.rss_after_bot_kib)]
    {
        row(
            &s,
            measure,
            num(mib(kib), 1),
            none(),
            ratio(kib as f64, x.rss_before_crash_kib as f64),
            "≤ before the crash",
            verdict(kib <= x.rss_before_crash_kib),
        );
    }
    row(
        &s,
        "bot back: conversations resumed; seconds",
        format!(
            "{} / {}; {}",
            num(x.bot_resumed as f64, 0),
            num(x.conversations as f64, 0),
            num(x.bot_resume_seconds, 2)
        ),
        none(),
        none(),
        "every one",
        verdict(x.bot_resumed == x.conversations),
    );
    row(
        &s,
        "customers resumed at watermark 0: every seq, no gap",
        format!("{} / {}", num(x.sample.whole as f64, 0), num(x.sample.customers as f64, 0)),
        none(),
        none(),
        "every one",
        verdict(x.sample.whole == x.sample.customers && x.sample.customers > 0),
    );
    row(&s, "store filled in (s)", num(x.fill_seconds, 1), none(), none(), "", none());
}

type RowFn<'a> = dyn FnMut(&str, &str, String, String, String, &str, String) + 'a;

/// A figure measured on both servers, with their ratio and no target of its own.
/// The rows of a handoff run: in one burst (`rate` `None`), held to escalations handled a
/// second; at a steady rate, held to its p99.
fn handoff_rows(row: &mut RowFn<'_>, p: &Pair<Handoff>, rate: Option<f64>) {
    let Some((g, e)) = p.both() else {
        let s = if rate.is_some() { "handoff, steady" } else { "handoff" };
        row(s, "assignment", missing(p), String::new(), String::new(), "", String::new());
        return;
    };
    let s = match rate {
        None => format!("handoff, {} in one burst", num(g.escalations as f64, 0)),
        Some(r) if g.runs() > 1 => {
            format!(
                "handoff, {} × {} at a steady {} / s",
                g.runs(),
                num((g.escalations / g.runs()) as f64, 0),
                num(r, 0)
            )
        }
        Some(r) => format!("handoff, {} at a steady {} / s", num(g.escalations as f64, 0), num(r, 0)),
    };
    row(
        &s,
        "assigned",
        format!("{} / {}", num(g.assigned as f64, 0), num(g.escalations as f64, 0)),
        format!("{} / {}", num(e.assigned as f64, 0), num(e.escalations as f64, 0)),
        String::new(),
        "every one",
        verdict(g.assigned == g.escalations && g.errors.is_empty()),
    );
    let (gl, el) = (g.latency, e.latency);
    if rate.is_some() {
        row(
            &s,
            "p99 escalation → assignment (ms)",
            num(gl.p99_ms, 2),
            num(el.p99_ms, 2),
            ratio(gl.p99_ms, el.p99_ms),
            "gateway ≤ 5 ms",
            verdict(gl.p99_ms <= 5.0),
        );
        if g.runs() > 1 {
            let each = |h: &Handoff| h.run_p99_ms.iter().map(|&v| num(v, 2)).collect::<Vec<_>>().join(" / ");
            row(&s, "p99 of each run (ms)", each(g), each(e), String::new(), "", String::new());
        }
        handoff_stalls(row, &s, g, e);
    } else {
        figure(row, &s, "p99 escalation → assignment (ms)", gl.p99_ms, el.p99_ms, 2);
    }
    figure(row, &s, "p50 (ms)", gl.p50_ms, el.p50_ms, 2);
    figure(row, &s, "max (ms)", gl.max_ms, el.max_ms, 2);
    let per = |secs: f64, h: &Handoff| secs / h.escalations as f64 * 1e6;
    figure(row, &s, "server CPU per escalation (µs)", per(g.server_cpu_secs, g), per(e.server_cpu_secs, e), 1);
    let (gc, ec) = (g.cores(), e.cores());
    figure(row, &s, "server CPU (cores)", gc.0, ec.0, 2);
    // The generator shares the machine: with the server's, how close the run came to
    // keeping every core busy (a tail that grows there is queueing for the CPU).
    figure(row, &s, "server + generator CPU (cores, of the machine's)", gc.0 + gc.1, ec.0 + ec.1, 2);
    if let Some(lock) = g.engine_lock {
        let gateway_only = |row: &mut RowFn<'_>, measure: &str, v: String| {
            row(&s, measure, v, String::new(), String::new(), "", String::new());
        };
        let held = per(lock.held_secs, g);
        gateway_only(row, "routing engine's lock held per escalation (µs)", num(held, 1));
        gateway_only(row, "its lock waited for per escalation (µs)", num(per(lock.wait_secs, g), 1));
        // Every routing decision is made under that one lock: whatever runs around it in
        // parallel, the routing core cannot go faster than one escalation per `held`.
        gateway_only(row, "escalations / s with the lock held all the time (1 ÷ held)", num(1e6 / held, 0));
    }
    if rate.is_none() {
        let handled = g.per_sec();
        row(
            &s,
            "escalations handled / s",
            num(handled, 0),
            num(e.per_sec(), 0),
            ratio(e.burst_seconds, g.burst_seconds),
            "gateway ≥ 100,000",
            verdict(handled >= 100_000.0),
        );
        row(
            &s,
            "whole burst (ms)",
            num(g.burst_seconds * 1000.0, 1),
            num(e.burst_seconds * 1000.0, 1),
            ratio(g.burst_seconds, e.burst_seconds),
            "",
            String::new(),
        );
    }
}

/// What each steady run's tail may come from: the gateway's store commits and checkpoints
/// slower than 3.2 ms (commits wait for a checkpoint, assignments for their commit), the
/// machine's CPU time stolen by other guests, and how long the servers' and the generator's
/// threads were ready to run but had no core (both servers').
fn handoff_stalls(row: &mut RowFn<'_>, s: &str, g: &Handoff, e: &Handoff) {
    let slow = StoreStalls::SLOW_MS;
    let each = |v: &[f64], digits: usize| v.iter().map(|&x| num(x, digits)).collect::<Vec<_>>().join(" / ");
    // Only the gateway alone has the store's figures (not the echo, nor a cluster).
    let runs = &g.run_store;
    if let Some(first) = runs.first() {
        for (i, (kind, _, _)) in first.by_kind().into_iter().enumerate() {
            let slow_each: Vec<f64> = runs.iter().map(|st| st.by_kind()[i].1).collect();
            let all: f64 = runs.iter().map(|st| st.by_kind()[i].2).sum();
            row(
                s,
                &format!("store {kind} over {slow} ms, each run (of {} in all)", num(all, 0)),
                each(&slow_each, 0),
                String::new(),
                String::new(),
                "",
                String::new(),
            );
        }
    }
    let stolen = |h: &Handoff| h.run_stolen.iter().map(|x| x * 100.0).collect::<Vec<_>>();
    row(
        s,
        "machine's CPU stolen by other guests, each run (%)",
        each(&stolen(g), 1),
        each(&stolen(e), 1),
        String::new(),
        "",
        String::new(),
    );
    // The gateway's store writer is apart: a commit, and every assignment behind it, waits
    // for it to get a core.
    let waited = |h: &Handoff, store: bool| {
        let run = |w: &RunCpuWait| {
            let writer = if store { format!(" ({})", num(w.store_ms, 1)) } else { String::new() };
            format!("{}{writer} + {}", num(w.server_ms, 1), num(w.generator_ms, 1))
        };
        h.run_cpu_wait.iter().map(run).collect::<Vec<_>>().join(" / ")
    };
    row(
        s,
        "ready to run but waiting for a CPU, each run (ms): server (gateway's store writer) + generator",
        waited(g, true),
        waited(e, false),
        String::new(),
        "",
        String::new(),
    );
}

fn figure(row: &mut RowFn<'_>, scenario: &str, measure: &str, gateway: f64, echo: f64, digits: usize) {
    row(scenario, measure, num(gateway, digits), num(echo, digits), ratio(gateway, echo), "", String::new());
}

fn chat_rows(row: &mut RowFn<'_>, p: &Pair<ClosedLoop>, store: &str, target: &str) {
    let Some((g, e)) = p.both() else {
        row(
            &format!("chat-relay, {store}"),
            "round trips / s",
            missing(p),
            String::new(),
            String::new(),
            "",
            String::new(),
        );
        return;
    };
    let s = format!("chat-relay, {} conversations, {store}", num(g.conversations as f64, 0));
    rate_row(row, &s, "round trips / s", (g, e), target, 0.4);
    let l = (g.latency, e.latency);
    figure(row, &s, "p50 round trip (ms)", l.0.p50_ms, l.1.p50_ms, 2);
    figure(row, &s, "p99 round trip (ms)", l.0.p99_ms, l.1.p99_ms, 2);
    figure(row, &s, "server CPU (cores)", g.server_cores, e.server_cores, 2);
    figure(row, &s, "server CPU per round trip (µs)", g.cpu_per_trip_us(), e.cpu_per_trip_us(), 1);
}

/// Round trips per second of a run against a baseline's; with a target, met at `least` × the
/// baseline and no error.
fn rate_row(row: &mut RowFn<'_>, s: &str, measure: &str, (g, b): (&ClosedLoop, &ClosedLoop), target: &str, least: f64) {
    let q = g.round_trips_per_sec / b.round_trips_per_sec;
    let met = if target.is_empty() { String::new() } else { verdict(q >= least && g.errors.is_empty()) };
    let (gr, br) = (g.round_trips_per_sec, b.round_trips_per_sec);
    row(s, measure, num(gr, 0), num(br, 0), ratio(gr, br), target, met);
}

/// How the report names a peer run: in the gateway's place against the echo, as the
/// scenario a gateway run is measured against, and as that run's baseline.
struct PeerNames<'a> {
    place: &'a str,
    against: &'a str,
    baseline: &'a str,
}

/// A peer's run against the echo, as the gateway is (its figures in the gateway's column),
/// then each gateway run against the peer (the peer in the baseline column); without the
/// peer's figures, its `failure` (if any) in one row.
fn peer_rows(
    row: &mut RowFn<'_>,
    names: PeerNames<'_>,
    peer: Result<&ClosedLoop, Option<String>>,
    echo: Option<&ClosedLoop>,
    runs: &[(Option<&ClosedLoop>, &str, &str)],
) {
    let n = match peer {
        Ok(n) => n,
        Err(failure) => {
            if let Some(f) = failure {
                let s = format!("chat-relay, {}", names.place);
                row(&s, "round trips / s", f, String::new(), String::new(), "", String::new());
            }
            return;
        }
    };
    let against_echo = Pair { gateway: Some(n.clone()), echo: echo.cloned(), nats: None, errors: Vec::new() };
    chat_rows(row, &against_echo, names.place, "");
    for &(g, store, target) in runs {
        let Some(g) = g else { continue };
        let s = format!(
            "chat-relay, {} conversations, {store} against the {}",
            num(g.conversations as f64, 0),
            names.against
        );
        rate_row(row, &s, &format!("round trips / s, baseline: {}", names.baseline), (g, n), target, 1.0);
        let measure = format!("server CPU per round trip (µs), baseline: {}", names.baseline);
        figure(row, &s, &measure, g.cpu_per_trip_us(), n.cpu_per_trip_us(), 1);
    }
}

/// The NATS peer, and both gateway runs against it. The target: the gateway with
/// the in-memory store at least as fast as NATS in the same run.
fn nats_chat_rows(row: &mut RowFn<'_>, durable: &Pair<ClosedLoop>, memory: Option<&Pair<ClosedLoop>>) {
    let names = PeerNames { place: NATS_PEER, against: "NATS peer", baseline: "NATS" };
    let runs = [
        (durable.gateway.as_ref(), "durable store", ""),
        (memory.and_then(|p| p.gateway.as_ref()), "in-memory store", "in-memory ≥ 1.00× NATS"),
    ];
    peer_rows(row, names, durable.nats.as_ref().ok_or_else(|| nats_failure(durable)), durable.echo.as_ref(), &runs);
}

const NATS_ACKED: &str = "NATS peer acknowledging every message (verbose)";

/// The NATS peer asked to acknowledge every message, as the gateway does, and the
/// in-memory gateway against it.
fn nats_acked_rows(row: &mut RowFn<'_>, acked: &Pair<ClosedLoop>, echo: &ClosedLoop, memory: Option<&ClosedLoop>) {
    let names = PeerNames { place: NATS_ACKED, against: NATS_ACKED, baseline: "NATS acknowledging" };
    let peer = acked.nats.as_ref().ok_or_else(|| Some(missing(acked)));
    peer_rows(row, names, peer, Some(echo), &[(memory, "in-memory store", "")]);
}

/// For each count whose first pair split (one server held, the other not), every pair's
/// verdict and p99 caller → bot, for each server.
fn hold_rows(row: &mut RowFn<'_>, title: &str, sweep: &[Pair<VoicePoint>], hold: &[Pair<VoicePoint>]) {
    let mut counts: Vec<usize> =
        hold.iter().filter_map(|p| p.gateway.as_ref().or(p.echo.as_ref())).map(|p| p.calls).collect();
    counts.dedup();
    for n in counts {
        let at_n: Vec<&Pair<VoicePoint>> = sweep
            .iter()
            .chain(hold)
            .filter(|p| p.gateway.as_ref().or(p.echo.as_ref()).is_some_and(|v| v.calls == n))
            .collect();
        let each = |pick: fn(&Pair<VoicePoint>) -> Option<&VoicePoint>| {
            at_n.iter()
                .map(|p| match pick(p) {
                    Some(v) => format!("{} ({})", if v.holds() { "holds" } else { "no" }, num(v.up.latency.p99_ms, 2)),
                    None => "failed".to_owned(),
                })
                .collect::<Vec<_>>()
                .join(" / ")
        };
        row(
            &format!("{title}, {} calls, {} alternating pairs (the first split)", num(n as f64, 0), at_n.len()),
            "each pair: holds or not (p99 caller → bot, ms); most decide",
            each(|p| p.gateway.as_ref()),
            each(|p| p.echo.as_ref()),
            String::new(),
            "",
            String::new(),
        );
    }
}

fn calls_or_none(n: Option<usize>) -> String {
    n.map_or_else(|| "none".to_owned(), |n| num(n as f64, 0))
}

fn lost_of(d: &Direction) -> String {
    format!("{} of {}", num((d.lost + d.extra + d.out_of_sequence) as f64, 0), num(d.sent as f64, 0))
}

/// Any point of a sweep (they share its dialect and the bot's format).
fn sweep_point(sweep: &[Pair<VoicePoint>]) -> Option<&VoicePoint> {
    sweep.iter().find_map(|p| p.gateway.as_ref().or(p.echo.as_ref()))
}

/// The dialect of a sweep's callers.
fn sweep_dialect(sweep: &[Pair<VoicePoint>]) -> Dialect {
    sweep_point(sweep).map_or(Dialect::Native, |p| p.dialect)
}

/// The bot's audio format in a sweep.
fn sweep_bot_audio(sweep: &[Pair<VoicePoint>]) -> switchboard_codecs::Format {
    sweep_point(sweep).map_or_else(Default::default, |p| p.bot_audio)
}

/// How the report names a sweep: its dialect, and the bot's format where it is not the
/// default.
fn sweep_title(sweep: &[Pair<VoicePoint>]) -> String {
    let title = sweep_dialect(sweep).title();
    match sweep_bot_audio(sweep) {
        switchboard_codecs::Format::L16_16K => title.to_owned(),
        other => format!("{title}, bot {}", super::voice::format_title(other)),
    }
}

/// A sweep's errors, each named by its sweep and call count.
fn voice_errors(sweep: &[Pair<VoicePoint>]) -> Vec<String> {
    let title = sweep_title(sweep);
    let mut out = Vec::new();
    for p in sweep {
        let calls = p.gateway.as_ref().map_or(0, |g| g.calls);
        out.extend(p.errors.iter().map(|e| format!("{title}, {calls} calls: {e}")));
        if let Some(g) = &p.gateway {
            out.extend(g.errors.iter().map(|e| format!("{title}, {calls} calls, gateway: {e}")));
        }
    }
    out
}

/// A sweep's rows: the largest count holding (where a count's first pair split, most of
/// the `hold` pairs there decide, and they are listed), the pacing at it, the CPU target's
/// pairs (`repeats`), and the largest count's figures.
fn voice_rows(
    row: &mut RowFn<'_>,
    sweep: &[Pair<VoicePoint>],
    hold: &[Pair<VoicePoint>],
    repeats: &[Pair<VoicePoint>],
    cpu_calls: usize,
) {
    let title = sweep_title(sweep);
    let gateway: Vec<&VoicePoint> = sweep.iter().chain(hold).filter_map(|p| p.gateway.as_ref()).collect();
    let echo: Vec<&VoicePoint> = sweep.iter().chain(hold).filter_map(|p| p.echo.as_ref()).collect();
    let counts: Vec<String> =
        sweep.iter().filter_map(|p| p.gateway.as_ref().or(p.echo.as_ref())).map(|p| num(p.calls as f64, 0)).collect();
    let top_wanted = sweep.iter().filter_map(|p| p.gateway.as_ref().or(p.echo.as_ref())).map(|p| p.calls).max();
    let (g_best, e_best) = (largest_holding(gateway.iter().copied()), largest_holding(echo.iter().copied()));
    let failures: Vec<String> = sweep.iter().flat_map(|p| p.errors.iter().cloned()).collect();
    row(
        &format!("{title}, sweep of {} calls", counts.join(" / ")),
        "largest count: none refused, no frame lost, p99 < 5 ms",
        if failures.is_empty() {
            calls_or_none(g_best)
        } else {
            format!("{} ({})", calls_or_none(g_best), failures.join("; "))
        },
        calls_or_none(e_best),
        String::new(),
        "gateway ≥ the echo's count",
        verdict(g_best.is_some_and(|n| e_best.is_none_or(|e| n >= e))),
    );
    hold_rows(row, &title, sweep, hold);
    // The pacing target, at the gateway's largest holding count (against the
    // echo's gaps at the same count: the callers' own 20 ms schedule, echoed), from a pair
    // where it held.
    let at_best = g_best
        .and_then(|n| sweep.iter().chain(hold).find(|p| p.gateway.as_ref().is_some_and(|g| g.calls == n && g.holds())));
    match at_best.and_then(|p| Some((p.gateway.as_ref()?, p.echo.as_ref()))) {
        Some((g, e)) => {
            let eg = e.map_or(f64::NAN, |e| e.caller_gap.p99_ms);
            row(
                &format!("{title}, {} calls (the largest holding)", num(g.calls as f64, 0)),
                "p99 gap between bot → caller frames (ms)",
                num(g.caller_gap.p99_ms, 2),
                num(eg, 2),
                ratio(g.caller_gap.p99_ms, eg),
                "gateway ≤ 25 ms",
                verdict(g.caller_gap.p99_ms <= GAP_P99_TARGET_MS),
            );
        }
        None => row(
            &format!("{title}, the largest holding count"),
            "p99 gap between bot → caller frames (ms)",
            "no count holds".to_owned(),
            String::new(),
            String::new(),
            "gateway ≤ 25 ms",
            verdict(false),
        ),
    }
    // The CPU target: the median of alternating pairs at its count.
    let (pairs, median) = super::voice::cpu_pairs(cpu_calls, sweep, repeats);
    if !pairs.is_empty() {
        let list = |f: fn(&(f64, f64)) -> f64| pairs.iter().map(|p| num(f(p), 2)).collect::<Vec<_>>().join(" / ");
        row(
            &format!("{title}, {} calls, {} alternating pairs", num(cpu_calls as f64, 0), pairs.len()),
            "server CPU (cores); ratio: the median of the pairs'",
            list(|p| p.0),
            list(|p| p.1),
            median.map_or_else(String::new, |m| format!("{m:.2}×")),
            "gateway ≤ 1.3× echo",
            verdict(median.is_some_and(|m| m <= super::voice::CPU_RATIO_TARGET)),
        );
    }
    // The largest count measured on both servers.
    let Some((g, e)) = sweep.iter().rev().find_map(|p| p.both()) else { return };
    let s = format!("{title}, {} calls", num(g.calls as f64, 0));
    if top_wanted != Some(g.calls) {
        row(&s, "(the largest count measured on both)", String::new(), String::new(), String::new(), "", String::new());
    }
    let (gu, eu) = (g.up.latency, e.up.latency);
    row(
        &s,
        "p99 frame latency, caller → bot (ms)",
        num(gu.p99_ms, 2),
        num(eu.p99_ms, 2),
        ratio(gu.p99_ms, eu.p99_ms),
        "gateway < 5 ms",
        verdict(gu.p99_ms < P99_TARGET_MS),
    );
    figure(row, &s, "p50 caller → bot (ms)", gu.p50_ms, eu.p50_ms, 2);
    figure(row, &s, "max caller → bot (ms)", gu.max_ms, eu.max_ms, 2);
    row(
        &s,
        "calls refused at their start",
        format!("{} of {}", num(g.refused as f64, 0), num(g.calls as f64, 0)),
        format!("{} of {}", num(e.refused as f64, 0), num(e.calls as f64, 0)),
        String::new(),
        "none",
        verdict(g.refused == 0),
    );
    row(
        &s,
        "frames lost / out of order, caller → bot",
        lost_of(&g.up),
        lost_of(&e.up),
        String::new(),
        "none",
        verdict(g.up.intact() && g.errors.is_empty()),
    );
    row(
        &s,
        "frames lost / out of order, bot → caller",
        lost_of(&g.down),
        lost_of(&e.down),
        String::new(),
        "none",
        verdict(g.down.intact()),
    );
    let (gd, ed) = (g.down.latency, e.down.latency);
    figure(row, &s, "p99 bot → caller (ms; gateway: paced 1×)", gd.p99_ms, ed.p99_ms, 2);
    let (gg, eg) = (g.caller_gap, e.caller_gap);
    figure(row, &s, "p99 gap between bot → caller frames (ms)", gg.p99_ms, eg.p99_ms, 2);
    figure(row, &s, "max gap between bot → caller frames (ms)", gg.max_ms, eg.max_ms, 2);
    figure(row, &s, "server CPU (cores)", g.server_cores, e.server_cores, 2);
}

fn voice_table(md: &mut String, sweep: &[Pair<VoicePoint>]) {
    let rows: Vec<Vec<String>> = sweep
        .iter()
        .filter_map(|p| {
            let (g, e) = (p.gateway.as_ref()?, p.echo.as_ref());
            let e_lat = |f: fn(&VoicePoint) -> f64| e.map_or(f64::NAN, f);
            let gap = |x: &VoicePoint| {
                let s = x.caller_gap;
                format!("{} / {} / {}", num(s.p50_ms, 1), num(s.p99_ms, 1), num(s.max_ms, 1))
            };
            Some(vec![
                num(g.calls as f64, 0),
                num(g.refused as f64, 0),
                num(g.up.sent as f64, 0),
                format!(
                    "{} / {} / {}",
                    num(g.up.lost as f64, 0),
                    num(g.up.out_of_sequence as f64, 0),
                    num(g.up.extra as f64, 0)
                ),
                num(g.up.latency.p50_ms, 2),
                num(g.up.latency.p99_ms, 2),
                num(g.up.latency.max_ms, 2),
                num(e_lat(|e| e.up.latency.p50_ms), 2),
                num(e_lat(|e| e.up.latency.p99_ms), 2),
                ratio(g.up.latency.p99_ms, e_lat(|e| e.up.latency.p99_ms)),
                format!("{} / {}", num(g.down.received as f64, 0), num(g.down.sent as f64, 0)),
                num(g.down.latency.p99_ms, 2),
                gap(g),
                e.map_or_else(|| "–".to_owned(), gap),
                format!("{} / {}", num(g.server_cores, 2), num(e_lat(|e| e.server_cores), 2)),
                num(g.send_lag.p99_ms.max(e_lat(|e| e.send_lag.p99_ms)), 2),
                match (g.holds(), g.refused) {
                    (true, _) => "yes".to_owned(),
                    (false, 0) => "**no**".to_owned(),
                    (false, n) => format!("**no** ({} refused)", num(n as f64, 0)),
                },
            ])
        })
        .collect();
    if rows.is_empty() {
        return;
    }
    let how = match sweep_dialect(sweep) {
        Dialect::Twilio => {
            "Voice sweep, callers speaking Twilio's Media Streams (`/v1/voice/twilio/VoiceWorkStream`): \
             each call sends a `media` event with 20 ms of base64 µ-law every 20 ms and hears the bot's \
             audio in the gateway's `media` events; the echo baseline returns each caller's own `media` \
             events."
        }
        Dialect::Native => {
            "Voice sweep, callers speaking the native protocol (`/v1/voice`): each call sends a binary \
              20 ms µ-law frame every 20 ms."
        }
    };
    let _ = writeln!(
        md,
        "\n{how} The bot ({}) sends each frame it reads back on its stream. Caller → bot \
         latency is from the caller's write to the bot's read; the echo baseline's is the caller's \
         frame back from the echo server. The gap is the time between consecutive frames arriving at \
         a caller (gateway: the bot's audio as the gateway plays it at 1×; echo: the caller's own frames \
         back). A count holds with no call refused, no frame lost, out of order or duplicated \
         either way, no error, and p99 caller → bot < 5 ms; the gap is held to ≤ 25 ms at p99 at \
         the largest count that holds.\n",
        super::voice::format_title(sweep_bot_audio(sweep))
    );
    table(
        md,
        &[
            "Calls",
            "Refused",
            "Frames caller → bot",
            "Lost / out of order / extra",
            "Gateway p50 (ms)",
            "Gateway p99 (ms)",
            "Gateway max (ms)",
            "Echo p50 (ms)",
            "Echo p99 (ms)",
            "p99 ratio",
            "Bot → caller delivered / sent",
            "Bot → caller p99 (ms)",
            "Gateway gap p50 / p99 / max (ms)",
            "Echo gap p50 / p99 / max (ms)",
            "Server CPU, gateway / echo (cores)",
            "Client send lag p99 (ms)",
            "Holds",
        ],
        &rows,
    );
}

/// A figure of the cluster table: its name, how it is read from a run, its digits, and
/// whether ratios of it mean anything.
type Measure<T> = (&'static str, fn(&T) -> f64, usize, bool);

const CHAT_MEASURES: &[Measure<ClosedLoop>] = &[
    ("round trips / s", |c| c.round_trips_per_sec, 0, true),
    ("p50 round trip (ms)", |c| c.latency.p50_ms, 2, true),
    ("p99 round trip (ms)", |c| c.latency.p99_ms, 2, true),
    ("server CPU (cores)", |c| c.server_cores, 2, true),
    ("server CPU per round trip (µs)", |c| c.cpu_per_trip_us(), 1, true),
    ("server RSS at the end (MiB)", |c| c.server_rss_kib as f64 / 1024.0, 1, true),
];

const HANDOFF_MEASURES: &[Measure<Handoff>] = &[
    ("assigned", |h| h.assigned as f64, 0, false),
    ("p50 escalation → assignment (ms)", |h| h.latency.p50_ms, 2, true),
    ("p99 (ms)", |h| h.latency.p99_ms, 2, true),
    ("max (ms)", |h| h.latency.max_ms, 2, true),
    ("escalations handled / s", Handoff::per_sec, 0, true),
    ("server CPU per escalation (µs)", |h| h.server_cpu_secs / h.escalations as f64 * 1e6, 1, true),
];

/// The steady run: its rate is set, so what it handled a second says nothing.
const STEADY_MEASURES: &[Measure<Handoff>] =
    &[HANDOFF_MEASURES[0], HANDOFF_MEASURES[1], HANDOFF_MEASURES[2], HANDOFF_MEASURES[3], HANDOFF_MEASURES[5]];

/// The rows of one scenario of `cluster`: each figure on the echo, the gateway alone and
/// each cluster, with its ratios to the echo's, the lone gateway's and the first cluster's.
fn cluster_rows<T>(rows: &mut Vec<Vec<String>>, scenario: &str, c: &Clustered<T>, measures: &[Measure<T>]) {
    for &(measure, of, digits, ratios) in measures {
        let value = |x: Option<&T>| x.map_or(f64::NAN, of);
        let ratio = |x: f64, base: f64| if ratios { ratio(x, base) } else { String::new() };
        let (echo, alone) = (value(c.alone.echo.as_ref()), value(c.alone.gateway.as_ref()));
        let first = value(c.clusters.first().and_then(|n| n.result.as_ref()));
        let mut cells = vec![scenario.to_owned(), measure.to_owned(), num(echo, digits), num(alone, digits)];
        cells.push(ratio(alone, echo));
        for (i, n) in c.clusters.iter().enumerate() {
            let x = value(n.result.as_ref());
            cells.extend([num(x, digits), ratio(x, echo), ratio(x, alone)]);
            if i > 0 {
                cells.push(ratio(x, first));
            }
        }
        rows.push(cells);
    }
}

/// The `cluster` table, and the facts needed to read it.
fn cluster_table(md: &mut String, c: &Cluster) {
    let _ = writeln!(
        md,
        "\nCluster: chat-relay and handoff against the echo baseline, the gateway alone (the \
         configuration's store; the bench configuration's is SQLite), the gateway as a one-node \
         cluster (nats-server with JetStream, every client on the node) and as three nodes on this \
         machine (customers on the two nodes that follow, Alice on the first of them and Bob on the \
         second, the bot on the leader). Server CPU and RSS are summed over the server's processes \
         (a cluster's: nats-server and every node). Each ratio is of the figure to its left: to the \
         echo's (÷ echo), the lone gateway's (÷ alone) and the one-node cluster's (÷ 1 node).\n"
    );
    let mut head = vec!["Scenario".to_owned(), "Measure".into(), "Echo".into(), "Alone".into(), "÷ echo".into()];
    let sizes: Vec<usize> = c.chat_relay.clusters.iter().map(|n| n.nodes).collect();
    for (i, &n) in sizes.iter().enumerate() {
        head.extend([nodes(n), "÷ echo".into(), "÷ alone".into()]);
        if i > 0 {
            head.push(format!("÷ {}", nodes(sizes[0])));
        }
    }
    let mut rows = Vec::new();
    let count = |n: Option<usize>| n.map_or_else(|| "–".to_owned(), |n| num(n as f64, 0));
    let conversations = c.chat_relay.alone.gateway.as_ref().map(|g| g.conversations);
    cluster_rows(
        &mut rows,
        &format!("chat-relay, {} conversations", count(conversations)),
        &c.chat_relay,
        CHAT_MEASURES,
    );
    let escalations = c.handoff.alone.gateway.as_ref().map(|h| h.escalations);
    cluster_rows(&mut rows, &format!("handoff, {} in one burst", count(escalations)), &c.handoff, HANDOFF_MEASURES);
    if let Some(steady) = &c.handoff_steady {
        let rate = steady.alone.gateway.as_ref().and_then(|h| h.rate).map_or_else(|| "–".to_owned(), |r| num(r, 0));
        let s = format!("handoff, {} at a steady {rate} / s", count(escalations));
        cluster_rows(&mut rows, &s, steady, STEADY_MEASURES);
    }
    let head: Vec<&str> = head.iter().map(String::as_str).collect();
    table(md, &head, &rows);
}

/// What went wrong in a `cluster` run, each line naming the server.
fn cluster_errors(c: &Cluster) -> Vec<String> {
    fn of<T>(name: &str, c: &Clustered<T>, errors: fn(&T) -> &[String]) -> Vec<String> {
        let alone = c.alone.gateway.iter().flat_map(|g| errors(g).iter().map(|e| format!("gateway: {e}")));
        let clusters = c.clusters.iter().flat_map(|n| {
            let failed = n.error.iter().map(move |e| format!("{}: {e}", nodes(n.nodes)));
            failed.chain(
                n.result.iter().flat_map(move |r| errors(r).iter().map(move |e| format!("{}: {e}", nodes(n.nodes)))),
            )
        });
        c.alone.errors.iter().cloned().chain(alone).chain(clusters).map(|e| format!("cluster {name}, {e}")).collect()
    }
    let mut all = of("chat-relay", &c.chat_relay, |x| &x.errors);
    all.extend(of("handoff", &c.handoff, |x| &x.errors));
    if let Some(s) = &c.handoff_steady {
        all.extend(of("handoff-steady", s, |x| &x.errors));
    }
    all
}

fn table(out: &mut String, head: &[&str], rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..head.len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).chain([head[i].chars().count()]).max().unwrap_or(0))
        .collect();
    let line = |cells: Vec<String>| -> String {
        let padded: Vec<String> =
            cells.iter().zip(&widths).map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count()))).collect();
        format!("| {} |\n", padded.join(" | "))
    };
    out.push_str(&line(head.iter().map(|s| (*s).to_owned()).collect()));
    out.push_str(&line(widths.iter().map(|w| "-".repeat(*w)).collect()));
    for r in rows {
        out.push_str(&line(r.clone()));
    }
}

/// The tables and the facts needed to read them.
pub fn markdown(r: &Results) -> String {
    let mut md = String::new();
    let o = &r.options;
    let _ = writeln!(md, "Machine: {}.", r.machine);
    if let Some(l) = &o.label {
        let _ = writeln!(md, "Build: {l}.");
    }
    let _ = writeln!(md, "Command: `{}`.", o.command);
    let _ = writeln!(
        md,
        "Messages carry {} characters of text; chat-relay measures {} s after {} s of warm-up; \
         each open-loop point {} s after {} s; each voice call count {} s after {} s.\n",
        o.payload,
        o.duration.as_secs_f64(),
        o.warmup.as_secs_f64(),
        o.point_duration.as_secs_f64(),
        o.point_warmup.as_secs_f64(),
        o.voice_duration.as_secs_f64(),
        o.voice_warmup.as_secs_f64()
    );
    let rows: Vec<Vec<String>> = rows(r)
        .into_iter()
        .map(|x| vec![x.scenario, x.measure, x.gateway, x.baseline, x.ratio, x.target, x.met])
        .collect();
    if !rows.is_empty() {
        table(&mut md, &["Scenario", "Measure", "Gateway", "Echo baseline", "Ratio", "Target", "Met"], &rows);
    }
    if let Some(ol) = &r.open_loop
        && let (Some(g), Some(e)) = (&ol.points.gateway, &ol.points.echo)
    {
        let _ = writeln!(
            md,
            "\nOpen loop, {} conversations; offered load as a fraction of the gateway's chat-relay maximum \
             ({} round trips / s):\n",
            num(o.conversations as f64, 0),
            num(ol.max_per_sec, 0)
        );
        let nats = ol.points.nats.as_deref().unwrap_or_default();
        let rows: Vec<Vec<String>> = ol
            .loads
            .iter()
            .zip(g.iter().zip(e.iter()))
            .enumerate()
            .map(|(i, (f, (g, e)))| {
                let n = |pick: fn(&OpenPoint) -> f64| nats.get(i).map_or(f64::NAN, pick);
                vec![
                    format!("{:.0} %", f * 100.0),
                    num(g.offered_per_sec, 0),
                    num(g.achieved_per_sec, 0),
                    num(g.latency.p50_ms, 2),
                    num(g.latency.p99_ms, 2),
                    num(e.latency.p50_ms, 2),
                    num(e.latency.p99_ms, 2),
                    ratio(g.latency.p99_ms, e.latency.p99_ms),
                    num(n(|p| p.latency.p50_ms), 2),
                    num(n(|p| p.latency.p99_ms), 2),
                    num(g.send_lag.p99_ms.max(e.send_lag.p99_ms).max(n(|p| p.send_lag.p99_ms)), 2),
                ]
            })
            .collect();
        table(
            &mut md,
            &[
                "Load",
                "Offered / s",
                "Gateway achieved / s",
                "Gateway p50 (ms)",
                "Gateway p99 (ms)",
                "Echo p50 (ms)",
                "Echo p99 (ms)",
                "p99 ratio",
                "NATS p50 (ms)",
                "NATS p99 (ms)",
                "Client send lag p99 (ms)",
            ],
            &rows,
        );
    }
    for sweep in [&r.voice, &r.voice_twilio].into_iter().flatten() {
        voice_table(&mut md, sweep);
    }
    if let Some(c) = &r.cluster {
        cluster_table(&mut md, c);
    } else if let Some(e) = &r.cluster_error {
        let _ = writeln!(md, "\nCluster: failed: {e}");
    }
    let errors: Vec<String> = [
        r.chat_relay.as_ref().map(|p| (p.errors.clone(), p.gateway.as_ref().map(|g| g.errors.clone()))),
        r.chat_relay_memory.as_ref().map(|p| (p.errors.clone(), p.gateway.as_ref().map(|g| g.errors.clone()))),
        r.handoff.as_ref().map(|p| (p.errors.clone(), p.gateway.as_ref().map(|g| g.errors.clone()))),
        r.handoff_steady.as_ref().map(|p| (p.errors.clone(), p.gateway.as_ref().map(|g| g.errors.clone()))),
    ]
    .into_iter()
    .flatten()
    .flat_map(|(a, b)| a.into_iter().chain(b.unwrap_or_default()))
    .chain(r.chat_relay.iter().flat_map(|p| p.nats.iter().flat_map(|n| n.errors.iter().map(|e| format!("nats: {e}")))))
    .chain(r.chat_relay_nats_acked.iter().flat_map(|p| {
        p.errors.iter().cloned().chain(p.nats.iter().flat_map(|n| n.errors.iter().map(|e| format!("nats acked: {e}"))))
    }))
    .chain(r.voice.iter().chain(&r.voice_twilio).flat_map(|sweep| voice_errors(sweep)))
    .chain(r.voice_hold.iter().chain(&r.voice_twilio_hold).flat_map(|pairs| voice_errors(pairs)))
    .collect();
    let errors: Vec<String> = errors
        .into_iter()
        .chain(r.recovery.iter().flat_map(|x| {
            x.errors
                .iter()
                .map(|e| format!("recovery: {e}"))
                .chain(x.sample.failures.iter().map(|e| format!("recovery, resuming customer: {e}")))
        }))
        .chain(r.cluster.iter().flat_map(cluster_errors))
        .collect();
    if !errors.is_empty() {
        let _ = writeln!(md, "\nErrors seen:\n");
        for e in errors {
            let _ = writeln!(md, "- {e}");
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_split_count_lists_every_pair_and_most_decide() {
        let point = crate::load::voice::test_point;
        let pair = |g: f64, e: f64| Pair {
            gateway: Some(point(1000, g)),
            echo: Some(point(1000, e)),
            nats: None,
            errors: Vec::new(),
        };
        let low = Pair { gateway: Some(point(500, 2.0)), echo: Some(point(500, 1.0)), nats: None, errors: Vec::new() };
        let sweep = [low, pair(6.0, 3.0)];
        let hold = [pair(4.0, 3.5), pair(4.5, 5.5)];
        let mut rows = Vec::new();
        let mut row = |s: &str, m: &str, g: String, e: String, _: String, _: &str, met: String| {
            rows.push((s.to_owned(), m.to_owned(), g, e, met));
        };
        voice_rows(&mut row, &sweep, &hold, &[], 500);
        let largest = rows.iter().find(|r| r.1.starts_with("largest count")).unwrap();
        assert_eq!((largest.2.as_str(), largest.3.as_str(), largest.4.as_str()), ("1,000", "1,000", "yes"));
        let split = rows.iter().find(|r| r.0.contains("3 alternating pairs (the first split)")).unwrap();
        assert_eq!(split.2, "no (6.00) / holds (4.00) / holds (4.50)");
        assert_eq!(split.3, "holds (3.00) / holds (3.50) / no (5.50)");
        // The gap is taken from a pair where the gateway held.
        assert!(rows.iter().any(|r| r.0.contains("1,000 calls (the largest holding)")));
    }

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(num(1234567.891, 1), "1,234,567.9");
        assert_eq!(num(999.0, 0), "999");
        assert_eq!(num(-1000.0, 0), "-1,000");
        assert_eq!(num(f64::NAN, 2), "–");
        assert_eq!(ratio(1.0, 4.0), "0.25×");
    }
}
