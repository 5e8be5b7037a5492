//! A private apt configuration: its sources, package indexes, downloads and
//! extracted packages all live in one cache folder, so the system's apt
//! state is never read or changed and nothing is installed.

use std::{
    cmp::Ordering,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

/// Debian's archive and its security archive.
pub const DEBIAN: &str = "http://deb.debian.org/debian";
pub const SECURITY: &str = "http://deb.debian.org/debian-security";
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// One version of one package, as `apt-cache show` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub depends: String,
}

impl Package {
    /// The names this package depends on (the first of each set of
    /// alternatives, without version constraints).
    pub fn dependencies(&self) -> Vec<String> {
        self.depends
            .split(',')
            .filter_map(|dep| {
                let first = dep.split('|').next()?.trim();
                let name = first.split([' ', '(', ':']).next()?;
                (!name.is_empty()).then(|| name.to_string())
            })
            .collect()
    }
}

/// A private apt configuration rooted at one folder.
pub struct Apt {
    dir: PathBuf,
}

impl Apt {
    /// Sets up `dir` for the given `deb` suites (`(archive, suite)` pairs,
    /// component main).
    pub fn new(dir: PathBuf, suites: &[(&str, impl AsRef<str>)]) -> Result<Apt> {
        for sub in ["lists/partial", "cache/archives/partial", "packages"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        }
        let sources: String = suites
            .iter()
            .map(|(archive, suite)| {
                format!(
                    "deb [signed-by={KEYRING}] {archive} {} main\n",
                    suite.as_ref()
                )
            })
            .collect();
        write_if_changed(&dir.join("sources.list"), sources.as_bytes())?;
        Ok(Apt { dir })
    }

    /// `program` (apt-get or apt-cache) using only this configuration.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        let path = |p: &str| self.dir.join(p).display().to_string();
        for (key, value) in [
            ("Dir::Etc::SourceList", path("sources.list")),
            ("Dir::Etc::SourceParts", "/dev/null".into()),
            ("Dir::State::Lists", path("lists")),
            ("Dir::State::status", "/dev/null".into()),
            ("Dir::Cache", path("cache")),
            ("Dir::Cache::pkgcache", "pkgcache.bin".into()),
            ("Dir::Cache::srcpkgcache", "srcpkgcache.bin".into()),
            ("APT::Architecture", "amd64".into()),
            ("APT::Architectures", "amd64".into()),
            ("APT::Sandbox::User", "root".into()),
            ("Acquire::Languages", "none".into()),
            (
                "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled",
                "false".into(),
            ),
            (
                "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled",
                "false".into(),
            ),
        ] {
            cmd.arg("-o").arg(format!("{key}={value}"));
        }
        cmd
    }

    /// Refreshes the package indexes (cheap when nothing changed). Returns
    /// false, having said why, when the archive cannot be reached: the
    /// indexes of an earlier run (if any) are then used as they are.
    pub fn update(&self) -> bool {
        let out = self
            .command("apt-get")
            .args(["update", "-q", "--error-on=any"])
            .output();
        match out {
            Ok(out) if out.status.success() => true,
            Ok(out) => {
                let text = String::from_utf8_lossy(&out.stderr);
                let why = text
                    .lines()
                    .find(|l| l.starts_with("E:") || l.starts_with("W:"))
                    .unwrap_or("no message");
                eprintln!("xtask: cannot refresh the Debian package indexes ({why})");
                false
            }
            Err(e) => {
                eprintln!("xtask: cannot run apt-get ({e}): install apt");
                false
            }
        }
    }

    /// Every version of the packages whose names match `regex`.
    pub fn search(&self, regex: &str) -> Result<Vec<Package>> {
        let names = output(
            self.command("apt-cache")
                .args(["search", "--names-only", regex]),
        )?;
        let names: Vec<&str> = names.lines().filter_map(|l| l.split(' ').next()).collect();
        if names.is_empty() {
            return Ok(Vec::new());
        }
        self.show(&names, true)
    }

    /// The packages `names`: every version, or only the candidate (what
    /// `apt-get install` would choose).
    pub fn show(&self, names: &[&str], all_versions: bool) -> Result<Vec<Package>> {
        let mut cmd = self.command("apt-cache");
        cmd.arg("show");
        if !all_versions {
            cmd.arg("--no-all-versions");
        }
        Ok(parse_show(&output(cmd.args(names))?))
    }

    /// The newest version of package `name` (backports included).
    pub fn newest(&self, name: &str) -> Result<Package> {
        self.show(&[name], true)?
            .into_iter()
            .max_by(|a, b| compare_versions(&a.version, &b.version))
            .with_context(|| format!("the Debian archive has no package {name}"))
    }

    /// The folder `package` is extracted in, downloading and extracting it
    /// first unless an earlier run did.
    pub fn fetch(&self, package: &Package) -> Result<PathBuf> {
        let done = self.extracted(&package.name, &package.version);
        if done.is_dir() {
            return Ok(done);
        }
        let work = self.dir.join("packages").join(format!(".{}", package.name));
        let _ = fs::remove_dir_all(&work);
        fs::create_dir_all(&work)?;
        let spec = format!("{}={}", package.name, package.version);
        output(
            self.command("apt-get")
                .args(["download", "-q", &spec])
                .current_dir(&work),
        )
        .with_context(|| format!("downloading {spec}"))?;
        let deb = fs::read_dir(&work)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .with_context(|| format!("apt-get download {spec} left no .deb"))?;
        let tree = work.join("tree");
        output(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree))
            .with_context(|| format!("extracting {}", deb.display()))?;
        fs::rename(&tree, &done)?;
        fs::remove_dir_all(&work)?;
        Ok(done)
    }

    /// Where `name` at `version` is (or would be) extracted.
    pub fn extracted(&self, name: &str, version: &str) -> PathBuf {
        self.dir
            .join("packages")
            .join(format!("{name}_{}", version.replace(':', "%3a")))
    }

    /// The packages extracted by earlier runs (for working offline).
    pub fn cached(&self) -> Vec<Package> {
        let Ok(entries) = fs::read_dir(self.dir.join("packages")) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| {
                let file = e.ok()?.file_name().into_string().ok()?;
                let (name, version) = file.split_once('_')?;
                Some(Package {
                    name: name.to_string(),
                    version: version.replace("%3a", ":"),
                    depends: String::new(),
                })
            })
            .filter(|p| !p.name.starts_with('.'))
            .collect()
    }
}

/// Writes `bytes` to `path` unless it already holds them.
pub fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<()> {
    if fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("running {:?}: install apt", cmd.get_program()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let why = stderr.lines().find(|l| l.starts_with("E:")).unwrap_or("");
        bail!("{:?} failed ({}): {why}", cmd.get_program(), out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The stanzas of `apt-cache show`.
fn parse_show(text: &str) -> Vec<Package> {
    text.split("\n\n")
        .filter_map(|stanza| {
            let field = |key: &str| {
                stanza.lines().find_map(|l| {
                    l.strip_prefix(key)
                        .and_then(|rest| rest.strip_prefix(':'))
                        .map(|v| v.trim().to_string())
                })
            };
            Some(Package {
                name: field("Package")?,
                version: field("Version")?,
                depends: field("Depends").unwrap_or_default(),
            })
        })
        .collect()
}

/// Orders two Debian version strings as dpkg does
/// (`[epoch:]upstream[-revision]`, `~` before anything, even the end).
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    fn split(v: &str) -> (u64, &str, &str) {
        let (epoch, rest) = match v.split_once(':') {
            Some((e, rest)) if e.bytes().all(|c| c.is_ascii_digit()) => {
                (e.parse().unwrap_or(0), rest)
            }
            _ => (0, v),
        };
        match rest.rsplit_once('-') {
            Some((upstream, revision)) => (epoch, upstream, revision),
            None => (epoch, rest, ""),
        }
    }
    let (ea, ua, ra) = split(a);
    let (eb, ub, rb) = split(b);
    ea.cmp(&eb)
        .then_with(|| compare_part(ua, ub))
        .then_with(|| compare_part(ra, rb))
}

/// dpkg's comparison of one part: alternating non-digit runs (compared
/// character by character) and digit runs (compared as numbers).
fn compare_part(a: &str, b: &str) -> Ordering {
    fn weight(c: Option<u8>) -> i32 {
        match c {
            None => 0,
            Some(b'~') => -1,
            Some(c) if c.is_ascii_digit() => 0,
            Some(c) if c.is_ascii_alphabetic() => i32::from(c),
            Some(c) => i32::from(c) + 256,
        }
    }
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    let digit = |s: &[u8], k: usize| s.get(k).is_some_and(u8::is_ascii_digit);
    while i < a.len() || j < b.len() {
        while (i < a.len() && !digit(a, i)) || (j < b.len() && !digit(b, j)) {
            let (wa, wb) = (weight(a.get(i).copied()), weight(b.get(j).copied()));
            if wa != wb {
                return wa.cmp(&wb);
            }
            i = (i + 1).min(a.len());
            j = (j + 1).min(b.len());
        }
        let start_a = i + a[i..].iter().take_while(|&&c| c == b'0').count();
        let start_b = j + b[j..].iter().take_while(|&&c| c == b'0').count();
        let (mut ea, mut eb) = (start_a, start_b);
        while digit(a, ea) {
            ea += 1;
        }
        while digit(b, eb) {
            eb += 1;
        }
        let by_number = (ea - start_a)
            .cmp(&(eb - start_b))
            .then_with(|| a[start_a..ea].cmp(&b[start_b..eb]));
        if by_number != Ordering::Equal {
            return by_number;
        }
        (i, j) = (ea, eb);
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_as_dpkg_orders_them() {
        use Ordering::*;
        for (a, b, want) in [
            ("5.10.262-1", "5.10.262-1", Equal),
            ("6.1.192-3", "6.1.180-1~deb11u1", Greater),
            ("6.12.118-1", "6.12.57-1~bpo12+1", Greater),
            ("7.3.4-1~bpo13+1", "7.3.4-1", Less),
            (
                "1:10.0.2+ds-2+deb13u1~bpo12+1",
                "1:7.2+dfsg-7+deb12u18+b3",
                Greater,
            ),
            ("1:7.2", "10.0", Greater),
            ("1.0~rc1", "1.0", Less),
            ("1.0a", "1.0", Greater),
            ("1.0+b1", "1.0a", Greater),
            ("1.01", "1.1", Equal),
            ("2.0", "10.0", Less),
        ] {
            assert_eq!(compare_versions(a, b), want, "{a} vs {b}");
            assert_eq!(compare_versions(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn show_output_is_parsed() {
        let text = "Package: linux-image-7.3.4+deb13-cloud-amd64\nVersion: 7.3.4-1~bpo13+1\n\
            Installed-Size: 15\nDepends: dracut | initramfs-tools (>= 0.120), \
            linux-binary-7.3.4+deb13-cloud-amd64 (= 7.3.4-1~bpo13+1), libfoo1:any\n\
            Description: Linux\n continued\n\nPackage: busybox-static\nVersion: 1:1.35.0-4\n\n";
        let packages = parse_show(text);
        assert_eq!(packages.len(), 2);
        assert_eq!(packages[0].version, "7.3.4-1~bpo13+1");
        assert_eq!(
            packages[0].dependencies(),
            ["dracut", "linux-binary-7.3.4+deb13-cloud-amd64", "libfoo1"]
        );
        assert_eq!(packages[1].name, "busybox-static");
        assert!(packages[1].dependencies().is_empty());
    }
}
