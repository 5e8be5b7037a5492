//! Processes in network namespaces of their own, placed in cgroups laid
//! out as container runtimes, Kubernetes and systemd lay them out: what
//! tcpstate names namespaces after.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command},
    thread,
    time::{Duration, Instant},
};

/// A cgroup v2 hierarchy: the mounted one, else one mounted here.
fn cgroup2_root() -> PathBuf {
    let mounts = fs::read_to_string("/proc/self/mounts").expect("reading /proc/self/mounts");
    if let Some(dir) = mounts.lines().find_map(|l| {
        let mut fields = l.split_whitespace();
        let dir = fields.nth(1)?;
        (fields.next()? == "cgroup2").then(|| PathBuf::from(dir))
    }) {
        return dir;
    }
    let dir = PathBuf::from("/tmp/tcpstate-test-cgroup2");
    fs::create_dir_all(&dir).unwrap();
    let status = Command::new("mount")
        .args(["-t", "cgroup2", "none"])
        .arg(&dir)
        .status()
        .expect("running mount");
    assert!(status.success(), "mounting cgroup2 at {}", dir.display());
    dir
}

/// A `sleep` in a network namespace of its own (and a mount namespace,
/// with `hostname` as its `/etc/hostname`, when given), in cgroup `path`
/// (relative to the hierarchy's root); killed and its cgroup removed on
/// drop.
pub struct Workload {
    child: Child,
    cgroup: PathBuf,
    /// The cgroup directories made for it, innermost first.
    made: Vec<PathBuf>,
}

impl Workload {
    pub fn start(path: &str, hostname: Option<&str>) -> Workload {
        let root = cgroup2_root();
        let cgroup = root.join(path);
        let mut made = Vec::new();
        let mut dir = cgroup.as_path();
        while dir != root && !dir.exists() {
            made.push(dir.to_path_buf());
            dir = dir.parent().unwrap();
        }
        fs::create_dir_all(&cgroup).unwrap_or_else(|e| panic!("{}: {e}", cgroup.display()));
        let inner = match hostname {
            Some(name) => {
                let file = std::env::temp_dir().join(format!("tcpstate-hostname-{name}"));
                fs::write(&file, format!("{name}\n")).unwrap();
                format!(
                    "[ -e /etc/hostname ] || : > /etc/hostname; mount --bind {} /etc/hostname && \
                     exec sleep 600",
                    file.display()
                )
            }
            None => "exec sleep 600".to_string(),
        };
        let flags = if hostname.is_some() { "-m -n" } else { "-n" };
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > {}/cgroup.procs && exec unshare {flags} sh -c '{inner}'",
                cgroup.display()
            ))
            .spawn()
            .expect("starting a workload");
        let w = Workload {
            child,
            cgroup,
            made,
        };
        w.wait_in_own_namespace();
        w
    }

    /// The inode of its network namespace.
    pub fn netns(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(format!("/proc/{}/ns/net", self.child.id()))
            .expect("the workload's namespace")
            .ino()
    }

    /// Waits until the `sleep` runs in its own namespace.
    fn wait_in_own_namespace(&self) {
        let own = fs::metadata("/proc/self/ns/net").map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.ino()
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        let comm = Path::new("/proc")
            .join(self.child.id().to_string())
            .join("comm");
        while fs::read_to_string(&comm).unwrap_or_default().trim() != "sleep"
            || own.as_ref().ok() == Some(&self.netns())
        {
            assert!(Instant::now() < deadline, "the workload did not start");
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir(&self.cgroup);
        for dir in &self.made {
            let _ = fs::remove_dir(dir);
        }
    }
}
