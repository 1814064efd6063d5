//! The `switchboard` binary out of file descriptors: `serve` under a limit of 64, flooded
//! with idle connections, says so (rarely: it backs off instead of spinning on accept) and
//! serves again once the connections are gone.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
const WARNING: &str = "accept: too many open files";

/// The next line satisfying `pred`, within `within`.
fn line_where(rx: &Receiver<String>, within: Duration, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let end = Instant::now() + within;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if pred(&line) => return line,
            Ok(_) => continue,
            Err(e) => panic!("no {what} within {within:?}: {e}"),
        }
    }
}

/// N in "… N failure(s) since the last warning …".
fn failures(line: &str) -> u64 {
    let before = line.split(" failure(s)").next().unwrap_or_default();
    before.rsplit(' ').next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("no count in {line:?}"))
}

/// User plus system CPU time of `pid`, in clock ticks (fields 14 and 15 of /proc/PID/stat).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Kills the gateway if the test fails before stopping it.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn healthz(addr: &str) -> std::io::Result<String> {
    let mut tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
    let mut got = String::new();
    tcp.read_to_string(&mut got)?;
    Ok(got)
}

#[test]
fn serve_backs_off_when_out_of_descriptors_and_recovers_when_they_are_freed() {
    let dir = std::env::temp_dir().join(format!("switchboard-descriptors-{}", std::process::id()));
    let serve = [BIN, "serve", "--listen", "127.0.0.1:0", "--data-dir", dir.to_str().unwrap()];
    // prlimit (util-linux) sets the limit and execs the gateway, so the child's pid is the
    // gateway's; without it, the shell's ulimit does the same.
    let mut cmd = if Command::new("prlimit").arg("--version").output().is_ok() {
        let mut c = Command::new("prlimit");
        c.arg("--nofile=64:64").args(serve);
        c
    } else {
        let mut c = Command::new("sh");
        c.args(["-c", r#"ulimit -n 64 && exec "$0" "$@""#]).args(serve);
        c
    };
    let mut child = Reap(
        cmd.env("RUST_LOG", "info").stderr(Stdio::piped()).stdout(Stdio::null()).spawn().expect("the gateway starts"),
    );
    let pid = child.0.id();
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let listening = line_where(&rx, Duration::from_secs(10), "address", |l| l.contains("listening on http://"));
    let addr = listening.split("listening on http://").nth(1).unwrap().trim().to_owned();
    assert!(healthz(&addr).unwrap().starts_with("HTTP/1.1 200"));

    // Far more idle connections than descriptors: the kernel completes them all (the
    // backlog holds them), the gateway runs out while accepting.
    let idle: Vec<TcpStream> = (0..100).map(|_| TcpStream::connect(&addr).expect("connect")).collect();
    let first = line_where(&rx, Duration::from_secs(10), "first warning", |l| l.contains(WARNING));
    let ticks_at_first = cpu_ticks(pid);
    let at_first = Instant::now();
    // The next warning comes a second or more later and counts the failures in between:
    // a handful when the loop backs off (100 ms doubling to 1 s), thousands when it spins.
    let second = line_where(&rx, Duration::from_secs(10), "second warning", |l| l.contains(WARNING));
    let ticks = cpu_ticks(pid) - ticks_at_first;
    let wall = at_first.elapsed();
    assert!(failures(&first) <= 2, "{first}");
    assert!(failures(&second) <= 10, "it spins: {second}");
    // Clock ticks are 1/100 s: under half a core over a second or more of waiting.
    assert!(ticks * 10 < wall.as_millis() as u64 / 2 + 10, "{ticks} ticks of CPU in {wall:?}");

    drop(idle);
    let answer = healthz(&addr).expect("healthz once the connections are gone");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");

    // At most a warning a second while it lasted.
    let mut warnings = 2;
    while let Ok(line) = rx.try_recv() {
        warnings += usize::from(line.contains(WARNING));
    }
    assert!(warnings <= 10, "{warnings} warnings");

    let status = Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    assert!(status.success());
    let exit = child.0.wait().unwrap();
    assert_eq!(exit.code(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}
