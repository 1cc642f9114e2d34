//! Splits a byte stream into lines as bytes arrive, so output reaches the log while the
//! process still runs.

use super::{LogSink, OutputStream};

/// A line longer than this is delivered in pieces of about this size ([`LogSink::piece`]): a
/// process printing megabytes without a newline must not make us buffer all of it.
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
            let cut = utf8_boundary(&self.pending, MAX_LINE_BYTES);
            let rest = self.pending.split_off(cut);
            sink.piece(self.stream, &String::from_utf8_lossy(&self.pending));
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

/// The last position at or before `at` that does not split a UTF-8 character, so both pieces
/// of a cut line decode as they would have whole (`at` itself in bytes that are not UTF-8).
fn utf8_boundary(bytes: &[u8], at: usize) -> usize {
    let is_continuation = |b: u8| b & 0b1100_0000 == 0b1000_0000;
    (at.saturating_sub(3)..=at)
        .rev()
        .find(|&i| i > 0 && !bytes.get(i).copied().is_some_and(is_continuation))
        .unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines, with pieces of long lines marked by a trailing `+`.
    struct Pieces(Vec<String>);

    impl LogSink for Pieces {
        fn line(&mut self, _: OutputStream, line: &str) {
            self.0.push(line.to_owned());
        }
        fn piece(&mut self, _: OutputStream, piece: &str) {
            self.0.push(format!("{piece}+"));
        }
    }

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
    fn pieces_are_marked_and_never_split_a_character() {
        let mut long = vec![b'x'; MAX_LINE_BYTES - 1];
        long.extend_from_slice("é".as_bytes());
        let mut sink = Pieces(Vec::new());
        let mut splitter = LineSplitter::new(OutputStream::Stdout);
        splitter.push(&long, &mut sink);
        splitter.push(b"tail\n", &mut sink);
        splitter.finish(&mut sink);
        assert_eq!(sink.0.len(), 2);
        assert_eq!(sink.0[0], format!("{}+", "x".repeat(MAX_LINE_BYTES - 1)));
        assert_eq!(sink.0[1], "étail");
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
