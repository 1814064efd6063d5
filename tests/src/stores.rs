//! Store doubles for the lifecycle tests: a store that commits slowly, and one that fails a
//! batch. Both commit asynchronously like the SQLite store (group commit on a task of their
//! own, callbacks in order), so the hub's deliver-after-commit paths run as in production,
//! only with a slow or broken disk behind them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use switchboard::store::{Commit, Done, Record, Store, StoreError};
use tokio::sync::{mpsc, oneshot};

enum Op {
    Record(Record, Option<Done>),
    Flush(oneshot::Sender<Result<(), StoreError>>),
}

/// Decides whether a batch fails.
type Verdict = dyn Fn(&[Op]) -> bool + Send + Sync;

/// An asynchronous store whose every batch takes `delay` and is then committed, or failed
/// when `fails` says so. Records are kept nowhere: these doubles test the live paths, not
/// recovery.
pub struct ScriptedStore {
    tx: mpsc::UnboundedSender<Op>,
    /// How many batches have failed so far.
    pub failures: Arc<AtomicUsize>,
}

impl ScriptedStore {
    fn start(delay: Duration, fails: Box<Verdict>) -> Arc<ScriptedStore> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Op>();
        let failures = Arc::new(AtomicUsize::new(0));
        let count = failures.clone();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                tokio::time::sleep(delay).await;
                let mut batch = vec![first];
                while let Ok(op) = rx.try_recv() {
                    batch.push(op);
                }
                let result = if fails(&batch) {
                    count.fetch_add(1, Ordering::SeqCst);
                    Err(StoreError("injected failure: the disk refused the batch".into()))
                } else {
                    Ok(())
                };
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
        });
        Arc::new(ScriptedStore { tx, failures })
    }

    /// Commits every batch, each after `delay` (a slow disk).
    pub fn slow(delay: Duration) -> Arc<ScriptedStore> {
        ScriptedStore::start(delay, Box::new(|_| false))
    }

    /// Commits after `delay`, but fails the first batch holding an activity whose JSON
    /// contains `marker` (once: a resend of the same activity is stored).
    pub fn failing_once(delay: Duration, marker: &str) -> Arc<ScriptedStore> {
        let marker = marker.to_owned();
        let fired = AtomicUsize::new(0);
        ScriptedStore::start(
            delay,
            Box::new(move |batch| {
                let hit = batch.iter().any(|op| {
                    matches!(op, Op::Record(Record::Activity { frame, .. }, _) if frame.as_str().contains(&marker))
                });
                hit && fired.fetch_add(1, Ordering::SeqCst) == 0
            }),
        )
    }
}

impl Store for ScriptedStore {
    fn synchronous(&self) -> bool {
        false
    }

    fn record(&self, rec: Record, done: Option<Done>) {
        if let Err(mpsc::error::SendError(Op::Record(_, Some(done)))) = self.tx.send(Op::Record(rec, done)) {
            done(Err(StoreError("the store has stopped".into())));
        }
    }

    fn flush(&self) -> Commit {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Op::Flush(tx)).is_err() {
            return Commit::Done;
        }
        Commit::Pending(Box::pin(async move { rx.await.unwrap_or(Ok(())) }))
    }
}
