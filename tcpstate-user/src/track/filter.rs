//! Userspace filters: addresses (CIDR), owner process, command name and
//! network namespace. Ports and families are filtered in the kernel.

use ipnet::IpNet;

use super::timewait::Entry;
use crate::sock::{Owner, SockId};

/// Bytes of a process name the kernel keeps (`TASK_COMM_LEN` - 1).
pub const COMM_MAX: usize = tcpstate_ebpf::COMM_LEN - 1;

/// `name` as the kernel would keep it: its first [`COMM_MAX`] bytes (cut at
/// a character boundary).
pub fn kernel_comm(name: &str) -> &str {
    let mut end = name.len().min(COMM_MAX);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub laddr: Vec<IpNet>,
    pub raddr: Vec<IpNet>,
    pub pids: Vec<u32>,
    pub comms: Vec<String>,
    pub netns: Vec<u32>,
}

impl Filter {
    /// Whether a record about this socket passes. Each option given must
    /// match one of its values; an unknown owner never matches a pid or comm.
    pub fn matches(&self, id: &SockId, owner: Option<&Owner>) -> bool {
        let (netns, tuple) = (id.netns, &id.tuple);
        let any = |nets: &[IpNet], addr| nets.is_empty() || nets.iter().any(|n| n.contains(&addr));
        any(&self.laddr, tuple.laddr)
            && any(&self.raddr, tuple.raddr)
            && (self.netns.is_empty() || self.netns.contains(&netns))
            && (self.pids.is_empty() || owner.is_some_and(|o| self.pids.contains(&o.pid)))
            && (self.comms.is_empty()
                || owner.is_some_and(|o| {
                    let comm = o.comm.as_str();
                    self.comms.iter().any(|c| kernel_comm(c) == comm)
                }))
    }
}

impl Filter {
    /// Whether any userspace filter is given.
    pub fn is_active(&self) -> bool {
        !(self.laddr.is_empty()
            && self.raddr.is_empty()
            && self.pids.is_empty()
            && self.comms.is_empty()
            && self.netns.is_empty())
    }

    /// Whether a TIME_WAIT entry passes.
    pub fn matches_entry(&self, e: &Entry) -> bool {
        let owner = e.owner.map(|o| Owner {
            pid: o.pid,
            tid: o.pid,
            comm: o.comm,
        });
        self.matches(&e.id, owner.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::track::tracker::tests::{owner, tuple};

    fn id(netns: u32, tuple: crate::sock::Tuple) -> SockId {
        SockId { netns, tuple }
    }

    #[test]
    fn empty_filter_passes_everything() {
        assert!(Filter::default().matches(&id(1, tuple(1, 2)), None));
    }

    #[test]
    fn cidr_filters() {
        let f = Filter {
            laddr: vec!["127.0.0.0/8".parse().unwrap()],
            raddr: vec!["10.0.0.0/8".parse().unwrap()],
            ..Filter::default()
        };
        let mut t = tuple(1, 2);
        assert!(
            !f.matches(&id(1, t), None),
            "raddr 127.0.0.1 is outside 10/8"
        );
        t.raddr = "10.1.2.3".parse().unwrap();
        assert!(f.matches(&id(1, t), None));
        t.laddr = "::1".parse().unwrap();
        assert!(!f.matches(&id(1, t), None));
    }

    #[test]
    fn owner_filters() {
        let f = Filter {
            pids: vec![7],
            ..Filter::default()
        };
        assert!(f.matches(&id(1, tuple(1, 2)), Some(&owner(7))));
        assert!(!f.matches(&id(1, tuple(1, 2)), Some(&owner(8))));
        assert!(!f.matches(&id(1, tuple(1, 2)), None));
        let f = Filter {
            comms: vec!["a-very-long-command-name".into()],
            ..Filter::default()
        };
        let mut o = owner(1);
        o.comm = crate::sock::Comm::new("a-very-long-command-name");
        assert!(
            f.matches(&id(1, tuple(1, 2)), Some(&o)),
            "truncated like the kernel"
        );
    }

    #[test]
    fn netns_filter() {
        let f = Filter {
            netns: vec![5],
            ..Filter::default()
        };
        assert!(f.matches(&id(5, tuple(1, 2)), None));
        assert!(!f.matches(&id(6, tuple(1, 2)), None));
    }
}
