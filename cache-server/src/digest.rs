//! Chunk names: the blake3 hash of the chunk's uncompressed bytes.

use crate::error::{CacheError, Result};
use std::fmt;

/// A blake3 digest naming one chunk of content.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    pub fn of(data: &[u8]) -> Self {
        Digest(*blake3::hash(data).as_bytes())
    }

    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 15)]));
        }
        s
    }

    /// Parses 64 lowercase or uppercase hex digits.
    pub fn from_hex(text: &str) -> Result<Self> {
        let bytes = text.as_bytes();
        if bytes.len() != 64 {
            return Err(CacheError::BadRequest(format!(
                "chunk digest must be 64 hex digits, got {} characters",
                bytes.len()
            )));
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let hi = hex_value(pair[0]);
            let lo = hex_value(pair[1]);
            match (hi, lo) {
                (Some(h), Some(l)) => out[i] = (h << 4) | l,
                _ => {
                    return Err(CacheError::BadRequest(format!(
                        "chunk digest {text:?} is not hexadecimal"
                    )))
                }
            }
        }
        Ok(Digest(out))
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

/// One chunk reference in a manifest: its digest and uncompressed length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkRef {
    pub digest: Digest,
    pub len: u32,
}

/// Serialises a chunk list as 36 bytes per chunk (digest, little-endian length).
pub fn encode_chunk_list(chunks: &[ChunkRef]) -> Vec<u8> {
    let mut out = Vec::with_capacity(chunks.len() * 36);
    for c in chunks {
        out.extend_from_slice(&c.digest.0);
        out.extend_from_slice(&c.len.to_le_bytes());
    }
    out
}

pub fn decode_chunk_list(bytes: &[u8]) -> Result<Vec<ChunkRef>> {
    if bytes.len() % 36 != 0 {
        return Err(CacheError::Protocol(format!(
            "chunk list of {} bytes is not a multiple of 36",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(36)
        .map(|rec| {
            let mut d = [0u8; 32];
            d.copy_from_slice(&rec[..32]);
            let mut l = [0u8; 4];
            l.copy_from_slice(&rec[32..]);
            ChunkRef {
                digest: Digest(d),
                len: u32::from_le_bytes(l),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_rejects_garbage() {
        let d = Digest::of(b"abc");
        assert_eq!(
            d.to_hex(),
            "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
        );
        assert_eq!(Digest::from_hex(&d.to_hex()).unwrap(), d);
        assert!(Digest::from_hex("zz").is_err());
        assert!(Digest::from_hex(&"g".repeat(64)).is_err());
        assert!(Digest::from_hex("é".repeat(32).as_str()).is_err());
    }

    #[test]
    fn chunk_list_round_trip() {
        let list = vec![
            ChunkRef {
                digest: Digest::of(b"a"),
                len: 1,
            },
            ChunkRef {
                digest: Digest::of(b"bb"),
                len: 2,
            },
        ];
        assert_eq!(decode_chunk_list(&encode_chunk_list(&list)).unwrap(), list);
        assert!(decode_chunk_list(&[0u8; 35]).is_err());
    }
}
