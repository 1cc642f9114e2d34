//! Checkpoints off the request path: a thread with its own connection copies the write-ahead
//! log into the database file (and syncs both, which is where `synchronous = NORMAL` pays its
//! fsyncs) a moment after commits happened, so no commit waits for that work. The writer's
//! own automatic checkpoint stays only as a backstop that bounds the log if this thread
//! falls behind (see `schema::connect`).

use super::error::{Result, StoreError};
use super::schema;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the thread looks for new commits to checkpoint.
const INTERVAL: Duration = Duration::from_millis(200);

pub(crate) struct Checkpointer {
    /// Commits since the store opened; the thread checkpoints when it moved.
    commits: Arc<AtomicU64>,
    /// Dropped to stop the thread.
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    pub(crate) fn start(path: &Path) -> Result<Checkpointer> {
        let conn = schema::connect(path)?;
        let commits = Arc::new(AtomicU64::new(0));
        let seen = commits.clone();
        let (stop, stopped) = channel::<()>();
        let thread = std::thread::Builder::new()
            .name("kiln-scheduler-checkpoint".into())
            .spawn(move || {
                let mut done = 0;
                loop {
                    let last = matches!(
                        stopped.recv_timeout(INTERVAL),
                        Err(RecvTimeoutError::Disconnected)
                    );
                    let now = seen.load(Ordering::Acquire);
                    if now != done {
                        // PASSIVE: as much of the log as no reader holds, without waiting for
                        // anyone. A failure (a busy database) is retried at the next round;
                        // the backstop bounds the log meanwhile.
                        if conn
                            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                            .is_ok()
                        {
                            done = now;
                        }
                    }
                    if last {
                        return;
                    }
                }
            })
            .map_err(StoreError::io("start the checkpoint thread for", path))?;
        Ok(Checkpointer {
            commits,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub(crate) fn commits(&self) -> u64 {
        self.commits.load(Ordering::Acquire)
    }

    /// A transaction committed: the next round checkpoints it.
    pub(crate) fn committed(&self) {
        self.commits.fetch_add(1, Ordering::Release);
    }
}

impl Drop for Checkpointer {
    /// Checkpoints what is left and waits for the thread, so a closed store leaves its log
    /// folded into the database.
    fn drop(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
