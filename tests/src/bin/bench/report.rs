//! The report under construction: markdown text plus the charts to draw next to it.

use std::fmt::Write as _;

use crate::stats::Spread;

/// One bar of a chart.
#[derive(Debug, Clone)]
pub struct Bar {
    /// What the bar measures, e.g. `established flow, IPv4 (1000 backends)`.
    pub label: String,
    /// Its value with spread.
    pub value: Spread,
}

/// A horizontal bar chart, written as a PNG next to the report.
#[derive(Debug, Clone)]
pub struct Chart {
    /// File name inside the report's directory, e.g. `per-packet.png`.
    pub file: String,
    /// Title drawn above the chart.
    pub title: String,
    /// Unit of the values, e.g. `ns/packet`.
    pub unit: String,
    /// The bars, top to bottom.
    pub bars: Vec<Bar>,
}

/// The report: markdown and charts.
#[derive(Debug, Default)]
pub struct Report {
    /// The markdown text.
    pub markdown: String,
    /// Charts to draw; the markdown already links them.
    pub charts: Vec<Chart>,
    /// Sections that measured nothing, one line each (`section: what was missing`): the
    /// bench writes the report, then fails.
    pub failures: Vec<String>,
}

impl Report {
    /// Appends one line of markdown.
    pub fn line(&mut self, text: impl AsRef<str>) {
        self.markdown.push_str(text.as_ref());
        self.markdown.push('\n');
    }

    /// Appends a markdown table: a header row and rows of cells.
    pub fn table(&mut self, header: &[&str], rows: &[Vec<String>]) {
        let _ = writeln!(self.markdown, "| {} |", header.join(" | "));
        let _ = writeln!(self.markdown, "|{}", "---|".repeat(header.len()));
        for row in rows {
            let _ = writeln!(self.markdown, "| {} |", row.join(" | "));
        }
        self.markdown.push('\n');
    }

    /// Records that `section` measured nothing: `what` says what was missing.
    pub fn fail(&mut self, section: &str, what: impl AsRef<str>) {
        self.failures.push(format!("{section}: {}", what.as_ref()));
    }

    /// Adds `chart` and links it from the markdown here.
    pub fn chart(&mut self, chart: Chart) {
        let _ = writeln!(self.markdown, "![{}]({})\n", chart.title, chart.file);
        self.charts.push(chart);
    }
}
