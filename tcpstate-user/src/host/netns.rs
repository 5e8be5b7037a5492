//! Network namespaces: every one on the host (from `/proc/*/ns/net` and
//! `/run/netns`), and their inodes, which name them in every record.

use std::{
    collections::BTreeMap,
    fs::{self, File},
    io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
    thread,
};

use anyhow::{Context, Result, anyhow};
use nix::{
    sched::{CloneFlags, setns},
    sys::statfs::{NSFS_MAGIC, statfs},
};

/// Threads that work in namespaces side by side: the work mostly waits on
/// the kernel, and a host may have a thousand idle namespaces.
const THREADS: usize = 4;

/// The calling thread's network namespace.
pub const CURRENT_NETNS: &str = "/proc/thread-self/ns/net";

/// Where `ip netns` keeps the namespaces it names.
pub const NAMED: &str = "/run/netns";

/// Every distinct network namespace on the host, as its inode and a path to
/// open it, from `/proc/*/ns/net` and `/run/netns/*`; sorted by inode.
pub fn namespaces() -> Result<Vec<(u32, PathBuf)>> {
    let mut found = BTreeMap::new();
    for entry in fs::read_dir("/proc").context("listing /proc")? {
        let entry = entry.context("listing /proc")?;
        let is_pid = entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.bytes().all(|b| b.is_ascii_digit()));
        let path = entry.path().join("ns/net");
        // Processes vanish and some are not ours to inspect.
        if is_pid && let Ok(inode) = ns_inode(&path) {
            found.entry(inode).or_insert(path);
        }
    }
    match fs::read_dir(NAMED) {
        Ok(entries) => {
            for entry in entries {
                let path = entry.with_context(|| format!("listing {NAMED}"))?.path();
                // A name whose namespace is not mounted is a plain file.
                let is_ns = statfs(&path).is_ok_and(|fs| fs.filesystem_type() == NSFS_MAGIC);
                if is_ns && let Ok(inode) = ns_inode(&path) {
                    // Named paths outlive processes: prefer them.
                    found.insert(inode, path);
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("listing {NAMED}")),
    }
    Ok(found.into_iter().collect())
}

/// Readable names of network namespaces: the `ip netns` name of each one
/// under `/run/netns`, and `host` for the initial namespace (PID 1's).
pub fn names() -> rustc_hash::FxHashMap<u32, String> {
    let mut names = rustc_hash::FxHashMap::default();
    if let Ok(host) = ns_inode(Path::new("/proc/1/ns/net")) {
        names.insert(host, "host".to_string());
    }
    if let Ok(entries) = fs::read_dir(NAMED) {
        for entry in entries.flatten() {
            let path = entry.path();
            let is_ns = statfs(&path).is_ok_and(|fs| fs.filesystem_type() == NSFS_MAGIC);
            if is_ns
                && let Ok(inode) = ns_inode(&path)
                && let Some(name) = entry.file_name().to_str()
            {
                names.entry(inode).or_insert_with(|| name.to_string());
            }
        }
    }
    names
}

/// Runs `f(inode)` inside each network namespace of `paths`, on
/// short-lived threads of its own (at most [`THREADS`] at a time), so the
/// caller's namespace never changes; the results in the order of `paths`.
pub fn in_each<T: Send>(paths: &[&Path], f: impl Fn(u32) -> Result<T> + Sync) -> Vec<Result<T>> {
    let next = AtomicUsize::new(0);
    let enter_and_run = |path: &Path| -> Result<T> {
        let inode = ns_inode(path)?;
        let file = File::open(path)
            .with_context(|| format!("opening network namespace {}", path.display()))?;
        setns(&file, CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("entering network namespace {}", path.display()))?;
        f(inode)
    };
    let mut results: Vec<(usize, Result<T>)> = thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS.min(paths.len()))
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(path) = paths.get(i) else {
                            return done;
                        };
                        done.push((i, enter_and_run(path)));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| {
                w.join().unwrap_or_else(|_| {
                    vec![(usize::MAX, Err(anyhow!("a namespace thread panicked")))]
                })
            })
            .collect()
    });
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// Inode of the calling thread's network namespace.
pub fn current_netns() -> Result<u32> {
    ns_inode(Path::new(CURRENT_NETNS))
}

/// Inode of the network namespace at `path`.
pub fn ns_inode(path: &Path) -> Result<u32> {
    let inode = fs::metadata(path)
        .with_context(|| format!("reading network namespace {}", path.display()))?
        .ino();
    u32::try_from(inode)
        .with_context(|| format!("{}: inode {inode} is not a namespace's", path.display()))
}
