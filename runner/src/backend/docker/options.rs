//! The `options:` string of `container:` and `services:` (a subset of `docker create` flags),
//! plus the `ports:` and `volumes:` lists, turned into Docker API settings.

use std::collections::HashMap;

use bollard::models::{HealthConfig, Mount as ApiMount, MountType, PortBinding, PortMap};

use crate::backend::BackendError;

/// The flags we understand, for the error message when we meet another one.
const SUPPORTED: &str = "--health-cmd, --health-interval, --health-timeout, --health-retries, \
--health-start-period, --env/-e, --network-alias, --entrypoint, --user/-u, --cpus, --memory/-m, \
--privileged, --tmpfs, --mount, --volume/-v";

/// Settings parsed from an `options:` string.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct CreateOptions {
    pub health: Option<HealthConfig>,
    pub env: Vec<String>,
    pub aliases: Vec<String>,
    pub entrypoint: Option<String>,
    pub user: Option<String>,
    pub nano_cpus: Option<i64>,
    pub memory: Option<i64>,
    pub privileged: bool,
    pub tmpfs: HashMap<String, String>,
    pub mounts: Vec<ApiMount>,
    pub volumes: Vec<String>,
}

/// Parses `options`; `subject` names the container in errors ("service `db`").
pub(crate) fn parse_options(options: &str, subject: &str) -> Result<CreateOptions, BackendError> {
    let words = shell_words::split(options)
        .map_err(|e| BackendError::option(subject, options, format!("cannot split it: {e}")))?;
    let mut parsed = CreateOptions::default();
    let mut words = words.into_iter();
    while let Some(word) = words.next() {
        let (flag, inline_value) = match word.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (word.clone(), None),
        };
        if flag == "--privileged" {
            parsed.privileged = match inline_value.as_deref() {
                None | Some("true") => true,
                Some("false") => false,
                Some(other) => {
                    return Err(BackendError::option(
                        subject,
                        &word,
                        format!("`{other}` is not true or false"),
                    ))
                }
            };
            continue;
        }
        if !is_known_flag(&flag) {
            return Err(BackendError::option(
                subject,
                &word,
                format!("kiln does not support this flag; supported: {SUPPORTED}"),
            ));
        }
        let value = match inline_value {
            Some(value) => value,
            None => words
                .next()
                .ok_or_else(|| BackendError::option(subject, &flag, "the flag needs a value"))?,
        };
        apply_flag(&mut parsed, &flag, value, subject)?;
    }
    Ok(parsed)
}

fn is_known_flag(flag: &str) -> bool {
    matches!(
        flag,
        "--health-cmd"
            | "--health-interval"
            | "--health-timeout"
            | "--health-retries"
            | "--health-start-period"
            | "--env"
            | "-e"
            | "--network-alias"
            | "--entrypoint"
            | "--user"
            | "-u"
            | "--cpus"
            | "--memory"
            | "-m"
            | "--tmpfs"
            | "--mount"
            | "--volume"
            | "-v"
    )
}

fn apply_flag(
    parsed: &mut CreateOptions,
    flag: &str,
    value: String,
    subject: &str,
) -> Result<(), BackendError> {
    let bad = |reason: &str| BackendError::option(subject, format!("{flag} {value}"), reason);
    match flag {
        "--health-cmd" => health(parsed).test = Some(vec!["CMD-SHELL".into(), value.clone()]),
        "--health-interval" => {
            health(parsed).interval = Some(
                go_duration_nanos(&value)
                    .ok_or_else(|| bad("not a duration such as 2s or 1m30s"))?,
            )
        }
        "--health-timeout" => {
            health(parsed).timeout = Some(
                go_duration_nanos(&value)
                    .ok_or_else(|| bad("not a duration such as 2s or 1m30s"))?,
            )
        }
        "--health-start-period" => {
            health(parsed).start_period = Some(
                go_duration_nanos(&value)
                    .ok_or_else(|| bad("not a duration such as 2s or 1m30s"))?,
            )
        }
        "--health-retries" => {
            health(parsed).retries = Some(
                value
                    .parse::<u32>()
                    .map_err(|_| bad("not a whole number"))?
                    .into(),
            )
        }
        "--env" | "-e" => parsed.env.push(value.clone()),
        "--network-alias" => parsed.aliases.push(value.clone()),
        "--entrypoint" => parsed.entrypoint = Some(value.clone()),
        "--user" | "-u" => parsed.user = Some(value.clone()),
        "--cpus" => {
            let cpus: f64 = value.parse().map_err(|_| bad("not a number of CPUs"))?;
            if !(cpus > 0.0 && cpus <= 1024.0) {
                return Err(bad("must be between 0 and 1024"));
            }
            parsed.nano_cpus = Some((cpus * 1e9) as i64);
        }
        "--memory" | "-m" => {
            parsed.memory =
                Some(byte_size(&value).ok_or_else(|| bad("not a size such as 512m or 2g"))?)
        }
        "--tmpfs" => {
            let (path, opts) = value.split_once(':').unwrap_or((&value, ""));
            parsed.tmpfs.insert(path.to_owned(), opts.to_owned());
        }
        "--mount" => parsed
            .mounts
            .push(parse_mount(&value).map_err(|reason| bad(&reason))?),
        "--volume" | "-v" => parsed.volumes.push(value.clone()),
        _ => return Err(bad("kiln does not support this flag")),
    }
    Ok(())
}

fn health(parsed: &mut CreateOptions) -> &mut HealthConfig {
    parsed.health.get_or_insert_with(HealthConfig::default)
}

/// Go's `time.ParseDuration` subset docker accepts: a sequence of number+unit (`1m30s`, `500ms`).
fn go_duration_nanos(text: &str) -> Option<i64> {
    let mut total: f64 = 0.0;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    if rest == "0" {
        return Some(0);
    }
    while !rest.is_empty() {
        let number_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let number: f64 = rest[..number_end].parse().ok()?;
        rest = &rest[number_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += number * scale;
        rest = &rest[unit_end..];
    }
    (total.is_finite() && total < i64::MAX as f64).then_some(total as i64)
}

/// Docker's `--memory` sizes: a number with an optional b/k/m/g suffix (case-insensitive).
fn byte_size(text: &str) -> Option<i64> {
    let lower = text.trim().to_ascii_lowercase();
    let lower = lower
        .strip_suffix('b')
        .filter(|s| !s.is_empty() && s.ends_with(['k', 'm', 'g']))
        .unwrap_or(&lower);
    let (digits, scale) = match lower.chars().last()? {
        'k' => (&lower[..lower.len() - 1], 1i64 << 10),
        'm' => (&lower[..lower.len() - 1], 1 << 20),
        'g' => (&lower[..lower.len() - 1], 1 << 30),
        'b' => (&lower[..lower.len() - 1], 1),
        _ => (lower, 1),
    };
    let number: f64 = digits.parse().ok()?;
    let bytes = number * scale as f64;
    (bytes.is_finite() && bytes > 0.0 && bytes < i64::MAX as f64).then_some(bytes as i64)
}

/// `--mount type=bind,source=/a,target=/b,readonly`.
fn parse_mount(spec: &str) -> Result<ApiMount, String> {
    let mut mount = ApiMount::default();
    for field in spec.split(',') {
        let (key, value) = field.split_once('=').unwrap_or((field, ""));
        match key {
            "type" => {
                mount.typ = Some(match value {
                    "bind" => MountType::BIND,
                    "volume" => MountType::VOLUME,
                    "tmpfs" => MountType::TMPFS,
                    other => {
                        return Err(format!("mount type `{other}` is not bind, volume or tmpfs"))
                    }
                })
            }
            "source" | "src" => mount.source = Some(value.to_owned()),
            "target" | "destination" | "dst" => mount.target = Some(value.to_owned()),
            "readonly" | "ro" => {
                mount.read_only = Some(value.is_empty() || value == "true" || value == "1")
            }
            other => return Err(format!("mount field `{other}` is not supported")),
        }
    }
    if mount.target.is_none() {
        return Err("a mount needs a target".into());
    }
    mount.typ.get_or_insert(MountType::VOLUME);
    Ok(mount)
}

/// Ports as `docker run -p` takes them, into exposed ports and host bindings.
pub(crate) fn parse_ports(
    ports: &[String],
    subject: &str,
) -> Result<(Vec<String>, PortMap), BackendError> {
    let mut exposed = Vec::new();
    let mut bindings = PortMap::new();
    for spec in ports {
        let (addr, proto) = spec.split_once('/').unwrap_or((spec, "tcp"));
        let parts: Vec<&str> = addr.split(':').collect();
        let (host_ip, host_port, container_port) = match parts.as_slice() {
            [container] => (None, None, *container),
            [host, container] => (None, Some(*host), *container),
            [ip, host, container] => (Some(*ip), Some(*host).filter(|p| !p.is_empty()), *container),
            _ => {
                return Err(BackendError::option(
                    subject,
                    spec,
                    "expected [ip:][host-port:]container-port[/protocol]",
                ))
            }
        };
        let valid_port = |p: &str| p.parse::<u16>().is_ok_and(|n| n > 0);
        if !valid_port(container_port) || host_port.is_some_and(|p| !valid_port(p)) {
            return Err(BackendError::option(
                subject,
                spec,
                "ports are numbers from 1 to 65535",
            ));
        }
        if !matches!(proto, "tcp" | "udp" | "sctp") {
            return Err(BackendError::option(
                subject,
                spec,
                "protocol must be tcp, udp or sctp",
            ));
        }
        let key = format!("{container_port}/{proto}");
        exposed.push(key.clone());
        bindings
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: host_ip.map(str::to_owned),
                host_port: Some(host_port.unwrap_or("").to_owned()),
            });
    }
    Ok((exposed, bindings))
}

/// Splits `-v` style volumes into bind/named volumes (`src:dst[:mode]`) and anonymous ones (`/dst`).
pub(crate) fn split_volumes(volumes: &[String]) -> (Vec<String>, Vec<String>) {
    volumes
        .iter()
        .cloned()
        .partition(|volume| volume.contains(':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_flags_in_both_spellings() {
        let parsed = parse_options(
            "--health-cmd \"pg_isready -U postgres\" --health-interval=1s --health-timeout 500ms --health-retries 5 --health-start-period 1m30s",
            "service `db`",
        )
        .expect("valid options");
        let health = parsed.health.expect("health config");
        assert_eq!(
            health.test,
            Some(vec![
                "CMD-SHELL".to_owned(),
                "pg_isready -U postgres".to_owned()
            ])
        );
        assert_eq!(health.interval, Some(1_000_000_000));
        assert_eq!(health.timeout, Some(500_000_000));
        assert_eq!(health.retries, Some(5));
        assert_eq!(health.start_period, Some(90_000_000_000));
    }

    #[test]
    fn resource_and_identity_flags() {
        let parsed = parse_options(
            "-e A=1 --env=B=2 --network-alias cache --entrypoint /bin/sh -u 1000:1000 --cpus 1.5 -m 512m --privileged --tmpfs /run:size=64m -v /a:/b:ro --mount type=bind,source=/x,target=/y,readonly",
            "job container",
        )
        .expect("valid options");
        assert_eq!(parsed.env, ["A=1", "B=2"]);
        assert_eq!(parsed.aliases, ["cache"]);
        assert_eq!(parsed.entrypoint.as_deref(), Some("/bin/sh"));
        assert_eq!(parsed.user.as_deref(), Some("1000:1000"));
        assert_eq!(parsed.nano_cpus, Some(1_500_000_000));
        assert_eq!(parsed.memory, Some(512 << 20));
        assert!(parsed.privileged);
        assert_eq!(
            parsed.tmpfs.get("/run").map(String::as_str),
            Some("size=64m")
        );
        assert_eq!(parsed.volumes, ["/a:/b:ro"]);
        assert_eq!(parsed.mounts[0].source.as_deref(), Some("/x"));
        assert_eq!(parsed.mounts[0].read_only, Some(true));
        assert_eq!(parsed.mounts[0].typ, Some(MountType::BIND));
    }

    #[test]
    fn unknown_flags_and_missing_values_are_clear_errors() {
        let err = parse_options("--cap-add NET_ADMIN", "service `db`").expect_err("unsupported");
        let text = err.to_string();
        assert!(
            text.contains("service `db`")
                && text.contains("--cap-add")
                && text.contains("supported:"),
            "{text}"
        );
        let err = parse_options("--health-retries", "service `db`").expect_err("no value");
        assert!(err.to_string().contains("needs a value"), "{err}");
        let err = parse_options("--health-interval 5 parsecs", "x").expect_err("bad duration");
        assert!(err.to_string().contains("duration"), "{err}");
        assert!(parse_options("--health-cmd 'unterminated", "x").is_err());
        assert!(parse_options("--memory -3g", "x").is_err());
        assert!(parse_options("--cpus NaN", "x").is_err());
    }

    #[test]
    fn empty_options_are_fine() {
        assert_eq!(
            parse_options("  ", "x").expect("empty"),
            CreateOptions::default()
        );
    }

    #[test]
    fn ports_in_docker_run_syntax() {
        let (exposed, bindings) = parse_ports(
            &[
                "8080:80".into(),
                "5432".into(),
                "127.0.0.1:53:53/udp".into(),
            ],
            "job container",
        )
        .expect("valid ports");
        assert_eq!(exposed, ["80/tcp", "5432/tcp", "53/udp"]);
        let host_port = |key: &str| bindings[key].as_ref().and_then(|b| b[0].host_port.clone());
        assert_eq!(host_port("80/tcp").as_deref(), Some("8080"));
        assert_eq!(host_port("5432/tcp").as_deref(), Some(""));
        assert_eq!(
            bindings["53/udp"]
                .as_ref()
                .and_then(|b| b[0].host_ip.clone())
                .as_deref(),
            Some("127.0.0.1")
        );
        assert!(parse_ports(&["http".into()], "x").is_err());
        assert!(parse_ports(&["1:2:3:4".into()], "x").is_err());
        assert!(parse_ports(&["80/icmp".into()], "x").is_err());
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration_nanos("1h2m3s"), Some(3_723_000_000_000));
        assert_eq!(go_duration_nanos("1.5s"), Some(1_500_000_000));
        assert_eq!(go_duration_nanos("0"), Some(0));
        assert_eq!(go_duration_nanos("10"), None);
        assert_eq!(go_duration_nanos("s"), None);
    }
}
