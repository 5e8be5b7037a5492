//! The eBPF toolchain, installed by the project itself:
//! - the nightly toolchain's `rust-src` (the BPF target builds `core`);
//! - `bpf-linker`, built against the nightly's own LLVM shared library, so
//!   that its LLVM matches the one rustc emits bitcode for. The library's
//!   name is derived from the nightly's sysroot, never hard-coded.
//!
//! Everything lands under `$XDG_CACHE_HOME/tcpstate` (or `~/.cache/tcpstate`),
//! keyed by the LLVM library name, so a new nightly gets a matching linker.

use std::{
    env,
    ffi::{OsStr, OsString},
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, anyhow, bail};

const NIGHTLY: &str = "nightly";
const BPF_LINKER_VERSION: &str = "0.13.0";

/// How to run cargo with the toolchain in place.
pub struct Env {
    cargo: OsString,
    path: OsString,
}

impl Env {
    /// Runs `cargo ARGS` in the workspace, with bpf-linker on PATH.
    pub fn cargo(&self, args: &[&str]) -> Result<()> {
        self.cargo_with(args, &[])
    }

    pub fn cargo_with(&self, args: &[&str], vars: &[(&str, &OsStr)]) -> Result<()> {
        let mut cmd = self.cargo_command();
        cmd.args(args);
        for (k, v) in vars {
            cmd.env(k, v);
        }
        run(&mut cmd)
    }

    /// `cargo` in the workspace, with bpf-linker on PATH; the caller adds
    /// the arguments.
    pub fn cargo_command(&self) -> Command {
        let mut cmd = Command::new(&self.cargo);
        cmd.current_dir(crate::root()).env("PATH", &self.path);
        cmd
    }

    /// `cargo` of the nightly toolchain (`rustup run nightly cargo`), in the
    /// workspace, with bpf-linker on PATH; the caller adds the arguments.
    pub fn nightly_cargo(&self) -> Command {
        let mut cmd = Command::new("rustup");
        cmd.args(["run", NIGHTLY, "cargo"])
            .env_remove("RUSTC")
            .env_remove("RUSTC_WORKSPACE_WRAPPER")
            .env("PATH", &self.path)
            .current_dir(crate::root());
        cmd
    }

    /// Lints the eBPF crate for the BPF target with the nightly toolchain.
    pub fn clippy_ebpf(&self) -> Result<()> {
        let mut cmd = Command::new("rustup");
        cmd.args([
            "run",
            NIGHTLY,
            "cargo",
            "clippy",
            "--package",
            "tcpstate-ebpf",
            "--bins",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--target-dir",
            "target/ebpf-clippy",
            "--",
            "-D",
            "warnings",
        ])
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            "--cfg=bpf_target_arch=\"x86_64\"",
        )
        .env("PATH", &self.path)
        .current_dir(crate::root());
        run(&mut cmd)
    }
}

/// Runs a command, failing with its command line when it fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

/// Runs a command; its stdout, trimmed.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

pub(crate) fn cache_dir() -> Result<PathBuf> {
    let base = match env::var_os("XDG_CACHE_HOME") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(env::var_os("HOME").ok_or_else(|| anyhow!("HOME is not set"))?)
            .join(".cache"),
    };
    Ok(base.join("tcpstate"))
}

/// Installs what is missing; returns the environment to build with.
pub fn bootstrap() -> Result<Env> {
    let toolchains =
        output(Command::new("rustup").args(["toolchain", "list"])).context("rustup is required")?;
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        eprintln!("xtask: installing the nightly toolchain");
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            NIGHTLY,
            "--profile",
            "minimal",
            "--component",
            "rust-src,clippy,rustfmt",
        ]))?;
    }
    let sysroot = PathBuf::from(output(Command::new("rustc").args([
        &format!("+{NIGHTLY}"),
        "--print",
        "sysroot",
    ]))?);
    if !sysroot.join("lib/rustlib/src/rust/library/core").is_dir() {
        eprintln!("xtask: installing rust-src for {NIGHTLY}");
        run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", NIGHTLY]))?;
    }
    let linker_bin = bpf_linker(&sysroot)?;

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut paths = vec![linker_bin];
    paths.extend(env::split_paths(&env::var_os("PATH").unwrap_or_default()));
    Ok(Env {
        cargo,
        path: env::join_paths(paths)?,
    })
}

/// The nightly's LLVM shared library: `libLLVM.so.<major>.<minor>-rust-...`.
fn llvm_library(sysroot: &Path) -> Result<(String, u32)> {
    let lib = sysroot.join("lib");
    for entry in fs::read_dir(&lib).with_context(|| format!("reading {}", lib.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(version) = name.strip_prefix("libLLVM.so.") {
            let major = version
                .split(['.', '-'])
                .next()
                .and_then(|m| m.parse().ok())
                .ok_or_else(|| anyhow!("cannot read the LLVM version from {name}"))?;
            return Ok((name, major));
        }
    }
    bail!(
        "no libLLVM.so.* in {}: the nightly toolchain ships one",
        lib.display()
    )
}

/// Ensures a bpf-linker linked to the nightly's LLVM; returns its bin dir.
fn bpf_linker(sysroot: &Path) -> Result<PathBuf> {
    let (soname, major) = llvm_library(sysroot)?;
    let cache = cache_dir()?;
    let root = cache.join("bpf-linker").join(&soname);
    let bin = root.join("bin");
    let linker = bin.join("bpf-linker");
    if Command::new(&linker)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Ok(bin);
    }

    // A prefix that looks like an LLVM install to llvm-sys: both names of the
    // library, pointing at the nightly's own copy. bpf-linker keeps an rpath
    // to it, so it stays in the cache.
    let prefix = cache.join("llvm").join(&soname);
    let prefix_lib = prefix.join("lib");
    fs::create_dir_all(&prefix_lib)?;
    let target = sysroot.join("lib").join(&soname);
    for name in [soname.as_str(), "libLLVM.so"] {
        let link = prefix_lib.join(name);
        let _ = fs::remove_file(&link);
        symlink(&target, &link).with_context(|| format!("linking {}", link.display()))?;
    }
    eprintln!("xtask: building bpf-linker {BPF_LINKER_VERSION} against {soname} (about a minute)");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run(Command::new(cargo)
        .args([
            "install",
            &format!("bpf-linker@{BPF_LINKER_VERSION}"),
            "--locked",
            "--no-default-features",
            "--features",
            &format!("llvm-{major}"),
            "--root",
        ])
        .arg(&root)
        .env("LLVM_PREFIX", &prefix))
    .context("building bpf-linker")?;
    Ok(bin)
}
