//! What the report commands (`kiln bench cache`, `kiln cache stats`) share: the output format,
//! writing to stdout or a file, plain-text tables and human-readable figures.

use anyhow::Context as _;
use std::io::Write as _;
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Html,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Table => "txt",
            Format::Json => "json",
            Format::Html => "html",
        }
    }
}

/// Prints a rendered report, or writes it to `DIR/NAME.EXT` and says where.
pub fn emit(text: &str, out: Option<&Path>, name: &str, format: Format) -> anyhow::Result<()> {
    match out {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let path = dir.join(format!("{name}.{}", format.extension()));
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("kiln: wrote {}", path.display());
        }
        None => std::io::stdout().lock().write_all(text.as_bytes())?,
    }
    Ok(())
}

/// `1.5 GiB`.
pub fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

pub fn percent(rate: f64) -> String {
    format!("{:.1}%", rate * 100.0)
}

/// Plain text columns, widths from the widest cell; the first `text_columns` columns are
/// left-aligned (names), the others right-aligned (figures).
pub fn text_table(header: &[&str], rows: &[Vec<String>], text_columns: usize) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, cell) in r.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i < text_columns {
                    format!("{c:<w$}", w = widths[i])
                } else {
                    format!("{c:>w$}", w = widths[i])
                }
            })
            .collect();
        out.push_str(parts.join("  ").trim_end());
        out.push('\n');
    };
    line(header.to_vec(), &mut out);
    for r in rows {
        line(r.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_and_columns() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(3 << 20), "3.0 MiB");
        assert_eq!(percent(0.8333), "83.3%");
        let table = text_table(&["name", "n"], &[vec!["a".into(), "10".into()]], 1);
        assert_eq!(table, "name   n\na     10\n");
    }
}
