//! A real Prometheus server (Debian's `prometheus`) in a test's namespace, scraping targets
//! every second, and its HTTP query API.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use crate::{
    http,
    netns::{self, NsProcess},
};

/// Where Prometheus listens inside its namespace.
const LISTEN: &str = "127.0.0.1:9090";

/// How long Prometheus gets to become ready.
const READY_LIMIT: Duration = Duration::from_secs(30);

/// One series of a query's answer: its labels and value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The series' labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// A Prometheus process; killed on drop.
pub struct Prometheus {
    ns: String,
    dir: PathBuf,
    _process: NsProcess,
}

impl Prometheus {
    /// Starts Prometheus in namespace `ns` scraping `targets` (`/metrics`) every second,
    /// with its data in a fresh directory named after `name`; waits until it is ready.
    pub fn start(ns: &str, name: &str, targets: &[SocketAddr]) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("balancer-prometheus-{name}"));
        std::fs::remove_dir_all(&dir).ok();
        std::fs::create_dir_all(&dir)?;
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: balancer\n    scrape_interval: 1s\n    \
             scrape_timeout: 900ms\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config)?;
        let flag = |name: &str, value: &std::path::Path| format!("--{name}={}", value.display());
        let process = netns::spawn(
            ns,
            &[
                "prometheus",
                &flag("config.file", &config_path),
                &flag("storage.tsdb.path", &dir.join("data")),
                &format!("--web.listen-address={LISTEN}"),
            ],
            &dir.join("prometheus.log"),
        )?;
        let prometheus = Self {
            ns: ns.to_string(),
            dir,
            _process: process,
        };
        prometheus.wait_ready()?;
        Ok(prometheus)
    }

    /// Its base URL, as a process in its namespace reaches it.
    pub fn url(&self) -> String {
        format!("http://{LISTEN}")
    }

    fn wait_ready(&self) -> Result<()> {
        let start = Instant::now();
        loop {
            if let Ok((200, _)) = self.get("/-/ready") {
                return Ok(());
            }
            ensure!(
                start.elapsed() < READY_LIMIT,
                "Prometheus not ready within {READY_LIMIT:?}; log: {}",
                std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Evaluates the instant query `promql` at `at` (Unix seconds; now if `None`).
    pub fn query(&self, promql: &str, at: Option<f64>) -> Result<Vec<Sample>> {
        let mut path = format!("/api/v1/query?query={}", encode(promql));
        if let Some(at) = at {
            path.push_str(&format!("&time={at:.3}"));
        }
        let (status, body) = self.get(&path)?;
        let answer: Value = serde_json::from_str(&body)
            .with_context(|| format!("answer to {promql:?} is not JSON: {body}"))?;
        ensure!(
            status == 200 && answer["status"] == "success",
            "query {promql:?} failed ({status}): {body}"
        );
        let Some(results) = answer["data"]["result"].as_array() else {
            bail!("query {promql:?}: not a vector: {body}");
        };
        results
            .iter()
            .map(|series| {
                let labels = series["metric"]
                    .as_object()
                    .context("labels")?
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect();
                let value = series["value"][1]
                    .as_str()
                    .context("value")?
                    .parse::<f64>()
                    .context("value is not a number")?;
                Ok(Sample { labels, value })
            })
            .collect()
    }

    /// `GET path` on Prometheus' HTTP API inside its namespace: (status, body).
    fn get(&self, path: &str) -> Result<(u16, String)> {
        let answer = http::get(&self.ns, LISTEN.parse()?, path)?;
        Ok((answer.status, answer.body))
    }
}

/// Percent-encodes `text` for a URL query value.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
