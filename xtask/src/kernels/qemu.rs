//! QEMU, fetched from the host's Debian release (backports included) and
//! extracted into the cache with the libraries the host lacks, and the
//! command line that boots one test guest.

use std::{
    collections::BTreeSet,
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use super::apt::{Apt, Package, compare_versions};

/// The oldest QEMU that runs every kernel tested reliably (7.2 crashed
/// 6.12 guests in the slab allocator).
const MINIMUM: &str = "1:10";
const PACKAGES: [&str; 4] = [
    "qemu-system-x86",
    "qemu-system-common",
    "qemu-system-data",
    "seabios",
];

/// A guest's memory: 1 GiB is not enough for the tests that collect a
/// storm's 200,000 records as JSON values (~800 MB).
const MEMORY: &str = "2048";

pub struct Qemu {
    binary: PathBuf,
    library_path: OsString,
    firmware: Vec<PathBuf>,
}

/// Fetches QEMU (or takes it from the cache) and checks that it runs.
pub fn fetch(apt: &Apt) -> Result<Qemu> {
    let mut trees = Vec::new();
    let mut x86 = None;
    for name in PACKAGES {
        let package = apt.newest(name)?;
        if name == "qemu-system-x86" {
            if compare_versions(&package.version, MINIMUM).is_lt() {
                bail!(
                    "the newest QEMU in this machine's Debian release is {}, older than 10: \
                     run on Debian 12 (with backports) or newer",
                    package.version
                );
            }
            x86 = Some(package.clone());
        }
        trees.push(apt.fetch(&package)?);
    }
    let x86 = x86.expect("qemu-system-x86 is fetched");
    let mut library_dirs = Vec::new();
    for library in missing_libraries(apt, &x86)? {
        let tree = apt.fetch(&library)?;
        for dir in ["usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu"] {
            if tree.join(dir).is_dir() {
                library_dirs.push(tree.join(dir));
            }
        }
    }
    let qemu = Qemu {
        binary: trees[0].join("usr/bin/qemu-system-x86_64"),
        library_path: std::env::join_paths(&library_dirs)?,
        firmware: vec![
            trees[2].join("usr/share/qemu"),
            trees[3].join("usr/share/seabios"),
        ],
    };
    qemu.check(&x86.version)?;
    Ok(qemu)
}

/// The library packages QEMU depends on, directly or not, that the host
/// does not have installed (their candidate versions).
fn missing_libraries(apt: &Apt, qemu: &Package) -> Result<Vec<Package>> {
    let mut pending = qemu.dependencies();
    let mut seen = BTreeSet::new();
    let mut missing = Vec::new();
    while let Some(name) = pending.pop() {
        if !name.starts_with("lib") || !seen.insert(name.clone()) || installed(&name) {
            continue;
        }
        // A virtual package has no stanza; ldd says below if that matters.
        let Some(package) = apt
            .show(&[&name], false)
            .ok()
            .and_then(|p| p.into_iter().next())
        else {
            continue;
        };
        pending.extend(package.dependencies());
        missing.push(package);
    }
    Ok(missing)
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Status}", package])
        .output()
        .is_ok_and(|o| o.stdout == b"installed")
}

impl Qemu {
    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.env("LD_LIBRARY_PATH", &self.library_path);
        for dir in &self.firmware {
            cmd.arg("-L").arg(dir);
        }
        cmd
    }

    /// Fails, naming them, when libraries are still missing.
    fn check(&self, version: &str) -> Result<()> {
        let out = Command::new("ldd")
            .arg(&self.binary)
            .env("LD_LIBRARY_PATH", &self.library_path)
            .output()
            .context("running ldd: install libc-bin")?;
        let missing: Vec<&str> = std::str::from_utf8(&out.stdout)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("not found"))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        if !missing.is_empty() {
            bail!(
                "QEMU {version} needs {}, which neither this machine nor the packages fetched \
                 provide: install them",
                missing.join(", ")
            );
        }
        let out = self
            .command()
            .arg("--version")
            .output()
            .with_context(|| format!("running {}", self.binary.display()))?;
        if !out.status.success() {
            bail!(
                "QEMU {version} does not start: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// The command that boots `kernel` with `initrd`, the console on the
    /// first serial port (into `console`), the results on the second.
    pub fn boot(&self, kernel: &Path, initrd: &Path, console: &Path, results: &Path) -> Command {
        let mut cmd = self.command();
        cmd.args(["-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", MEMORY])
            .args([
                "-nographic",
                "-no-reboot",
                "-nodefaults",
                "-display",
                "none",
            ])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .arg("-serial")
            .arg(format!("file:{}", results.display()))
            .arg("-kernel")
            .arg(kernel)
            .arg("-initrd")
            .arg(initrd)
            .args([
                "-append",
                "console=ttyS0 panic=-1 oops=panic rdinit=/init thash_entries=131072",
            ]);
        cmd
    }
}
