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
use std::sync::{Arc, OnceLock};

/// A window's length: every window but the stream's last is full, so a chunk straddles at most
/// two of them (`WINDOW` > [`CHUNK_MAX`]).
const WINDOW: usize = 2 * CHUNK_MAX as usize;

/// Windows kept for reuse once every chunk cut from them is dropped: reused memory is already
/// mapped, where a fresh window costs a page fault per 4 KiB. Enough to cover the chunks a save
/// keeps in flight (its queue and its workers' batches: 8 windows of 8 MiB on the benches' data,
/// against 12 of 16 MiB with twice the chunks in flight, which faulted in 192 MiB to save a
/// 256 MiB file); beyond that windows are freed.
const SPARE_WINDOWS: usize = 10;

/// Buffers kept for the chunks that straddle two windows: about one chunk in eight, so a few
/// cover those in flight.
const SPARE_STRADDLES: usize = 4;

/// The length of the chunk that starts `available`, which holds at least [`CHUNK_MAX`] bytes or
/// the rest of the stream: StreamCDC's cut function, which never looks past `CHUNK_MAX` bytes,
/// so any holder of the same bytes cuts in the same place.
pub fn cut_length(available: &[u8]) -> usize {
    let cdc = fastcdc::v2020::FastCDC::new(available, CHUNK_MIN, CHUNK_AVG, CHUNK_MAX);
    cdc.cut(0, available.len()).1
}

/// StreamCDC's gear tables and masks (normalization level 1), taken from fastcdc itself.
struct GearCut {
    gear: Box<[u64; 256]>,
    gear_ls: Box<[u64; 256]>,
    mask_s: u64,
    mask_l: u64,
}

fn gear_cut() -> &'static GearCut {
    static TABLES: OnceLock<GearCut> = OnceLock::new();
    TABLES.get_or_init(|| {
        use fastcdc::v2020::{get_gear_with_seed, logarithm2, Normalization, MASKS};
        let (gear, gear_ls) = get_gear_with_seed(0);
        let bits = logarithm2(CHUNK_AVG);
        let normalization = Normalization::Level1.bits();
        GearCut {
            gear,
            gear_ls,
            mask_s: MASKS[(bits + normalization) as usize],
            mask_l: MASKS[(bits - normalization) as usize],
        }
    })
}

/// [`cut_length`] of `first` followed by `second`, without copying them together: the chunk
/// that straddles two windows is cut where it would be in one buffer, and only its own bytes
/// are copied then, not the [`CHUNK_MAX`] bytes the cut function may look at. The same steps
/// as fastcdc's `cut_gear` (two bytes per step, the shifted tables and masks), so the same
/// cut points.
fn cut_length_across(first: &[u8], second: &[u8]) -> usize {
    let total = first.len() + second.len();
    let (min, avg, max) = (CHUNK_MIN as usize, CHUNK_AVG as usize, CHUNK_MAX as usize);
    if total <= min {
        return total;
    }
    let remaining = total.min(max);
    let center = avg.min(remaining);
    let tables = gear_cut();
    let byte = |at: usize| match first.get(at) {
        Some(&b) => b,
        None => second[at - first.len()],
    };
    let mut hash = 0u64;
    let mut index = min / 2;
    for (end, mask) in [(center / 2, tables.mask_s), (remaining / 2, tables.mask_l)] {
        while index < end {
            let at = index * 2;
            hash = (hash << 2).wrapping_add(tables.gear_ls[usize::from(byte(at))]);
            if hash & (mask << 1) == 0 {
                return at;
            }
            hash = hash.wrapping_add(tables.gear[usize::from(byte(at + 1))]);
            if hash & mask == 0 {
                return at + 1;
            }
            index += 1;
        }
    }
    remaining
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
        let window = vec![0; self.window];
        advise_huge_pages(&window);
        Arc::new(window)
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

/// Asks the kernel to back a fresh, untouched window with transparent huge pages (where it
/// only does so on request, the common setting): its first fill then faults in 2 MiB at a time
/// instead of 4 KiB, about 2,000 page faults less per save. Only advice: an error changes
/// nothing but the speed, so it is ignored.
fn advise_huge_pages(buffer: &[u8]) {
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let begin = buffer.as_ptr() as usize;
    let start = begin.next_multiple_of(page);
    let end = (begin + buffer.len()) / page * page;
    if end > start {
        // SAFETY: [start, end) lies inside `buffer`'s allocation, and MADV_HUGEPAGE changes how
        // its pages are backed, never their contents.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
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

/// A buffer for a chunk that straddles two windows: a spare one whose chunk is gone (its pages
/// already mapped), else a new one. (Takes the field, like [`following`].)
fn straddle_buffer(spares: &mut Vec<Arc<Vec<u8>>>) -> Arc<Vec<u8>> {
    match spares.iter_mut().position(|b| Arc::get_mut(b).is_some()) {
        Some(at) => spares.swap_remove(at),
        None => Arc::new(Vec::with_capacity(CHUNK_MAX as usize)),
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
    /// Buffers of straddling chunks, kept for reuse like the windows.
    straddles: Vec<Arc<Vec<u8>>>,
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
            straddles: Vec::new(),
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
            // The cut looks at most CHUNK_MAX bytes past the tail's start, and next is full
            // unless it is the stream's last window.
            let tail = available.len();
            let len = cut_length_across(available, &next.buffer[..next.len]);
            if len < tail {
                // The cut function looks at two bytes per step, so the last byte of a tail of
                // odd length was never looked at alone, and it was a cut point: the chunk lies
                // in this window after all, and the next one waits.
                let (buffer, start) = (Arc::clone(&current.buffer), self.at);
                self.at += len;
                self.lookahead = Some(next);
                return Ok(Some(self.chunk(buffer, start..start + len)));
            }
            let mut straddling = straddle_buffer(&mut self.straddles);
            let bytes = Arc::get_mut(&mut straddling)
                .ok_or_else(|| io::Error::other("a free straddle buffer is still shared"))?;
            bytes.clear();
            bytes.extend_from_slice(available);
            bytes.extend_from_slice(&next.buffer[..len - tail]);
            if self.straddles.len() < SPARE_STRADDLES {
                self.straddles.push(Arc::clone(&straddling));
            }
            self.current = Some(next);
            self.at = len - tail;
            return Ok(Some(self.chunk(straddling, 0..len)));
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

    /// Cut across two slices, the cut is the one in the two joined: wherever they are split
    /// (odd and even, around the minimum, the normalization's centre and the maximum), on data
    /// with cut points and on data without any.
    #[test]
    fn a_cut_across_two_slices_is_the_cut_in_one() {
        let (min, avg, max) = (CHUNK_MIN as usize, CHUNK_AVG as usize, CHUNK_MAX as usize);
        let mut zeros_then_noise = vec![0; max + (1 << 20)];
        zeros_then_noise[max - 1000..].copy_from_slice(&noise((1 << 20) + 1000));
        for (name, data) in [
            ("noise", noise(max + 4097)),
            ("zeros", vec![0; max + 3]),
            ("zeros then noise", zeros_then_noise),
        ] {
            let mut splits = vec![0, 1, 2, 3, min - 1, min, min + 1, avg - 1, avg, avg + 1];
            splits.extend([max - 1, max, max + 1, data.len() - 1, data.len()]);
            let mut x = 0x2545_f491_4f6c_dd1du64;
            for _ in 0..24 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                splits.push((x % data.len() as u64) as usize);
            }
            for len in [data.len(), max, avg + 1, avg, min + 7, min, 100] {
                let data = &data[..len];
                let whole = cut_length(data);
                for &split in splits.iter().filter(|&&s| s <= len) {
                    let (first, second) = data.split_at(split);
                    assert_eq!(
                        cut_length_across(first, second),
                        whole,
                        "{name}: {len} bytes split at {split}"
                    );
                }
            }
        }
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
