//! Rendering: aligned tables for people, JSON and YAML for programs.

use std::io::{self, Write};

use clap::ValueEnum;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Wide,
    Json,
    Yaml,
}

/// Writes rows under headers, columns padded to their widest cell, as kubectl does.
pub fn table(out: &mut dyn Write, headers: &[&str], rows: &[Vec<String>]) -> io::Result<()> {
    write_table(out, headers, rows, true)
}

/// Writes rows padded as under `headers`, without the header line (for --watch updates).
pub fn rows(out: &mut dyn Write, headers: &[&str], rows: &[Vec<String>]) -> io::Result<()> {
    write_table(out, headers, rows, false)
}

fn write_table(
    out: &mut dyn Write,
    headers: &[&str],
    rows: &[Vec<String>],
    header: bool,
) -> io::Result<()> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}   ", width = widths[i]));
            }
        }
        text.trim_end().to_owned()
    };
    if header {
        writeln!(out, "{}", line(headers.to_vec()))?;
    }
    for row in rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

/// Writes a value as JSON or YAML.
pub fn structured<T: Serialize>(
    out: &mut dyn Write,
    format: Format,
    value: &T,
) -> anyhow::Result<()> {
    match format {
        Format::Yaml => write!(out, "{}", serde_saphyr::to_string(value)?)?,
        _ => writeln!(out, "{}", serde_json::to_string_pretty(value)?)?,
    }
    Ok(())
}

/// The first 7 characters of a commit id, as Git abbreviates it.
pub fn short(commit: &str) -> &str {
    commit.get(..7).unwrap_or(commit)
}
