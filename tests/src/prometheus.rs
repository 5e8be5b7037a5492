//! A real Prometheus server (Debian's `prometheus`), started by a test
//! with a configuration that scrapes one target every second and loads
//! the project's alerting rules; queried through its HTTP API.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::http;

/// The project's alerting rules.
pub fn rules() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus/alerts.yml")
}

/// A running Prometheus server, stopped and its data removed on drop.
pub struct Prometheus {
    child: Child,
    dir: PathBuf,
    pub url: String,
}

impl Prometheus {
    /// Starts one scraping `target` (`ADDR:PORT`) every second, with the
    /// project's rules evaluated every second, and waits until it is ready.
    pub fn start(target: &str) -> Prometheus {
        let dir = std::env::temp_dir().join(format!("tcpstate-prometheus-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("Prometheus's directory");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: tcpstate\n    static_configs:\n      - targets: [\"{target}\"]\n",
            rules().display()
        );
        std::fs::write(dir.join("prometheus.yml"), config).expect("Prometheus's configuration");
        let port = http::free_port();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("log")).expect("Prometheus's log"))
            .spawn()
            .expect(
                "running prometheus: install Debian's prometheus package (`cargo xtask test` does)",
            );
        let server = Prometheus {
            child,
            dir,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !http::get(&format!("{}/-/ready", server.url)).is_ok_and(|r| r.status == 200) {
            assert!(
                Instant::now() < deadline,
                "Prometheus not ready within 30 s: {}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        server
    }

    /// Its log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// The result vector of the instant query `expr`.
    pub fn query(&self, expr: &str) -> Vec<Value> {
        let url = format!("{}/api/v1/query", self.url);
        self.data(&url, &[("query", expr)])["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The value of the single series `expr` selects, if there is one.
    pub fn value(&self, expr: &str) -> Option<f64> {
        let result = self.query(expr);
        assert!(
            result.len() <= 1,
            "{expr} selects several series: {result:?}"
        );
        result.first()?["value"][1].as_str()?.parse().ok()
    }

    /// The alerts, pending and firing.
    pub fn alerts(&self) -> Vec<Value> {
        self.data(&format!("{}/api/v1/alerts", self.url), &[])["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn data(&self, url: &str, query: &[(&str, &str)]) -> Value {
        let response = http::request(url, None, query).unwrap_or_else(|e| panic!("{e}"));
        let v: Value = serde_json::from_str(&response.body)
            .unwrap_or_else(|e| panic!("{url}: not JSON ({e}): {}", response.body));
        assert_eq!(v["status"], "success", "{url}: {v}");
        v["data"].clone()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
