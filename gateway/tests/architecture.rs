//! ARCHITECTURE.md's invariants of absence, checked on the source: no import cycle between
//! the gateway's modules; a core (configuration model and validation, conditions, context
//! variables, the routing engine, the built-in bot's script and dialog, the wire format)
//! that does no IO, reads no environment and no clock, and depends on nothing above it
//! (what a configuration names outside itself comes through `crate::load`);
//! only `server` (and the terminal clients, the other end of the wire) knows WebSockets
//! and HTTP; `codecs` does not depend on tokio; no `unsafe` but the resampler's AVX2 call.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layer that could be its own crate.
const CORE: &[&str] = &["config", "context", "routing", "bot", "protocol", "voice"];

/// Words that mean IO, the environment, a clock or a runtime.
const NOT_IN_CORE: &[&str] = &[
    "tokio",
    "std::fs",
    "std::env",
    "std::net::Tcp",
    "Instant",
    "SystemTime",
    "axum",
    "hyper",
    "tungstenite",
    "rusqlite",
    "std::thread",
];

/// Only these modules may speak WebSocket or HTTP.
const WIRE: &[&str] = &["server", "client"];

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("source directory") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a source file belongs to (`hub/voice.rs` → `hub`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let first = rel.components().next().expect("a component").as_os_str().to_string_lossy().into_owned();
    first.trim_end_matches(".rs").to_owned()
}

/// The code of a file without comments (doc comments name other modules freely) and
/// without its unit tests (which may write files to test the code that reads them).
fn code(text: &str) -> String {
    without_comments(text.split("\n#[cfg(test)]").next().unwrap_or(text))
}

/// `text` with each line's `//` comment cut off.
fn without_comments(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::name` a file mentions.
fn uses(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let tail = &rest[i + 7..];
        let name: String = tail.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        if !name.is_empty() {
            out.insert(name);
        }
        rest = tail;
    }
    out
}

struct Source {
    graph: BTreeMap<String, BTreeSet<String>>,
    code: Vec<(String, PathBuf, String)>,
}

fn read(src: &Path) -> Source {
    let mut list = Vec::new();
    files(src, &mut list);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut code_of = Vec::new();
    for f in list {
        let m = module_of(src, &f);
        let c = code(&std::fs::read_to_string(&f).expect("readable"));
        let deps = graph.entry(m.clone()).or_default();
        for u in uses(&c) {
            if u != m {
                deps.insert(u);
            }
        }
        code_of.push((m, f, c));
    }
    Source { graph, code: code_of }
}

fn gateway_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// A cycle through `from`, if there is one (depth-first search over the module graph).
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>, from: &str) -> Option<Vec<String>> {
    fn walk(
        graph: &BTreeMap<String, BTreeSet<String>>,
        start: &str,
        at: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in graph.get(at).into_iter().flatten() {
            if next == start {
                path.push(next.clone());
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(graph, start, next, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![from.to_owned()];
    let mut seen = BTreeSet::new();
    walk(graph, from, from, &mut path, &mut seen).then_some(path)
}

#[test]
fn no_module_imports_form_a_cycle() {
    let s = read(&gateway_src());
    let cycles: Vec<String> = s.graph.keys().filter_map(|m| cycle(&s.graph, m)).map(|c| c.join(" → ")).collect();
    assert!(cycles.is_empty(), "import cycles between modules:\n{}", cycles.join("\n"));
}

#[test]
fn the_core_does_no_io_and_depends_on_nothing_above_it() {
    let s = read(&gateway_src());
    let mut problems = Vec::new();
    for m in CORE {
        for d in s.graph.get(*m).into_iter().flatten() {
            if !CORE.contains(&d.as_str()) {
                problems.push(format!("core module {m} depends on {d}"));
            }
        }
    }
    for (m, f, c) in &s.code {
        if CORE.contains(&m.as_str()) {
            for w in NOT_IN_CORE {
                if c.contains(w) {
                    problems.push(format!("{} (core) mentions {w}", f.display()));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Each file of a module that `applies` names whose code mentions one of `words`.
fn mentions(s: &Source, applies: impl Fn(&str, &Path) -> bool, words: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for (m, f, c) in &s.code {
        if applies(m, f) {
            found.extend(words.iter().filter(|w| c.contains(*w)).map(|w| format!("{} mentions {w}", f.display())));
        }
    }
    found
}

#[test]
fn only_the_server_and_the_clients_know_websockets_and_http() {
    let s = read(&gateway_src());
    let outside = |m: &str, _: &Path| !(WIRE.contains(&m) || m == "main" || m == "cli");
    let problems = mentions(&s, outside, &["tungstenite", "axum", "hyper"]);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The hub says what went wrong (`HubError`) and why a connection ends (`Reason`); only
/// the error edge, `server::respond`, picks the SPEC's error codes, close codes and
/// statuses. Parse errors of the wire format (`protocol.rs`) carry their code from there.
#[test]
fn only_the_error_edge_picks_wire_codes() {
    let s = read(&gateway_src());
    let problems = mentions(&s, |m, _| m == "hub", &["ErrorCode", "ProtocolError::", "StatusCode", "close_code"]);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Every WebSocket endpoint reads through `server::ws`'s one reader (size and rate limits,
/// timeouts, shutdown in one place): an endpoint that upgrades hands the socket to
/// `ws::run`, `ws::run_with` or `ws::run_inline`, and no file but `ws.rs` reads a socket's
/// stream itself.
#[test]
fn every_websocket_endpoint_reads_through_the_shared_loop() {
    let s = read(&gateway_src());
    let endpoint = |m: &str, f: &Path| m == "server" && !f.ends_with("server/ws.rs");
    let mut problems = mentions(&s, endpoint, &["StreamExt", ".split()", "WebSocketStream::from_raw_socket"]);
    for (m, f, c) in &s.code {
        let runs = ["ws::run(", "ws::run_with(", "ws::run_inline("].iter().any(|r| c.contains(r));
        if endpoint(m, f) && c.contains("ws::upgrade(") && !runs {
            problems.push(format!("{} upgrades without ws::run, ws::run_with or ws::run_inline", f.display()));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn codecs_do_not_depend_on_tokio_or_do_io() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../codecs/src");
    let mut list = Vec::new();
    files(&src, &mut list);
    for f in list {
        let c = code(&std::fs::read_to_string(&f).expect("readable"));
        for w in ["tokio", "std::fs", "std::net", "std::thread"] {
            assert!(!c.contains(w), "{} mentions {w}", f.display());
        }
    }
    let manifest = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../codecs/Cargo.toml"))
        .expect("codecs manifest");
    assert!(!manifest.contains("tokio"), "codecs/Cargo.toml depends on tokio");
}

/// The workspace lints deny `unsafe_code`; the one place allowed to is the resampler's AVX2
/// kernel. Any other `allow(unsafe_code)` or `unsafe` block, function or impl is a new
/// exception that needs its reason written in ARCHITECTURE.md and here.
#[test]
fn no_unsafe_but_the_resamplers_avx2_call() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let allowed = Path::new("codecs/src/resample.rs");
    let mut list = Vec::new();
    for dir in [
        "gateway/src",
        "gateway/tests",
        "codecs/src",
        "codecs/tests",
        "codecs/fuzz",
        "bench/src",
        "bench/benches",
        "tests",
    ] {
        let d = root.join(dir);
        if d.is_dir() {
            files(&d, &mut list);
        }
    }
    let mut problems = Vec::new();
    let mut found_the_allowed_one = false;
    for f in &list {
        let rel = f.strip_prefix(&root).expect("under the workspace");
        // Build outputs and npm packages are not ours; this file names what it looks for.
        let generated = rel.components().any(|c| c.as_os_str() == "node_modules" || c.as_os_str() == "target");
        if generated || rel == Path::new("gateway/tests/architecture.rs") {
            continue;
        }
        let text = std::fs::read_to_string(f).expect("readable");
        // Unit tests included: an `unsafe` there is as much an exception.
        let c = without_comments(&text);
        let mentions =
            c.contains("unsafe_code") || c.split(|ch: char| !ch.is_alphanumeric() && ch != '_').any(|w| w == "unsafe");
        if !mentions {
            continue;
        }
        if rel == allowed {
            found_the_allowed_one = true;
        } else {
            problems.push(rel.display().to_string());
        }
    }
    assert!(problems.is_empty(), "unsafe outside the resampler's AVX2 kernel: {problems:?}");
    assert!(found_the_allowed_one, "the resampler's AVX2 kernel moved: update this test and ARCHITECTURE.md");
}
