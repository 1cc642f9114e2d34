//! kiln's gRPC protocol: the runner service (registered runners ↔ scheduler) and the control
//! service (users' commands ↔ scheduler). The `.proto` files under `proto/kiln/v1/` are the
//! contract, with a comment on every message and field; this crate compiles them, and reads
//! the conventions a message cannot carry by itself ([`outputs_in_order`],
//! [`client_endpoint`]).
//! Other crates convert these types to their own at their edge, so prost types never spread
//! into the scheduler's or the runner's logic.

/// Bumped on any change an older peer cannot ignore; `Register` refuses a runner whose
/// version differs, with a message naming both.
pub const PROTOCOL_VERSION: u32 = 1;

/// The connection settings every client of a scheduler uses (runners and users' commands):
/// a bounded connect, no Nagle delay on small calls, and HTTP/2 pings so a half-open
/// connection (a scheduler host that vanished) is noticed by the pings instead of by the
/// next call's deadline.
pub fn client_endpoint(endpoint: tonic::transport::Endpoint) -> tonic::transport::Endpoint {
    endpoint
        .connect_timeout(std::time::Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(std::time::Duration::from_secs(20))
        .keep_alive_timeout(std::time::Duration::from_secs(10))
        .keep_alive_while_idle(true)
}

/// The `kiln.v1` package: messages, clients (`*_client`) and servers (`*_server`).
pub mod v1 {
    tonic::include_proto!("kiln.v1");
}

/// A job's outputs in their declared order: `names` first (those `outputs` holds), then any
/// other entries sorted by name, since a protobuf map keeps no order of its own.
pub fn outputs_in_order(
    outputs: &std::collections::HashMap<String, String>,
    names: &[String],
) -> Vec<(String, String)> {
    let mut ordered: Vec<(String, String)> = Vec::with_capacity(outputs.len());
    for name in names {
        if let Some(value) = outputs.get(name) {
            if !ordered.iter().any(|(n, _)| n == name) {
                ordered.push((name.clone(), value.clone()));
            }
        }
    }
    let mut rest: Vec<(String, String)> = outputs
        .iter()
        .filter(|(name, _)| !names.contains(name))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    rest.sort();
    ordered.extend(rest);
    ordered
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_follow_their_names_then_the_rest_sorted() {
        let outputs = [("b", "2"), ("a", "1"), ("z", "26"), ("y", "25")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into_iter()
            .collect();
        let names = ["z", "ghost", "b", "z"].map(str::to_owned);
        let ordered: Vec<String> = outputs_in_order(&outputs, &names)
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        assert_eq!(ordered, ["z", "b", "a", "y"]);
    }
}
