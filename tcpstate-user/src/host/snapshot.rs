//! One reading of the kernel's socket tables in every network namespace
//! that a run covers: TIME_WAIT sockets (to seed and reconcile the table),
//! listeners (roles, owners), established sockets (port pressure), and
//! each namespace's own TCP settings and counters.

use anyhow::Result;
use rustc_hash::{FxHashMap, FxHashSet};

use super::{
    clock, netns,
    sockdiag::{self, KernelSocket, Listeners},
    sysctl::Facts,
};
use crate::{
    kernel::loader,
    messages::warning,
    sock::{SockId, State},
    track::timewait::Ranges,
};

/// One pass over the kernel's socket tables.
pub struct Dump {
    /// CLOCK_MONOTONIC when the dump began.
    pub taken_ns: u64,
    /// Per namespace: TIME_WAIT sockets and FIN_WAIT2 ones (which include
    /// timewait sockets still in that substate).
    pub time_wait: Vec<(u32, Vec<KernelSocket>)>,
    pub listeners: Listeners,
    /// Each dumped namespace's own TCP settings and counters, read inside
    /// it.
    pub facts: FxHashMap<u32, Facts>,
    /// Established sockets, for port pressure.
    pub established: Vec<KernelSocket>,
    /// Every network namespace that existed when the dump began, dumped
    /// or not: what is known of the others can go.
    pub existing: FxHashSet<u32>,
}

impl Dump {
    /// Each namespace's ephemeral port range, to tell clients' TIME_WAIT
    /// sockets from those of servers whose listener is gone.
    pub fn ranges(&self) -> Ranges {
        self.facts
            .iter()
            .map(|(&ns, f)| (ns, f.port_range))
            .collect()
    }
}

/// Which sockets a run covers: the kernel-side family and port filters,
/// applied to the kernel's tables too so both sources agree.
#[derive(Clone, Debug)]
pub struct Scope {
    pub settings: loader::Settings,
    pub netns: Vec<u32>,
}

impl Scope {
    fn matches(&self, id: &SockId) -> bool {
        self.settings.passes(&id.tuple) && (self.netns.is_empty() || self.netns.contains(&id.netns))
    }
}

/// Dumps the namespaces in `only` (all of them when `None`). A namespace
/// that no longer exists is reported empty, so its entries end as `gone`;
/// one whose dump fails is left out (its entries stay as they are) with a
/// warning.
pub fn dump(scope: &Scope, only: Option<&FxHashSet<u32>>) -> Result<Dump> {
    let taken_ns = clock::monotonic_ns();
    let all = netns::namespaces()?;
    let wanted: Vec<u32> = match only {
        Some(set) => set.iter().copied().collect(),
        None => all.iter().map(|(ns, _)| *ns).collect(),
    };
    let mut out = Dump {
        taken_ns,
        time_wait: Vec::new(),
        listeners: Listeners::default(),
        facts: FxHashMap::default(),
        established: Vec::new(),
        existing: all.iter().map(|(ns, _)| *ns).collect(),
    };
    let states = [
        State::TIME_WAIT,
        State::FIN_WAIT2,
        State::LISTEN,
        State::ESTABLISHED,
    ];
    let wanted: Vec<(u32, Option<&std::path::Path>)> = wanted
        .into_iter()
        .filter(|ns| scope.netns.is_empty() || scope.netns.contains(ns))
        .map(|ns| {
            let path = all.iter().find(|(inode, _)| *inode == ns);
            (ns, path.map(|(_, p)| p.as_path()))
        })
        .collect();
    let paths: Vec<&std::path::Path> = wanted.iter().filter_map(|(_, p)| *p).collect();
    // The sockets, and the settings that judge them, from inside each.
    let mut dumps = netns::in_each(&paths, |ns| {
        Ok((sockdiag::dump_current(ns, &states)?, Facts::read()))
    })
    .into_iter();
    for (ns, path) in wanted {
        let sockets = match path.map(|_| dumps.next()) {
            Some(Some(Ok((sockets, facts)))) => {
                out.facts.insert(ns, facts);
                sockets
            }
            Some(Some(Err(e))) => {
                warning!("skipping network namespace {ns}: {e:#}");
                continue;
            }
            Some(None) => continue,
            // Gone since it was listed: its entries end.
            None => Vec::new(),
        };
        let mut tw = Vec::new();
        for ks in sockets {
            match ks.state {
                State::LISTEN => {
                    out.listeners
                        .insert((ks.id.netns, ks.id.tuple.lport), ks.inode);
                }
                _ if !scope.matches(&ks.id) => {}
                State::ESTABLISHED => out.established.push(ks),
                // Full FIN_WAIT2 sockets have an inode; timewait ones do not.
                State::FIN_WAIT2 if ks.inode != 0 => {}
                _ => tw.push(ks),
            }
        }
        out.time_wait.push((ns, tw));
    }
    Ok(out)
}
