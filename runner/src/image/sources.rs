//! Finding the Debian mirror this machine already uses, from its apt sources, so the base
//! image is built from the same place (and kiln never carries a mirror host name itself).

use std::path::Path;

/// One `deb` entry of an apt source list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptSource {
    pub uri: String,
    pub suites: Vec<String>,
    pub components: Vec<String>,
}

/// Parses the one-line format (`deb [options] URI SUITE COMPONENT...`); `deb-src` is ignored.
pub fn parse_one_line(text: &str) -> Vec<AptSource> {
    text.lines()
        .filter_map(|line| {
            let line = line.split('#').next().unwrap_or("").trim();
            let rest = line.strip_prefix("deb")?;
            if !rest.starts_with([' ', '\t']) {
                return None;
            }
            let mut rest = rest.trim_start();
            if rest.starts_with('[') {
                rest = rest[rest.find(']')? + 1..].trim_start();
            }
            let mut words = rest.split_whitespace();
            let uri = words.next()?.to_owned();
            let suite = words.next()?.to_owned();
            Some(AptSource {
                uri,
                suites: vec![suite],
                components: words.map(str::to_owned).collect(),
            })
        })
        .collect()
}

/// Parses the deb822 format (`*.sources`): stanzas of `Field: value` separated by blank lines.
pub fn parse_deb822(text: &str) -> Vec<AptSource> {
    let mut sources = Vec::new();
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut flush = |fields: &mut Vec<(String, String)>| {
        let get = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
                .unwrap_or_default()
        };
        let enabled = get("Enabled").first().is_none_or(|v| v != "no");
        if enabled && get("Types").iter().any(|t| t == "deb") {
            for uri in get("URIs") {
                sources.push(AptSource {
                    uri,
                    suites: get("Suites"),
                    components: get("Components"),
                });
            }
        }
        fields.clear();
    };
    for line in text.lines() {
        if line.trim().is_empty() {
            flush(&mut fields);
        } else if line.starts_with('#') {
            continue;
        } else if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = fields.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            fields.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    flush(&mut fields);
    sources
}

/// Every `deb` source configured under `root` (normally `/`): `etc/apt/sources.list`,
/// `etc/apt/sources.list.d/*.list` and `*.sources`. Unreadable files are skipped.
pub fn read_system_sources(root: &Path) -> Vec<AptSource> {
    let apt = root.join("etc/apt");
    let mut sources = std::fs::read_to_string(apt.join("sources.list"))
        .map(|text| parse_one_line(&text))
        .unwrap_or_default();
    let mut files: Vec<_> = std::fs::read_dir(apt.join("sources.list.d"))
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .collect();
    files.sort();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        match file.extension().and_then(|e| e.to_str()) {
            Some("list") => sources.extend(parse_one_line(&text)),
            Some("sources") => sources.extend(parse_deb822(&text)),
            _ => {}
        }
    }
    sources
}

/// The mirror to debootstrap `suite` from: a source that serves exactly that suite, else any
/// source of the main archive (not security or updates, which have another layout).
pub fn pick_mirror(sources: &[AptSource], suite: &str) -> Option<String> {
    let fetchable = |s: &&AptSource| {
        ["http://", "https://", "ftp://", "file:/"]
            .iter()
            .any(|scheme| s.uri.starts_with(scheme))
    };
    let main_archive = |s: &&AptSource| {
        s.suites
            .iter()
            .any(|x| !x.contains('/') && !x.contains('-'))
    };
    sources
        .iter()
        .filter(fetchable)
        .find(|s| s.suites.iter().any(|x| x == suite))
        .or_else(|| sources.iter().filter(fetchable).find(main_archive))
        .map(|s| s.uri.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_format_with_options_and_comments() {
        let text = "# a comment\n\
                    deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main contrib\n\
                    deb-src http://mirror.example/debian bookworm main\n\
                    deb http://security.example/debian-security bookworm-security main # trailing\n\
                    debfoo http://x y z\n";
        let sources = parse_one_line(text);
        assert_eq!(sources.len(), 2);
        assert_eq!(sources[0].uri, "http://mirror.example/debian");
        assert_eq!(sources[0].suites, ["bookworm"]);
        assert_eq!(sources[0].components, ["main", "contrib"]);
        assert_eq!(sources[1].suites, ["bookworm-security"]);
    }

    #[test]
    fn deb822_stanzas_with_continuations_and_disabled_entries() {
        let text = "Types: deb deb-src\n\
                    # the mirror\n\
                    URIs: http://mirror.example/debian\n\
                    Suites: bookworm bookworm-updates\n\
                    Components: main\n\
                    Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\
                    \n\
                    Types: deb\n\
                    URIs: http://security.example/debian-security\n\
                    Suites: bookworm-security\n\
                    Components: main\n\
                    \n\
                    Types: deb\n\
                    Enabled: no\n\
                    URIs: http://disabled.example/debian\n\
                    Suites: bookworm\n\
                    \n\
                    Types: deb-src\n\
                    URIs: http://src.example/debian\n\
                    Suites: bookworm\n";
        let sources = parse_deb822(text);
        assert_eq!(sources.len(), 2);
        assert_eq!(sources[0].suites, ["bookworm", "bookworm-updates"]);
        assert_eq!(
            pick_mirror(&sources, "bookworm").as_deref(),
            Some("http://mirror.example/debian")
        );
    }

    #[test]
    fn mirror_choice_prefers_the_suite_then_the_main_archive() {
        let source = |uri: &str, suite: &str| AptSource {
            uri: uri.into(),
            suites: vec![suite.into()],
            components: vec!["main".into()],
        };
        let sources = [
            source("http://security.example/", "bookworm-security"),
            source("cdrom:[Debian]/", "bookworm"),
            source("http://trixie.example/", "trixie"),
            source("http://bookworm.example/", "bookworm"),
        ];
        assert_eq!(
            pick_mirror(&sources, "bookworm").as_deref(),
            Some("http://bookworm.example/")
        );
        assert_eq!(
            pick_mirror(&sources, "bullseye").as_deref(),
            Some("http://trixie.example/")
        );
        assert_eq!(pick_mirror(&sources[..1], "bookworm"), None);
    }

    #[test]
    fn reads_a_system_layout() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("etc/apt/sources.list.d");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(
            dir.join("a.sources"),
            "Types: deb\nURIs: http://a.example/\nSuites: bookworm\n",
        )
        .expect("write");
        std::fs::write(dir.join("b.list"), "deb http://b.example/ bookworm main\n").expect("write");
        std::fs::write(
            dir.join("c.list.disabled"),
            "deb http://c.example/ bookworm main\n",
        )
        .expect("write");
        let uris: Vec<String> = read_system_sources(root.path())
            .into_iter()
            .map(|s| s.uri)
            .collect();
        assert_eq!(uris, ["http://a.example/", "http://b.example/"]);
    }
}
