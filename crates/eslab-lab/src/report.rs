//! What an experiment returns and how it is written: a table (terminal,
//! Markdown, CSV), a chart (SVG) and findings stated with their numbers.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

pub(crate) use super::chart::Chart;
use super::{Experiment, Scale, scale_flag};

/// One table cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// A label.
    Text(String),
    /// A count.
    Int(u64),
    /// A measurement, shown with `decimals` digits.
    Num(f64, usize),
}

impl Cell {
    /// A label cell.
    pub fn text(s: impl Into<String>) -> Cell {
        Cell::Text(s.into())
    }

    /// A measurement with `decimals` digits.
    pub fn num(v: f64, decimals: usize) -> Cell {
        Cell::Num(v, decimals)
    }

    /// The number in the cell (`None` for labels).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Cell::Text(_) => None,
            #[allow(clippy::cast_precision_loss)] // counts far below 2^52
            Cell::Int(n) => Some(*n as f64),
            Cell::Num(v, _) => Some(*v),
        }
    }

    /// The label in the cell (`None` for numbers).
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Cell::Text(s) => Some(s),
            _ => None,
        }
    }

    fn shown(&self) -> String {
        match self {
            Cell::Text(s) => s.clone(),
            Cell::Int(n) => n.to_string(),
            Cell::Num(v, d) if v.is_finite() => format!("{v:.d$}"),
            Cell::Num(..) => "-".to_owned(),
        }
    }

    fn raw(&self) -> String {
        match self {
            Cell::Text(s) => s.clone(),
            Cell::Int(n) => n.to_string(),
            Cell::Num(v, _) if v.is_finite() => v.to_string(),
            Cell::Num(..) => String::new(),
        }
    }
}

/// A table: named columns, rows of cells.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    /// Column headers (with units, e.g. `p99 (ms)`).
    pub columns: Vec<String>,
    /// The rows; each as long as `columns`.
    pub rows: Vec<Vec<Cell>>,
}

impl Table {
    /// A table with these columns and no rows.
    pub fn new(columns: &[&str]) -> Table {
        Table { columns: columns.iter().map(|c| (*c).to_owned()).collect(), rows: Vec::new() }
    }

    /// Adds a row.
    pub fn push(&mut self, row: Vec<Cell>) {
        self.rows.push(row);
    }

    /// The index of the column named `name`.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }

    /// The rows whose column `name` holds the label `value`.
    pub fn rows_where<'a>(&'a self, name: &str, value: &'a str) -> impl Iterator<Item = &'a Vec<Cell>> + 'a {
        let col = self.column(name);
        self.rows.iter().filter(move |r| col.and_then(|c| r.get(c)).and_then(Cell::as_text) == Some(value))
    }

    /// The number in column `name` of `row`.
    pub fn num(&self, row: &[Cell], name: &str) -> Option<f64> {
        self.column(name).and_then(|c| row.get(c)).and_then(Cell::as_f64)
    }

    /// Plain text, columns aligned (for the terminal).
    pub fn to_terminal(&self) -> String {
        let shown: Vec<Vec<String>> = self.rows.iter().map(|r| r.iter().map(Cell::shown).collect()).collect();
        let widths: Vec<usize> = (0..self.columns.len())
            .map(|c| {
                shown.iter().filter_map(|r| r.get(c)).map(String::len).chain([self.columns[c].len()]).max().unwrap_or(0)
            })
            .collect();
        let line = |cells: &[String]| {
            cells
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(i, (s, w))| if i == 0 { format!("{s:<w$}") } else { format!("{s:>w$}") })
                .collect::<Vec<_>>()
                .join("  ")
        };
        let mut out = line(&self.columns);
        out.push('\n');
        out.push_str(&widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("  "));
        for row in &shown {
            out.push('\n');
            out.push_str(&line(row));
        }
        out
    }

    /// A Markdown table.
    pub fn to_markdown(&self) -> String {
        let mut out = format!("| {} |\n", self.columns.join(" | "));
        let _ = writeln!(
            out,
            "|{}",
            self.columns.iter().enumerate().map(|(i, _)| if i == 0 { "---|" } else { "---:|" }).collect::<String>()
        );
        for row in &self.rows {
            let _ = writeln!(out, "| {} |", row.iter().map(Cell::shown).collect::<Vec<_>>().join(" | "));
        }
        out
    }

    /// CSV with full-precision numbers.
    pub fn to_csv(&self) -> anyhow::Result<String> {
        let mut writer = csv::Writer::from_writer(Vec::new());
        writer.write_record(&self.columns)?;
        for row in &self.rows {
            writer.write_record(row.iter().map(Cell::raw))?;
        }
        Ok(String::from_utf8(writer.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?)?)
    }
}

/// An experiment's result.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// The numbers.
    pub table: Table,
    /// The chart of the headline measure.
    pub chart: Chart,
    /// What the numbers show, each with its numbers (ratios to the baseline).
    pub findings: Vec<String>,
    /// How it was measured: workload, sizes, baseline.
    pub method: Vec<String>,
}

impl Report {
    /// Writes `<id>.md`, `<id>.csv` and `<id>.svg` into `out`.
    pub fn write(&self, out: &Path, experiment: &dyn Experiment, scale: Scale) -> anyhow::Result<()> {
        let id = experiment.id();
        let write = |name: String, contents: &str| {
            let path = out.join(name);
            std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))
        };
        write(format!("{id}.csv"), &self.table.to_csv()?)?;
        write(format!("{id}.svg"), &super::chart::render(&self.chart)?)?;
        let mut md = format!("# {}. {}\n\n{}\n\n", experiment.number(), experiment.title(), experiment.question());
        let _ = writeln!(
            md,
            "Scale `{}`; machine and versions in [index.md](index.md). Rerun: `eslab lab run {id} {}`.\n",
            scale.name(),
            scale_flag(scale)
        );
        md.push_str(&self.table.to_markdown());
        let _ = writeln!(md, "\n![{}]({id}.svg)\n\nRaw numbers: [{id}.csv]({id}.csv)\n", self.chart.title);
        if !self.findings.is_empty() {
            md.push_str("## Findings\n\n");
            for f in &self.findings {
                let _ = writeln!(md, "- {f}");
            }
            md.push('\n');
        }
        if !self.method.is_empty() {
            md.push_str("## Method\n\n");
            for m in &self.method {
                let _ = writeln!(md, "- {m}");
            }
        }
        write(format!("{id}.md"), &md)
    }
}

/// `a / b`, or NaN when `b` is zero.
pub fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 { f64::NAN } else { a / b }
}

/// The lowest and highest of the per-round ratios `a[i] / b[i]` (rounds paired
/// in order: each with the baseline's round that ran beside it); NaN when there are none.
pub fn ratio_range(a: &[f64], b: &[f64]) -> (f64, f64) {
    a.iter().zip(b).map(|(&a, &b)| ratio(a, b)).fold((f64::NAN, f64::NAN), |(lo, hi), r| (lo.min(r), hi.max(r)))
}
