//! How read commands print: aligned tables for people, YAML or JSON of the
//! operations' view types (their serde names) for programs.

use super::exit::{CliError, CliResult, Exit};
use serde::Serialize;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    #[default]
    Table,
    Yaml,
    Json,
}

#[derive(Clone, Copy, Debug, Default, clap::Args)]
pub struct OutputArg {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// `value` as YAML or JSON (ending with a newline).
pub fn serialized<T: Serialize>(format: Format, value: &T) -> CliResult<String> {
    let text = match format {
        Format::Json => serde_json::to_string_pretty(value)
            .map(|s| s + "\n")
            .map_err(|e| e.to_string()),
        Format::Yaml | Format::Table => yaml_serde::to_string(value).map_err(|e| e.to_string()),
    };
    text.map_err(|e| CliError::new(Exit::Error, format!("format output: {e}")))
}

/// Columns padded to their widest cell, two spaces apart, no trailing
/// blanks.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            if i + 1 < row.len() {
                let width = widths.get(i).copied().unwrap_or(0);
                let pad = width.saturating_sub(cell.chars().count());
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Key/value lines with the keys padded, for one object's details.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len() + 1).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(k, v)| {
            let line = format!("{:<width$}  {v}", format!("{k}:"));
            format!("{}\n", line.trim_end())
        })
        .collect()
}

pub fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}

pub fn or_none(s: &str) -> String {
    if s.is_empty() {
        "<none>".into()
    } else {
        s.to_string()
    }
}

/// Bytes in binary units: "512Mi", "1.5Gi".
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["", "Ki", "Mi", "Gi", "Ti"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 || v.fract() == 0.0 {
        format!("{v:.0}{}", UNITS[unit])
    } else {
        format!("{v:.1}{}", UNITS[unit])
    }
}

/// How long ago `then_ms` was, coarsely: "5s", "3m", "2h", "4d".
pub fn ago(then_ms: Option<u64>, now_ms: u64) -> String {
    let Some(then) = then_ms else {
        return "never".into();
    };
    let s = now_ms.saturating_sub(then) / 1000;
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_without_trailing_blanks() {
        let t = table(
            &["NAME", "PHASE", "ENDPOINT"],
            &[
                vec!["a".into(), "ready".into(), "https://x:1".into()],
                vec!["longer-name".into(), "pending".into(), "".into()],
            ],
        );
        assert_eq!(
            t,
            "NAME         PHASE    ENDPOINT\n\
             a            ready    https://x:1\n\
             longer-name  pending\n"
        );
        assert_eq!(table(&["A"], &[]), "A\n");
    }

    #[test]
    fn fields_align_keys() {
        assert_eq!(
            fields(&[("Name", "a".into()), ("Endpoint", "".into())]),
            "Name:      a\nEndpoint:\n"
        );
    }

    #[test]
    fn units() {
        assert_eq!(bytes(512), "512");
        assert_eq!(bytes(8 << 30), "8Gi");
        assert_eq!(bytes(1536 << 20), "1.5Gi");
        assert_eq!(ago(None, 0), "never");
        assert_eq!(ago(Some(1_000), 6_000), "5s ago");
        assert_eq!(ago(Some(0), 7_200_000), "2h ago");
    }

    #[test]
    fn serialized_formats_parse_back() {
        let v = serde_json::json!({"name": "a", "replicas": 3});
        let j = serialized(Format::Json, &v).unwrap();
        assert_eq!(serde_json::from_str::<serde_json::Value>(&j).unwrap(), v);
        let y = serialized(Format::Yaml, &v).unwrap();
        assert_eq!(yaml_serde::from_str::<serde_json::Value>(&y).unwrap(), v);
    }
}
