//! Shared output helpers: aligned tables, JSON, and the "running server first, database otherwise" source.

use std::time::Duration;

use serde_json::Value;

use crate::config::Config;
use crate::store::Store;

/// Prints rows under headers with aligned columns.
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    line(widths.iter().map(|w| "-".repeat(*w)).collect());
    for row in rows {
        line(row.clone());
    }
}

pub fn json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).expect("serialisable"));
}

pub fn opt(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub fn time(ms: &Value) -> String {
    ms.as_i64().map(crate::domain::time::iso_ms).unwrap_or_else(|| opt(ms))
}

/// Asks the running server's admin API (when it is up and REALTIME_API_KEY is set). None means: read the
/// database instead.
pub async fn from_server(cfg: &Config, account: &str, path: &str) -> Option<Value> {
    let key = cfg.api_key.as_ref()?;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(3)).build().ok()?;
    let res = client
        .get(format!("{}{path}", cfg.local_base_url()))
        .header("X-API-Key", key)
        .header("X-App-Name", account)
        .send()
        .await
        .ok()?;
    if !res.status().is_success() {
        return None;
    }
    res.json().await.ok()
}

/// Sends a write to the running server's admin API; None when the server is not reachable.
pub async fn to_server(
    cfg: &Config,
    account: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Option<anyhow::Result<Value>> {
    let key = cfg.api_key.as_ref()?;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().ok()?;
    let mut req = client
        .request(method, format!("{}{path}", cfg.local_base_url()))
        .header("X-API-Key", key)
        .header("X-App-Name", account);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.ok()?;
    let status = res.status();
    let v: Value = res.json().await.unwrap_or(Value::Null);
    Some(if status.is_success() {
        Ok(v)
    } else {
        Err(anyhow::anyhow!("{}", v["error"]["message"].as_str().unwrap_or(status.as_str())))
    })
}

pub async fn store(cfg: &Config) -> anyhow::Result<Store> {
    Store::open(&cfg.database).await
}

pub fn account(a: &Option<String>) -> String {
    crate::domain::names::normalize_account(a.as_deref())
}
