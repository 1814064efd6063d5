//! The durable store: SQLite (bundled, WAL mode) under the data directory, written by one
//! thread with group commit.
//!
//! Every record goes through a channel to a single writer thread. The writer takes
//! whatever has queued up (up to [`MAX_BATCH`] records), writes it in one transaction and
//! commits once, so a burst of activities costs one fsync, not one each; then it calls
//! each record's `done`. With `synchronous = FULL` (the default) a committed transaction
//! survives a crash of the process and of the machine; `normal` survives a crash of the
//! process (`kill -9`) only.
//!
//! Both a transcript's activities and a conversation's states are appended to logs
//! (`activities`, `states`) in rowid order; a conversation's row is written when it opens
//! and when it closes, and says where its activities and states start. Nothing is rewritten
//! at a random place while a conversation lives (migrations 2 and 3 say why).
//!
//! Schema versions are kept in `PRAGMA user_version`; [`MIGRATIONS`] brings any older file
//! up to date, one step at a time, inside a transaction.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, atomic::AtomicBool, atomic::Ordering};

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension, params};

use super::{Commit, Done, Record, Recovered, RecoveredConversation, Store, StoreError};
use crate::routing::ConvId;

/// Records written per transaction at most.
const MAX_BATCH: usize = 4096;

/// Schema migrations; entry `i` takes version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: conversations (state as JSON), their activities, and gateway metadata.
    "CREATE TABLE conversations (
        id TEXT PRIMARY KEY,
        open INTEGER NOT NULL,
        state TEXT NOT NULL,
        created INTEGER NOT NULL DEFAULT (unixepoch())
    );
    CREATE INDEX conversations_open ON conversations (open, created);
    CREATE TABLE activities (
        id INTEGER PRIMARY KEY,
        conversation TEXT NOT NULL,
        seq INTEGER NOT NULL,
        frame TEXT NOT NULL,
        client_key TEXT
    );
    CREATE UNIQUE INDEX activities_by_conversation ON activities (conversation, seq);
    CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);",
    // 2: activities become an append-only log. The (conversation, seq) index took a random
    // B-tree insert per activity: with many conversations live, nearly every activity of a
    // commit dirtied its own index page, and the WAL wrote each of those 4 KiB pages. Now a
    // conversation remembers where its activities start in the log (`first_activity`, a
    // rowid no greater than its first activity's), and recovery reads the log forward from
    // the oldest open conversation's start.
    "ALTER TABLE conversations ADD COLUMN first_activity INTEGER NOT NULL DEFAULT 0;
    UPDATE conversations SET first_activity = coalesce(
        (SELECT min(id) FROM activities WHERE activities.conversation = conversations.id),
        (SELECT coalesce(max(id), 0) + 1 FROM activities));
    DROP INDEX activities_by_conversation;",
    // 3: a conversation's states become an append-only log too. Its row was rewritten in
    // place at every routing change: 700-odd bytes of JSON at a random place in the table,
    // a dirty 4 KiB page in the WAL (and again at the checkpoint) for every escalation, most
    // of a commit's pages. Now each state is appended to `states`; the conversation's row is
    // written when it opens (with where its states start, `first_state`) and when it closes,
    // and recovery takes each open conversation's last state from the log. Rows written
    // before keep their state in `conversations.state`, read when the log has none newer.
    "CREATE TABLE states (
        id INTEGER PRIMARY KEY,
        conversation TEXT NOT NULL,
        state TEXT NOT NULL
    );
    ALTER TABLE conversations ADD COLUMN first_state INTEGER NOT NULL DEFAULT 0;",
];

enum Op {
    Record(Record, Option<Done>),
    Flush(tokio::sync::oneshot::Sender<Result<(), StoreError>>),
}

/// The SQLite store.
#[derive(Debug)]
pub struct SqliteStore {
    tx: mpsc::Sender<Op>,
    failed: Arc<AtomicBool>,
    path: PathBuf,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(err)?;
    let version = usize::try_from(version).unwrap_or(usize::MAX);
    if version > MIGRATIONS.len() {
        return Err(StoreError(format!(
            "the data directory was written by a newer Switchboard (schema {version}, this one knows {})",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction().map_err(err)?;
        tx.execute_batch(sql).map_err(err)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64).map_err(err)?;
        tx.commit().map_err(err)?;
    }
    Ok(())
}

impl SqliteStore {
    /// Opens (or creates) `dir/switchboard.db`, migrates it, reads back what was open, and
    /// starts the writer thread.
    pub fn open(dir: &Path, full_sync: bool) -> Result<(SqliteStore, Recovered), StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join("switchboard.db");
        let mut conn =
            Connection::open(&path).map_err(|e| StoreError(format!("cannot open {}: {e}", path.display())))?;
        // The writer's connection is the database's only one, and holds it for the process's
        // life: a second gateway started on the same data directory is refused at once
        // (below), where both would otherwise serve, and each recover, the same
        // conversations. Set before WAL mode, this also keeps WAL's index in the process's
        // memory rather than a shared-memory file, and a transaction takes no file locks.
        // A store closing in this process (a restart in place) is waited for, briefly.
        conn.busy_timeout(LOCK_WAIT).map_err(err)?;
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE").map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(|e| in_use(e, dir))?;
        // Taken now, and in this locking mode held until the connection closes.
        conn.execute_batch("BEGIN EXCLUSIVE; COMMIT;").map_err(|e| in_use(e, dir))?;
        conn.pragma_update(None, "synchronous", if full_sync { "FULL" } else { "NORMAL" }).map_err(err)?;
        // Activities and states are appended (rowid order) and read back only at recovery,
        // so the page cache needs little more than the logs' last pages and the tables'
        // indexes: 8 MiB. At 64 MiB it kept every freshly written page, which with the
        // states log made an idle conversation cost 10.6 KiB instead of 9.5 (the `idle`
        // benchmark), for no gain in throughput or latency. The writer checkpoints on its
        // own schedule ([`CHECKPOINT_EVERY`]), not on a commit.
        conn.pragma_update(None, "cache_size", -8192).map_err(err)?;
        conn.pragma_update(None, "wal_autocheckpoint", 0).map_err(err)?;
        migrate(&mut conn)?;
        let recovered = load(&conn)?;
        let open: HashSet<ConvId> = recovered.conversations.iter().map(|c| ConvId::from(c.id.as_str())).collect();
        let (tx, rx) = mpsc::channel();
        let failed = Arc::new(AtomicBool::new(false));
        let f = failed.clone();
        let completer = spawn_completer();
        std::thread::Builder::new()
            .name(WRITER_THREAD.into())
            .spawn(move || writer(conn, rx, f, completer, open))
            .map_err(|e| StoreError(format!("cannot start the store writer: {e}")))?;
        Ok((SqliteStore { tx, failed, path }, recovered))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The name of the writer's thread, on which every commit runs (the benchmark measures its
/// waits for a core by it).
pub const WRITER_THREAD: &str = "switchboard-store";

/// When the writer checkpoints the WAL into the database, between two transactions: once
/// [`CHECKPOINT_RECORDS`] records were written since the last one (but not within
/// [`CHECKPOINT_BUSY`] of it), else [`CHECKPOINT_EVERY`] after it. So under load each
/// checkpoint copies a few hundred pages at most, and a quiet store checkpoints rarely.
///
/// The writer does it itself, and nothing else writes to the files: with the database's
/// connection the only one, a PASSIVE checkpoint copies the whole WAL, and the next
/// transaction starts it again from its beginning (a WAL that never restarts grows, and
/// every commit then pays the filesystem for fresh pages). Checkpointing from a second
/// connection instead, concurrently with commits, kept commits from waiting on its lock
/// but not on the disk: its `fsync` of the database file and the writer's `fsync` of the
/// WAL queued behind each other in the filesystem's journal, and commits of one or two
/// records took 20–170 ms while one ran (open-loop p99 60–325 ms; 2–27 ms this way).
///
/// Commits wait while a checkpoint runs, so under load it runs often and small: at 12,000
/// escalations a second (36,000 records), a checkpoint every 100 ms copied about 1,500
/// pages and took 4–9 ms, and the escalations that came meanwhile set the p99 (10.5 ms);
/// every 10 ms it copies about 150 and takes 1–2 ms (p99 4.2 ms), and the relay's
/// throughput with the durable store went up rather than down (BENCHMARKS.md).
const CHECKPOINT_BUSY: std::time::Duration = std::time::Duration::from_millis(10);
const CHECKPOINT_RECORDS: usize = 256;
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// A commit slower than this is logged (at debug level) with its size; so is a checkpoint.
const SLOW_COMMIT: std::time::Duration = std::time::Duration::from_millis(50);

/// How long opening the store waits for another holder of the database to let go (once
/// open, the store's connection holds it alone, so nothing else ever waits on a lock).
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// An error opening the database, saying so plainly when another process holds it.
fn in_use(e: rusqlite::Error, dir: &Path) -> StoreError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => StoreError(format!(
            "the data directory {} is in use by another gateway (its database is locked); stop that one \
             first, or give this one its own --data-dir",
            dir.display()
        )),
        _ => err(e),
    }
}

fn load(conn: &Connection) -> Result<Recovered, StoreError> {
    let key: Option<Vec<u8>> =
        conn.query_row("SELECT value FROM meta WHERE key = 'signing_key'", [], |r| r.get(0)).optional().map_err(err)?;
    let signing_key = match key.and_then(|k| <[u8; 32]>::try_from(k.as_slice()).ok()) {
        Some(k) => k,
        None => {
            let k: [u8; 32] = rand::random();
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('signing_key', ?1)", params![k.to_vec()])
                .map_err(err)?;
            k
        }
    };
    let channel_key: Option<Vec<u8>> =
        conn.query_row("SELECT value FROM meta WHERE key = 'channel_key'", [], |r| r.get(0)).optional().map_err(err)?;
    let mut stmt = conn
        .prepare("SELECT id, state, first_activity, first_state FROM conversations WHERE open = 1 ORDER BY rowid")
        .map_err(err)?;
    let mut rows = Vec::new();
    let mut first_state = i64::MAX;
    for row in stmt
        .query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?, r.get::<_, i64>(3)?))
        })
        .map_err(err)?
    {
        let (id, state, first, first_st) = row.map_err(err)?;
        first_state = first_state.min(first_st);
        rows.push((id, state, first));
    }
    // Read the log forward from the oldest open conversation's start, keeping the open
    // conversations' activities. A seq written again replaces that activity and every
    // later one: the hub rewrites from a seq whose commit failed (nothing from it on was
    // acknowledged), and what a later batch had stored of the old attempt is void.
    let start = rows.iter().map(|(_, _, first)| *first).min().unwrap_or(i64::MAX);
    let index: HashMap<String, usize> = rows.iter().enumerate().map(|(i, (id, _, _))| (id.clone(), i)).collect();
    let mut convs: Vec<RecoveredConversation> =
        rows.into_iter().map(|(id, state, _)| RecoveredConversation { id, state, activities: Vec::new() }).collect();
    // Each open conversation's state is the last the log holds for it (read forward from
    // the oldest open conversation's first), else the one its row was written with.
    let mut states = conn.prepare("SELECT conversation, state FROM states WHERE id >= ?1 ORDER BY id").map_err(err)?;
    let mut log = states.query(params![first_state]).map_err(err)?;
    while let Some(r) = log.next().map_err(err)? {
        let conversation = r.get_ref(0).map_err(err)?.as_str().map_err(err)?;
        let Some(&i) = index.get(conversation) else { continue };
        convs[i].state = r.get(1).map_err(err)?;
    }
    drop(log);
    let mut log = conn
        .prepare("SELECT conversation, seq, frame, client_key FROM activities WHERE id >= ?1 ORDER BY id")
        .map_err(err)?;
    let mut acts = log.query(params![start]).map_err(err)?;
    while let Some(r) = acts.next().map_err(err)? {
        // Looked up in place: most rows are kept, but none needs its id as a `String`.
        let conversation = r.get_ref(0).map_err(err)?.as_str().map_err(err)?;
        let Some(&i) = index.get(conversation) else { continue };
        let seq = r.get::<_, i64>(1).map_err(err)? as u64;
        let activities = &mut convs[i].activities;
        if activities.last().is_some_and(|(last, _, _)| seq <= *last) {
            activities.retain(|(s, _, _)| *s < seq);
        }
        activities.push((seq, r.get(2).map_err(err)?, r.get(3).map_err(err)?));
    }
    Ok(Recovered { conversations: convs, signing_key: Some(signing_key), channel_key })
}

/// The conversations whose row is written and open, as the writer knows them (a state of
/// one of them goes to the `states` log; any other conversation's record writes its row),
/// with what the current batch changed, to put back if its transaction fails.
#[derive(Debug, Default)]
struct OpenSet {
    open: HashSet<ConvId>,
    /// Each conversation the batch opened or closed, and whether it was open before.
    undo: Vec<(ConvId, bool)>,
}

impl OpenSet {
    fn mark(&mut self, id: &ConvId, now_open: bool) {
        let was = if now_open { !self.open.insert(id.clone()) } else { self.open.remove(id) };
        self.undo.push((id.clone(), was));
    }

    /// The batch failed and wrote no row: what it marked is put back.
    fn put_back(&mut self) {
        for (id, was) in self.undo.drain(..).rev() {
            if was {
                self.open.insert(id);
            } else {
                self.open.remove(&id);
            }
        }
    }
}

/// Writes a batch in one transaction, marking in `open` the conversations it opens and closes.
fn write_batch(conn: &mut Connection, batch: &[Op], open: &mut OpenSet) -> Result<(), StoreError> {
    let tx = conn.transaction().map_err(err)?;
    {
        // A conversation's row is recorded before any of its activities and states (the hub
        // persists it when it opens), so the logs' next rowids at its first insert are where
        // they start. It is written again only when it closes.
        let mut conv = tx
            .prepare_cached(
                "INSERT INTO conversations (id, open, state, first_activity, first_state)
                 VALUES (?1, ?2, ?3, (SELECT coalesce(max(id), 0) + 1 FROM activities),
                         (SELECT coalesce(max(id), 0) + 1 FROM states))
                 ON CONFLICT (id) DO UPDATE SET open = excluded.open, state = excluded.state",
            )
            .map_err(err)?;
        let mut state_log =
            tx.prepare_cached("INSERT INTO states (conversation, state) VALUES (?1, ?2)").map_err(err)?;
        let mut act = tx
            .prepare_cached("INSERT INTO activities (conversation, seq, frame, client_key) VALUES (?1, ?2, ?3, ?4)")
            .map_err(err)?;
        for op in batch {
            match op {
                Op::Record(Record::Conversation { id, open: true, state }, _) if open.open.contains(id) => {
                    state_log.execute(params![&**id, state]).map_err(err)?;
                }
                Op::Record(Record::Conversation { id, open: now_open, state }, _) => {
                    conv.execute(params![&**id, *now_open, state]).map_err(err)?;
                    open.mark(id, *now_open);
                }
                Op::Record(Record::Activity { conversation, seq, frame, client_key }, _) => {
                    // Bound as text from its bytes: a `Frame` is UTF-8 by construction, and
                    // `as_str` would check each activity again on this one thread.
                    let text = ToSqlOutput::Borrowed(ValueRef::Text(frame.as_bytes()));
                    act.execute(params![&**conversation, *seq as i64, text, client_key]).map_err(err)?;
                }
                Op::Record(Record::ChannelKey(der), _) => {
                    tx.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('channel_key', ?1)", params![der])
                        .map_err(err)?;
                }
                Op::Flush(_) => {}
            }
        }
    }
    tx.commit().map_err(err)
}

/// [`write_batch`], and if its transaction fails, the open set put back as it was, so the
/// next batch writes those conversations' rows as the database has them.
fn commit_batch(conn: &mut Connection, batch: &[Op], open: &mut OpenSet) -> Result<(), StoreError> {
    let result = write_batch(conn, batch, open);
    if result.is_err() {
        open.put_back();
    }
    open.undo.clear();
    result
}

/// A committed (or failed) batch's callbacks and flush answers, in order.
type Completions = (Vec<Completion>, Result<(), StoreError>);

enum Completion {
    Done(Done),
    Flush(tokio::sync::oneshot::Sender<Result<(), StoreError>>),
}

fn complete((list, result): Completions) {
    for c in list {
        match c {
            Completion::Done(done) => done(result.clone()),
            Completion::Flush(tx) => {
                let _ = tx.send(result.clone());
            }
        }
    }
}

/// Runs the callbacks of committed batches on the runtime, in commit order. The writer
/// thread hands over a whole batch with one wake-up, instead of waking a connection's
/// writer task from outside the runtime for every activity (which cost it more than the
/// SQLite work itself), and goes straight on to the next batch. Without a runtime (a
/// store opened outside one) the writer runs them itself.
fn spawn_completer() -> Option<tokio::sync::mpsc::UnboundedSender<Completions>> {
    let handle = tokio::runtime::Handle::try_current().ok()?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Completions>();
    handle.spawn(async move {
        while let Some(batch) = rx.recv().await {
            complete(batch);
        }
    });
    Some(tx)
}

fn writer(
    mut conn: Connection,
    rx: mpsc::Receiver<Op>,
    failed: Arc<AtomicBool>,
    completer: Option<Completer>,
    open: HashSet<ConvId>,
) {
    let mut checkpointed = std::time::Instant::now();
    let mut since_checkpoint = 0usize;
    let mut open = OpenSet { open, undo: Vec::new() };
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let started = std::time::Instant::now();
        let result = commit_batch(&mut conn, &batch, &mut open);
        let took = started.elapsed();
        crate::metrics::STORE_COMMIT.observe(took.as_secs_f64());
        let batch_len = batch.len();
        crate::metrics::STORE_BATCH.observe(batch_len as f64);
        if took > SLOW_COMMIT {
            tracing::debug!(records = batch_len, "slow store commit: {took:?}");
        }
        if let Err(e) = &result {
            tracing::error!("store write failed: {e}");
            failed.store(true, Ordering::Relaxed);
        }
        let list = batch
            .into_iter()
            .filter_map(|op| match op {
                Op::Record(_, done) => done.map(Completion::Done),
                Op::Flush(tx) => Some(Completion::Flush(tx)),
            })
            .collect::<Vec<_>>();
        match &completer {
            _ if list.is_empty() => {}
            Some(c) => {
                if let Err(tokio::sync::mpsc::error::SendError(batch)) = c.send((list, result)) {
                    complete(batch);
                }
            }
            None => complete((list, result)),
        }
        since_checkpoint += batch_len;
        let every = if since_checkpoint >= CHECKPOINT_RECORDS { CHECKPOINT_BUSY } else { CHECKPOINT_EVERY };
        if checkpointed.elapsed() >= every {
            checkpointed = std::time::Instant::now();
            since_checkpoint = 0;
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                tracing::warn!("store checkpoint: {e}");
            }
            let took = checkpointed.elapsed();
            crate::metrics::STORE_CHECKPOINT.observe(took.as_secs_f64());
            if took > SLOW_COMMIT {
                tracing::debug!("slow store checkpoint: {took:?}");
            }
        }
    }
    // All senders are gone: checkpoint the WAL so the file is self-contained.
    let _ = conn.pragma_update(None, "wal_checkpoint", "TRUNCATE");
}

type Completer = tokio::sync::mpsc::UnboundedSender<Completions>;

impl Store for SqliteStore {
    fn synchronous(&self) -> bool {
        false
    }

    fn record(&self, rec: Record, done: Option<Done>) {
        if let Err(mpsc::SendError(Op::Record(_, Some(done)))) = self.tx.send(Op::Record(rec, done)) {
            done(Err(StoreError("the store writer has stopped".into())));
        }
    }

    fn flush(&self) -> Commit {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Op::Flush(tx)).is_err() {
            return Commit::Done;
        }
        let failed = self.failed.clone();
        Commit::Pending(Box::pin(async move {
            match rx.await {
                Ok(r) => r,
                Err(_) if failed.load(Ordering::Relaxed) => Err(StoreError("the store writer failed".into())),
                Err(_) => Ok(()),
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Frame;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            let dir = std::env::temp_dir().join(format!("switchboard-store-{:016x}", rand::random::<u64>()));
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A connection of the test's own to the database, once the store's has closed (the
    /// store holds it exclusively while open, and lets go as its writer thread ends).
    fn inspect(dir: &TempDir) -> Connection {
        let conn = Connection::open(dir.0.join("switchboard.db")).expect("inspect");
        conn.busy_timeout(std::time::Duration::from_secs(5)).expect("busy timeout");
        conn
    }

    fn conversation(id: &str, open: bool) -> Record {
        Record::Conversation { id: id.into(), open, state: format!("{{\"id\":\"{id}\"}}") }
    }

    fn activity(conv: &str, seq: u64) -> Record {
        let frame = Frame::from(format!("{{\"conversation\":\"{conv}\",\"seq\":{seq}}}"));
        Record::Activity { conversation: conv.into(), seq, frame, client_key: (seq == 2).then(|| format!("k{seq}")) }
    }

    fn seqs(r: &Recovered, id: &str) -> Vec<u64> {
        let c = r.conversations.iter().find(|c| c.id == id).expect("recovered");
        c.activities.iter().map(|(seq, _, _)| *seq).collect()
    }

    #[tokio::test]
    async fn a_second_store_on_the_same_directory_is_refused_while_the_first_is_open() {
        let dir = TempDir::new();
        let (store, _) = SqliteStore::open(&dir.0, true).expect("open");
        store.record(conversation("c_1", true), None);
        store.flush().wait().await.expect("flush");
        let Err(e) = SqliteStore::open(&dir.0, true) else { panic!("a second store opened") };
        assert!(e.0.contains("in use by another gateway"), "{}", e.0);
        // Once the first has closed, the directory opens again, with what it stored.
        drop(store);
        let (_store, recovered) = SqliteStore::open(&dir.0, true).expect("reopen");
        assert_eq!(recovered.conversations.len(), 1);
    }

    #[tokio::test]
    async fn recovers_the_open_conversations_from_the_interleaved_log() {
        let dir = TempDir::new();
        let (store, recovered) = SqliteStore::open(&dir.0, true).expect("open");
        assert!(recovered.conversations.is_empty());
        assert_eq!(recovered.channel_key, None, "no channel key until one is made");
        let key = recovered.signing_key;
        store.record(Record::ChannelKey(vec![1, 2, 3]), None);
        store.record(conversation("c_old", true), None);
        store.record(activity("c_old", 1), None);
        store.record(conversation("c_closed", true), None);
        for seq in 1..=3 {
            store.record(activity("c_closed", seq), None);
            store.record(activity("c_old", seq + 1), None);
        }
        store.record(conversation("c_closed", false), None);
        store.record(conversation("c_new", true), None);
        store.record(activity("c_new", 1), None);
        // A seq written again replaces the first copy (and anything after it).
        store.record(activity("c_new", 1), None);
        store.record(activity("c_new", 2), None);
        store.flush().wait().await.expect("flush");
        drop(store);

        let (_store, recovered) = SqliteStore::open(&dir.0, true).expect("reopen");
        assert_eq!(recovered.signing_key, key, "the signing key survives");
        assert_eq!(recovered.channel_key, Some(vec![1, 2, 3]), "so does the channel key");
        let ids: Vec<&str> = recovered.conversations.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["c_old", "c_new"]);
        assert_eq!(seqs(&recovered, "c_old"), [1, 2, 3, 4]);
        assert_eq!(seqs(&recovered, "c_new"), [1, 2]);
        let new = &recovered.conversations[1];
        assert_eq!(new.activities[1].1, "{\"conversation\":\"c_new\",\"seq\":2}");
        assert_eq!(new.activities[1].2.as_deref(), Some("k2"));
    }

    #[tokio::test]
    async fn a_conversation_recovers_its_last_state_and_its_row_is_written_only_when_it_opens_and_closes() {
        let dir = TempDir::new();
        let state = |id: &str, n: u32| Record::Conversation {
            id: id.into(),
            open: true,
            state: format!("{{\"id\":\"{id}\",\"n\":{n}}}"),
        };
        let (store, _) = SqliteStore::open(&dir.0, true).expect("open");
        store.record(state("c_a", 1), None);
        store.record(state("c_b", 1), None);
        store.record(activity("c_a", 1), None);
        store.flush().wait().await.expect("flush");
        for n in 2..=4 {
            store.record(state("c_a", n), None);
            store.record(state("c_b", n), None);
        }
        store.record(conversation("c_b", false), None);
        store.flush().wait().await.expect("flush");
        drop(store);

        let (store, recovered) = SqliteStore::open(&dir.0, true).expect("reopen");
        let ids: Vec<&str> = recovered.conversations.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["c_a"], "a closed conversation stays closed");
        assert_eq!(recovered.conversations[0].state, "{\"id\":\"c_a\",\"n\":4}", "the last state wins");
        assert_eq!(seqs(&recovered, "c_a"), [1]);
        // After a restart the recovered conversation's states go on into the log.
        store.record(state("c_a", 5), None);
        store.flush().wait().await.expect("flush");
        drop(store);
        {
            let conn = inspect(&dir);
            let row: String =
                conn.query_row("SELECT state FROM conversations WHERE id = 'c_a'", [], |r| r.get(0)).expect("row");
            assert_eq!(row, "{\"id\":\"c_a\",\"n\":1}", "later states are appended, not written over the row");
        }
        let (_store, recovered) = SqliteStore::open(&dir.0, true).expect("reopen again");
        assert_eq!(recovered.conversations[0].state, "{\"id\":\"c_a\",\"n\":5}");
    }

    #[tokio::test]
    async fn migrates_a_version_1_file() {
        let dir = TempDir::new();
        std::fs::create_dir_all(&dir.0).expect("mkdir");
        {
            let conn = Connection::open(dir.0.join("switchboard.db")).expect("create");
            conn.execute_batch(MIGRATIONS[0]).expect("schema 1");
            conn.pragma_update(None, "user_version", 1).expect("version");
            conn.execute_batch(
                "INSERT INTO conversations (id, open, state, created) VALUES
                     ('c_a', 1, '{}', 1), ('c_b', 0, '{}', 2), ('c_c', 1, '{}', 3), ('c_d', 1, '{}', 4);
                 INSERT INTO activities (conversation, seq, frame) VALUES
                     ('c_b', 1, 'b1'), ('c_a', 1, 'a1'), ('c_c', 1, 'c1'), ('c_a', 2, 'a2'), ('c_b', 2, 'b2');",
            )
            .expect("rows");
        }
        let (store, recovered) = SqliteStore::open(&dir.0, false).expect("open migrates");
        let ids: Vec<&str> = recovered.conversations.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["c_a", "c_c", "c_d"]);
        assert_eq!(seqs(&recovered, "c_a"), [1, 2]);
        assert_eq!(seqs(&recovered, "c_c"), [1]);
        assert_eq!(seqs(&recovered, "c_d"), Vec::<u64>::new());
        // New activities go on after the migrated ones.
        store.record(activity("c_d", 1), None);
        store.record(activity("c_a", 3), None);
        store.flush().wait().await.expect("flush");
        drop(store);
        let (store, recovered) = SqliteStore::open(&dir.0, false).expect("reopen");
        assert_eq!(seqs(&recovered, "c_a"), [1, 2, 3]);
        assert_eq!(seqs(&recovered, "c_d"), [1]);
        drop(store);
        let conn = inspect(&dir);
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).expect("version");
        assert_eq!(version, MIGRATIONS.len() as i64);
        drop(conn);
        // A migrated conversation's state was in its row; a newer one goes to the log and wins.
        let (store, recovered) = SqliteStore::open(&dir.0, false).expect("reopen");
        assert_eq!(recovered.conversations[0].state, "{}");
        store.record(Record::Conversation { id: "c_a".into(), open: true, state: "{\"n\":2}".into() }, None);
        store.flush().wait().await.expect("flush");
        drop(store);
        let (_store, recovered) = SqliteStore::open(&dir.0, false).expect("reopen");
        let a = recovered.conversations.iter().find(|c| c.id == "c_a").expect("c_a");
        assert_eq!(a.state, "{\"n\":2}");
        let c = recovered.conversations.iter().find(|c| c.id == "c_c").expect("c_c");
        assert_eq!(c.state, "{}", "the others keep their rows' states");
    }

    /// A transaction that fails leaves the writer's open set as the database has it: the
    /// next batch writes the row of a conversation the failed one opened (else its states
    /// would go to the log with no row, and recovery would not know it), and the state of
    /// one it closed goes to the log again.
    #[test]
    fn a_failed_batch_puts_the_open_set_back() {
        let dir = TempDir::new();
        std::fs::create_dir_all(&dir.0).expect("mkdir");
        let mut conn = Connection::open(dir.0.join("switchboard.db")).expect("create");
        migrate(&mut conn).expect("schema");
        let mut open = OpenSet::default();
        let ops = |records: Vec<Record>| records.into_iter().map(|r| Op::Record(r, None)).collect::<Vec<_>>();

        commit_batch(&mut conn, &ops(vec![conversation("c_a", true)]), &mut open).expect("first batch");
        assert_eq!(open.open, HashSet::from([ConvId::from("c_a")]));

        conn.execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON activities WHEN NEW.conversation = 'c_b'
             BEGIN SELECT RAISE(ABORT, 'the disk is full'); END;",
        )
        .expect("trigger");
        let failing = ops(vec![conversation("c_b", true), conversation("c_a", false), activity("c_b", 1)]);
        let e = commit_batch(&mut conn, &failing, &mut open).expect_err("the activity is refused");
        assert!(e.0.contains("the disk is full"), "{e}");
        assert_eq!(open.open, HashSet::from([ConvId::from("c_a")]), "c_b is not open, c_a is not closed");
        assert!(open.undo.is_empty());

        conn.execute_batch("DROP TRIGGER refuse").expect("drop trigger");
        let again = ops(vec![
            Record::Conversation { id: "c_b".into(), open: true, state: "{\"b\":1}".into() },
            activity("c_b", 1),
            Record::Conversation { id: "c_a".into(), open: true, state: "{\"a\":2}".into() },
        ]);
        commit_batch(&mut conn, &again, &mut open).expect("the retry");
        assert_eq!(open.open, HashSet::from([ConvId::from("c_a"), ConvId::from("c_b")]));
        let recovered = load(&conn).expect("load");
        let states: Vec<(&str, &str)> =
            recovered.conversations.iter().map(|c| (c.id.as_str(), c.state.as_str())).collect();
        assert_eq!(states, [("c_a", "{\"a\":2}"), ("c_b", "{\"b\":1}")]);
        assert_eq!(seqs(&recovered, "c_b"), [1]);
    }
}
