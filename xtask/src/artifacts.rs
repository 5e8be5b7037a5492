//! The binaries that are tested and shipped: tcpstate, linked statically
//! (programs embedded, no library needed on the host), and the kernel
//! integration tests, built the same way so they run inside any guest
//! kernel as they do here.
//!
//! Static linking applies to the x86_64 target only
//! (`CARGO_TARGET_<triple>_RUSTFLAGS`), so build scripts and the eBPF build
//! that tcpstate's build script starts are left as they are.

use std::{
    ffi::OsStr,
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::toolchain::Env;

/// The target the shipped binary is built for.
pub const TARGET: &str = "x86_64-unknown-linux-gnu";
const STATIC: (&str, &str) = (
    "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
    "-C target-feature=+crt-static",
);

/// Builds the static release binary (and beside it the tests' `storm`
/// helper, for the benchmark); returns the binary's path.
pub fn tcpstate(env: &Env) -> Result<PathBuf> {
    env.cargo_with(
        &[
            "build",
            "--release",
            "--target",
            TARGET,
            "--package",
            "tcpstate",
            "--package",
            "tcpstate-tests",
            "--bins",
        ],
        &[(STATIC.0, OsStr::new(STATIC.1))],
    )
    .context("building the static tcpstate binary")?;
    Ok(crate::root()
        .join("target")
        .join(TARGET)
        .join("release/tcpstate"))
}

/// Builds the kernel integration tests (statically, like the binary) and
/// returns each test executable's path, in a stable order.
pub fn kernel_tests(env: &Env) -> Result<Vec<PathBuf>> {
    let mut cmd = env.cargo_command();
    cmd.args([
        "test",
        "--release",
        "--target",
        TARGET,
        "--package",
        "tcpstate-tests",
        "--tests",
        "--no-run",
        "--message-format=json-render-diagnostics",
    ])
    .env(STATIC.0, STATIC.1)
    .stdout(Stdio::piped());
    let out = cmd
        .output()
        .context("building the kernel integration tests")?;
    if !out.status.success() {
        bail!(
            "building the kernel integration tests failed ({}): see cargo's errors above",
            out.status
        );
    }
    let mut tests = executables(&out.stdout)?;
    if tests.is_empty() {
        bail!("cargo built no kernel integration test");
    }
    tests.sort();
    Ok(tests)
}

/// The test executables in cargo's JSON messages.
fn executables(messages: &[u8]) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for line in messages.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let message: serde_json::Value =
            serde_json::from_slice(line).context("cargo printed a message that is not JSON")?;
        // The files of tests/tests/, not the library's or helpers' unit tests.
        let is_test = message["reason"] == "compiler-artifact"
            && message["profile"]["test"] == true
            && message["target"]["kind"] == serde_json::json!(["test"]);
        if let Some(path) = message["executable"].as_str().filter(|_| is_test) {
            found.push(PathBuf::from(path));
        }
    }
    Ok(found)
}

/// Runs every kernel integration test executable here, one test at a time,
/// against the binary `tcpstate`.
pub fn run_kernel_tests(tests: &[PathBuf], tcpstate: &std::path::Path) -> Result<()> {
    let mut failed = Vec::new();
    for test in tests {
        let status = Command::new(test)
            .arg("--test-threads=1")
            .env("TCPSTATE_BIN", tcpstate)
            .current_dir(crate::root().join("tests"))
            .status()
            .with_context(|| format!("running {}", test.display()))?;
        if !status.success() {
            failed.push(name(test));
        }
    }
    match failed.as_slice() {
        [] => Ok(()),
        _ => bail!("kernel integration tests failed: {}", failed.join(", ")),
    }
}

/// Tests that run on the host only: `report` opens a browser, `serve`
/// runs Prometheus, promtool and systemd-analyze, and `tui` runs tmux,
/// which the kernel matrix's guests do not have.
const HOST_ONLY: [&str; 3] = ["report", "serve", "tui"];

/// The test executables the guests run: all but [`HOST_ONLY`].
pub fn guest_tests(tests: &[PathBuf]) -> Vec<PathBuf> {
    tests
        .iter()
        .filter(|t| !HOST_ONLY.contains(&name(t).as_str()))
        .cloned()
        .collect()
}

/// A test executable's name without cargo's hash (`watch-1f2e...` -> `watch`).
pub fn name(test: &std::path::Path) -> String {
    let file = test.file_name().unwrap_or_default().to_string_lossy();
    match file.rsplit_once('-') {
        Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => name.to_string(),
        _ => file.into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_executables_from_cargo_messages() {
        let messages = br#"{"reason":"compiler-artifact","target":{"kind":["bin"]},"profile":{"test":false},"executable":"/t/release/storm"}
{"reason":"compiler-artifact","target":{"kind":["lib"]},"profile":{"test":true},"executable":"/t/release/deps/tcpstate_tests-0123abcd"}
{"reason":"compiler-artifact","target":{"kind":["test"]},"profile":{"test":true},"executable":"/t/release/deps/watch-0123abcd"}
{"reason":"compiler-artifact","target":{"kind":["test"]},"profile":{"test":true},"executable":null}
{"reason":"build-finished","success":true}
"#;
        let found = executables(messages).unwrap();
        assert_eq!(found, [PathBuf::from("/t/release/deps/watch-0123abcd")]);
        assert_eq!(name(&found[0]), "watch");
        assert_eq!(name(std::path::Path::new("/x/no_hash")), "no_hash");
    }
}
