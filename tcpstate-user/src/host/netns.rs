//! Network namespaces: every one on the host (from `/proc/*/ns/net` and
//! `/run/netns`), and their inodes, which name them in every record.

use std::{
    collections::BTreeMap,
    fs, io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use nix::sys::statfs::{NSFS_MAGIC, statfs};

/// The calling thread's network namespace.
pub const CURRENT_NETNS: &str = "/proc/thread-self/ns/net";

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
    match fs::read_dir("/run/netns") {
        Ok(entries) => {
            for entry in entries {
                let path = entry.context("listing /run/netns")?.path();
                // A name whose namespace is not mounted is a plain file.
                let is_ns = statfs(&path).is_ok_and(|fs| fs.filesystem_type() == NSFS_MAGIC);
                if is_ns && let Ok(inode) = ns_inode(&path) {
                    // Named paths outlive processes: prefer them.
                    found.insert(inode, path);
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).context("listing /run/netns"),
    }
    Ok(found.into_iter().collect())
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
