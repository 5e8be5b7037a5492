//! Debian packages the host's tests use, installed with the system's apt
//! when missing: Chromium, the real browser the HTML report is opened in.

use std::{path::Path, process::Command};

use anyhow::{Context as _, Result, bail};

/// The browser the report test runs.
const CHROMIUM: &str = "/usr/bin/chromium";

/// Installs Debian's chromium unless it is there.
pub fn chromium() -> Result<()> {
    if Path::new(CHROMIUM).exists() {
        eprintln!("xtask: {CHROMIUM} is installed");
        return Ok(());
    }
    eprintln!("xtask: installing chromium (for the HTML report test)");
    // With the package lists as they are, then refreshed (a fresh machine
    // may have none).
    if !apt_get(&["install", "-y", "-q", "--no-install-recommends", "chromium"])? {
        apt_get(&["update", "-q"])?;
        apt_get(&["install", "-y", "-q", "--no-install-recommends", "chromium"])?;
    }
    if !Path::new(CHROMIUM).exists() {
        bail!("apt-get install chromium failed: the report test needs {CHROMIUM}");
    }
    Ok(())
}

/// Runs `apt-get ARGS`; whether it succeeded.
fn apt_get(args: &[&str]) -> Result<bool> {
    let status = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("running apt-get: install apt")?;
    Ok(status.success())
}
