//! Network namespaces made by the tests themselves: created with
//! `ip netns add`, loopback up, removed on drop.

use std::{fs::File, process::Command, thread};

use nix::sched::{CloneFlags, setns};

/// A named network namespace that lives as long as this value.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn new(name: &str) -> NetNs {
        // A namespace left over by a killed run (quietly: usually none).
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        ip(&["netns", "add", name]);
        ip(&["-n", name, "link", "set", "lo", "up"]);
        NetNs { name: name.into() }
    }

    /// The namespace's inode number, as tcpstate reports it.
    pub fn inode(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(format!("/run/netns/{}", self.name))
            .expect("netns file")
            .ino()
    }

    /// Runs `f` on a thread that has entered the namespace. `f` may borrow
    /// from the caller (e.g. a listener made by an earlier `run`).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        thread::scope(|scope| {
            scope
                .spawn(move || {
                    let file = File::open(&path).expect("open netns");
                    setns(&file, CloneFlags::CLONE_NEWNET).expect("setns");
                    f()
                })
                .join()
                .expect("netns thread")
        })
    }

    /// A command run inside the namespace (`ip netns exec`).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs `ip ARGS`, failing the test when it fails.
pub fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("running ip");
    assert!(status.success(), "ip {args:?} failed");
}
