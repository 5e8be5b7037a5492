//! Debian's kernels: the newest of a series (e.g. `6.12`, or `7` for the
//! newest 7.x) in the archive, fetched into the cache, or the newest cached
//! one when the archive cannot be reached.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

use super::apt::{Apt, Package, compare_versions};

/// The suites the kernels come from, oldest first.
pub const SUITES: [(&str, &str); 8] = [
    (super::apt::DEBIAN, "bullseye"),
    (super::apt::SECURITY, "bullseye-security"),
    (super::apt::DEBIAN, "bookworm"),
    (super::apt::SECURITY, "bookworm-security"),
    (super::apt::DEBIAN, "bookworm-backports"),
    (super::apt::DEBIAN, "trixie"),
    (super::apt::SECURITY, "trixie-security"),
    (super::apt::DEBIAN, "trixie-backports"),
];
/// The kernel images of the cloud flavour (small, and made for VMs).
pub const IMAGES: &str = r"^linux-image-[0-9]+\.[0-9]+\.[0-9]+.*-cloud-amd64$";
const FLAVOUR: &str = "-cloud-amd64";

/// One kernel, ready to boot.
pub struct Kernel {
    pub series: String,
    /// The package the kernel image comes from, and its version.
    pub package: String,
    pub version: String,
    pub vmlinuz: PathBuf,
    /// Its modules folder (`.../lib/modules/RELEASE`).
    pub modules: PathBuf,
}

/// The newest kernel of `series` among `images` (the archive's image
/// packages, or `None` when its indexes cannot be read), fetched; or,
/// failing that, the newest kernel of `series` fetched by an earlier run.
pub fn resolve(apt: &Apt, images: Option<&[Package]>, series: &str) -> Result<Kernel> {
    let fetched = match images.map(|images| newest(images, series)) {
        Some(Some(image)) => fetch(apt, image, series),
        Some(None) => Err(anyhow::anyhow!(
            "the Debian archive has no {FLAVOUR} kernel {series}"
        )),
        None => Err(anyhow::anyhow!(
            "the Debian package indexes are unavailable"
        )),
    };
    fetched.or_else(|why| {
        let kernel = cached(apt, series).with_context(|| {
            format!("no kernel {series}: {why:#}; and none was fetched by an earlier run")
        })?;
        eprintln!(
            "xtask: kernel {series}: {why:#}: using the cached {} {}",
            kernel.package, kernel.version
        );
        Ok(kernel)
    })
}

/// The newest image package of `series` (versions `5.10.x`, or `7.x.y`
/// for series `7`), metapackages without a full release excluded.
fn newest<'a>(images: &'a [Package], series: &str) -> Option<&'a Package> {
    images
        .iter()
        .filter(|p| release(&p.name).is_some() && in_series(&p.version, series))
        .max_by(|a, b| compare_versions(&a.version, &b.version))
}

/// The kernel release in an image or binary package's name
/// (`linux-image-6.1.0-57-cloud-amd64` -> `6.1.0-57-cloud-amd64`).
fn release(package: &str) -> Option<&str> {
    let release = package
        .strip_prefix("linux-image-")
        .or_else(|| package.strip_prefix("linux-binary-"))?;
    let numbers = release.split(['-', '+']).next()?;
    let full =
        numbers.split('.').count() == 3 && numbers.split('.').all(|n| n.parse::<u32>().is_ok());
    (full && release.ends_with(FLAVOUR)).then_some(release)
}

/// Whether a package version (`6.12.118-1`, `1:...`) is of `series`.
fn in_series(version: &str, series: &str) -> bool {
    let upstream = version.split_once(':').map_or(version, |(_, v)| v);
    upstream
        .strip_prefix(series)
        .is_some_and(|rest| rest.starts_with('.'))
}

/// Downloads and extracts the kernel of `image`: the package itself or,
/// from 7.x, the binary and modules packages it depends on.
fn fetch(apt: &Apt, image: &Package, series: &str) -> Result<Kernel> {
    let release = release(&image.name).expect("filtered by newest");
    let binary = format!("linux-binary-{release}");
    let names = if image.dependencies().contains(&binary) {
        vec![binary, format!("linux-modules-{release}")]
    } else {
        vec![image.name.clone()]
    };
    let mut trees = Vec::new();
    for name in &names {
        let package = Package {
            name: name.clone(),
            version: image.version.clone(),
            depends: String::new(),
        };
        trees.push(apt.fetch(&package)?);
    }
    locate(series, &names[0], &image.version, release, &trees)
}

/// The newest kernel of `series` that an earlier run extracted.
fn cached(apt: &Apt, series: &str) -> Result<Kernel> {
    let packages = apt.cached();
    let image = packages
        .iter()
        .filter(|p| release(&p.name).is_some() && in_series(&p.version, series))
        .filter(|p| !p.name.starts_with("linux-image-") || has_vmlinuz(apt, p))
        .max_by(|a, b| compare_versions(&a.version, &b.version))
        .context("no cached kernel")?;
    let release = release(&image.name).expect("filtered");
    let mut trees = vec![apt.extracted(&image.name, &image.version)];
    if image.name.starts_with("linux-binary-") {
        trees.push(apt.extracted(&format!("linux-modules-{release}"), &image.version));
    }
    locate(series, &image.name, &image.version, release, &trees)
}

fn has_vmlinuz(apt: &Apt, image: &Package) -> bool {
    let release = release(&image.name).unwrap_or_default();
    apt.extracted(&image.name, &image.version)
        .join(format!("boot/vmlinuz-{release}"))
        .is_file()
}

/// Finds the kernel image and the modules folder in the extracted trees.
fn locate(
    series: &str,
    package: &str,
    version: &str,
    release: &str,
    trees: &[PathBuf],
) -> Result<Kernel> {
    let find = |candidates: &[String], what: &str| -> Result<PathBuf> {
        trees
            .iter()
            .flat_map(|tree| candidates.iter().map(move |c| tree.join(c)))
            .find(|p| p.exists())
            .with_context(|| format!("{package} {version} has no {what}"))
    };
    let modules_dirs = [
        format!("usr/lib/modules/{release}"),
        format!("lib/modules/{release}"),
    ];
    let vmlinuz = find(
        &[
            format!("boot/vmlinuz-{release}"),
            format!("{}/vmlinuz", modules_dirs[0]),
            format!("{}/vmlinuz", modules_dirs[1]),
        ],
        "kernel image",
    )?;
    let modules = find(
        &modules_dirs.map(|d| format!("{d}/kernel")),
        "modules folder",
    )?;
    let Some(modules) = modules.parent().map(Path::to_path_buf) else {
        bail!("{} has no parent", modules.display());
    };
    Ok(Kernel {
        series: series.to_string(),
        package: package.to_string(),
        version: version.to_string(),
        vmlinuz,
        modules,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(name: &str, version: &str) -> Package {
        Package {
            name: name.into(),
            version: version.into(),
            depends: String::new(),
        }
    }

    #[test]
    fn newest_of_each_series_is_picked() {
        let images = [
            package("linux-image-5.10.0-45-cloud-amd64", "5.10.260-1"),
            package("linux-image-5.10.0-46-cloud-amd64", "5.10.262-1"),
            package("linux-image-6.1-cloud-amd64", "6.1.199-1"),
            package(
                "linux-image-6.1.0-0.deb11.52-cloud-amd64",
                "6.1.180-1~deb11u1",
            ),
            package("linux-image-6.1.0-57-cloud-amd64", "6.1.192-3"),
            package("linux-image-6.12.57+deb12-cloud-amd64", "6.12.57-1~bpo12+1"),
            package("linux-image-6.12.118+deb13-cloud-amd64", "6.12.118-1"),
            package("linux-image-6.12.118+deb13-cloud-amd64-dbg", "6.12.119-1"),
            package("linux-image-7.2.12+deb13-cloud-amd64", "7.2.12-1~bpo13+1"),
            package("linux-image-7.3.4+deb13-cloud-amd64", "7.3.4-1~bpo13+1"),
        ];
        let pick = |series| newest(&images, series).map(|p| p.name.as_str());
        assert_eq!(pick("5.10"), Some("linux-image-5.10.0-46-cloud-amd64"));
        assert_eq!(pick("6.1"), Some("linux-image-6.1.0-57-cloud-amd64"));
        assert_eq!(pick("6.12"), Some("linux-image-6.12.118+deb13-cloud-amd64"));
        assert_eq!(pick("7"), Some("linux-image-7.3.4+deb13-cloud-amd64"));
        assert_eq!(pick("6.18"), None);
    }

    #[test]
    fn releases_and_series() {
        assert_eq!(
            release("linux-binary-7.3.4+deb13-cloud-amd64"),
            Some("7.3.4+deb13-cloud-amd64")
        );
        assert_eq!(release("linux-image-6.12-cloud-amd64"), None);
        assert_eq!(release("linux-modules-7.3.4+deb13-cloud-amd64"), None);
        assert!(in_series("6.1.192-3", "6.1"));
        assert!(!in_series("6.12.118-1", "6.1"));
        assert!(in_series("1:7.0.1-1", "7"));
    }
}
