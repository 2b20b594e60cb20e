//! The result of a run: an aligned table for people, or one JSON object (`--json`) for scripts
//! (`bench/run.sh` turns those into markdown tables).

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::stats::HistSnap;

/// A report under construction: every value goes both to the table and to the JSON.
pub struct Report {
    scenario: String,
    context: Map<String, Value>,
    params: Map<String, Value>,
    results: Map<String, Value>,
    rows: Vec<(String, String)>,
    /// Set when the run measured what it measures but a check failed: the report is printed, then the command
    /// exits non-zero with this message.
    pub failure: Option<String>,
}

fn round(v: f64, decimals: i32) -> f64 {
    let m = 10f64.powi(decimals);
    (v * m).round() / m
}

/// `12345.6` → `12,346`; small values keep `decimals`.
pub fn fmt_num(v: f64, decimals: usize) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    if v.abs() >= 1000.0 {
        let s = format!("{:.0}", v.abs());
        let mut out = String::new();
        for (i, ch) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(ch);
        }
        if v < 0.0 { format!("-{out}") } else { out }
    } else {
        format!("{v:.decimals$}")
    }
}

pub fn fmt_bytes(b: f64) -> String {
    let a = b.abs();
    if a >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} GiB", b / 1024.0 / 1024.0 / 1024.0)
    } else if a >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / 1024.0 / 1024.0)
    } else if a >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}

impl Report {
    pub fn new(scenario: &str) -> Report {
        Report {
            scenario: scenario.to_string(),
            context: Map::new(),
            params: Map::new(),
            results: Map::new(),
            rows: Vec::new(),
            failure: None,
        }
    }

    /// Run context (label, url, workers…): JSON top level and the table header.
    pub fn context(&mut self, key: &str, v: impl Into<Value>) {
        self.context.insert(key.into(), v.into());
    }

    /// A scenario parameter (JSON `params`, and a table row).
    pub fn param(&mut self, key: &str, label: &str, v: impl Into<Value>, shown: impl Into<String>) {
        self.params.insert(key.into(), v.into());
        self.rows.push((label.into(), shown.into()));
    }

    pub fn section(&mut self, title: &str) {
        self.rows.push((format!("── {title}"), String::new()));
    }

    pub fn int(&mut self, key: &str, label: &str, v: u64) {
        self.results.insert(key.into(), json!(v));
        self.rows.push((label.into(), fmt_num(v as f64, 0)));
    }

    pub fn num(&mut self, key: &str, label: &str, v: f64, unit: &str, decimals: usize) {
        let v = if v.is_finite() { v } else { f64::NAN };
        self.results.insert(key.into(), if v.is_finite() { json!(round(v, 3)) } else { Value::Null });
        let shown = fmt_num(v, decimals);
        self.rows.push((label.into(), if unit.is_empty() { shown } else { format!("{shown} {unit}") }));
    }

    pub fn opt_num(&mut self, key: &str, label: &str, v: Option<f64>, unit: &str, decimals: usize) {
        match v {
            Some(v) => self.num(key, label, v, unit, decimals),
            None => {
                self.results.insert(key.into(), Value::Null);
                self.rows.push((label.into(), "n/a".into()));
            }
        }
    }

    pub fn bytes(&mut self, key: &str, label: &str, v: Option<f64>) {
        self.results.insert(key.into(), v.map(|v| json!(v.round())).unwrap_or(Value::Null));
        self.rows.push((label.into(), v.map(fmt_bytes).unwrap_or_else(|| "n/a".into())));
    }

    pub fn text(&mut self, key: &str, label: &str, v: &str) {
        self.results.insert(key.into(), json!(v));
        self.rows.push((label.into(), v.into()));
    }

    /// A JSON-only result (no table row).
    pub fn raw(&mut self, key: &str, v: Value) {
        self.results.insert(key.into(), v);
    }

    /// Latency percentiles in milliseconds.
    pub fn latency(&mut self, key: &str, label: &str, h: &HistSnap) {
        let s = h.summary_ms();
        self.results.insert(
            key.into(),
            json!({
                "count": s.count, "mean": round(s.mean, 3), "p50": round(s.p50, 3),
                "p95": round(s.p95, 3), "p99": round(s.p99, 3), "max": round(s.max, 3),
            }),
        );
        let shown = if s.count == 0 {
            "n/a".to_string()
        } else {
            let f = |v: f64| if v >= 100.0 { format!("{v:.0}") } else { format!("{v:.2}") };
            format!(
                "p50 {} · p95 {} · p99 {} · max {} ms  (n={})",
                f(s.p50),
                f(s.p95),
                f(s.p99),
                f(s.max),
                fmt_num(s.count as f64, 0)
            )
        };
        self.rows.push((label.into(), shown));
    }

    /// Counts by key (failure reasons, event names); `none` when empty.
    pub fn counts(&mut self, key: &str, label: &str, m: &BTreeMap<String, u64>) {
        self.results.insert(key.into(), json!(m));
        if m.is_empty() {
            self.rows.push((label.into(), "none".into()));
            return;
        }
        let mut v: Vec<_> = m.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (i, (k, n)) in v.iter().enumerate() {
            let l = if i == 0 { label.to_string() } else { String::new() };
            self.rows.push((l, format!("{} × {k}", fmt_num(**n as f64, 0))));
        }
    }

    pub fn to_json(&self) -> Value {
        let mut top = Map::new();
        top.insert("scenario".into(), json!(self.scenario));
        for (k, v) in &self.context {
            top.insert(k.clone(), v.clone());
        }
        top.insert("params".into(), Value::Object(self.params.clone()));
        top.insert("results".into(), Value::Object(self.results.clone()));
        Value::Object(top)
    }

    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let ctx = |k: &str| {
            self.context.get(k).map(|v| match v {
                Value::String(s) => s.clone(),
                v => v.to_string(),
            })
        };
        out.push_str(&format!("nself-realtime bench · {}", self.scenario));
        if let Some(l) = ctx("label") {
            out.push_str(&format!(" · {l}"));
        }
        if let Some(u) = ctx("url") {
            out.push_str(&format!(" · {u}"));
        }
        out.push('\n');
        let extra: Vec<String> = self
            .context
            .iter()
            .filter(|(k, _)| *k != "label" && *k != "url")
            .map(|(k, v)| {
                format!(
                    "{k} {}",
                    match v {
                        Value::String(s) => s.clone(),
                        v => v.to_string(),
                    }
                )
            })
            .collect();
        if !extra.is_empty() {
            out.push_str(&format!("  {}\n", extra.join(" · ")));
        }
        let w = self.rows.iter().map(|(l, _)| l.chars().count()).max().unwrap_or(0);
        for (l, v) in &self.rows {
            if v.is_empty() {
                out.push_str(&format!("  {l}\n"));
            } else {
                out.push_str(&format!("  {l:<w$}  {v}\n"));
            }
        }
        out
    }

    pub fn print(&self, json: bool) {
        if json {
            println!("{}", self.to_json());
        } else {
            print!("{}", self.to_table());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_renders() {
        assert_eq!(fmt_num(1234567.4, 0), "1,234,567");
        assert_eq!(fmt_num(12.345, 2), "12.35");
        assert_eq!(fmt_bytes(2048.0), "2.0 KiB");
        let mut r = Report::new("connect");
        r.context("label", "x");
        r.param("connections", "connections", 10, "10");
        r.int("connected", "connected", 9);
        let mut m = BTreeMap::new();
        m.insert("tcp: connection refused".to_string(), 1);
        r.counts("failures", "failures", &m);
        let j = r.to_json();
        assert_eq!(j["results"]["connected"], 9);
        assert_eq!(j["params"]["connections"], 10);
        assert!(r.to_table().contains("1 × tcp: connection refused"));
    }
}
