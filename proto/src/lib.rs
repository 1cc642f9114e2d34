//! kiln's gRPC protocol: the runner service (registered runners ↔ scheduler) and the control
//! service (users' commands ↔ scheduler). The `.proto` files under `proto/kiln/v1/` are the
//! contract, with a comment on every message and field; this crate only compiles them.
//! Other crates convert these types to their own at their edge, so prost types never spread
//! into the scheduler's or the runner's logic.

/// Bumped on any change an older peer cannot ignore; `Register` refuses a runner whose
/// version differs, with a message naming both.
pub const PROTOCOL_VERSION: u32 = 1;

/// The `kiln.v1` package: messages, clients (`*_client`) and servers (`*_server`).
pub mod v1 {
    tonic::include_proto!("kiln.v1");
}
