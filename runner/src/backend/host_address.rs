//! The address of this machine that job containers can reach: where `kiln run` serves its
//! embedded cache server to Docker jobs.
//!
//! Docker engines report it differently. Newer ones (and any daemon started with `bip`) put
//! the gateway in the default bridge network's IPAM config; 20.10 as Debian ships it reports
//! only `Subnet: 172.17.0.0/16` when it created `docker0` itself. So, in order: the IPAM
//! gateway; the address of the bridge interface on this machine (a custom `bip`, or a bridge
//! that existed before the daemon); the subnet's first host (what Docker gives a bridge it
//! creates); and last, the default route inside a throwaway container of an image that is
//! already present (never pulled).

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use bollard::models::{ContainerCreateBody, HostConfig, IpamConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectNetworkOptions, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt as _;

/// The name Docker gives the default bridge's interface unless `bridge` is set in daemon.json.
const DEFAULT_BRIDGE_INTERFACE: &str = "docker0";
const BRIDGE_NAME_OPTION: &str = "com.docker.network.bridge.name";
/// Creating, starting and removing a container takes well under a second on an idle daemon;
/// a busy one gets this long before the probe is given up.
const PROBE_LIMIT: Duration = Duration::from_secs(30);

/// Where containers reach this machine, and how that was found (for the run's first lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAddress {
    pub ip: IpAddr,
    pub found: String,
}

/// What the default bridge network says about itself.
#[derive(Debug, Default, Clone)]
pub struct BridgeInfo {
    pub interface: String,
    pub ipam: Vec<IpamConfig>,
}

/// The address, or why none was found (every source tried, in order).
pub async fn find(docker: &Docker, images: &[String]) -> Result<HostAddress, String> {
    let mut tried = Vec::new();
    match docker
        .inspect_network("bridge", None::<InspectNetworkOptions>)
        .await
    {
        Ok(network) => {
            let bridge = BridgeInfo {
                interface: network
                    .options
                    .as_ref()
                    .and_then(|o| o.get(BRIDGE_NAME_OPTION))
                    .filter(|name| !name.is_empty())
                    .cloned()
                    .unwrap_or_else(|| DEFAULT_BRIDGE_INTERFACE.to_owned()),
                ipam: network.ipam.and_then(|i| i.config).unwrap_or_default(),
            };
            match from_bridge(&bridge, &local_ipv4_addresses(&bridge.interface)) {
                Ok(found) => return Ok(found),
                Err(why) => tried.extend(why),
            }
        }
        Err(error) => tried.push(format!(
            "the daemon did not describe its `bridge` network ({error})"
        )),
    }
    match tokio::time::timeout(PROBE_LIMIT, ask_a_container(docker, images)).await {
        Ok(Ok(found)) => Ok(found),
        Ok(Err(why)) => {
            tried.push(why);
            Err(tried.join("; "))
        }
        Err(_) => {
            tried.push(format!(
                "a container asked for its default route gave no answer within {}s",
                PROBE_LIMIT.as_secs()
            ));
            Err(tried.join("; "))
        }
    }
}

/// The first three sources, from what the daemon reported and the bridge interface's IPv4
/// addresses on this machine; `Err` lists what each source lacked.
pub fn from_bridge(
    bridge: &BridgeInfo,
    interface_addresses: &[Ipv4Addr],
) -> Result<HostAddress, Vec<String>> {
    if let Some(gateway) = bridge
        .ipam
        .iter()
        .filter_map(|c| c.gateway.as_deref()?.parse::<IpAddr>().ok())
        // Containers on the default bridge always have IPv4; an IPv6 gateway is a last choice.
        .min_by_key(IpAddr::is_ipv6)
    {
        return Ok(HostAddress {
            ip: gateway,
            found: "the bridge network's gateway".to_owned(),
        });
    }
    let subnets: Vec<Subnet> = bridge
        .ipam
        .iter()
        .filter_map(|c| Subnet::parse(c.subnet.as_deref()?))
        .collect();
    let mut why = vec!["the bridge network reports no gateway".to_owned()];
    let on_bridge = interface_addresses
        .iter()
        .find(|ip| subnets.is_empty() || subnets.iter().any(|s| s.contains(**ip)));
    if let Some(ip) = on_bridge {
        return Ok(HostAddress {
            ip: IpAddr::V4(*ip),
            found: format!("the address of {} on this machine", bridge.interface),
        });
    }
    why.push(format!(
        "{} has no IPv4 address{} on this machine",
        bridge.interface,
        if subnets.is_empty() {
            String::new()
        } else {
            format!(" in {}", list(&subnets))
        }
    ));
    if let Some((subnet, host)) = subnets.iter().find_map(|s| Some((s, s.first_host()?))) {
        return Ok(HostAddress {
            ip: IpAddr::V4(host),
            found: format!("the first host of the bridge network's subnet {subnet}"),
        });
    }
    why.push("the bridge network reports no IPv4 subnet".to_owned());
    Err(why)
}

fn list(subnets: &[Subnet]) -> String {
    subnets
        .iter()
        .map(Subnet::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The IPv4 addresses `interface` has on this machine (none when it does not exist here, as
/// with a daemon on another machine or in a VM).
fn local_ipv4_addresses(interface: &str) -> Vec<Ipv4Addr> {
    let Ok(addresses) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addresses
        .filter(|a| a.interface_name == interface)
        .filter_map(|a| Some(a.address?.as_sockaddr_in()?.ip()))
        .collect()
}

/// An IPv4 network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    network: Ipv4Addr,
    prefix: u8,
}

impl Subnet {
    pub fn parse(text: &str) -> Option<Subnet> {
        let (address, prefix) = text.trim().split_once('/')?;
        let address: Ipv4Addr = address.parse().ok()?;
        let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32)?;
        Some(Subnet {
            network: Ipv4Addr::from(u32::from(address) & Self::mask(prefix)),
            prefix,
        })
    }

    fn mask(prefix: u8) -> u32 {
        u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & Self::mask(self.prefix) == u32::from(self.network)
    }

    /// The address after the network's own; none in a /31 or /32, which have no such host.
    pub fn first_host(&self) -> Option<Ipv4Addr> {
        (self.prefix <= 30).then(|| Ipv4Addr::from(u32::from(self.network) + 1))
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The gateway of the default route in a `/proc/net/route` table.
pub fn default_gateway(route_table: &str) -> Option<Ipv4Addr> {
    const RTF_UP_GATEWAY: u32 = 0x1 | 0x2;
    route_table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (destination, gateway, flags) = (fields.get(1)?, fields.get(2)?, fields.get(3)?);
        let flags = u32::from_str_radix(flags, 16).ok()?;
        if *destination != "00000000" || flags & RTF_UP_GATEWAY != RTF_UP_GATEWAY {
            return None;
        }
        // The kernel prints the address as a number in its own byte order.
        let raw = u32::from_str_radix(gateway, 16).ok()?;
        Some(Ipv4Addr::from(raw.to_ne_bytes()))
    })
}

/// Runs `cat /proc/net/route` in a container of the first of `images` present locally, on
/// the default bridge, and reads its default route.
async fn ask_a_container(docker: &Docker, images: &[String]) -> Result<HostAddress, String> {
    let mut image = None;
    for candidate in images {
        if docker.inspect_image(candidate).await.is_ok() {
            image = Some(candidate);
            break;
        }
    }
    let Some(image) = image else {
        return Err(format!(
            "no image to ask a container with is present locally ({}; kiln never pulls)",
            images.join(", ")
        ));
    };
    // Labelled like job containers, so a probe left behind by a killed kiln is found as one.
    let name = format!("kiln-route-probe-{}", std::process::id());
    let labels = [(
        super::JOB_KEY_LABEL.to_owned(),
        format!("route-probe-{}-0", std::process::id()),
    )];
    let body = ContainerCreateBody {
        image: Some(image.clone()),
        entrypoint: Some(vec!["cat".to_owned()]),
        cmd: Some(vec!["/proc/net/route".to_owned()]),
        labels: Some(labels.into_iter().collect()),
        host_config: Some(HostConfig {
            network_mode: Some("bridge".to_owned()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let created = docker
        .create_container(
            Some(CreateContainerOptionsBuilder::new().name(&name).build()),
            body,
        )
        .await
        .map_err(|e| format!("could not create a {image} container to ask: {e}"))?;
    let answer = route_table_of(docker, &created.id).await;
    let remove = RemoveContainerOptionsBuilder::new().force(true).build();
    let _ = docker.remove_container(&created.id, Some(remove)).await;
    let table = answer.map_err(|e| format!("a {image} container could not be asked: {e}"))?;
    let gateway = default_gateway(&table)
        .ok_or_else(|| format!("a {image} container on the bridge network has no default route"))?;
    Ok(HostAddress {
        ip: IpAddr::V4(gateway),
        found: format!("the default route of a {image} container"),
    })
}

async fn route_table_of(docker: &Docker, id: &str) -> Result<String, String> {
    docker
        .start_container(id, None)
        .await
        .map_err(|e| e.to_string())?;
    let wait = WaitContainerOptionsBuilder::new()
        .condition("not-running")
        .build();
    // A non-zero exit (no `cat` in the image) is an error here; its output says nothing.
    match docker.wait_container(id, Some(wait)).next().await {
        Some(Ok(_)) => {}
        Some(Err(e)) => return Err(e.to_string()),
        None => return Err("the daemon gave no exit status".to_owned()),
    }
    let logs = LogsOptionsBuilder::new().stdout(true).build();
    let chunks: Vec<_> = docker.logs(id, Some(logs)).collect().await;
    let mut table = String::new();
    for chunk in chunks {
        let chunk = chunk.map_err(|e| e.to_string())?;
        table.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipam(subnet: Option<&str>, gateway: Option<&str>) -> IpamConfig {
        IpamConfig {
            subnet: subnet.map(str::to_owned),
            gateway: gateway.map(str::to_owned),
            ..Default::default()
        }
    }

    fn bridge(configs: Vec<IpamConfig>) -> BridgeInfo {
        BridgeInfo {
            interface: "docker0".to_owned(),
            ipam: configs,
        }
    }

    fn v4(text: &str) -> Ipv4Addr {
        text.parse().expect("IPv4 address")
    }

    #[test]
    fn the_reported_gateway_wins_and_ipv4_before_ipv6() {
        let info = bridge(vec![
            ipam(Some("fd00::/64"), Some("fd00::1")),
            ipam(Some("172.17.0.0/16"), Some("172.17.0.1")),
        ]);
        let found = from_bridge(&info, &[v4("10.9.9.9")]).expect("found");
        assert_eq!(found.ip, IpAddr::V4(v4("172.17.0.1")));
        assert_eq!(found.found, "the bridge network's gateway");
    }

    /// Docker 20.10 as Debian ships it: the subnet alone. The bridge's own address decides,
    /// also when a custom `bip` put it elsewhere than the first host.
    #[test]
    fn without_a_gateway_the_bridge_interface_address_in_the_subnet_is_used() {
        let info = bridge(vec![ipam(Some("192.168.200.0/24"), None)]);
        let found = from_bridge(&info, &[v4("10.0.0.5"), v4("192.168.200.77")]).expect("found");
        assert_eq!(found.ip, IpAddr::V4(v4("192.168.200.77")));
        assert_eq!(found.found, "the address of docker0 on this machine");
    }

    #[test]
    fn without_gateway_or_interface_the_subnets_first_host_is_used() {
        let info = bridge(vec![ipam(Some("172.17.0.0/16"), None)]);
        let found = from_bridge(&info, &[]).expect("found");
        assert_eq!(found.ip, IpAddr::V4(v4("172.17.0.1")));
        assert_eq!(
            found.found,
            "the first host of the bridge network's subnet 172.17.0.0/16"
        );
        // An interface address outside the subnet is another network's, not the bridge's.
        let found = from_bridge(&info, &[v4("10.1.2.3")]).expect("found");
        assert_eq!(found.ip, IpAddr::V4(v4("172.17.0.1")));
    }

    #[test]
    fn nothing_reported_says_what_each_source_lacked() {
        let why = from_bridge(&bridge(Vec::new()), &[]).expect_err("nothing to go on");
        assert_eq!(
            why,
            [
                "the bridge network reports no gateway",
                "docker0 has no IPv4 address on this machine",
                "the bridge network reports no IPv4 subnet",
            ]
        );
        let why = from_bridge(&bridge(vec![ipam(Some("10.0.0.8/31"), None)]), &[])
            .expect_err("a /31 has no first host");
        assert!(why[1].contains("in 10.0.0.8/31"), "{why:?}");
    }

    #[test]
    fn subnets_parse_and_bound_their_hosts() {
        let subnet = Subnet::parse("172.17.5.9/16").expect("valid");
        assert_eq!(subnet.to_string(), "172.17.0.0/16");
        assert!(subnet.contains(v4("172.17.255.254")));
        assert!(!subnet.contains(v4("172.18.0.1")));
        assert_eq!(
            Subnet::parse("0.0.0.0/0").map(|s| s.contains(v4("8.8.8.8"))),
            Some(true)
        );
        for bad in ["172.17.0.0", "172.17.0.0/33", "fd00::/64", "x/8", ""] {
            assert_eq!(Subnet::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_default_route_is_read_from_the_route_table() {
        // `cat /proc/net/route` in a container on a bridge with a custom 10.200.0.0/24 subnet.
        let table =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth0\t0000C80A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                     eth0\t00000000\t0100C80A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        let expected = if cfg!(target_endian = "little") {
            v4("10.200.0.1")
        } else {
            v4("1.0.200.10")
        };
        assert_eq!(default_gateway(table), Some(expected));
        let no_default = "Iface\tDestination\tGateway\tFlags\n eth0\t0000C80A\t00000000\t0001\n";
        assert_eq!(default_gateway(no_default), None);
        assert_eq!(default_gateway("garbage\nmore garbage\n"), None);
    }

    /// The last resort on a real daemon: a container of a local image answers with the
    /// bridge's address, and no image is pulled when none is present.
    #[tokio::test]
    async fn a_container_of_a_local_image_names_the_bridge_address() {
        let Some(docker) = crate::testing::require_docker().await else {
            return;
        };
        let missing = vec!["kiln-test-never-present:none".to_owned()];
        let why = ask_a_container(docker.client(), &missing)
            .await
            .expect_err("no image");
        assert!(why.contains("kiln never pulls"), "{why}");
        assert!(docker
            .client()
            .inspect_image("kiln-test-never-present:none")
            .await
            .is_err());

        let image = crate::testing::ensure_busybox_image(&docker).await;
        let found = ask_a_container(docker.client(), &[missing[0].clone(), image.clone()])
            .await
            .expect("the container answers");
        assert_eq!(
            found.found,
            format!("the default route of a {image} container")
        );
        // It is the address the daemon's bridge has, whichever way that is reported.
        let network = docker
            .client()
            .inspect_network("bridge", None::<InspectNetworkOptions>)
            .await
            .expect("bridge network");
        let IpAddr::V4(ip) = found.ip else {
            panic!("IPv4 expected: {found:?}")
        };
        let subnets: Vec<Subnet> = network
            .ipam
            .and_then(|i| i.config)
            .unwrap_or_default()
            .iter()
            .filter_map(|c| Subnet::parse(c.subnet.as_deref()?))
            .collect();
        assert!(
            subnets.iter().any(|s| s.contains(ip)),
            "{ip} in {subnets:?}"
        );
        if let Some(bridge) = local_ipv4_addresses(DEFAULT_BRIDGE_INTERFACE).first() {
            assert_eq!(ip, *bridge);
        }
    }
}
