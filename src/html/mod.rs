//! Self-contained HTML reports: one page, inline CSS, the chart data as embedded JSON and a
//! small inline script (`charts.js`) that draws it as SVG. No external scripts, fonts or
//! requests, so the page can be mailed, archived or opened offline.

use serde::Serialize;
use std::fmt::Write as _;

const CHARTS_JS: &str = include_str!("charts.js");

const STYLE: &str = "body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:1100px;color:#1d2330;padding:0 16px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px}table{border-collapse:collapse;margin:8px 0;font-variant-numeric:tabular-nums}
div.table{overflow-x:auto}th,td{border-bottom:1px solid #dde1e8;padding:4px 10px;text-align:right;vertical-align:top;white-space:nowrap}th{background:#f3f5f8}
td.text,th.text{text-align:left}.note{color:#5a6272}code{font-size:12px}
svg.chart{display:block;margin:10px 0;background:#fff;border:1px solid #e3e6ec}.axis{stroke:#555}.grid{stroke:#eceef2}
.tick{font-size:11px;fill:#444}.axis-label{font-size:12px;fill:#222}.chart-title{font-size:14px;font-weight:600}
.legend-item text{font-size:12px}";

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A page being built: its body, and the charts to draw.
pub struct Page {
    title: String,
    body: String,
    charts: usize,
}

/// A series of a line chart; `None` leaves a gap.
#[derive(Serialize)]
pub struct Series {
    pub name: String,
    pub color: &'static str,
    pub values: Vec<Option<f64>>,
}

/// One kind of dot in a dot chart (an outcome).
#[derive(Serialize)]
pub struct DotKind {
    pub kind: &'static str,
    pub name: &'static str,
    pub color: &'static str,
}

/// Colours that stay apart for the common kinds of colour blindness.
pub const PALETTE: [&str; 8] = [
    "#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#000000",
];

impl Page {
    pub fn new(title: &str) -> Page {
        Page {
            title: title.to_string(),
            body: String::new(),
            charts: 0,
        }
    }

    pub fn heading(&mut self, level: u8, text: &str) {
        let _ = writeln!(self.body, "<h{level}>{}</h{level}>", escape(text));
    }

    pub fn paragraph(&mut self, text: &str, class: &str) {
        let _ = writeln!(self.body, "<p class=\"{class}\">{}</p>", escape(text));
    }

    /// A table; cells are plain text (escaped here). The first `text_columns` columns hold
    /// names (left-aligned), the others figures (right-aligned).
    pub fn table(&mut self, header: &[&str], rows: &[Vec<String>], text_columns: usize) {
        let class = |i: usize| {
            if i < text_columns {
                " class=\"text\""
            } else {
                ""
            }
        };
        self.body
            .push_str("<div class=\"table\"><table><thead><tr>");
        for (i, h) in header.iter().enumerate() {
            let _ = write!(self.body, "<th{}>{}</th>", class(i), escape(h));
        }
        self.body.push_str("</tr></thead><tbody>\n");
        for row in rows {
            self.body.push_str("<tr>");
            for (i, cell) in row.iter().enumerate() {
                let _ = write!(self.body, "<td{}>{}</td>", class(i), escape(cell));
            }
            self.body.push_str("</tr>\n");
        }
        self.body.push_str("</tbody></table></div>\n");
    }

    fn chart(&mut self, spec: serde_json::Value) {
        self.charts += 1;
        let id = format!("chart-{}", self.charts);
        // `</` inside a script element would end it: JSON allows `<\/` instead.
        let json = spec.to_string().replace("</", "<\\/");
        let _ = writeln!(
            self.body,
            "<div data-chart-spec=\"{id}-data\"></div><script type=\"application/json\" id=\"{id}-data\">{json}</script>"
        );
    }

    /// A line chart: one point per x label and series (`None` skips one).
    #[allow(clippy::too_many_arguments)]
    pub fn line_chart(
        &mut self,
        id: &str,
        title: &str,
        x_label: &str,
        y_label: &str,
        unit: &str,
        x_labels: &[String],
        series: &[Series],
    ) {
        self.chart(serde_json::json!({
            "type": "line", "id": id, "title": title, "xLabel": x_label, "yLabel": y_label,
            "unit": unit, "xLabels": x_labels, "series": series,
        }));
    }

    /// A dot chart: one row per name, one column per x label, a dot per cell.
    pub fn dot_chart(
        &mut self,
        id: &str,
        title: &str,
        x_label: &str,
        rows: &[String],
        x_labels: &[String],
        kinds: &[DotKind],
        cells: &[(usize, usize, &str, String)],
    ) {
        self.chart(serde_json::json!({
            "type": "dots", "id": id, "title": title, "xLabel": x_label, "rows": rows,
            "xLabels": x_labels, "kinds": kinds, "cells": cells,
        }));
    }

    pub fn finish(self) -> String {
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{}</title><style>{STYLE}</style></head><body>\n<h1>{}</h1>\n{}\
             <noscript><p class=\"note\">The charts need JavaScript; the tables hold the same figures.</p></noscript>\n\
             <script>{CHARTS_JS}</script></body></html>\n",
            escape(&self.title),
            escape(&self.title),
            self.body
        )
    }
}
