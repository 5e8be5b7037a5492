//! The initramfs format: a cpio archive in the "newc" format, compressed
//! with gzip. Entries are sorted and carry no timestamps or owners, so the
//! same contents always give the same bytes.

use std::{
    collections::BTreeMap,
    io::Write as _,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

const DIR: u32 = 0o040_000;
const FILE: u32 = 0o100_000;
const SYMLINK: u32 = 0o120_000;
const CHAR_DEVICE: u32 = 0o020_000;

#[derive(Debug)]
enum Entry {
    Dir,
    File { mode: u32, data: Vec<u8> },
    Symlink(String),
    CharDevice(u32, u32),
}

/// An archive being built; parent folders are added as needed.
#[derive(Default)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

impl Archive {
    /// Adds a regular file at `path` (absolute, in the guest).
    pub fn file(&mut self, path: &str, mode: u32, data: Vec<u8>) {
        self.add(path, Entry::File { mode, data });
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        self.add(path, Entry::Symlink(target.to_string()));
    }

    pub fn dir(&mut self, path: &str) {
        self.add(path, Entry::Dir);
    }

    pub fn char_device(&mut self, path: &str, major: u32, minor: u32) {
        self.add(path, Entry::CharDevice(major, minor));
    }

    fn add(&mut self, path: &str, entry: Entry) {
        let path = path.trim_matches('/');
        let mut parent = String::new();
        for part in path
            .split('/')
            .rev()
            .skip(1)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            self.entries.entry(parent.clone()).or_insert(Entry::Dir);
        }
        self.entries.insert(path.to_string(), entry);
    }

    /// The archive in the newc format.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (ino, (path, entry)) in (1..).zip(&self.entries) {
            let (mode, data, rdev): (u32, &[u8], (u32, u32)) = match entry {
                Entry::Dir => (DIR | 0o755, &[], (0, 0)),
                Entry::File { mode, data } => (FILE | mode, data, (0, 0)),
                Entry::Symlink(target) => (SYMLINK | 0o777, target.as_bytes(), (0, 0)),
                Entry::CharDevice(major, minor) => (CHAR_DEVICE | 0o600, &[], (*major, *minor)),
            };
            let nlink = if matches!(entry, Entry::Dir) { 2 } else { 1 };
            record(&mut out, ino, mode, nlink, path, data, rdev);
        }
        record(&mut out, 0, 0, 1, "TRAILER!!!", &[], (0, 0));
        out
    }
}

fn record(
    out: &mut Vec<u8>,
    ino: u32,
    mode: u32,
    nlink: u32,
    name: &str,
    data: &[u8],
    (rdev_major, rdev_minor): (u32, u32),
) {
    let size = u32::try_from(data.len()).expect("initramfs files are below 4 GiB");
    let name_size = u32::try_from(name.len() + 1).expect("short names");
    out.extend_from_slice(b"070701");
    // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor
    // rdevminor namesize check
    for field in [
        ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev_major, rdev_minor, name_size, 0,
    ] {
        out.extend_from_slice(format!("{field:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    out.resize(out.len().next_multiple_of(4), 0);
}

/// `bytes` compressed with the host's gzip (`-n`: no name, no timestamp).
pub fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut child = Command::new("gzip")
        .args(["-n", "-c", "-6"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("running gzip: install gzip")?;
    let mut stdin = child.stdin.take().expect("piped");
    let out = std::thread::scope(|scope| {
        let writer = scope.spawn(move || stdin.write_all(bytes));
        let out = child.wait_with_output();
        writer.join().expect("gzip writer").map(|()| out)
    })
    .context("piping the initramfs to gzip")??;
    if !out.status.success() {
        bail!("gzip failed ({})", out.status);
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_records_are_aligned_and_parents_come_first() {
        let mut archive = Archive::default();
        archive.file("/bin/busybox", 0o755, b"abcde".to_vec());
        archive.symlink("/bin/sh", "busybox");
        archive.char_device("/dev/console", 5, 1);
        let bytes = archive.encode();

        // bin, bin/busybox, bin/sh, dev, dev/console, trailer.
        let mut names = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            assert_eq!(&bytes[at..at + 6], b"070701");
            let field = |i: usize| {
                let hex = std::str::from_utf8(&bytes[at + 6 + 8 * i..at + 14 + 8 * i]).unwrap();
                u32::from_str_radix(hex, 16).unwrap() as usize
            };
            let (mode, size, name_size) = (field(1), field(6), field(11));
            let name = &bytes[at + 110..at + 110 + name_size - 1];
            names.push((String::from_utf8(name.to_vec()).unwrap(), mode, size));
            if name == b"dev/console" {
                assert_eq!((field(9), field(10)), (5, 1));
            }
            at = (at + 110 + name_size).next_multiple_of(4);
            at = (at + size).next_multiple_of(4);
        }
        assert_eq!(at, bytes.len());
        let expected = [
            ("bin", 0o040755, 0),
            ("bin/busybox", 0o100755, 5),
            ("bin/sh", 0o120777, 7),
            ("dev", 0o040755, 0),
            ("dev/console", 0o020600, 0),
            ("TRAILER!!!", 0, 0),
        ];
        let names: Vec<_> = names.iter().map(|(n, m, s)| (n.as_str(), *m, *s)).collect();
        assert_eq!(names, expected);
        assert_eq!(bytes, archive.encode(), "deterministic");
    }
}
