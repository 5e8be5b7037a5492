//! tracefs: finding (or mounting) it, and reading tracepoint format files,
//! which give each field's offset on the running kernel.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, anyhow, bail};
use nix::sys::statfs::{TRACEFS_MAGIC, statfs};

/// Where tracefs lives on current systems.
pub const TRACEFS: &str = "/sys/kernel/tracing";
/// The older location, under debugfs.
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

/// Returns the tracefs root, mounting tracefs at [`TRACEFS`] if it is not
/// mounted anywhere.
pub fn ensure_mounted() -> Result<PathBuf> {
    for dir in [TRACEFS, DEBUGFS_TRACING] {
        if Path::new(dir).join("events").is_dir() {
            return Ok(PathBuf::from(dir));
        }
    }
    // Mounted, but its root directory is root's only (mode 0700).
    if statfs(TRACEFS).is_ok_and(|fs| fs.filesystem_type() == TRACEFS_MAGIC) {
        let err = fs::read_dir(TRACEFS)
            .err()
            .map_or_else(String::new, |e| e.to_string());
        bail!(
            "tracefs at {TRACEFS} cannot be read by this process ({err}): run tcpstate as \
             root, or grant it CAP_DAC_READ_SEARCH"
        );
    }
    nix::mount::mount(
        Some("nodev"),
        TRACEFS,
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|errno| {
        anyhow!(
            "tracefs is not mounted and mounting it at {TRACEFS} failed ({errno}): \
             mount it with `mount -t tracefs nodev {TRACEFS}`"
        )
    })?;
    Ok(PathBuf::from(TRACEFS))
}

/// One field of a tracepoint record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    pub offset: u16,
    pub size: u16,
}

/// The fields of one tracepoint, by name.
#[derive(Debug, Default)]
pub struct Format {
    name: String,
    fields: HashMap<String, Field>,
}

impl Format {
    /// Parses the text of `events/<group>/<name>/format`.
    pub fn parse(name: &str, text: &str) -> Result<Format> {
        let mut fields = HashMap::new();
        for line in text.lines() {
            let line = line.trim();
            let Some(rest) = line.strip_prefix("field:") else {
                continue;
            };
            // "field:__u8 saddr[4];\toffset:32;\tsize:4;\tsigned:0;"
            let mut parts = rest.split(';').map(str::trim);
            let decl = parts.next().unwrap_or_default();
            let mut offset = None;
            let mut size = None;
            for part in parts {
                if let Some(v) = part.strip_prefix("offset:") {
                    offset = v.parse::<u16>().ok();
                } else if let Some(v) = part.strip_prefix("size:") {
                    size = v.parse::<u16>().ok();
                }
            }
            let field_name = decl
                .rsplit(|c: char| c.is_whitespace() || c == '*')
                .next()
                .unwrap_or_default();
            let field_name = field_name.split('[').next().unwrap_or_default();
            match (offset, size) {
                (Some(offset), Some(size)) if !field_name.is_empty() => {
                    fields.insert(field_name.to_owned(), Field { offset, size });
                }
                _ => bail!("tracepoint {name}: cannot parse format line {line:?}"),
            }
        }
        if fields.is_empty() {
            bail!("tracepoint {name}: format has no fields");
        }
        Ok(Format {
            name: name.to_owned(),
            fields,
        })
    }

    /// Reads the format of `group:name` from the tracefs at `root`.
    pub fn read(root: &Path, group: &str, name: &str) -> Result<Format> {
        let path = root.join("events").join(group).join(name).join("format");
        let text = fs::read_to_string(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::PermissionDenied => anyhow!(
                "{} cannot be read by this process ({e}): tracefs is root's only: run \
                 tcpstate as root, or grant it CAP_DAC_READ_SEARCH",
                path.display()
            ),
            _ => anyhow!(
                "tracepoint {group}:{name} not found ({}: {e}): this kernel does not provide it",
                path.display()
            ),
        })?;
        Format::parse(&format!("{group}:{name}"), &text)
    }

    /// Size of the record: where its last field ends.
    pub fn end(&self) -> usize {
        self.fields
            .values()
            .map(|f| usize::from(f.offset) + usize::from(f.size))
            .max()
            .unwrap_or(0)
    }

    /// Offset of `field`, which the programs read as a `T` in one load:
    /// checks that it has `T`'s size and lies at an offset aligned for it.
    pub fn offset<T>(&self, field: &str) -> Result<u16> {
        let (size, align) = (size_of::<T>(), align_of::<T>());
        let f = self
            .fields
            .get(field)
            .with_context(|| format!("tracepoint {} has no field {field}", self.name))?;
        if usize::from(f.size) != size {
            bail!(
                "tracepoint {}: field {field} is {} bytes, expected {size}: \
                 tcpstate needs updating for this kernel",
                self.name,
                f.size
            );
        }
        if usize::from(f.offset) % align != 0 {
            bail!(
                "tracepoint {}: field {field} is at offset {}, not a multiple of {align}: \
                 tcpstate needs updating for this kernel",
                self.name,
                f.offset
            );
        }
        Ok(f.offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SET_STATE: &str = "name: inet_sock_set_state
ID: 2287
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:int oldstate;\toffset:16;\tsize:4;\tsigned:1;
\tfield:__u16 sport;\toffset:24;\tsize:2;\tsigned:0;
\tfield:__u8 saddr_v6[16];\toffset:40;\tsize:16;\tsigned:0;

print fmt: \"family=%s\", REC->family
";

    #[test]
    fn parses_fields_with_pointers_and_arrays() {
        let f = Format::parse("sock:inet_sock_set_state", SET_STATE).unwrap();
        assert_eq!(f.offset::<u64>("skaddr").unwrap(), 8);
        assert_eq!(f.offset::<i32>("oldstate").unwrap(), 16);
        assert_eq!(f.offset::<u16>("sport").unwrap(), 24);
        assert_eq!(f.offset::<[u32; 4]>("saddr_v6").unwrap(), 40);
        assert_eq!(f.end(), 56, "saddr_v6 ends the record");
    }

    #[test]
    fn missing_or_resized_fields_are_errors() {
        let f = Format::parse("sock:inet_sock_set_state", SET_STATE).unwrap();
        let err = f.offset::<i32>("newstate").unwrap_err().to_string();
        assert!(err.contains("no field newstate"), "{err}");
        let err = f.offset::<u32>("sport").unwrap_err().to_string();
        assert!(err.contains("is 2 bytes, expected 4"), "{err}");
    }

    #[test]
    fn misaligned_fields_are_errors() {
        let f = Format::parse(
            "sock:inet_sock_set_state",
            "format:\n\tfield:__u8 saddr[4];\toffset:30;\tsize:4;\tsigned:0;\n",
        )
        .unwrap();
        let err = f.offset::<u32>("saddr").unwrap_err().to_string();
        assert!(err.contains("offset 30, not a multiple of 4"), "{err}");
        assert_eq!(f.offset::<[u8; 4]>("saddr").unwrap(), 30);
    }

    #[test]
    fn rejects_garbage() {
        assert!(Format::parse("x:y", "name: y\nfield:int a;\toffset:zz;\n").is_err());
        assert!(Format::parse("x:y", "nothing here").is_err());
    }
}
