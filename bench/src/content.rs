//! What the cached paths hold. When every `path:` of a step names files tracked in the commit
//! (a vendored directory, generated sources), the replay saves those real files, cut into
//! chunks as a save cuts them and compressed as the store compresses them. Otherwise (build
//! output, `~/.cargo`, anything the replay cannot produce without running the build) the
//! content is modelled: a list of chunks of a set average size, every save changing a set
//! share of the chunks of the content it starts from (the restored entry, or on a miss the
//! step's last saved content). Bytes and deduplication figures of modelled steps are
//! estimates, and the report says so with the model that produced them.

use crate::error::{BenchError, Result};
use crate::tree::Objects;
use kiln_cache::digest::Digest;
use kiln_cache::units::parse_size;
use serde::Serialize;

/// `--content-model size=256MiB,churn=0.1,ratio=0.4,chunk=1MiB` (any subset, any order).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ContentModel {
    /// Uncompressed bytes the cached paths hold.
    pub size: u64,
    /// Share of the content a save changes (0 to 1).
    pub churn: f64,
    /// Compressed size over raw size, for both the chunked store and the archive.
    pub ratio: f64,
    /// Average chunk size (kiln's content-defined chunks average 1 MiB).
    pub chunk: u64,
}

impl Default for ContentModel {
    fn default() -> Self {
        ContentModel {
            size: 256 << 20,
            churn: 0.1,
            ratio: 0.4,
            chunk: 1 << 20,
        }
    }
}

impl ContentModel {
    pub fn parse(text: &str) -> Result<ContentModel> {
        let mut model = ContentModel::default();
        let bad = |reason: String| BenchError::BadOption {
            what: "content model",
            value: text.to_string(),
            reason,
        };
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("{part:?} is not NAME=VALUE")))?;
            let fraction = || -> Result<f64> {
                value
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|v| (0.0..=1.0).contains(v))
                    .ok_or_else(|| bad(format!("{name} must be a number from 0 to 1")))
            };
            match name.trim() {
                "size" => model.size = parse_size(value).map_err(bad)?,
                "chunk" => {
                    model.chunk =
                        parse_size(value)
                            .ok()
                            .filter(|c| *c >= 1024)
                            .ok_or_else(|| {
                                bad(format!("chunk {value:?} must be a size of at least 1KiB"))
                            })?
                }
                "churn" => model.churn = fraction()?,
                "ratio" => {
                    model.ratio = fraction()?;
                    if model.ratio == 0.0 {
                        return Err(bad("ratio must be above 0".into()));
                    }
                }
                other => {
                    return Err(bad(format!(
                        "unknown part {other:?} (size, churn, ratio, chunk)"
                    )))
                }
            }
        }
        Ok(model)
    }

    /// Chunks an entry holds.
    pub fn chunks(&self) -> usize {
        (self.size.div_ceil(self.chunk).max(1)) as usize
    }

    /// Chunks one save replaces.
    pub fn changed_chunks(&self) -> usize {
        ((self.chunks() as f64) * self.churn).round() as usize
    }

    /// Compressed bytes of `n` chunks.
    pub fn compressed(&self, n: usize) -> u64 {
        (n as f64 * self.chunk as f64 * self.ratio).round() as u64
    }
}

/// One chunk of real content: its name, raw length and the bytes the store keeps.
pub struct RealChunk {
    pub digest: Digest,
    pub raw: u64,
    pub encoded: Vec<u8>,
}

/// The zstd level kiln's saves use.
const ZSTD_LEVEL: i32 = 3;

/// The chunks a save of these files (blob ids, in listing order) sends: their contents
/// concatenated and cut where the store's chunker cuts, each compressed as stored.
pub fn real_chunks(objects: &Objects, blobs: &[String]) -> Result<Vec<RealChunk>> {
    let mut data = Vec::new();
    for blob in blobs {
        data.extend_from_slice(&objects.blob(blob)?);
    }
    let mut chunks = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let len = kiln_cache::cut_length(&data[at..]).max(1);
        let piece = &data[at..at + len];
        chunks.push(RealChunk {
            digest: Digest::of(piece),
            raw: len as u64,
            encoded: kiln_cache::chunks::encode_chunk(piece, ZSTD_LEVEL),
        });
        at += len;
    }
    Ok(chunks)
}

/// Local speeds that turn bytes into time, in MB/s (10^6 bytes). The defaults are the medians
/// of `benches/cache-bench.sh` on a 256 MiB file in docs/cache.md (kiln's save and restore,
/// and `tar | zstd -3 -T0` / `zstd -d | tar -x` for the whole archive); `--speeds` sets others.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Speeds {
    pub kiln_save: f64,
    pub kiln_restore: f64,
    pub archive_save: f64,
    pub archive_restore: f64,
}

impl Default for Speeds {
    fn default() -> Self {
        Speeds {
            kiln_save: 677.0,
            kiln_restore: 1313.0,
            archive_save: 495.0,
            archive_restore: 773.0,
        }
    }
}

impl Speeds {
    /// `kiln-save=677,kiln-restore=1313,archive-save=495,archive-restore=773` (any subset).
    pub fn parse(text: &str) -> Result<Speeds> {
        let mut speeds = Speeds::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = |reason: &str| BenchError::BadOption {
                what: "speeds",
                value: text.to_string(),
                reason: reason.to_string(),
            };
            let (name, value) = part
                .split_once('=')
                .ok_or_else(|| bad("expected NAME=MB/s"))?;
            let v: f64 = value
                .trim()
                .parse()
                .ok()
                .filter(|v: &f64| *v > 0.0 && v.is_finite())
                .ok_or_else(|| bad("a speed must be a positive number of MB/s"))?;
            match name.trim() {
                "kiln-save" => speeds.kiln_save = v,
                "kiln-restore" => speeds.kiln_restore = v,
                "archive-save" => speeds.archive_save = v,
                "archive-restore" => speeds.archive_restore = v,
                _ => {
                    return Err(bad(
                        "names are kiln-save, kiln-restore, archive-save, archive-restore",
                    ))
                }
            }
        }
        Ok(speeds)
    }
}

/// Milliseconds to move `bytes` at `mb_per_s`.
pub fn millis(bytes: u64, mb_per_s: f64) -> f64 {
    bytes as f64 / (mb_per_s * 1e6) * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_parse_and_refuse_nonsense() {
        let m = ContentModel::parse("size=10MiB, churn=0.5").unwrap();
        assert_eq!((m.size, m.churn, m.ratio), (10 << 20, 0.5, 0.4));
        assert_eq!((m.chunks(), m.changed_chunks()), (10, 5));
        assert!(ContentModel::parse("churn=2").is_err());
        assert!(ContentModel::parse("colour=red").is_err());
        assert!(ContentModel::parse("ratio=0").is_err());
        assert_eq!(Speeds::parse("kiln-save=100").unwrap().kiln_save, 100.0);
        assert!(Speeds::parse("kiln-save=-1").is_err());
    }
}
