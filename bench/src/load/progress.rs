//! A progress line on stderr while a phase runs: what is being measured, how long it has
//! run, and a live rate. Redrawn in place on a terminal; one line every few seconds when
//! stderr is a log file.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

/// A running progress line; dropped or finished, it stops.
#[derive(Debug)]
pub struct Progress {
    task: JoinHandle<()>,
    tty: bool,
}

impl Progress {
    /// Shows `label`, the time since now (out of `total` if known), `count` and its rate.
    pub fn start(label: String, total: Option<Duration>, count: Arc<AtomicU64>, unit: &'static str) -> Progress {
        let tty = std::io::stderr().is_terminal();
        let every = if tty { Duration::from_secs(1) } else { Duration::from_secs(5) };
        let task = tokio::spawn(async move {
            let start = Instant::now();
            let mut last = (start, 0u64);
            loop {
                tokio::time::sleep(every).await;
                let now = Instant::now();
                let n = count.load(Ordering::Relaxed);
                let rate = (n - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
                last = (now, n);
                let elapsed = now.duration_since(start).as_secs_f64();
                let of = total.map_or_else(String::new, |t| format!("/{:.0}", t.as_secs_f64()));
                let line = format!("  {label:<34} {elapsed:>5.0}{of} s  {n:>9} {unit}  {rate:>9.0}/s");
                let mut err = std::io::stderr().lock();
                if tty {
                    let _ = write!(err, "\r{line}\x1b[K");
                } else {
                    let _ = writeln!(err, "{line}");
                }
                let _ = err.flush();
            }
        });
        Progress { task, tty }
    }

    pub fn finish(self) {
        self.task.abort();
        if self.tty {
            eprint!("\r\x1b[K");
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Prints a line above the progress line.
pub fn say(line: &str) {
    eprintln!("{line}");
}
