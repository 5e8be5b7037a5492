//! `cargo xtask test-kernels`: the kernel integration tests, run inside
//! QEMU guests booted on several Debian kernels (the newest of each series
//! in `SERIES`, or those in `TCPSTATE_KERNELS`, e.g. `5.10,6.1`; `none`
//! skips the matrix, saying so), two guests at a time. `TCPSTATE_KERNEL_TESTS`
//! runs only the tests whose names contain it.
//!
//! Everything fetched (package indexes, kernels, QEMU, busybox) is cached
//! under the tool's cache folder, in `kernels/`; a second run downloads
//! nothing new.

mod apt;
mod cpio;
mod initramfs;
mod kernel;
mod matrix;
mod qemu;
mod results;

use std::{
    fs,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use crate::{artifacts, toolchain};

/// The series tested by default: Debian's long-term kernels and the newest.
const SERIES: &str = "5.10,6.1,6.12,6.18,7";
/// The variable that selects other series.
const SELECT: &str = "TCPSTATE_KERNELS";
/// Names the tests to run (a part of their names), all when unset.
const FILTER: &str = "TCPSTATE_KERNEL_TESTS";

/// Fetches what is missing, runs the matrix with the shipped binary
/// `tcpstate` and the kernel test executables `tests`, prints one line per
/// kernel and the failures; fails if any kernel failed.
pub fn run(tcpstate: &Path, tests: &[PathBuf]) -> Result<()> {
    let started = Instant::now();
    let series = selected()?;
    if series.is_empty() {
        eprintln!("xtask: {SELECT}=none: the kernel matrix is skipped");
        return Ok(());
    }

    let cache = toolchain::cache_dir()?.join("kernels");
    let host = apt::Apt::new(cache.join("apt-host"), &host_suites()?)?;
    let archive = apt::Apt::new(cache.join("apt-kernels"), &kernel::SUITES)?;
    let online = host.update() & archive.update();
    if !online {
        eprintln!("xtask: working from the cache (package indexes of an earlier run)");
    }
    let qemu = qemu::fetch(&host).context("getting QEMU")?;
    let busybox = host
        .newest("busybox-static")
        .and_then(|p| host.fetch(&p))
        .context("getting busybox")?;
    let images = archive.search(kernel::IMAGES);
    if let Err(e) = &images {
        eprintln!("xtask: cannot list Debian's kernels ({e:#})");
    }
    let images = images.ok();
    let kernels = series
        .iter()
        .map(|s| kernel::resolve(&archive, images.as_deref(), s))
        .collect::<Result<Vec<_>>>()?;

    let base = initramfs::base(&busybox, &test_filter()?).context("building the initramfs")?;
    let programs = initramfs::programs(tcpstate, tests, &cache.join("initramfs"))
        .context("building the initramfs")?;
    let mut guests = Vec::new();
    for kernel in kernels {
        let dir = cache.join("runs").join(&kernel.series);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let modules = initramfs::modules(&kernel.modules)
            .with_context(|| format!("the modules of {} {}", kernel.package, kernel.version))?;
        initramfs::write(&dir.join("initrd.img"), &base, &programs, &modules)?;
        guests.push(matrix::Guest { kernel, dir });
    }
    eprintln!(
        "xtask: booting {} guest{}, at most two at a time (prepared in {:.0?})",
        guests.len(),
        if guests.len() == 1 { "" } else { "s" },
        started.elapsed()
    );
    let expected: Vec<String> = tests.iter().map(|t| artifacts::name(t)).collect();
    let outcomes = matrix::run(&qemu, &guests, &expected);
    let failed = matrix::report(&guests, &outcomes);
    println!("kernel matrix: {:.0?}", started.elapsed());
    if !failed.is_empty() {
        bail!("the kernel tests failed on {}", failed.join(", "));
    }
    Ok(())
}

/// `TCPSTATE_KERNEL_TESTS`, checked to be a part of a test name (it goes
/// into the guest's shell script).
fn test_filter() -> Result<String> {
    let filter = std::env::var(FILTER).unwrap_or_default();
    if !filter
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        bail!("{FILTER}={filter:?}: give a part of a test name (letters, digits, _ and :)");
    }
    if !filter.is_empty() {
        eprintln!("xtask: {FILTER}={filter}: only the tests whose names contain it run");
    }
    Ok(filter)
}

/// The series to test: `TCPSTATE_KERNELS` or the default.
fn selected() -> Result<Vec<String>> {
    let list = std::env::var(SELECT).unwrap_or_else(|_| SERIES.to_string());
    if list.trim() == "none" {
        return Ok(Vec::new());
    }
    let series: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if series.is_empty()
        || series
            .iter()
            .any(|s| s.split('.').any(|n| n.parse::<u32>().is_err()))
    {
        bail!("{SELECT}={list:?}: give kernel series separated by commas, e.g. {SERIES}");
    }
    Ok(series)
}

/// This machine's Debian release with its security updates and backports
/// (QEMU, its libraries and busybox must suit the host's C library).
fn host_suites() -> Result<Vec<(&'static str, String)>> {
    let release = fs::read_to_string("/etc/os-release").unwrap_or_default();
    let codename = release
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|c| c.trim_matches('"'))
        .filter(|c| !c.is_empty())
        .context("/etc/os-release names no Debian release: run on Debian 12 or newer")?;
    Ok(vec![
        (apt::DEBIAN, codename.to_string()),
        (apt::SECURITY, format!("{codename}-security")),
        (apt::DEBIAN, format!("{codename}-backports")),
    ])
}
