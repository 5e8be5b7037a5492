//! Which container, pod or service a process belongs to, read from its
//! cgroup paths (`/proc/PID/cgroup`) as Docker, containerd, CRI-O, Podman,
//! Kubernetes (systemd and cgroupfs drivers) and systemd lay them out.
//! Pure: the paths are outside text, parsed here and tested on examples.

/// A container, as its runtime names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    /// `docker`, `containerd`, `cri-o`, `podman`, or `container` when the
    /// layout does not say.
    pub runtime: &'static str,
    /// Its full ID (64 hex digits).
    pub id: String,
}

impl Container {
    /// As Kubernetes writes a container ID: `containerd://ID`.
    pub fn uri(&self) -> String {
        format!("{}://{}", self.runtime, self.id)
    }

    /// Its ID cut as `docker ps` shows it.
    pub fn short_id(&self) -> &str {
        &self.id[..12]
    }
}

/// What a process's cgroups say it runs in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Workload {
    /// A Kubernetes pod (its UID), in one of its containers when the path
    /// names one.
    Pod {
        uid: String,
        container: Option<Container>,
    },
    /// A container outside Kubernetes.
    Container(Container),
    /// A systemd service of the host.
    Unit(String),
}

impl Workload {
    /// How telling it is: a pod or container over a unit (a container
    /// runtime's own processes run in a unit too).
    pub fn rank(&self) -> u8 {
        match self {
            Workload::Pod { .. } => 3,
            Workload::Container(_) => 2,
            Workload::Unit(_) => 1,
        }
    }

    pub fn container(&self) -> Option<&Container> {
        match self {
            Workload::Pod { container, .. } => container.as_ref(),
            Workload::Container(c) => Some(c),
            Workload::Unit(_) => None,
        }
    }

    pub fn pod_uid(&self) -> Option<&str> {
        match self {
            Workload::Pod { uid, .. } => Some(uid),
            _ => None,
        }
    }
}

/// The most telling workload any line of a `/proc/PID/cgroup` file shows
/// (`HIERARCHY:CONTROLLERS:PATH`, cgroup v1 and v2 alike).
pub fn of_cgroup_file(text: &str) -> Option<Workload> {
    text.lines()
        .filter_map(|line| line.splitn(3, ':').nth(2))
        .filter_map(of_path)
        .max_by_key(Workload::rank)
}

/// The workload one cgroup path shows.
pub fn of_path(path: &str) -> Option<Workload> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let container = segments.iter().enumerate().rev().find_map(|(i, s)| {
        let parent = i.checked_sub(1).map(|p| segments[p]);
        container_of(s, parent)
    });
    if let Some(uid) = segments.iter().find_map(|s| pod_uid(s)) {
        return Some(Workload::Pod { uid, container });
    }
    if let Some(c) = container {
        return Some(Workload::Container(c));
    }
    segments
        .last()
        .filter(|s| s.ends_with(".service"))
        .map(|s| Workload::Unit((*s).to_string()))
}

/// A container's cgroup: `RUNTIME-ID.scope` (systemd driver) or a bare ID
/// (cgroupfs driver, under `docker/` for Docker).
fn container_of(segment: &str, parent: Option<&str>) -> Option<Container> {
    const SCOPES: [(&str, &str); 5] = [
        ("docker-", "docker"),
        ("cri-containerd-", "containerd"),
        ("crio-", "cri-o"),
        ("libpod-", "podman"),
        ("containerd-", "containerd"),
    ];
    let container = |runtime, id: &str| {
        is_id(id).then(|| Container {
            runtime,
            id: id.to_string(),
        })
    };
    if let Some(scope) = segment.strip_suffix(".scope") {
        return SCOPES
            .iter()
            .find_map(|(prefix, runtime)| container(runtime, scope.strip_prefix(prefix)?));
    }
    let runtime = match parent {
        Some("docker") => "docker",
        _ => "container",
    };
    container(runtime, segment)
}

/// A pod's cgroup: `podUID` (cgroupfs driver) or `kubepods-QOS-podUID.slice`
/// with the UID's dashes as underscores (systemd driver).
fn pod_uid(segment: &str) -> Option<String> {
    let rest = match segment.strip_suffix(".slice") {
        Some(slice) if slice.starts_with("kubepods") => slice.rsplit_once("-pod")?.1,
        Some(_) => return None,
        None => segment.strip_prefix("pod")?,
    };
    let uid = rest.replace('_', "-");
    let is_uid = uid.len() == 36 && uid.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    is_uid.then_some(uid)
}

/// A container ID: 64 hex digits.
fn is_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f2a9c1d8e7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a19";
    const UID: &str = "8e1c5d2a-7b3f-4c9e-a1d6-0f2b3c4d5e6f";

    fn container(runtime: &'static str) -> Container {
        Container {
            runtime,
            id: ID.into(),
        }
    }

    #[test]
    fn containers_of_each_runtime_and_driver() {
        for (path, runtime) in [
            (format!("/system.slice/docker-{ID}.scope"), "docker"),
            (format!("/docker/{ID}"), "docker"),
            (format!("/machine.slice/libpod-{ID}.scope"), "podman"),
            (format!("/system.slice/crio-{ID}.scope"), "cri-o"),
        ] {
            assert_eq!(
                of_path(&path),
                Some(Workload::Container(container(runtime))),
                "{path}"
            );
        }
        assert_eq!(container("docker").uri(), format!("docker://{ID}"));
        assert_eq!(container("docker").short_id(), &ID[..12]);
    }

    #[test]
    fn pods_with_either_driver() {
        let systemd = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/\
             cri-containerd-{ID}.scope",
            UID.replace('-', "_")
        );
        let cgroupfs = format!("/kubepods/besteffort/pod{UID}/{ID}");
        let guaranteed = format!(
            "/kubepods.slice/kubepods-pod{}.slice",
            UID.replace('-', "_")
        );
        for (path, c) in [
            (systemd, Some(container("containerd"))),
            (cgroupfs, Some(container("container"))),
            (guaranteed, None),
        ] {
            assert_eq!(
                of_path(&path),
                Some(Workload::Pod {
                    uid: UID.into(),
                    container: c
                }),
                "{path}"
            );
        }
    }

    #[test]
    fn units_and_nothing() {
        assert_eq!(
            of_path("/system.slice/nginx.service"),
            Some(Workload::Unit("nginx.service".into()))
        );
        for path in [
            "/",
            "/user.slice/user-0.slice/session-3.scope",
            "/system.slice/docker-notanid.scope",
            "/kubepods.slice/kubepods-besteffort.slice",
            "/../\u{1b}[2J",
        ] {
            assert_eq!(of_path(path), None, "{path}");
        }
    }

    #[test]
    fn the_most_telling_line_of_a_cgroup_file() {
        let text = format!(
            "12:memory:/system.slice/containerd.service\n\
             1:name=systemd:/system.slice/docker-{ID}.scope\n\
             0::/\n\
             garbage line\n"
        );
        assert_eq!(
            of_cgroup_file(&text),
            Some(Workload::Container(container("docker")))
        );
        assert_eq!(of_cgroup_file("0::/\n"), None);
    }
}
