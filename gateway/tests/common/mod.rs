//! What the tests of the real binary share: a child process driven through its standard
//! streams, as a person at a terminal would.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// The binary running, its output read line by line (waited on with a deadline).
pub struct Proc {
    pub child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    pub seen: Vec<String>,
}

impl Proc {
    /// Runs the binary with `args` (and `RUST_LOG=info`), reading stdout or stderr.
    pub fn spawn(args: &[&str], read_stderr: bool) -> Proc {
        let mut cmd = Command::new(BIN);
        cmd.args(args).env("RUST_LOG", "info");
        Proc::spawn_with(cmd, read_stderr)
    }

    /// Runs `cmd` with piped standard streams, reading its stdout or stderr line by line.
    pub fn spawn_with(mut cmd: Command, read_stderr: bool) -> Proc {
        let mut child =
            cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("binary runs");
        let (tx, lines) = channel();
        let out: Box<dyn std::io::Read + Send> =
            if read_stderr { Box::new(child.stderr.take().unwrap()) } else { Box::new(child.stdout.take().unwrap()) };
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        Proc { child, stdin, lines, seen: Vec::new() }
    }

    /// Waits for a line containing `want`, returning it.
    pub fn expect(&mut self, want: &str) -> String {
        self.expect_within(want, Duration::from_secs(15))
    }

    /// [`Proc::expect`] with a deadline of `wait`.
    pub fn expect_within(&mut self, want: &str, wait: Duration) -> String {
        let end = Instant::now() + wait;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(want) {
                        return line;
                    }
                }
                Err(_) => panic!("no line containing {want:?}; output so far:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// Waits for the gateway's `listening on http://HOST:PORT` line; returns `HOST:PORT`.
    pub fn listening_address(&mut self) -> String {
        const READY: &str = "listening on http://";
        let line = self.expect(READY);
        line[line.find(READY).unwrap() + READY.len()..].trim().to_owned()
    }

    pub fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    pub fn wait_exit(&mut self) -> Option<i32> {
        let end = Instant::now() + Duration::from_secs(15);
        while Instant::now() < end {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("did not exit; output:\n{}", self.seen.join("\n"));
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A replayed transcript (seq → activity) against what its customer was acknowledged
/// (seq → (clientActivityId, text)): every acknowledged activity is there with its text,
/// and no client activity id appears twice.
#[allow(dead_code)]
pub fn check_acknowledged(
    by_seq: &std::collections::HashMap<u64, serde_json::Value>,
    acks: &std::collections::HashMap<u64, (String, String)>,
) {
    for (seq, (cid, text)) in acks {
        let v = by_seq.get(seq).unwrap_or_else(|| panic!("acknowledged seq {seq} ({cid}) lost"));
        assert_eq!(v["text"], text.as_str());
        assert_eq!(v["channelData"]["clientActivityId"], cid.as_str());
    }
    let mut cids: Vec<&str> = by_seq.values().filter_map(|v| v["channelData"]["clientActivityId"].as_str()).collect();
    let n = cids.len();
    cids.sort_unstable();
    cids.dedup();
    assert_eq!(cids.len(), n, "no activity stored twice");
}
