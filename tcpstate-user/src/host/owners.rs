//! Owners of sockets that existed before tracing began, found the way `ss -p`
//! finds them: by the socket inodes in `/proc/PID/fd`.
//!
//! The kernel programs learn a listener's owner when it calls `listen()`.
//! For a server that was already listening when tcpstate started, that
//! moment was missed, and the connections it accepts would have no owner
//! until the server touches them (`close()`). One scan at startup fills the
//! gap.

use std::{fs, path::Path};

use rustc_hash::{FxHashMap, FxHashSet};

use crate::sock::{Comm, Owner};

/// The owner of each socket inode in `inodes` that some process holds open.
/// A socket shared by several processes (a server's workers inherit the
/// listener) goes to the lowest pid, usually the parent that created it.
/// Processes that exit or deny access during the scan are skipped.
pub fn of_sockets(inodes: impl IntoIterator<Item = u32>) -> FxHashMap<u32, Owner> {
    let wanted: FxHashSet<u32> = inodes.into_iter().collect();
    let mut found = FxHashMap::default();
    for pid in super::netns::pids().unwrap_or_default() {
        if found.len() == wanted.len() {
            break;
        }
        let dir = Path::new("/proc").join(pid.to_string());
        let Ok(fds) = fs::read_dir(dir.join("fd")) else {
            continue;
        };
        let mut comm = None;
        for fd in fds.filter_map(Result::ok) {
            let Some(inode) = fs::read_link(fd.path())
                .ok()
                .and_then(|target| socket_inode(target.to_str()?))
            else {
                continue;
            };
            if !wanted.contains(&inode) || found.contains_key(&inode) {
                continue;
            }
            let comm = *comm.get_or_insert_with(|| {
                let name = fs::read_to_string(dir.join("comm")).unwrap_or_default();
                Comm::new(name.trim_end_matches('\n'))
            });
            found.insert(
                inode,
                Owner {
                    pid,
                    tid: pid,
                    comm,
                },
            );
        }
    }
    found
}

/// Parses outside text: the inode of an fd link's target `socket:[INODE]`.
pub fn socket_inode(target: &str) -> Option<u32> {
    target
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use std::{net::TcpListener, os::unix::fs::MetadataExt};

    use super::*;

    #[test]
    fn parses_only_socket_links() {
        assert_eq!(socket_inode("socket:[123456]"), Some(123456));
        assert_eq!(socket_inode("pipe:[123456]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
        assert_eq!(socket_inode("socket:[]"), None);
    }

    #[test]
    fn finds_this_process_as_the_owner_of_its_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("listen on loopback");
        let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
        let inode = fs::metadata(format!("/proc/self/fd/{fd}"))
            .expect("fd metadata")
            .ino() as u32;
        let owners = of_sockets([inode, u32::MAX]);
        let owner = owners.get(&inode).expect("this process holds the socket");
        assert_eq!(owner.pid, std::process::id());
        assert_eq!(owners.len(), 1, "no process holds inode u32::MAX");
        let comm = fs::read_to_string("/proc/self/comm").unwrap();
        assert_eq!(owner.comm.as_str(), comm.trim_end());
    }
}
