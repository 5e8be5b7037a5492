//! Compiles the eBPF programs (`tcpstate-ebpf`) for the BPF target with the
//! nightly toolchain and bpf-linker, and leaves the object in `OUT_DIR` for
//! `include_bytes_aligned!`. `cargo xtask` installs both; see README.md.
//! Also names the git revision built, for `--version`.
use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    println!("cargo:rustc-env=TCPSTATE_REVISION={}", revision());
    if which_bpf_linker().is_none() {
        return Err(anyhow!(
            "bpf-linker is not on PATH: build through `cargo xtask build` (it installs the eBPF toolchain)"
        ));
    }
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "tcpstate-ebpf")
        .ok_or_else(|| anyhow!("tcpstate-ebpf package not found"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}

/// `bpf-linker` on PATH, if any; a change of it rebuilds the programs.
fn which_bpf_linker() -> Option<std::path::PathBuf> {
    println!("cargo:rerun-if-env-changed=PATH");
    let linker = which::which("bpf-linker").ok()?;
    println!("cargo:rerun-if-changed={}", linker.display());
    Some(linker)
}

/// The commit built (`-dirty` with uncommitted changes to tracked files),
/// or `unknown` outside a git checkout. Rebuilt when HEAD, the branch it
/// names or the index changes.
fn revision() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) else {
        return "unknown".into();
    };
    let dir = std::path::Path::new(&dir);
    // And the sources, for `-dirty`.
    println!("cargo:rerun-if-changed=src");
    let mut watched = vec![dir.join("HEAD"), dir.join("index"), dir.join("packed-refs")];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(dir.join(branch));
    }
    for path in watched.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    let Some(commit) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return "unknown".into();
    };
    match git(&["status", "--porcelain", "--untracked-files=no"]) {
        Some(changes) if !changes.is_empty() => format!("{commit}-dirty"),
        _ => commit,
    }
}
