//! Hashing the ordered file list: every file's SHA-256 in parallel, then one SHA-256 over
//! the raw 32-byte digests in list order (what the runner's `hashFiles.ts` computes).

use super::source::FileSource;
use super::HashFilesError;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// Small enough to stay in L2 between `read` and hashing, large enough that big files take
/// few syscalls.
const READ_CHUNK: usize = 128 * 1024;

/// More threads than this cannot help (hashing is memory- and syscall-bound) and a huge
/// request must not spawn a thread per file.
const MAX_THREADS: usize = 256;

/// How often (in files) a worker looks at the clock.
const DEADLINE_CHECK_INTERVAL: usize = 64;

pub(crate) type FileDigest = [u8; 32];

/// The digest of each file, in order, or the error of the earliest file that failed (the
/// one GitHub, hashing sequentially, would report).
pub(crate) fn digest_files(
    source: &dyn FileSource,
    files: &[String],
    threads: usize,
    deadline: Instant,
) -> Result<Vec<FileDigest>, HashFilesError> {
    let workers = threads.min(MAX_THREADS).clamp(1, files.len().max(1));
    let next_index = AtomicUsize::new(0);
    let earliest_failure = AtomicUsize::new(usize::MAX);
    let queue = Queue {
        source,
        files,
        next_index: &next_index,
        earliest_failure: &earliest_failure,
        deadline,
    };
    let batches: Vec<Batch> = if workers == 1 {
        vec![queue.drain()]
    } else {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers)
                .map(|_| scope.spawn(|| queue.drain()))
                .collect();
            handles
                .into_iter()
                .map(|handle| {
                    handle
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect()
        })
    };

    let mut digests = vec![[0u8; 32]; files.len()];
    let mut failure: Option<(usize, HashFilesError)> = None;
    for batch in batches {
        for (index, digest) in batch.digests {
            digests[index] = digest;
        }
        if let Some((index, error)) = batch.failure {
            if failure
                .as_ref()
                .is_none_or(|(earliest, _)| index < *earliest)
            {
                failure = Some((index, error));
            }
        }
    }
    match failure {
        Some((_, error)) => Err(error),
        None => Ok(digests),
    }
}

/// SHA-256 over the concatenated per-file digests, lowercase hex; "" when nothing matched.
pub(crate) fn combine(digests: &[FileDigest]) -> String {
    if digests.is_empty() {
        return String::new();
    }
    let mut combined = Sha256::new();
    for digest in digests {
        combined.update(digest);
    }
    combined
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Files handed out by a shared index, so a few large files do not leave a worker idle.
struct Queue<'a> {
    source: &'a dyn FileSource,
    files: &'a [String],
    next_index: &'a AtomicUsize,
    earliest_failure: &'a AtomicUsize,
    deadline: Instant,
}

struct Batch {
    digests: Vec<(usize, FileDigest)>,
    failure: Option<(usize, HashFilesError)>,
}

impl Queue<'_> {
    fn drain(&self) -> Batch {
        let mut buffer = vec![0u8; READ_CHUNK];
        let mut batch = Batch {
            digests: Vec::new(),
            failure: None,
        };
        let mut handled = 0usize;
        loop {
            let index = self.next_index.fetch_add(1, Ordering::Relaxed);
            // Indices are handed out in order, so past a failure nothing can fail earlier.
            if index >= self.files.len() || index > self.earliest_failure.load(Ordering::Relaxed) {
                return batch;
            }
            handled += 1;
            let outcome =
                if handled % DEADLINE_CHECK_INTERVAL == 0 && Instant::now() > self.deadline {
                    Err(HashFilesError::TimedOut {
                        seconds: super::GITHUB_TIMEOUT.as_secs(),
                    })
                } else {
                    self.source
                        .sha256(&self.files[index], &mut buffer, self.deadline)
                };
            match outcome {
                Ok(digest) => batch.digests.push((index, digest)),
                Err(error) => {
                    self.earliest_failure.fetch_min(index, Ordering::Relaxed);
                    batch.failure = Some((index, error));
                    return batch;
                }
            }
        }
    }
}
