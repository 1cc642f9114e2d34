//! Content-defined chunking of a byte stream, with the cut points of fastcdc's `StreamCDC`
//! (v2020, normalization level 1, the [`CHUNK_MIN`]/[`CHUNK_AVG`]/[`CHUNK_MAX`] sizes) so
//! entries stored before keep deduplicating. `StreamCDC` keeps a window of one maximum chunk
//! and, for every chunk, shifts the rest of the window down and zero-fills the freed space: on
//! 1 MiB chunks in a 4 MiB window that is about four bytes moved or written per byte chunked,
//! on the save's single reader thread. This reads the stream into windows several chunks long,
//! each filled once and then only read, and hands the chunks out as ranges of them; the one
//! chunk that straddles two windows is the only one copied (about 1 MiB in 8). Windows are
//! reused once their chunks are gone. [`StreamChunker::threaded`] reads on a thread of its own,
//! so reading (for a save: opening thousands of files) overlaps the cutting.

use crate::chunks::{CHUNK_AVG, CHUNK_MAX, CHUNK_MIN};
use std::collections::VecDeque;
use std::io::{self, Read};
use std::ops::{Deref, Range};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

/// A window's length: every window but the stream's last is full, so a chunk straddles at most
/// two of them (`WINDOW` > [`CHUNK_MAX`]).
const WINDOW: usize = 2 * CHUNK_MAX as usize;

/// Windows kept for reuse once every chunk cut from them is dropped: reused memory is already
/// mapped, where a fresh window costs a page fault per 4 KiB. Enough to cover the chunks a save
/// keeps in flight (its queue and its workers' batches: 8 windows of 8 MiB on the benches' data,
/// against 12 of 16 MiB with twice the chunks in flight, which faulted in 192 MiB to save a
/// 256 MiB file); beyond that windows are freed.
const SPARE_WINDOWS: usize = 10;

/// The length of the chunk that starts `available`, which holds at least [`CHUNK_MAX`] bytes or
/// the rest of the stream: StreamCDC's cut function, which never looks past `CHUNK_MAX` bytes,
/// so any holder of the same bytes cuts in the same place.
pub fn cut_length(available: &[u8]) -> usize {
    let cdc = fastcdc::v2020::FastCDC::new(available, CHUNK_MIN, CHUNK_AVG, CHUNK_MAX);
    cdc.cut(0, available.len()).1
}

/// The cut in `available` when the bytes after it cannot move it, else None. The cut function
/// returns the whole input when it finds no cut point in it: only a shorter answer (a cut point
/// found, and more bytes cannot change the bytes before it) or a maximum-size chunk is final.
fn decided_cut(available: &[u8]) -> Option<usize> {
    let len = cut_length(available);
    (len < available.len() || len >= CHUNK_MAX as usize).then_some(len)
}

/// A chunk's bytes: a range of the window they were read into, shared rather than copied out.
#[derive(Clone)]
pub struct ChunkBytes {
    buffer: Arc<Vec<u8>>,
    range: Range<usize>,
}

impl Deref for ChunkBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.buffer[self.range.clone()]
    }
}

impl AsRef<[u8]> for ChunkBytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl std::fmt::Debug for ChunkBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChunkBytes({} bytes)", self.range.len())
    }
}

/// One chunk of the stream: where it starts and its bytes.
pub struct StreamChunk {
    pub offset: u64,
    pub data: ChunkBytes,
}

/// A window read full (or to the end of the stream), never written again.
struct Filled {
    buffer: Arc<Vec<u8>>,
    len: usize,
}

/// Reads a stream into windows, reusing those whose chunks are all dropped.
struct WindowReader<R> {
    source: R,
    /// [`WINDOW`]; other sizes (over [`CHUNK_MAX`]) in tests.
    window: usize,
    eof: bool,
    /// Windows handed out, oldest first.
    retired: VecDeque<Arc<Vec<u8>>>,
}

impl<R: Read> WindowReader<R> {
    fn new(source: R, window: usize) -> Self {
        WindowReader {
            source,
            window,
            eof: false,
            retired: VecDeque::new(),
        }
    }

    /// A window nobody else holds: a retired one whose chunks are all gone, else a new one.
    fn free_window(&mut self) -> Arc<Vec<u8>> {
        if let Some(at) = self
            .retired
            .iter_mut()
            .position(|w| Arc::get_mut(w).is_some())
        {
            if let Some(window) = self.retired.remove(at) {
                return window;
            }
        }
        Arc::new(vec![0; self.window])
    }

    /// The next window, full unless the stream ends in it; None once the stream is read.
    fn next_window(&mut self) -> io::Result<Option<Filled>> {
        if self.eof {
            return Ok(None);
        }
        let mut window = self.free_window();
        let buffer = Arc::get_mut(&mut window)
            .ok_or_else(|| io::Error::other("a free chunk window is still shared"))?;
        let mut len = 0;
        while len < buffer.len() {
            match self.source.read(&mut buffer[len..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if len == 0 {
            return Ok(None);
        }
        self.retired.push_back(Arc::clone(&window));
        if self.retired.len() > SPARE_WINDOWS {
            self.retired.pop_front();
        }
        Ok(Some(Filled {
            buffer: window,
            len,
        }))
    }
}

/// Where the windows come from: read on the caller's thread, or on a reader thread.
enum Windows<R> {
    Inline(WindowReader<R>),
    Threaded(Receiver<io::Result<Filled>>),
}

impl<R: Read> Windows<R> {
    fn next_window(&mut self) -> io::Result<Option<Filled>> {
        match self {
            Windows::Inline(reader) => reader.next_window(),
            // A closed channel: the reader sent its last window (or its error) and ended.
            Windows::Threaded(rx) => rx.recv().map_or(Ok(None), |w| w.map(Some)),
        }
    }
}

/// The window after the current one: the one read ahead, if any, else the next from `windows`.
/// (Takes the two fields rather than the chunker, which holds a borrow of its current window.)
fn following<R: Read>(
    lookahead: &mut Option<Filled>,
    windows: &mut Windows<R>,
) -> io::Result<Option<Filled>> {
    match lookahead.take() {
        Some(window) => Ok(Some(window)),
        None => windows.next_window(),
    }
}

/// Iterates the chunks of `source`; a read error ends the iteration with that error.
pub struct StreamChunker<R> {
    windows: Windows<R>,
    current: Option<Filled>,
    /// Where the next chunk starts in `current`.
    at: usize,
    /// The window after `current`, when it was read before `current` was used up.
    lookahead: Option<Filled>,
    offset: u64,
    failed: bool,
}

impl<R: Read> StreamChunker<R> {
    pub fn new(source: R) -> Self {
        Self::over(Windows::Inline(WindowReader::new(source, WINDOW)))
    }

    fn over(windows: Windows<R>) -> Self {
        StreamChunker {
            windows,
            current: None,
            at: 0,
            lookahead: None,
            offset: 0,
            failed: false,
        }
    }

    fn chunk(&mut self, buffer: Arc<Vec<u8>>, range: Range<usize>) -> StreamChunk {
        let offset = self.offset;
        self.offset += range.len() as u64;
        StreamChunk {
            offset,
            data: ChunkBytes { buffer, range },
        }
    }

    fn next_chunk(&mut self) -> io::Result<Option<StreamChunk>> {
        loop {
            let Some(current) = &self.current else {
                let next = following(&mut self.lookahead, &mut self.windows)?;
                match next {
                    Some(window) => {
                        self.current = Some(window);
                        self.at = 0;
                        continue;
                    }
                    None => return Ok(None),
                }
            };
            let available = &current.buffer[self.at..current.len];
            if available.is_empty() {
                self.current = None;
                continue;
            }
            if let Some(len) = decided_cut(available) {
                let (buffer, start) = (Arc::clone(&current.buffer), self.at);
                self.at += len;
                return Ok(Some(self.chunk(buffer, start..start + len)));
            }
            // No cut point before the window's end: the chunk may run into the next window.
            let next = following(&mut self.lookahead, &mut self.windows)?;
            let Some(next) = next else {
                let (buffer, range) = (Arc::clone(&current.buffer), self.at..current.len);
                self.current = None;
                return Ok(Some(self.chunk(buffer, range)));
            };
            // The tail plus what a cut may look at beyond it (next is full unless it is the
            // stream's last window, so this is CHUNK_MAX bytes or the rest of the stream).
            let tail = available.len();
            let ahead = (CHUNK_MAX as usize - tail).min(next.len);
            let mut straddling = Vec::with_capacity(tail + ahead);
            straddling.extend_from_slice(available);
            straddling.extend_from_slice(&next.buffer[..ahead]);
            let len = cut_length(&straddling);
            if len < tail {
                // The cut function looks at two bytes per step, so the last byte of a tail of
                // odd length was never looked at alone, and it was a cut point: the chunk lies
                // in this window after all, and the next one waits.
                let (buffer, start) = (Arc::clone(&current.buffer), self.at);
                self.at += len;
                self.lookahead = Some(next);
                return Ok(Some(self.chunk(buffer, start..start + len)));
            }
            straddling.truncate(len);
            self.current = Some(next);
            self.at = len - tail;
            return Ok(Some(self.chunk(Arc::new(straddling), 0..len)));
        }
    }
}

#[cfg(test)]
impl<R: Read> StreamChunker<R> {
    fn with_window(source: R, window: usize) -> Self {
        Self::over(Windows::Inline(WindowReader::new(source, window)))
    }
}

impl<R: Read + Send + 'static> StreamChunker<R> {
    /// Reads `source` on a thread of its own, a window ahead of the cutting. The thread ends
    /// when the stream does, on a read error (which the iteration then returns), or when the
    /// chunker is dropped.
    pub fn threaded(source: R) -> io::Result<Self> {
        let (tx, rx) = sync_channel(1);
        std::thread::Builder::new()
            .name("kiln-cache-read".into())
            .spawn(move || {
                let mut reader = WindowReader::new(source, WINDOW);
                loop {
                    let next = match reader.next_window() {
                        // Not sent: the closed channel says the stream ended.
                        Ok(None) => return,
                        Ok(Some(window)) => Ok(window),
                        Err(e) => Err(e),
                    };
                    let failed = next.is_err();
                    if tx.send(next).is_err() || failed {
                        return;
                    }
                }
            })?;
        Ok(Self::over(Windows::Threaded(rx)))
    }
}

impl<R: Read> Iterator for StreamChunker<R> {
    type Item = io::Result<StreamChunk>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.next_chunk() {
            Ok(chunk) => chunk.map(Ok),
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that returns at most `step` bytes per call, like a file list read back to back.
    struct Dribble {
        data: Arc<Vec<u8>>,
        at: usize,
        step: usize,
    }

    impl Read for Dribble {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.step).min(self.data.len() - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    fn noise(len: usize) -> Vec<u8> {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn chunks_of(chunker: impl Iterator<Item = io::Result<StreamChunk>>) -> Vec<(u64, Vec<u8>)> {
        chunker
            .map(|c| {
                let c = c.unwrap();
                (c.offset, c.data.to_vec())
            })
            .collect()
    }

    #[test]
    fn cuts_where_fastcdc_stream_cdc_cuts() {
        let mut runs = noise(40 << 20);
        // Long runs of one byte force maximum-size cuts, also across a window boundary.
        runs[5 << 20..14 << 20].fill(7);
        runs[WINDOW - (3 << 20)..WINDOW + (5 << 20)].fill(9);
        let mut data_sets = vec![runs];
        // Streams ending at, just after and just before a window boundary.
        for len in [WINDOW, WINDOW + 1, 2 * WINDOW - 3] {
            data_sets.push(noise(len));
        }
        for data in data_sets {
            let data = Arc::new(data);
            let reference: Vec<(u64, Vec<u8>)> = fastcdc::v2020::StreamCDC::new(
                Dribble {
                    data: Arc::clone(&data),
                    at: 0,
                    step: 1 << 20,
                },
                CHUNK_MIN,
                CHUNK_AVG,
                CHUNK_MAX,
            )
            .map(|c| {
                let c = c.unwrap();
                (c.offset, c.data)
            })
            .collect();
            for step in [4096, 300_001, 64 << 20] {
                let reader = || Dribble {
                    data: Arc::clone(&data),
                    at: 0,
                    step,
                };
                let inline = chunks_of(StreamChunker::new(reader()));
                assert_eq!(inline.len(), reference.len(), "read size {step}");
                assert!(inline == reference, "read size {step}");
                let threaded = chunks_of(StreamChunker::threaded(reader()).unwrap());
                assert!(threaded == reference, "threaded, read size {step}");
            }
        }
        assert_eq!(StreamChunker::new(&b""[..]).count(), 0);
        let small: Vec<_> = StreamChunker::new(&b"tiny"[..])
            .map(|c| c.unwrap())
            .collect();
        assert_eq!(small.len(), 1);
        assert_eq!(&*small[0].data, b"tiny");
    }

    /// The cut function steps two bytes at a time, so a window's tail of odd length hides its
    /// last byte from a cut made in that window alone. A window ending one byte after a chunk
    /// of even length puts that chunk's cut point exactly there.
    #[test]
    fn a_cut_on_the_last_byte_of_a_window_loses_nothing() {
        let data = Arc::new(noise(24 << 20));
        let reader = |step| Dribble {
            data: Arc::clone(&data),
            at: 0,
            step,
        };
        let reference = chunks_of(StreamChunker::new(reader(1 << 20)));
        let mut tried = 0;
        for (offset, bytes) in &reference {
            let end = *offset as usize + bytes.len();
            let fits = end > CHUNK_MAX as usize && end + 1 < data.len();
            if bytes.len() % 2 != 0 || bytes.len() >= CHUNK_MAX as usize || !fits {
                continue;
            }
            for step in [4096, 1 << 20] {
                let ours = chunks_of(StreamChunker::with_window(reader(step), end + 1));
                assert!(
                    ours == reference,
                    "window of {} bytes, read size {step}",
                    end + 1
                );
            }
            tried += 1;
            if tried == 4 {
                break;
            }
        }
        assert!(tried > 0, "no chunk of even length in the data");
    }

    /// Whatever the window size, the chunks are StreamCDC's.
    #[test]
    fn any_window_size_cuts_the_same_chunks() {
        let mut bytes = noise(14 << 20);
        bytes[3 << 20..9 << 20].fill(0);
        let data = Arc::new(bytes);
        let reader = |step| Dribble {
            data: Arc::clone(&data),
            at: 0,
            step,
        };
        let reference = chunks_of(StreamChunker::new(reader(1 << 20)));
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..24 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let window = CHUNK_MAX as usize + 1 + (x % (2 * CHUNK_MAX as u64)) as usize;
            let ours = chunks_of(StreamChunker::with_window(reader(65_537), window));
            assert!(ours == reference, "window of {window} bytes");
        }
    }

    /// Fails after `good` bytes.
    struct Failing {
        good: usize,
    }

    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.good == 0 {
                return Err(io::Error::other("disk on fire"));
            }
            let n = buf.len().min(self.good);
            buf[..n].fill(1);
            self.good -= n;
            Ok(n)
        }
    }

    #[test]
    fn a_read_error_ends_the_chunks_with_that_error() {
        for threaded in [false, true] {
            let source = Failing { good: WINDOW + 5 };
            let chunker: Box<dyn Iterator<Item = io::Result<StreamChunk>>> = if threaded {
                Box::new(StreamChunker::threaded(source).unwrap())
            } else {
                Box::new(StreamChunker::new(source))
            };
            let results: Vec<_> = chunker.collect();
            let last = results.last().expect("at least the error");
            let error = last.as_ref().err().expect("the stream ends with its error");
            assert!(error.to_string().contains("disk on fire"), "{error}");
            assert!(results[..results.len() - 1].iter().all(|r| r.is_ok()));
        }
    }

    #[test]
    fn windows_are_reused_once_their_chunks_are_dropped() {
        let data = Arc::new(noise(6 * WINDOW));
        let mut reader = WindowReader::new(
            Dribble {
                data,
                at: 0,
                step: usize::MAX,
            },
            WINDOW,
        );
        let first = reader.next_window().unwrap().unwrap();
        let first_ptr = Arc::as_ptr(&first.buffer);
        let held = reader.next_window().unwrap().unwrap();
        drop(first);
        let third = reader.next_window().unwrap().unwrap();
        assert_eq!(
            Arc::as_ptr(&third.buffer),
            first_ptr,
            "the free window is reused"
        );
        assert_ne!(Arc::as_ptr(&held.buffer), first_ptr);
    }
}
