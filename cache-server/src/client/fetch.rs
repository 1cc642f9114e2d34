//! Ordered parallel chunk download: `concurrency` threads fetch ahead within a window, the
//! consumer receives chunks in manifest order.

use super::CacheClient;
use crate::digest::ChunkRef;
use crate::error::{CacheError, Result};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

/// Iterates the chunks whose `wanted` flag is set, in order, yielding `(index, bytes)`.
pub(super) struct OrderedFetch {
    results: Receiver<(usize, Result<Vec<u8>>)>,
    permits: SyncSender<()>,
    pending: BTreeMap<usize, Result<Vec<u8>>>,
    order: Vec<usize>,
    position: usize,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl OrderedFetch {
    pub(super) fn start(client: &CacheClient, chunks: &[ChunkRef], wanted: &[bool]) -> Self {
        let order: Vec<usize> = (0..chunks.len())
            .filter(|&i| wanted.get(i).copied().unwrap_or(true))
            .collect();
        let window = (client.concurrency * 2).max(2);
        let (permit_tx, permit_rx) = sync_channel::<()>(window);
        for _ in 0..window {
            let _ = permit_tx.try_send(());
        }
        let permit_rx = Arc::new(Mutex::new(permit_rx));
        let (result_tx, result_rx) = sync_channel(window);
        let next = Arc::new(AtomicUsize::new(0));
        let shared_order = Arc::new(order.clone());
        let chunks = Arc::new(chunks.to_vec());
        let workers = (0..client.concurrency.max(1))
            .map(|_| {
                let (client, permits, results, next, order, chunks) = (
                    client.clone(),
                    Arc::clone(&permit_rx),
                    result_tx.clone(),
                    Arc::clone(&next),
                    Arc::clone(&shared_order),
                    Arc::clone(&chunks),
                );
                std::thread::spawn(move || loop {
                    let got_permit = permits.lock().map(|rx| rx.recv().is_ok()).unwrap_or(false);
                    if !got_permit {
                        return;
                    }
                    let slot = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&index) = order.get(slot) else {
                        return;
                    };
                    let result = client.fetch_chunk(&chunks[index].digest).and_then(|data| {
                        if data.len() != chunks[index].len as usize {
                            Err(CacheError::Protocol(format!(
                                "chunk {index} has {} bytes, the manifest says {}",
                                data.len(),
                                chunks[index].len
                            )))
                        } else {
                            Ok(data)
                        }
                    });
                    if results.send((index, result)).is_err() {
                        return;
                    }
                })
            })
            .collect();
        OrderedFetch {
            results: result_rx,
            permits: permit_tx,
            pending: BTreeMap::new(),
            order,
            position: 0,
            workers,
        }
    }
}

impl Iterator for OrderedFetch {
    type Item = (usize, Result<Vec<u8>>);

    fn next(&mut self) -> Option<Self::Item> {
        let &want = self.order.get(self.position)?;
        loop {
            if let Some(r) = self.pending.remove(&want) {
                self.position += 1;
                let _ = self.permits.try_send(());
                return Some((want, r));
            }
            match self.results.recv() {
                Ok((i, r)) => {
                    self.pending.insert(i, r);
                }
                Err(_) => {
                    self.position = self.order.len();
                    return Some((
                        want,
                        Err(CacheError::Task("chunk download threads stopped".into())),
                    ));
                }
            }
        }
    }
}

impl Drop for OrderedFetch {
    fn drop(&mut self) {
        // Unblock workers: closing the channels makes their next recv/send fail.
        let (dead_tx, _) = sync_channel(0);
        drop(std::mem::replace(&mut self.permits, dead_tx));
        let (_, dead_rx) = sync_channel(0);
        drop(std::mem::replace(&mut self.results, dead_rx));
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}
