//! kiln-cache: a content-addressed cache server for CI, and its client.
//!
//! - Store: content-defined chunks (FastCDC) named by blake3, zstd-compressed, shared between
//!   entries; entries `(repo, scope, key, version) -> manifest` in SQLite, write-once, looked up
//!   by GitHub's scope and key rules; eviction by age and size; verified reads.
//! - HTTP ([`http::CacheService`]): GitHub cache API v1 and v2 (with the Azure blob emulation),
//!   the native chunk API, signed downloads, `/metrics`.
//! - Client ([`client`]): save and restore of paths over the native API, for kiln's built-in
//!   `actions/cache`.
//!
//! The library never prints; errors are [`CacheError`].

mod beneath;
mod cdc;
pub mod chunks;
pub mod client;
pub mod digest;
mod durability;
pub mod error;
pub mod http;
pub mod index;
pub mod metrics;
mod prechunk;
mod ranges;
mod sharing;
pub mod stats;
pub mod store;
pub mod token;
pub mod units;
pub mod unpack;

/// Where the content-defined chunker cuts: kiln-bench chunks a commit's tracked files the way
/// a save would.
pub use cdc::cut_length;
pub use error::{CacheError, Result};
pub use http::{serve, serve_until_interrupted, CacheService, ServiceConfig};
pub use store::{CacheStore, StoreConfig};
pub use token::{Access, Secret, TokenRequest};
