//! Content-defined chunking of a byte stream, with the cut points of fastcdc's `StreamCDC`
//! (v2020, normalization level 1, the [`CHUNK_MIN`]/[`CHUNK_AVG`]/[`CHUNK_MAX`] sizes) so
//! entries stored before keep deduplicating. `StreamCDC` keeps a window of one maximum chunk
//! and, for every chunk, shifts the rest of the window down and zero-fills the freed space: on
//! 1 MiB chunks in a 4 MiB window that is about four bytes moved or written per byte chunked,
//! on the save's single reader thread. This reads into a window several chunks long and moves
//! the unread tail only when the window runs out, so each byte is copied once (into its chunk).

use crate::chunks::{CHUNK_AVG, CHUNK_MAX, CHUNK_MIN};
use std::io::{self, Read};

/// The window: a cut needs `CHUNK_MAX` bytes ahead (or the end of the stream), so the tail moved
/// when the window runs out is under `CHUNK_MAX`, once per `WINDOW - CHUNK_MAX` bytes.
const WINDOW: usize = 4 * CHUNK_MAX as usize;

/// The length of the chunk that starts `available`, which holds at least [`CHUNK_MAX`] bytes or
/// the rest of the stream: StreamCDC's cut function, which never looks past `CHUNK_MAX` bytes,
/// so any holder of the same bytes cuts in the same place.
pub fn cut_length(available: &[u8]) -> usize {
    let cdc = fastcdc::v2020::FastCDC::new(available, CHUNK_MIN, CHUNK_AVG, CHUNK_MAX);
    cdc.cut(0, available.len()).1
}

/// One chunk of the stream: where it starts and its bytes.
pub struct StreamChunk {
    pub offset: u64,
    pub data: Vec<u8>,
}

/// Iterates the chunks of `source`; a read error ends the iteration with that error.
pub struct StreamChunker<R> {
    source: R,
    window: Vec<u8>,
    start: usize,
    end: usize,
    offset: u64,
    eof: bool,
}

impl<R: Read> StreamChunker<R> {
    pub fn new(source: R) -> Self {
        StreamChunker {
            source,
            window: vec![0; WINDOW],
            start: 0,
            end: 0,
            offset: 0,
            eof: false,
        }
    }

    /// Reads until a full maximum chunk is buffered or the stream ends.
    fn fill(&mut self) -> io::Result<()> {
        if self.end - self.start >= CHUNK_MAX as usize || self.eof {
            return Ok(());
        }
        if self.window.len() - self.start < CHUNK_MAX as usize {
            self.window.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        while !self.eof && self.end < self.window.len() {
            match self.source.read(&mut self.window[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl<R: Read> Iterator for StreamChunker<R> {
    type Item = io::Result<StreamChunk>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Err(e) = self.fill() {
            return Some(Err(e));
        }
        if self.start == self.end {
            return None;
        }
        let available = &self.window[self.start..self.end];
        let len = cut_length(available);
        let data = available[..len].to_vec();
        let chunk = StreamChunk {
            offset: self.offset,
            data,
        };
        self.start += len;
        self.offset += len as u64;
        Some(Ok(chunk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that returns at most `step` bytes per call, like a file list read back to back.
    struct Dribble<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Dribble<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.step).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn cuts_where_fastcdc_stream_cdc_cuts() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut data: Vec<u8> = (0..40 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        // Long runs of one byte force maximum-size cuts.
        data[5 << 20..14 << 20].fill(7);
        let reference: Vec<(u64, Vec<u8>)> = fastcdc::v2020::StreamCDC::new(
            Dribble {
                data: &data,
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
            let ours: Vec<(u64, Vec<u8>)> = StreamChunker::new(Dribble { data: &data, step })
                .map(|c| {
                    let c = c.unwrap();
                    (c.offset, c.data)
                })
                .collect();
            assert_eq!(ours.len(), reference.len(), "read size {step}");
            assert!(ours == reference, "read size {step}");
        }
        assert_eq!(StreamChunker::new(&b""[..]).count(), 0);
        let small: Vec<_> = StreamChunker::new(&b"tiny"[..])
            .map(|c| c.unwrap())
            .collect();
        assert_eq!(small.len(), 1);
        assert_eq!(small[0].data, b"tiny");
    }
}
