//! Splits a byte stream into lines as bytes arrive, so output reaches the log while the
//! process still runs.

use super::{LogSink, OutputStream};

/// A line longer than this is delivered in pieces of this size: a process printing megabytes
/// without a newline must not make us buffer all of it.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Accumulates bytes of one stream and emits complete lines (without `\n` or a trailing `\r`).
#[derive(Debug)]
pub struct LineSplitter {
    stream: OutputStream,
    pending: Vec<u8>,
}

impl LineSplitter {
    pub fn new(stream: OutputStream) -> Self {
        LineSplitter {
            stream,
            pending: Vec::new(),
        }
    }

    /// Feeds a chunk and emits every line it completes.
    pub fn push(&mut self, mut chunk: &[u8], sink: &mut dyn LogSink) {
        while let Some(newline) = chunk.iter().position(|&b| b == b'\n') {
            self.pending.extend_from_slice(&chunk[..newline]);
            self.emit(sink);
            chunk = &chunk[newline + 1..];
        }
        self.pending.extend_from_slice(chunk);
        while self.pending.len() >= MAX_LINE_BYTES {
            let rest = self.pending.split_off(MAX_LINE_BYTES);
            self.emit(sink);
            self.pending = rest;
        }
    }

    /// Emits a final line that had no terminator.
    pub fn finish(&mut self, sink: &mut dyn LogSink) {
        if !self.pending.is_empty() {
            self.emit(sink);
        }
    }

    fn emit(&mut self, sink: &mut dyn LogSink) {
        let mut line = &self.pending[..];
        if let Some(stripped) = line.strip_suffix(b"\r") {
            line = stripped;
        }
        sink.line(self.stream, &String::from_utf8_lossy(line));
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<String> {
        let mut sink: Vec<(OutputStream, String)> = Vec::new();
        let mut splitter = LineSplitter::new(OutputStream::Stdout);
        for chunk in chunks {
            splitter.push(chunk, &mut sink);
        }
        splitter.finish(&mut sink);
        sink.into_iter().map(|(_, line)| line).collect()
    }

    #[test]
    fn lines_split_across_chunks_are_joined() {
        assert_eq!(split(&[b"ab", b"c\nde", b"f\n"]), ["abc", "def"]);
    }

    #[test]
    fn partial_last_line_is_flushed_and_crlf_stripped() {
        assert_eq!(split(&[b"one\r\n\ntwo"]), ["one", "", "two"]);
    }

    #[test]
    fn invalid_utf8_is_replaced_not_dropped() {
        assert_eq!(split(&[b"a\xffb\n"]), ["a\u{fffd}b"]);
    }

    #[test]
    fn very_long_lines_are_delivered_in_bounded_pieces() {
        let long = vec![b'x'; MAX_LINE_BYTES * 2 + 5];
        let lines = split(&[&long]);
        assert_eq!(
            lines.iter().map(String::len).collect::<Vec<_>>(),
            [MAX_LINE_BYTES, MAX_LINE_BYTES, 5]
        );
    }
}
