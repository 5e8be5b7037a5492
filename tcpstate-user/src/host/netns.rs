//! Network namespaces: every one on the host (from `/proc/*/ns/net` and
//! `/run/netns`), their inodes, which name them in every record, and their
//! readable names.

use std::{
    cell::RefCell,
    collections::BTreeMap,
    fs::{self, File},
    io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
    thread,
    time::{Duration, Instant},
};

use super::cgroup::{self, Workload};
use anyhow::{Context, Result, anyhow};
use nix::{
    sched::{CloneFlags, setns},
    sys::statfs::{NSFS_MAGIC, statfs},
};
use rustc_hash::{FxHashMap, FxHashSet};

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
    for pid in pids().context("listing /proc")? {
        let path = PathBuf::from(format!("/proc/{pid}/ns/net"));
        // Processes vanish and some are not ours to inspect.
        if let Ok(inode) = ns_inode(&path) {
            found.entry(inode).or_insert(path);
        }
    }
    for (_, inode, path) in ip_netns().with_context(|| format!("listing {NAMED}"))? {
        // Named paths outlive processes: prefer them.
        found.insert(inode, path);
    }
    Ok(found.into_iter().collect())
}

/// The PIDs under `/proc`, lowest first (an entry that cannot be read is
/// left out).
pub fn pids() -> io::Result<Vec<u32>> {
    let mut pids: Vec<u32> = fs::read_dir("/proc")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    Ok(pids)
}

/// The namespaces `ip netns` names under [`NAMED`]: each one's name, inode
/// and path (none when the directory does not exist).
fn ip_netns() -> io::Result<Vec<(String, u32, PathBuf)>> {
    let entries = match fs::read_dir(NAMED) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut named = Vec::new();
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        // A name whose namespace is not mounted is a plain file.
        let is_ns = statfs(&path).is_ok_and(|fs| fs.filesystem_type() == NSFS_MAGIC);
        if is_ns
            && let Ok(inode) = ns_inode(&path)
            && let Some(name) = entry.file_name().to_str()
        {
            named.push((name.to_string(), inode, path));
        }
    }
    Ok(named)
}

/// How long a scan of `/proc` for names stands: a namespace first asked
/// for within it waits for the next one.
const RESCAN: Duration = Duration::from_secs(2);

/// The readable identity of a network namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// `host`, its `ip netns` name, its pod's or container's name, or the
    /// systemd unit its processes run in.
    pub name: String,
    /// The pod or container its processes run in, when one does.
    pub workload: Option<Workload>,
}

/// Names of network namespaces, resolved when first asked for and kept.
/// Resolving reads `/run/netns` and scans `/proc` (at most once per
/// [`RESCAN`], and only for namespaces never asked for before), so asking
/// on every refresh costs a lookup.
#[derive(Default)]
pub struct Names {
    cache: RefCell<NameCache>,
}

#[derive(Default)]
struct NameCache {
    known: FxHashMap<u32, Identity>,
    /// Looked for by a scan, named or not.
    tried: FxHashSet<u32>,
    scanned: Option<Instant>,
}

impl Names {
    /// The identity of namespace `netns`, if it has one.
    pub fn of(&self, netns: u32) -> Option<Identity> {
        let mut cache = self.cache.borrow_mut();
        let due = cache.scanned.is_none_or(|at| at.elapsed() >= RESCAN);
        if !cache.known.contains_key(&netns) && !cache.tried.contains(&netns) && due {
            let (known, seen) = scan();
            cache.known.extend(known);
            cache.tried.extend(seen);
            cache.tried.insert(netns);
            cache.scanned = Some(Instant::now());
        }
        cache.known.get(&netns).cloned()
    }

    /// Forgets the namespaces not in `existing`: gone, their inode
    /// numbers may name new ones.
    pub fn retain(&self, existing: &FxHashSet<u32>) {
        let mut cache = self.cache.borrow_mut();
        cache.known.retain(|ns, _| existing.contains(ns));
        cache.tried.retain(|ns| existing.contains(ns));
    }
}

/// The namespace named `name` (as [`Names`] names it: `host`, an `ip
/// netns` name, `pod:HOSTNAME`, `docker:NAME`, a unit), if one is.
pub fn named(name: &str) -> Option<u32> {
    let (known, _) = scan();
    let mut matching = known.into_iter().filter(|(_, i)| i.name == name);
    let (inode, _) = matching.next()?;
    // Two namespaces of one name (two pods of one hostname) name neither.
    matching.next().is_none().then_some(inode)
}

/// Every namespace that can be named, and every one seen: `host` for the
/// initial namespace (PID 1's), `ip netns` names, then what the cgroups of
/// the processes in the others say.
fn scan() -> (FxHashMap<u32, Identity>, FxHashSet<u32>) {
    let mut known = FxHashMap::default();
    let named = |name: &str| Identity {
        name: name.to_string(),
        workload: None,
    };
    if let Ok(host) = ns_inode(Path::new("/proc/1/ns/net")) {
        known.insert(host, named("host"));
    }
    for (name, inode, _) in ip_netns().unwrap_or_default() {
        known.entry(inode).or_insert_with(|| named(&name));
    }
    // The most telling workload in each other namespace, with the
    // processes that show it.
    let mut workloads: FxHashMap<u32, (Workload, Vec<u32>)> = FxHashMap::default();
    let mut seen = FxHashSet::default();
    for pid in pids().unwrap_or_default() {
        let Ok(inode) = ns_inode(&PathBuf::from(format!("/proc/{pid}/ns/net"))) else {
            continue;
        };
        seen.insert(inode);
        if known.contains_key(&inode) {
            continue;
        }
        let Some(w) = fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .ok()
            .and_then(|text| cgroup::of_cgroup_file(&text))
        else {
            continue;
        };
        match workloads.get_mut(&inode) {
            Some((best, pids)) if best.rank() == w.rank() => pids.push(pid),
            Some((best, _)) if best.rank() > w.rank() => {}
            _ => {
                workloads.insert(inode, (w, vec![pid]));
            }
        }
    }
    for (inode, (w, pids)) in workloads {
        known.insert(
            inode,
            Identity {
                name: workload_name(&w, &pids),
                workload: Some(w),
            },
        );
    }
    (known, seen)
}

/// How a workload is named: a pod by its hostname (Kubernetes names a pod's
/// host after the pod), a Docker container by its name, others by their
/// short ID; a unit as systemd names it.
fn workload_name(w: &Workload, pids: &[u32]) -> String {
    /// Processes of a pod tried for its hostname (its pause container has
    /// no `/etc/hostname`).
    const HOSTNAME_TRIES: usize = 8;
    let hostname = || {
        pids.iter().take(HOSTNAME_TRIES).find_map(|pid| {
            let text = fs::read_to_string(format!("/proc/{pid}/root/etc/hostname")).ok()?;
            let name = text.trim();
            (!name.is_empty() && name.len() <= 64).then(|| name.to_string())
        })
    };
    match w {
        Workload::Pod { uid, .. } => format!("pod:{}", hostname().unwrap_or_else(|| uid.clone())),
        Workload::Container(c) if c.runtime == "docker" => {
            format!(
                "docker:{}",
                docker_name(&c.id).unwrap_or_else(|| c.short_id().into())
            )
        }
        Workload::Container(c) => format!("{}:{}", c.runtime, c.short_id()),
        Workload::Unit(unit) => unit.clone(),
    }
}

/// A Docker container's name, from the daemon's state on disk.
fn docker_name(id: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Config {
        #[serde(rename = "Name")]
        name: String,
    }
    let path = format!("/var/lib/docker/containers/{id}/config.v2.json");
    let config: Config = serde_json::from_str(&fs::read_to_string(path).ok()?).ok()?;
    let name = config.name.trim_start_matches('/');
    (!name.is_empty()).then(|| name.to_string())
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
