//! The servers under test, as processes: the real `switchboard` binary, the baseline echo
//! server and, for the chat scenarios, `nats-server` as a peer, each started fresh for a
//! scenario on a port of 127.0.0.1 the system picks, its address read from the line it logs
//! when it is listening, its memory and CPU read from `/proc`.
//!
//! The gateway may also run as a cluster (`Launch::cluster`): a fresh `nats-server` with
//! JetStream and N `switchboard serve` nodes on the configuration plus a `[cluster]` table
//! naming it. The first node takes the lease and leads; the others follow it. Such a
//! [`Server`] is all of those processes: its CPU and memory are their sums, and it says
//! where each client connects ([`Server::customer_addrs`], [`Server::member_addr`]).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use tokio::process::{Child, Command};

use super::peers::Member;
use super::wire;

/// Which server a measurement is of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Gateway,
    Echo,
    /// `nats-server` (core NATS over its WebSocket listener): a peer for `chat-relay` and
    /// `open-loop` only.
    Nats,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Gateway => "gateway",
            Target::Echo => "echo",
            Target::Nats => "nats",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How to start each server.
#[derive(Clone, Debug)]
pub struct Launch {
    pub gateway: PathBuf,
    pub echo: PathBuf,
    /// `nats-server` (a path, or a name looked up on `PATH`).
    pub nats: PathBuf,
    /// The gateway configuration file.
    pub config: PathBuf,
    /// Where logs and the gateway's data directories go.
    pub run_dir: PathBuf,
    /// `RUST_LOG` for the gateway; `None` keeps its default.
    pub gateway_log: Option<String>,
    /// A second configuration of the same run (`memory`): added to the names of the
    /// gateway's log and data directory.
    pub variant: Option<String>,
    /// Run the gateway as a cluster of this many nodes on a fresh JetStream `nats-server`
    /// (`[cluster]` added to the configuration); `None`: the gateway alone.
    pub cluster: Option<usize>,
}

impl Launch {
    /// The gateway's `label` with the variant added (so its files do not clash).
    fn label_for(&self, target: Target, label: &str) -> String {
        match (&self.variant, target) {
            (Some(v), Target::Gateway) => format!("{label}-{v}"),
            _ => label.to_owned(),
        }
    }

    /// `switchboard serve` on `config`, listening on a free port of loopback, with `data` as
    /// its data directory.
    fn gateway_command(&self, config: &Path, data: &Path) -> Command {
        let mut c = Command::new(&self.gateway);
        c.arg("serve").arg("--config").arg(config).arg("--listen").arg("127.0.0.1:0");
        c.arg("--data-dir").arg(data);
        if let Some(level) = &self.gateway_log {
            c.env("RUST_LOG", level);
        }
        c
    }
}

/// A running server process.
#[derive(Debug)]
pub struct Server {
    pub target: Target,
    pub addr: SocketAddr,
    pub pid: u32,
    /// From the spawn to the first sight of its `listening on` line (polled every
    /// [`READY_POLL_MS`] ms, so up to that much late).
    pub ready_after: Duration,
    /// When each of [`MILESTONES`] the gateway logged while starting was first seen (as
    /// late as `ready_after`).
    pub milestones: Vec<(&'static str, Duration)>,
    /// Its log file.
    pub log: PathBuf,
    /// The gateway's data directory.
    pub data_dir: Option<PathBuf>,
    child: Child,
    /// The rest of a cluster (the server above is its leader); `None` for a lone server.
    cluster: Option<Cluster>,
}

/// A cluster's processes besides the leader, and where its clients connect.
#[derive(Debug)]
struct Cluster {
    /// The nodes that follow, in the order they started.
    followers: Vec<SocketAddr>,
    /// Their processes, then nats-server's (stopped in that order).
    others: Vec<(u32, Child)>,
}

/// What `nats-server` missing means.
const NATS_MISSING: &str = ": install Debian's nats-server (scripts/bench.sh does) or pass --nats PATH";

/// A process started, its log showing it ready.
struct Started {
    child: Child,
    pid: u32,
    addr: SocketAddr,
    ready_after: Duration,
    milestones: Vec<(&'static str, Duration)>,
}

/// How often a starting server's log is read for its `listening on` line.
pub const READY_POLL_MS: u64 = 20;

/// The lines the gateway logs on its way up: the store is open and has read its log
/// (`store: …`), the hub has put the open conversations back (`recovered …`).
pub const MILESTONES: &[&str] = &["store: ", "recovered "];

/// A fresh data directory, or the one a previous run left (and how long recovery may take).
#[derive(Clone, Copy, Debug)]
enum Start {
    Fresh,
    Again(Duration),
}

impl Server {
    /// Starts `target` fresh for the scenario `label`: the gateway as a cluster when the
    /// launch says so.
    pub async fn start(target: Target, launch: &Launch, label: &str) -> Result<Server> {
        match (target, launch.cluster) {
            (Target::Gateway, Some(nodes)) => Server::start_cluster(launch, label, nodes).await,
            _ => Server::spawn(target, launch, label, Start::Fresh).await,
        }
    }

    /// Starts the gateway again on the data directory an earlier [`Server::start`] with the
    /// same `label` left behind (after a crash, say), logging to `{label}-restart-gateway.log`,
    /// and waits up to `patience` for it to listen: it recovers what the store holds first.
    pub async fn restart(launch: &Launch, label: &str, patience: Duration) -> Result<Server> {
        Server::spawn(Target::Gateway, launch, label, Start::Again(patience)).await
    }

    async fn spawn(target: Target, launch: &Launch, label: &str, how: Start) -> Result<Server> {
        let label = launch.label_for(target, label);
        let (log_name, patience) = match how {
            Start::Fresh => (format!("{label}-{target}.log"), Duration::from_secs(30)),
            Start::Again(p) => (format!("{label}-restart-{target}.log"), p),
        };
        let log_path = launch.run_dir.join(log_name);
        let data_dir = (target == Target::Gateway).then(|| launch.run_dir.join(format!("{label}-data")));
        let (cmd, missing) = match target {
            Target::Gateway => {
                let data = launch.run_dir.join(format!("{label}-data"));
                if matches!(how, Start::Fresh) {
                    let _ = std::fs::remove_dir_all(&data);
                }
                std::fs::create_dir_all(&data)?;
                (launch.gateway_command(&launch.config, &data), "")
            }
            Target::Echo => {
                let mut c = Command::new(&launch.echo);
                c.arg("--listen").arg("127.0.0.1:0");
                (c, "")
            }
            Target::Nats => {
                let conf = launch.run_dir.join(format!("{label}-nats.conf"));
                std::fs::write(&conf, NATS_CONFIG).with_context(|| format!("writing {}", conf.display()))?;
                let mut c = Command::new(&launch.nats);
                c.arg("--config").arg(&conf);
                (c, NATS_MISSING)
            }
        };
        let p = start_process(cmd, target.name(), &log_path, patience, missing, |text| listening_addr(target, text))
            .await?;
        Ok(Server {
            target,
            addr: p.addr,
            pid: p.pid,
            child: p.child,
            ready_after: p.ready_after,
            milestones: p.milestones,
            log: log_path,
            data_dir,
            cluster: None,
        })
    }

    /// The gateway as a cluster of `nodes`: a JetStream nats-server on a fresh store, then
    /// the nodes one by one on the configuration plus `[cluster]`, the first waited for until
    /// it leads and each other until it follows the first; ready once every node answers
    /// `GET /healthz` (through the leader). Its files are named `{label}-…` as the gateway's.
    async fn start_cluster(launch: &Launch, label: &str, nodes: usize) -> Result<Server> {
        ensure!((1..=26).contains(&nodes), "a cluster of {nodes} nodes: from 1 to 26");
        let label = launch.label_for(Target::Gateway, label);
        let path = |what: &str| launch.run_dir.join(format!("{label}-{what}"));
        let patience = Duration::from_secs(30);
        let store = fresh_dir(&path("jetstream"))?;
        let mut cmd = Command::new(&launch.nats);
        cmd.args(["-js", "-a", "127.0.0.1", "-p", "-1", "-sd"]).arg(&store);
        let nats =
            start_process(cmd, "nats-server", &path("jetstream.log"), patience, NATS_MISSING, jetstream_addr).await?;
        let text =
            std::fs::read_to_string(&launch.config).with_context(|| format!("reading {}", launch.config.display()))?;
        let config = path("cluster.toml");
        std::fs::write(&config, with_cluster(&text, nats.addr))?;
        let name = |i: usize| format!("node-{}", char::from(b'a' + i as u8));
        let mut started = Vec::with_capacity(nodes);
        for i in 0..nodes {
            let data = fresh_dir(&path(&format!("{}-data", name(i))))?;
            let mut cmd = launch.gateway_command(&config, &data);
            cmd.env("SWITCHBOARD_NODE", name(i));
            // The lease is free for the first node; the others find it taken.
            let role = if i == 0 { "cluster: leading".to_owned() } else { format!("cluster: following {}", name(0)) };
            let log = path(&format!("{}.log", name(i)));
            let ready = |text: &str| listening_addr(Target::Gateway, text).filter(|_| text.contains(&role));
            let p = start_process(cmd, &name(i), &log, patience, "", ready).await?;
            started.push((p, log, data));
        }
        let deadline = Instant::now() + patience;
        for (i, (p, ..)) in started.iter().enumerate() {
            until_healthy(p.addr, &name(i), deadline).await?;
        }
        let mut started = started.into_iter();
        let (leader, log, data) = started.next().context("no node")?;
        let (mut followers, mut others) = (Vec::new(), Vec::new());
        for (p, ..) in started {
            followers.push(p.addr);
            others.push((p.pid, p.child));
        }
        others.push((nats.pid, nats.child));
        Ok(Server {
            target: Target::Gateway,
            addr: leader.addr,
            pid: leader.pid,
            child: leader.child,
            ready_after: leader.ready_after,
            milestones: leader.milestones,
            log,
            data_dir: Some(data),
            cluster: Some(Cluster { followers, others }),
        })
    }

    /// Where customers connect (customer `i` to the `i`th in turn): the server; in a cluster
    /// of several nodes, the nodes that follow, so that every customer's traffic crosses to
    /// the leader.
    pub fn customer_addrs(&self) -> &[SocketAddr] {
        match &self.cluster {
            Some(c) if !c.followers.is_empty() => &c.followers,
            _ => std::slice::from_ref(&self.addr),
        }
    }

    /// Where a bot or agent connects: the server; in a cluster of several nodes, the bot on
    /// the leader and each agent on a node that follows (Alice the first, Bob the last), so
    /// that escalations cross nodes too.
    pub fn member_addr(&self, who: Member) -> SocketAddr {
        match (&self.cluster, who) {
            (Some(c), Member::Alice) => c.followers.first().copied().unwrap_or(self.addr),
            (Some(c), Member::Bob) => c.followers.last().copied().unwrap_or(self.addr),
            _ => self.addr,
        }
    }

    /// Every process of the server: its own, then a cluster's others.
    fn pids(&self) -> impl Iterator<Item = u32> + '_ {
        std::iter::once(self.pid).chain(self.cluster.iter().flat_map(|c| c.others.iter().map(|(pid, _)| *pid)))
    }

    /// One process, not a cluster.
    pub fn is_lone(&self) -> bool {
        self.cluster.is_none()
    }

    /// Resident memory, in KiB (`VmRSS` of `/proc/PID/status`; a cluster's summed over its
    /// processes).
    pub fn rss_kib(&self) -> Result<u64> {
        self.pids().map(proc_rss_kib).sum()
    }

    /// CPU time used so far (user + system), in seconds (a cluster's summed over its
    /// processes).
    pub fn cpu_secs(&self) -> Result<f64> {
        self.pids().map(|pid| proc_cpu_secs(&format!("/proc/{pid}/stat"))).sum()
    }

    /// Kills the server (every process of a cluster, nats-server last) and waits for each.
    pub async fn stop(self) {
        let others = self.cluster.map(|c| c.others).unwrap_or_default();
        for mut child in std::iter::once(self.child).chain(others.into_iter().map(|(_, c)| c)) {
            let _ = child.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
        }
    }

    /// `kill -9`: the process dies at once, with whatever the store had not committed.
    /// (tokio's `start_kill` sends SIGKILL.) Waits until it is gone.
    pub async fn crash(mut self) -> Result<()> {
        self.child.start_kill()?;
        tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .context("killed server did not exit")??;
        Ok(())
    }
}

/// Spawns `cmd` (`who`, for messages) with its stderr in `log_path`, and waits up to
/// `patience` for `ready` to find in its log the address it serves on; `missing` is added
/// to the error when the program is not there.
async fn start_process(
    mut cmd: Command,
    who: &str,
    log_path: &Path,
    patience: Duration,
    missing: &str,
    ready: impl Fn(&str) -> Option<SocketAddr>,
) -> Result<Started> {
    let log = std::fs::File::create(log_path).with_context(|| format!("creating {}", log_path.display()))?;
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log).kill_on_drop(true);
    let bin = PathBuf::from(cmd.as_std().get_program());
    let spawned = Instant::now();
    let mut child = match cmd.spawn() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !missing.is_empty() => {
            bail!("{} not found{missing}", bin.display())
        }
        r => r.with_context(|| format!("starting {}", bin.display()))?,
    };
    let pid = child.id().context("child has no pid")?;
    let deadline = spawned + patience;
    let mut milestones = Vec::new();
    loop {
        let text = std::fs::read_to_string(log_path).unwrap_or_default();
        for line in MILESTONES {
            if !milestones.iter().any(|(l, _)| l == line) && text.contains(line) {
                milestones.push((*line, spawned.elapsed()));
            }
        }
        if let Some(addr) = ready(&text) {
            return Ok(Started { child, pid, addr, ready_after: spawned.elapsed(), milestones });
        }
        if let Some(status) = child.try_wait()? {
            bail!("{who} exited ({status}) before it was ready; its log:\n{}", tail(&text));
        }
        if Instant::now() > deadline {
            bail!("{who} was not ready within {} s; its log:\n{}", patience.as_secs(), tail(&text));
        }
        tokio::time::sleep(Duration::from_millis(READY_POLL_MS)).await;
    }
}

/// Waits until `GET /healthz` on `addr` answers 200 (a cluster node: once it reaches the
/// leader), until `deadline`.
async fn until_healthy(addr: SocketAddr, who: &str, deadline: Instant) -> Result<()> {
    loop {
        let asked = tokio::time::timeout(Duration::from_secs(5), wire::healthz(addr)).await;
        match asked {
            Ok(Ok(())) => return Ok(()),
            _ if Instant::now() > deadline => bail!("{who} at {addr} did not answer GET /healthz with 200 in time"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// An empty directory at `path` (whatever was there removed).
fn fresh_dir(path: &Path) -> Result<PathBuf> {
    let _ = std::fs::remove_dir_all(path);
    std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
    Ok(path.to_owned())
}

/// The address a server's log says it listens on, once it is ready for connections:
/// nats-server names its WebSocket listener first and takes clients once it logs that it
/// is ready.
fn listening_addr(target: Target, log: &str) -> Option<SocketAddr> {
    match target {
        Target::Gateway | Target::Echo => addr_after(log, "listening on "),
        Target::Nats if log.contains("Server is ready") => addr_after(log, "Listening for websocket clients on "),
        Target::Nats => None,
    }
}

/// The client port of a cluster's nats-server (with JetStream), once it is ready.
fn jetstream_addr(log: &str) -> Option<SocketAddr> {
    addr_after(log, "Listening for client connections on ").filter(|_| log.contains("Server is ready"))
}

/// The address after `marker` on the first line holding it (a `scheme://` before it skipped).
fn addr_after(log: &str, marker: &str) -> Option<SocketAddr> {
    let line = log.lines().find(|l| l.contains(marker))?;
    let rest = &line[line.find(marker)? + marker.len()..];
    let rest = rest.split_once("://").map_or(rest, |(_, r)| r);
    rest.split(|c: char| c.is_whitespace() || c == '/').next()?.parse().ok()
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

pub fn proc_rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).context("VmRSS")?.parse()?)
}

/// utime + stime of a `/proc/…/stat` file. Clock ticks are 100 per second on Linux
/// (`USER_HZ`, fixed by the kernel ABI).
pub fn proc_cpu_secs(stat_path: &str) -> Result<f64> {
    let stat = std::fs::read_to_string(stat_path)?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let after = &stat[stat.rfind(')').context("stat")? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11).context("utime")?.parse()?;
    let stime: f64 = fields.get(12).context("stime")?.parse()?;
    Ok((utime + stime) / 100.0)
}

/// The generator's own CPU time, in seconds.
pub fn own_cpu_secs() -> Result<f64> {
    proc_cpu_secs("/proc/self/stat")
}

/// The machine's CPU time so far, in clock ticks (`/proc/stat`'s `cpu` line): what the
/// hypervisor gave to other guests while this one wanted it (`steal`), and all of it.
#[derive(Clone, Copy, Debug, Default)]
pub struct MachineCpu {
    pub stolen: u64,
    pub total: u64,
}

impl MachineCpu {
    pub fn read() -> Result<MachineCpu> {
        let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        let line = stat.lines().find(|l| l.starts_with("cpu ")).context("/proc/stat has no cpu line")?;
        parse_cpu_line(line)
    }

    /// The share of the machine's CPU time stolen since `earlier` (0 to 1).
    pub fn stolen_since(self, earlier: MachineCpu) -> f64 {
        let total = self.total.saturating_sub(earlier.total);
        if total == 0 { 0.0 } else { self.stolen.saturating_sub(earlier.stolen) as f64 / total as f64 }
    }
}

/// How long a process's threads were ready to run but waited for a CPU, so far: the second
/// field of each `/proc/PID/task/TID/schedstat` (ns), summed, and that of the gateway's
/// store writer alone (`switchboard::store::WRITER_THREAD`, the thread a commit runs on).
/// A thread that ended between two readings takes its time with it: a difference may
/// come out short, never long.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuWait {
    pub all_ns: u64,
    pub store_ns: u64,
}

impl CpuWait {
    /// The server's threads' (`Some(pid)`) or the generator's (`None`).
    pub fn read(pid: Option<u32>) -> Result<CpuWait> {
        let dir = pid.map_or_else(|| "/proc/self/task".to_owned(), |p| format!("/proc/{p}/task"));
        let mut wait = CpuWait::default();
        for task in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
            let path = task?.path();
            // A thread may end between the listing and the reading.
            let (Ok(stat), Ok(comm)) =
                (std::fs::read_to_string(path.join("schedstat")), std::fs::read_to_string(path.join("comm")))
            else {
                continue;
            };
            let ns = parse_schedstat(&stat)?;
            wait.all_ns += ns;
            if is_store_writer(comm.trim_end()) {
                wait.store_ns += ns;
            }
        }
        Ok(wait)
    }

    /// The waits since `earlier`, in ms: all threads', and the store writer's.
    pub fn ms_since(self, earlier: CpuWait) -> (f64, f64) {
        let ms = |now: u64, then: u64| now.saturating_sub(then) as f64 / 1e6;
        (ms(self.all_ns, earlier.all_ns), ms(self.store_ns, earlier.store_ns))
    }
}

/// Whether a thread's `comm` is the gateway's store writer: its name, which `comm` cuts to
/// 15 bytes.
fn is_store_writer(comm: &str) -> bool {
    let name = switchboard::store::WRITER_THREAD;
    comm == &name[..name.len().min(15)]
}

/// `schedstat`: the time on a CPU, the time waiting on a run queue (both ns), and the number
/// of times the thread ran; the second.
fn parse_schedstat(line: &str) -> Result<u64> {
    let wait = line.split_whitespace().nth(1).with_context(|| format!("a schedstat of one field: {line}"))?;
    Ok(wait.parse()?)
}

/// `cpu  user nice system idle iowait irq softirq steal guest guest_nice`: guest time is
/// already counted in user and nice, so the total is the first eight.
fn parse_cpu_line(line: &str) -> Result<MachineCpu> {
    let ticks: Vec<u64> = line.split_whitespace().skip(1).map(str::parse).collect::<Result<_, _>>()?;
    ensure!(ticks.len() >= 8, "a cpu line of {} fields: {line}", ticks.len());
    Ok(MachineCpu { stolen: ticks[7], total: ticks[..8].iter().sum() })
}

/// The soft limit on open files of this process (`/proc/self/limits`).
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The machine a run happened on, for every absolute figure.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
}

impl Machine {
    pub fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown CPU".to_owned(), |(_, v)| v.trim().to_owned());
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib: f64 = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned();
        Machine { cpu, cores, memory_gib: mem_kib / (1024.0 * 1024.0), kernel }
    }
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, {} cores, {:.0} GiB RAM, Linux {}", self.cpu, self.cores, self.memory_gib, self.kernel)
    }
}

/// The configuration of the NATS peer: core NATS (no JetStream, no auth), its client port
/// and its WebSocket listener on loopback, each on a free port the system picks (`-1`: the
/// server logs the port it got), so nothing can take a port between choosing and binding it.
const NATS_CONFIG: &str = "\
# nats-server as a peer of the gateway in switchboard-load's chat scenarios.
listen: \"127.0.0.1:-1\"
websocket {
  listen: \"127.0.0.1:-1\"
  no_tls: true
}
";

/// `config` with `store = "memory"` in its `[server]` table (replacing any `store` there),
/// and nothing else changed.
pub fn with_memory_store(config: &str) -> String {
    with_server_settings(config, &[("store", "\"memory\"")])
}

/// `config` with each `key = value` of `settings` in its `[server]` table (replacing any
/// setting of that key there), and nothing else changed.
pub fn with_server_settings(config: &str, settings: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(config.len() + 32 * settings.len());
    let mut in_server = false;
    let mut added = false;
    let ours = |line: &str| line.split('=').next().is_some_and(|k| settings.iter().any(|(key, _)| k.trim() == *key));
    let add = |out: &mut String| {
        for (key, value) in settings {
            out.push_str(&format!("{key} = {value}\n"));
        }
    };
    for line in config.lines() {
        let t = line.trim_start();
        if t.starts_with('[') {
            in_server = t.trim_end() == "[server]";
        } else if in_server && ours(t) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if in_server && !added {
            add(&mut out);
            added = true;
        }
    }
    if !added {
        out.push_str("\n[server]\n");
        add(&mut out);
    }
    out
}

/// `config` with a `[cluster]` table naming the nats-server at `nats` (the stream, the
/// bucket and the lease at their defaults).
pub fn with_cluster(config: &str, nats: SocketAddr) -> String {
    format!("{}\n\n[cluster]\nnats = \"nats://{nats}\"\n", config.trim_end())
}

/// The bench configuration, written next to the logs so a run does not depend on the
/// working directory.
pub fn write_default_config(run_dir: &Path) -> Result<PathBuf> {
    let path = run_dir.join("gateway.toml");
    std::fs::write(&path, include_str!("../../gateway.toml"))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_run_queue_wait() {
        assert_eq!(parse_schedstat("769381799 852459954 209\n").unwrap(), 852_459_954);
        assert!(parse_schedstat("769381799").is_err());
        let before = CpuWait { all_ns: 1_000_000, store_ns: 500_000 };
        let after = CpuWait { all_ns: 4_500_000, store_ns: 1_500_000 };
        assert_eq!(after.ms_since(before), (3.5, 1.0));
        // A thread gone since: never below nothing.
        assert_eq!(before.ms_since(after), (0.0, 0.0));
    }

    #[test]
    fn knows_the_store_writer_by_its_cut_name() {
        assert!(is_store_writer("switchboard-sto"));
        assert!(!is_store_writer("tokio-rt-worker"));
        assert!(!is_store_writer(""));
    }

    #[test]
    fn reads_this_process_run_queue_wait() {
        let wait = CpuWait::read(None).unwrap();
        assert_eq!(wait.store_ns, 0, "the generator has no store writer");
    }

    #[test]
    fn reads_the_stolen_share() {
        let before = parse_cpu_line("cpu  100 0 50 800 10 0 5 35 0 0").unwrap();
        assert_eq!((before.stolen, before.total), (35, 1000));
        let after = parse_cpu_line("cpu  150 0 70 900 10 0 5 65 20 0").unwrap();
        assert!((after.stolen_since(before) - 30.0 / 200.0).abs() < 1e-12);
        assert!(parse_cpu_line("cpu  1 2 3").is_err());
    }

    #[test]
    fn reads_the_listening_line() {
        let log = "2026-01-01T00:00:00Z  INFO switchboard: listening on http://127.0.0.1:40123\n";
        assert_eq!(listening_addr(Target::Gateway, log), Some("127.0.0.1:40123".parse().unwrap()));
        let echo = "listening on ws://127.0.0.1:9/\n";
        assert_eq!(listening_addr(Target::Echo, echo), Some("127.0.0.1:9".parse().unwrap()));
        assert_eq!(listening_addr(Target::Echo, "starting\n"), None);
        let nats = "[9037] 2026/12/02 10:14:49.020429 [INF] Listening for websocket clients on ws://127.0.0.1:35327\n\
                    [9037] 2026/12/02 10:14:49.021637 [INF] Listening for client connections on 127.0.0.1:44359\n";
        assert_eq!(listening_addr(Target::Nats, nats), None);
        let ready = format!("{nats}[9037] 2026/12/02 10:14:49.021686 [INF] Server is ready\n");
        assert_eq!(listening_addr(Target::Nats, &ready), Some("127.0.0.1:35327".parse().unwrap()));
        let js = "[9101] 2026/12/02 10:14:49.021637 [INF] Listening for client connections on 127.0.0.1:44359\n";
        assert_eq!(jetstream_addr(js), None);
        let js = format!("{js}[9101] 2026/12/02 10:14:49.021686 [INF] Server is ready\n");
        assert_eq!(jetstream_addr(&js), Some("127.0.0.1:44359".parse().unwrap()));
    }

    #[test]
    fn cluster_config_adds_only_the_cluster() {
        let text = with_cluster(include_str!("../../gateway.toml"), "127.0.0.1:4222".parse().unwrap());
        let cfg = switchboard::load::config_text(&text).unwrap().config;
        let cluster = cfg.cluster.expect("[cluster]");
        assert_eq!(cluster.nats.list(), ["nats://127.0.0.1:4222"]);
        let alone = switchboard::load::config_text(include_str!("../../gateway.toml")).unwrap().config;
        assert_eq!(cfg.server.store, alone.server.store);
        assert_eq!(cfg.queues.len(), alone.queues.len());
    }

    #[test]
    fn memory_store_variant_changes_only_the_store() {
        let c = "# x\n[server]\nlisten = \"127.0.0.1:0\"\nstore = \"sqlite\"\n\n[[queues]]\nname = \"Q\"\n";
        assert_eq!(
            with_memory_store(c),
            "# x\n[server]\nstore = \"memory\"\nlisten = \"127.0.0.1:0\"\n\n[[queues]]\nname = \"Q\"\n"
        );
        assert_eq!(
            with_memory_store("[[bots]]\nname = \"b\"\n"),
            "[[bots]]\nname = \"b\"\n\n[server]\nstore = \"memory\"\n"
        );
        let bench = with_memory_store(include_str!("../../gateway.toml"));
        let cfg = switchboard::load::config_text(&bench).unwrap().config;
        assert_eq!(cfg.server.store, switchboard::config::StoreKind::Memory);
        let durable = switchboard::load::config_text(include_str!("../../gateway.toml")).unwrap().config;
        assert_eq!(durable.server.store, switchboard::config::StoreKind::Sqlite);
    }

    #[test]
    fn reads_own_process() {
        assert!(proc_rss_kib(std::process::id()).unwrap() > 0);
        assert!(own_cpu_secs().unwrap() >= 0.0);
        assert!(open_files_limit().unwrap() > 0);
    }
}
