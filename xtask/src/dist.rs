//! `cargo xtask dist`: what an SRE copies to a host. The static binary
//! (programs embedded, stripped), and around it a tarball with the README,
//! the licenses, the man page and the shell completions the binary itself
//! generates from its command-line definitions, and the same as a `.deb`.
//! The kernel matrix runs this very binary.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{
    artifacts,
    toolchain::{Env, output, run},
};

const VERSION: &str = env!("CARGO_PKG_VERSION");
const NAME: &str = "tcpstate";

/// A file the binary generates, and where it goes in the tarball and in the
/// `.deb`.
struct Generated {
    what: &'static str,
    tarball: &'static str,
    deb: &'static str,
}

const GENERATED: [Generated; 4] = [
    Generated {
        what: "man",
        tarball: "tcpstate.1",
        deb: "usr/share/man/man1/tcpstate.1",
    },
    Generated {
        what: "bash",
        tarball: "completions/tcpstate.bash",
        deb: "usr/share/bash-completion/completions/tcpstate",
    },
    Generated {
        what: "zsh",
        tarball: "completions/_tcpstate",
        deb: "usr/share/zsh/vendor-completions/_tcpstate",
    },
    Generated {
        what: "fish",
        tarball: "completions/tcpstate.fish",
        deb: "usr/share/fish/vendor_completions.d/tcpstate.fish",
    },
];

/// Files of the source tree shipped as they are.
const DOCS: [&str; 3] = ["README.md", "LICENSE-MIT", "LICENSE-APACHE"];

/// Builds everything into `target/dist/`; returns the shipped binary.
pub fn build(env: &Env) -> Result<PathBuf> {
    let built = artifacts::tcpstate(env)?;
    let out = crate::root().join("target/dist");
    let stage = out.join(format!("{NAME}-{VERSION}-x86_64-linux"));
    recreate(&stage)?;
    let binary = stage.join(NAME);
    run(Command::new("strip")
        .arg("--strip-all")
        .arg("-o")
        .arg(&binary)
        .arg(&built))
    .context("stripping the binary (strip is in Debian's binutils)")?;
    let version = check_binary(&binary)?;
    for g in &GENERATED {
        let text = output(Command::new(&binary).args(["generate", g.what]))?;
        write(&stage.join(g.tarball), &(text + "\n"))?;
    }
    for doc in DOCS {
        copy(&crate::root().join(doc), &stage.join(doc))?;
    }
    let tarball = out.join(format!("{NAME}-{VERSION}-x86_64-linux.tar.gz"));
    run(Command::new("tar")
        .arg("--owner=0")
        .arg("--group=0")
        .arg("-czf")
        .arg(&tarball)
        .arg("-C")
        .arg(&out)
        .arg(stage.file_name().expect("named above")))?;
    let deb = deb(&stage, &out)?;
    eprintln!(
        "xtask: dist: {version}: {} ({} KiB binary), {}",
        tarball.display(),
        fs::metadata(&binary)?.len() >> 10,
        deb.display()
    );
    Ok(binary)
}

/// The binary must be static and name the revision it was built from; its
/// `--version` line.
fn check_binary(binary: &Path) -> Result<String> {
    let header = fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
    if has_interpreter(&header) {
        bail!(
            "{} is dynamically linked (it has an ELF interpreter): the static build flags were lost",
            binary.display()
        );
    }
    let version = output(Command::new(binary).arg("--version"))?;
    if version.contains("unknown") {
        bail!("{version:?} names no git revision: build from a git checkout");
    }
    Ok(version)
}

/// Whether an ELF file has a `PT_INTERP` program header (a dynamic loader).
fn has_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |at: usize| {
        elf.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        elf.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |at: usize| {
        elf.get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    // 64-bit little-endian ELF: e_phoff at 0x20, e_phentsize at 0x36,
    // e_phnum at 0x38.
    let (Some(phoff), Some(size), Some(count)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        return false;
    };
    (0..usize::from(count)).any(|i| {
        let at = phoff as usize + i * usize::from(size);
        u32_at(at) == Some(PT_INTERP)
    })
}

/// The `.deb`: the binary in /usr/bin, the man page, the completions where
/// Debian's shells look for them, and the licenses as the copyright file.
fn deb(stage: &Path, out: &Path) -> Result<PathBuf> {
    let root = out.join("deb");
    recreate(&root)?;
    copy(&stage.join(NAME), &root.join("usr/bin").join(NAME))?;
    for g in &GENERATED {
        copy(&stage.join(g.tarball), &root.join(g.deb))?;
    }
    let doc = root.join("usr/share/doc").join(NAME);
    copy(&stage.join("README.md"), &doc.join("README.md"))?;
    let mut copyright = String::new();
    for license in &DOCS[1..] {
        copyright += &fs::read_to_string(stage.join(license))?;
        copyright += "\n";
    }
    write(&doc.join("copyright"), &copyright)?;
    let installed_kib: u64 = walk(&root)?
        .iter()
        .map(|f| fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum::<u64>()
        >> 10;
    write(
        &root.join("DEBIAN/control"),
        &format!(
            "Package: {NAME}\n\
             Version: {VERSION}\n\
             Architecture: amd64\n\
             Maintainer: tcpstate developers <tcpstate@users.noreply.github.com>\n\
             Installed-Size: {installed_kib}\n\
             Section: net\n\
             Priority: optional\n\
             Description: every TCP state transition, TIME_WAIT socket and closer, live\n \
             tcpstate traces TCP state transitions with eBPF, tracks every TIME_WAIT\n \
             socket until it expires and tells who closed each connection.\n"
        ),
    )?;
    let deb = out.join(format!("{NAME}_{VERSION}_amd64.deb"));
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&root)
        .arg(&deb))
    .context("building the .deb (dpkg-deb is in Debian's dpkg)")?;
    Ok(deb)
}

fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            files.extend(walk(&path)?);
        } else {
            files.push(path);
        }
    }
    Ok(files)
}

fn recreate(dir: &Path) -> Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::copy(from, to)
        .map(drop)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_static_from_dynamic_binaries() {
        // xtask itself is dynamically linked; a header with no program
        // headers has no interpreter.
        let me = fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(has_interpreter(&me));
        let mut bare = vec![0u8; 64];
        bare[..4].copy_from_slice(b"\x7fELF");
        assert!(!has_interpreter(&bare));
        assert!(!has_interpreter(&[]));
    }
}
