//! A guest's initramfs, as gzip'd cpio layers that the kernel unpacks one
//! over the other: the base system (busybox, `/init`, the host's network
//! tools with their libraries), the binaries under test, and one kernel's
//! modules.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use super::{apt::write_if_changed, cpio, results};
use crate::artifacts;

/// The host programs the tests run, found on the host with their libraries.
/// Also its `sh` (busybox's shell runs its own applets before any on PATH)
/// and util-linux's `mount` and `umount` (the tests use options busybox's
/// lack, such as `umount -R`).
const HOST_TOOLS: [&str; 8] = [
    "ip", "ss", "nstat", "setpriv", "unshare", "mount", "umount", "sh",
];
/// The modules the tests need (`true`: required), loaded in this order
/// after their dependencies unless built in.
const MODULES: [(&str, bool); 3] = [("inet_diag", true), ("tcp_diag", true), ("veth", false)];
/// Where the guest keeps the module list `/init` loads.
const MODULE_LIST: &str = "/etc/test-modules";

/// The guest's `/init`: mounts, loads modules, runs every test executable,
/// reports on the second serial port, powers off.
const INIT: &str = r#"#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t tracefs tracefs /sys/kernel/tracing
mount -t bpf bpf /sys/fs/bpf
if [ -d /sys/kernel/debug ]; then mount -t debugfs debugfs /sys/kernel/debug; fi
for m in $(cat @MODULES@); do
    insmod /lib/modules/$m.ko || echo "init: insmod $m failed"
done
ip link set lo up
mkdir -p /run/netns
stty -F /dev/ttyS1 raw -echo 2>/dev/null
export TCPSTATE_BIN=@TCPSTATE@
export TCPSTATE_TEST_SLOWDOWN=@SLOWDOWN@
cd @CWD@
for t in @TESTS@/*; do
    n=${t##*/}
    echo "init: running $n"
    timeout 600 "$t" --test-threads=1 @FILTER@ >/tmp/test-output 2>&1
    s=$?
    { echo "@BEGIN@$n"; cat /tmp/test-output; echo; echo "@END@$n $s"; } >/dev/ttyS1
done
echo "@DONE@" >/dev/ttyS1
sync
poweroff -f
"#;
const TCPSTATE: &str = "/project/target/tcpstate";
const TESTS: &str = "/project/target/tests";
/// How many times slower than this host a guest under QEMU's software
/// emulation runs (a storm: about ten): the tests scale the time bounds of
/// their responsiveness checks by it (`TCPSTATE_TEST_SLOWDOWN`).
const SLOWDOWN: u32 = 10;
/// The tests' working directory, as on the host (the crate's folder).
const CWD: &str = "/project/tests";

/// The base layer: busybox (from the extracted `busybox-static` package
/// `busybox`) with its applets, `/init` (which runs the tests whose names
/// contain `filter`, every test when it is empty), the host tools and
/// libraries.
pub fn base(busybox: &Path, filter: &str) -> Result<Vec<u8>> {
    let mut archive = cpio::Archive::default();
    for dir in ["proc", "sys", "dev", "tmp", "run", "root", "etc", CWD] {
        archive.dir(dir);
    }
    archive.char_device("/dev/console", 5, 1);
    let init = INIT
        .replace("@MODULES@", MODULE_LIST)
        .replace("@TCPSTATE@", TCPSTATE)
        .replace("@TESTS@", TESTS)
        .replace("@CWD@", CWD)
        .replace("@SLOWDOWN@", &SLOWDOWN.to_string())
        .replace("@FILTER@", filter)
        .replace("@BEGIN@", results::BEGIN)
        .replace("@END@", results::END)
        .replace("@DONE@", results::DONE);
    archive.file("/init", 0o755, init.into_bytes());

    let binary = busybox.join("bin/busybox");
    archive.file("/bin/busybox", 0o755, read(&binary)?);
    let applets = Command::new(&binary)
        .arg("--list-full")
        .output()
        .with_context(|| format!("running {}", binary.display()))?;
    for applet in String::from_utf8_lossy(&applets.stdout).lines() {
        if applet != "bin/busybox" && !applet.is_empty() {
            archive.symlink(applet, "/bin/busybox");
        }
    }

    let mut files = BTreeSet::new();
    for tool in HOST_TOOLS {
        let path = which(tool)?;
        files.extend(libraries(&path)?);
        files.insert(path.display().to_string());
    }
    for file in files {
        let meta = fs::metadata(&file).with_context(|| format!("reading {file}"))?;
        archive.file(
            &file,
            meta.permissions().mode() & 0o7777,
            read(Path::new(&file))?,
        );
    }
    cpio::gzip(&archive.encode())
}

/// The layer with tcpstate and the test executables; cached in `dir` and
/// rebuilt only when one of them changed. Returns its path.
pub fn programs(tcpstate: &Path, tests: &[PathBuf], dir: &Path) -> Result<PathBuf> {
    let mut files = vec![(TCPSTATE.to_string(), tcpstate.to_path_buf())];
    for test in tests {
        files.push((
            format!("{TESTS}/{}", artifacts::name(test)),
            test.to_path_buf(),
        ));
    }
    let mut key = String::new();
    for (guest, host) in &files {
        let meta = fs::metadata(host).with_context(|| format!("reading {}", host.display()))?;
        key += &format!(
            "{guest} {} {} {}.{}\n",
            host.display(),
            meta.len(),
            meta.mtime(),
            meta.mtime_nsec()
        );
    }
    fs::create_dir_all(dir)?;
    let layer = dir.join("programs.cpio.gz");
    let key_file = dir.join("programs.key");
    if layer.is_file() && fs::read_to_string(&key_file).is_ok_and(|k| k == key) {
        return Ok(layer);
    }
    let mut archive = cpio::Archive::default();
    for (guest, host) in &files {
        archive.file(guest, 0o755, read(host)?);
    }
    fs::write(&layer, cpio::gzip(&archive.encode())?)
        .with_context(|| format!("writing {}", layer.display()))?;
    fs::write(&key_file, key)?;
    Ok(layer)
}

/// The layer with the modules the tests need from the kernel whose
/// modules folder (`.../lib/modules/RELEASE`) is `modules`, and the list
/// `/init` loads them from, dependencies first.
pub fn modules(modules: &Path) -> Result<Vec<u8>> {
    let builtin: BTreeSet<String> = fs::read_to_string(modules.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .filter_map(module_name)
        .collect();
    let mut found = BTreeMap::new();
    index(&modules.join("kernel"), &mut found)?;

    let mut archive = cpio::Archive::default();
    let mut order = Vec::new();
    for (name, required) in MODULES {
        if builtin.contains(name) {
            continue;
        }
        if !found.contains_key(name) {
            if required {
                bail!(
                    "the kernel in {} has no module {name} and does not build it in",
                    modules.display()
                );
            }
            continue;
        }
        load(name, &found, &builtin, &mut archive, &mut order)?;
    }
    archive.file(MODULE_LIST, 0o644, (order.join("\n") + "\n").into_bytes());
    cpio::gzip(&archive.encode())
}

/// Adds module `name` after the modules it depends on.
fn load(
    name: &str,
    found: &BTreeMap<String, PathBuf>,
    builtin: &BTreeSet<String>,
    archive: &mut cpio::Archive,
    order: &mut Vec<String>,
) -> Result<()> {
    if order.iter().any(|n| n == name) || builtin.contains(name) {
        return Ok(());
    }
    let path = found
        .get(name)
        .with_context(|| format!("a module needs module {name}, which the kernel lacks"))?;
    let object = decompress(path)?;
    for dependency in depends(&object)
        .with_context(|| format!("reading the dependencies of {}", path.display()))?
    {
        load(&dependency, found, builtin, archive, order)?;
    }
    archive.file(&format!("/lib/modules/{name}.ko"), 0o644, object);
    order.push(name.to_string());
    Ok(())
}

/// Every module file under `dir`, by module name.
fn index(dir: &Path, found: &mut BTreeMap<String, PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            index(&path, found)?;
        } else if let Some(name) = path.to_str().and_then(module_name) {
            found.insert(name, path);
        }
    }
    Ok(())
}

/// A module's name from its file's path (`.../tcp-diag.ko.xz` -> `tcp_diag`).
fn module_name(path: &str) -> Option<String> {
    let file = path.rsplit('/').next()?;
    let (stem, _) = file.split_once(".ko")?;
    Some(stem.replace('-', "_"))
}

/// A module file's contents, decompressed (`.ko`, `.ko.xz`, `.ko.zst`).
fn decompress(path: &Path) -> Result<Vec<u8>> {
    let tool = match path.extension().and_then(|e| e.to_str()) {
        Some("ko") => return read(path),
        Some("xz") => "xz",
        Some("zst") => "zstd",
        Some("gz") => "gzip",
        _ => bail!("{} is not a kernel module", path.display()),
    };
    let out = Command::new(tool)
        .arg("-dc")
        .arg(path)
        .output()
        .with_context(|| format!("running {tool}: install it to decompress kernel modules"))?;
    if !out.status.success() {
        bail!("{tool} -dc {} failed ({})", path.display(), out.status);
    }
    Ok(out.stdout)
}

/// The `depends=` of a module: the names in its ELF `.modinfo` section.
fn depends(elf: &[u8]) -> Result<Vec<String>> {
    let modinfo = section(elf, ".modinfo").context("no .modinfo section")?;
    let mut names = Vec::new();
    for list in modinfo
        .split(|&b| b == 0)
        .filter_map(|field| field.strip_prefix(b"depends="))
    {
        let list = String::from_utf8_lossy(list);
        names.extend(
            list.split(',')
                .filter(|d| !d.is_empty())
                .map(|d| d.replace('-', "_")),
        );
    }
    Ok(names)
}

/// The contents of the section `name` of a 64-bit little-endian ELF file.
fn section<'a>(elf: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let u16_at = |at: usize| Some(u16::from_le_bytes(elf.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(elf.get(at..at + 4)?.try_into().ok()?));
    let u64_at = |at: usize| {
        let v = u64::from_le_bytes(elf.get(at..at + 8)?.try_into().ok()?);
        usize::try_from(v).ok()
    };
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let (table, entry_size) = (u64_at(0x28)?, usize::from(u16_at(0x3a)?));
    let (count, names_index) = (usize::from(u16_at(0x3c)?), usize::from(u16_at(0x3e)?));
    let header = |i: usize| table + i * entry_size;
    let bytes = |i: usize| {
        let (offset, size) = (u64_at(header(i) + 0x18)?, u64_at(header(i) + 0x20)?);
        elf.get(offset..offset.checked_add(size)?)
    };
    let names = bytes(names_index)?;
    (0..count).find_map(|i| {
        let at = usize::try_from(u32_at(header(i))?).ok()?;
        let rest = names.get(at..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        (&rest[..end] == name.as_bytes())
            .then(|| bytes(i))
            .flatten()
    })
}

/// The shared libraries (and the dynamic loader) `program` needs, from ldd.
fn libraries(program: &Path) -> Result<Vec<String>> {
    let out = Command::new("ldd")
        .arg(program)
        .output()
        .context("running ldd: install libc-bin")?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_ldd(&text).with_context(|| format!("ldd {}", program.display()))
}

/// The absolute paths in ldd's output; an error names any missing library.
fn parse_ldd(text: &str) -> Result<Vec<String>> {
    let mut paths = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.contains("not found") {
            bail!("a library is missing: {line}");
        }
        let path = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            paths.push(path.to_string());
        }
    }
    Ok(paths)
}

/// Where `tool` is on the host (PATH, then the sbin folders).
fn which(tool: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
                "the tests run {tool}, which this machine lacks: install iproute2 and util-linux"
            )
        })
}

fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// Writes a guest's initramfs: the layers, concatenated, to `path`.
pub fn write(path: &Path, base: &[u8], programs: &Path, modules: &[u8]) -> Result<()> {
    let mut bytes = base.to_vec();
    bytes.extend(read(programs)?);
    bytes.extend_from_slice(modules);
    write_if_changed(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_paths() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
            \tlibcap-ng.so.0 => /lib/x86_64-linux-gnu/libcap-ng.so.0 (0x00007f12)\n\
            \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f11)\n\
            \t/lib64/ld-linux-x86-64.so.2 (0x00007f13)\n";
        assert_eq!(
            parse_ldd(text).unwrap(),
            [
                "/lib/x86_64-linux-gnu/libcap-ng.so.0",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
        let missing = parse_ldd("\tlibfdt.so.1 => not found\n").unwrap_err();
        assert!(missing.to_string().contains("libfdt.so.1"));
    }

    #[test]
    fn module_names_from_paths() {
        assert_eq!(
            module_name("kernel/net/ipv4/tcp_diag.ko").unwrap(),
            "tcp_diag"
        );
        assert_eq!(
            module_name("/m/kernel/drivers/net/veth.ko.xz").unwrap(),
            "veth"
        );
        assert_eq!(module_name("a/nf-nat.ko.zst").unwrap(), "nf_nat");
        assert_eq!(module_name("modules.order"), None);
    }

    /// A minimal ELF file: a null section, `.modinfo`, `.shstrtab`.
    fn elf_with_modinfo(modinfo: &[u8]) -> Vec<u8> {
        let names = b"\0.modinfo\0.shstrtab\0";
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let modinfo_at = elf.len();
        elf.extend_from_slice(modinfo);
        let names_at = elf.len();
        elf.extend_from_slice(names);
        let table = elf.len();
        elf[0x28..0x30].copy_from_slice(&(table as u64).to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        elf[0x3e..0x40].copy_from_slice(&2u16.to_le_bytes());
        for (name, offset, size) in [
            (0u32, 0usize, 0usize),
            (1, modinfo_at, modinfo.len()),
            (10, names_at, names.len()),
        ] {
            let mut header = [0u8; 64];
            header[..4].copy_from_slice(&name.to_le_bytes());
            header[0x18..0x20].copy_from_slice(&(offset as u64).to_le_bytes());
            header[0x20..0x28].copy_from_slice(&(size as u64).to_le_bytes());
            elf.extend_from_slice(&header);
        }
        elf
    }

    #[test]
    fn module_dependencies_from_modinfo() {
        let elf = elf_with_modinfo(b"license=GPL\0depends=inet_diag,nf-conntrack\0name=tcp_diag\0");
        assert_eq!(depends(&elf).unwrap(), ["inet_diag", "nf_conntrack"]);
        let none = elf_with_modinfo(b"license=GPL\0depends=\0name=veth\0");
        assert!(depends(&none).unwrap().is_empty());
        assert!(depends(b"not an ELF file").is_err());
    }
}
