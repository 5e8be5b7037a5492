//! The workloads the end-to-end benchmark drives in its network namespace:
//! the project's own connection storm, and a real web server under load
//! (Debian's nginx, one worker, no keep-alive, driven by ApacheBench), each
//! reporting its connection rate.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

/// Where nginx listens, inside the namespace.
const NGINX_ADDR: &str = "127.0.0.1:8081";
/// Concurrent requests of ApacheBench.
const AB_CONCURRENCY: u64 = 50;

/// One workload, ready to run.
pub enum Workload {
    /// `storm --conns N --threads T`: a server and clients in one process;
    /// the server closes first. Its listener opens and closes each run.
    Storm { storm: PathBuf, threads: u64 },
    /// `ab -n N -c 50` against nginx (`keepalive_timeout 0`: nginx closes
    /// first), which runs across all rounds.
    Nginx(Nginx),
}

impl Workload {
    /// What the tables call it.
    pub fn name(&self) -> String {
        match self {
            Workload::Storm { threads, .. } => {
                format!("connection storm (server closes first, {threads} client thread(s))")
            }
            Workload::Nginx(_) => format!(
                "nginx, 1 worker, keepalive_timeout 0, under `ab -c {AB_CONCURRENCY}` without \
                 keep-alive"
            ),
        }
    }

    /// Listener transitions each run adds to the connections' own.
    pub fn listener_transitions(&self) -> u64 {
        match self {
            // CLOSE -> LISTEN and LISTEN -> CLOSE.
            Workload::Storm { .. } => 2,
            Workload::Nginx(_) => 0,
        }
    }

    /// Runs `conns` connections in namespace `netns`; their rate per second.
    pub fn rate(&self, netns: &str, conns: u64) -> Result<f64> {
        match self {
            Workload::Storm { storm, threads } => storm_rate(storm, netns, conns, *threads),
            Workload::Nginx(nginx) => nginx.rate(netns, conns),
        }
    }
}

fn storm_rate(storm: &Path, netns: &str, conns: u64, threads: u64) -> Result<f64> {
    let out = Command::new("ip")
        .args(["netns", "exec", netns])
        .arg(storm)
        .args(["--conns", &conns.to_string()])
        .args(["--threads", &threads.to_string()])
        .output()
        .context("running the storm")?;
    if !out.status.success() {
        bail!("storm failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let report: Value = serde_json::from_slice(&out.stdout).context("storm output")?;
    if report["failures"] != 0 {
        bail!("storm had failed connections: {report}");
    }
    report["rate"].as_f64().context("storm rate")
}

/// `ab`'s requests per second, each its own connection.
fn ab_rate(netns: &str, conns: u64) -> Result<f64> {
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "ab", "-q", "-r"])
        .args(["-n", &conns.to_string()])
        .args(["-c", &AB_CONCURRENCY.min(conns).to_string()])
        .arg(format!("http://{NGINX_ADDR}/"))
        .output()
        .context("running ab (Debian package apache2-utils)")?;
    let report = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "ab failed: {}{}",
            report,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let field = |name: &str| {
        report
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<f64>().ok())
            .with_context(|| format!("no `{name}` in ab's report: {report}"))
    };
    let (complete, failed) = (field("Complete requests:")?, field("Failed requests:")?);
    if complete != conns as f64 || failed != 0.0 {
        bail!("ab completed {complete} of {conns} requests, {failed} failed");
    }
    field("Requests per second:")
}

/// nginx running in the namespace, stopped on drop.
pub struct Nginx {
    child: Child,
    dir: PathBuf,
}

impl Nginx {
    /// `conns` requests of `ab`, each its own connection; their rate.
    fn rate(&self, netns: &str, conns: u64) -> Result<f64> {
        ab_rate(netns, conns)
    }

    /// Starts nginx in `netns` and waits until it answers.
    pub fn start(netns: &str) -> Result<Nginx> {
        let dir = std::env::temp_dir().join("tcpstate-bench-nginx");
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let d = dir.display();
        let conf = format!(
            "worker_processes 1;\n\
             daemon off;\n\
             pid {d}/nginx.pid;\n\
             error_log {d}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n\
               access_log off;\n\
               keepalive_timeout 0;\n\
               client_body_temp_path {d}/body;\n\
               proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi;\n\
               uwsgi_temp_path {d}/uwsgi;\n\
               scgi_temp_path {d}/scgi;\n\
               server {{ listen {NGINX_ADDR}; location / {{ return 200 \"ok\\n\"; }} }}\n\
             }}\n"
        );
        let conf_path = dir.join("nginx.conf");
        fs::write(&conf_path, conf).context("writing nginx.conf")?;
        let child = Command::new("ip")
            .args(["netns", "exec", netns, "nginx", "-p"])
            .arg(&dir)
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .spawn()
            .context("starting nginx (Debian package nginx)")?;
        let nginx = Nginx { child, dir };
        for _ in 0..50 {
            if ab_rate(netns, 1).is_ok() {
                return Ok(nginx);
            }
            thread::sleep(Duration::from_millis(100));
        }
        let log = fs::read_to_string(nginx.dir.join("error.log")).unwrap_or_default();
        bail!("nginx did not answer on {NGINX_ADDR} within 5 s: {log}")
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // `ip netns exec` runs nginx in its place: the child is nginx.
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGQUIT) };
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}
