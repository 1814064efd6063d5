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
//! Schema versions are kept in `PRAGMA user_version`; [`MIGRATIONS`] brings any older file
//! up to date, one step at a time, inside a transaction.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, atomic::AtomicBool, atomic::Ordering};

use rusqlite::{Connection, OptionalExtension, params};

use super::{Commit, Done, Record, Recovered, RecoveredConversation, Store, StoreError};

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
        conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        conn.pragma_update(None, "synchronous", if full_sync { "FULL" } else { "NORMAL" }).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(err)?;
        // Activities are appended (rowid order) and read back only at recovery: a large
        // page cache keeps the index pages hot, and checkpoints run off the commit path.
        conn.pragma_update(None, "cache_size", -65536).map_err(err)?;
        conn.pragma_update(None, "wal_autocheckpoint", 0).map_err(err)?;
        migrate(&mut conn)?;
        let recovered = load(&conn)?;
        let (tx, rx) = mpsc::channel();
        let failed = Arc::new(AtomicBool::new(false));
        let f = failed.clone();
        std::thread::Builder::new()
            .name("switchboard-store".into())
            .spawn(move || writer(conn, rx, f))
            .map_err(|e| StoreError(format!("cannot start the store writer: {e}")))?;
        spawn_checkpointer(&path)?;
        Ok((SqliteStore { tx, failed, path }, recovered))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Checkpoints the WAL into the database once a second from its own connection, so the
/// writer does not pay for it on every commit. RESTART (not PASSIVE): under a steady load a
/// passive checkpoint never catches up with the writer, the WAL never restarts, and every
/// commit then pays the filesystem for zeroing fresh file pages (15 % of the gateway's CPU
/// in a chat-relay profile); RESTART holds the writer for the moment it takes to copy one
/// second of WAL, after which the WAL is reused from its start. The thread ends with the
/// process.
fn spawn_checkpointer(path: &Path) -> Result<(), StoreError> {
    let conn = Connection::open(path).map_err(err)?;
    conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(err)?;
    std::thread::Builder::new()
        .name("switchboard-checkpoint".into())
        .spawn(move || {
            loop {
                std::thread::sleep(std::time::Duration::from_secs(1));
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(())) {
                    tracing::warn!("store checkpoint: {e}");
                }
            }
        })
        .map_err(|e| StoreError(format!("cannot start the store checkpointer: {e}")))?;
    Ok(())
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
    let mut convs = Vec::new();
    let mut stmt =
        conn.prepare("SELECT id, state FROM conversations WHERE open = 1 ORDER BY created, id").map_err(err)?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))).map_err(err)?;
    let mut acts = conn
        .prepare("SELECT seq, frame, client_key FROM activities WHERE conversation = ?1 ORDER BY seq")
        .map_err(err)?;
    for row in rows {
        let (id, state) = row.map_err(err)?;
        let activities = acts
            .query_map(params![id], |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?, r.get(2)?)))
            .map_err(err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?;
        convs.push(RecoveredConversation { id, state, activities });
    }
    Ok(Recovered { conversations: convs, signing_key: Some(signing_key) })
}

fn write_batch(conn: &mut Connection, batch: &[Op]) -> Result<(), StoreError> {
    let tx = conn.transaction().map_err(err)?;
    {
        let mut conv = tx
            .prepare_cached(
                "INSERT INTO conversations (id, open, state) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET open = excluded.open, state = excluded.state",
            )
            .map_err(err)?;
        let mut act = tx
            .prepare_cached(
                "INSERT OR IGNORE INTO activities (conversation, seq, frame, client_key) VALUES (?1, ?2, ?3, ?4)",
            )
            .map_err(err)?;
        for op in batch {
            match op {
                Op::Record(Record::Conversation { id, open, state }, _) => {
                    conv.execute(params![&**id, *open, state]).map_err(err)?;
                }
                Op::Record(Record::Activity { conversation, seq, frame, client_key }, _) => {
                    act.execute(params![&**conversation, *seq as i64, frame.as_str(), client_key]).map_err(err)?;
                }
                Op::Flush(_) => {}
            }
        }
    }
    tx.commit().map_err(err)
}

fn writer(mut conn: Connection, rx: mpsc::Receiver<Op>, failed: Arc<AtomicBool>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let result = write_batch(&mut conn, &batch);
        if let Err(e) = &result {
            tracing::error!("store write failed: {e}");
            failed.store(true, Ordering::Relaxed);
        }
        for op in batch {
            match op {
                Op::Record(_, Some(done)) => done(result.clone()),
                Op::Record(_, None) => {}
                Op::Flush(tx) => {
                    let _ = tx.send(result.clone());
                }
            }
        }
    }
    // All senders are gone: checkpoint the WAL so the file is self-contained.
    let _ = conn.pragma_update(None, "wal_checkpoint", "TRUNCATE");
}

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
