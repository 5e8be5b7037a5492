//! What one scrape of `tcpstate serve` shows: gathered at each refresh on
//! the event loop's thread, handed whole to the HTTP server's thread, and
//! encoded there (`render::prometheus`). Pools beyond the first few,
//! worst first, are folded into one count.

use super::tally::Tally;
use crate::{
    diagnose::findings::Finding,
    host::{process::Usage, sysctl::Facts},
    kernel::counters::ProgramRuns,
    render::{Losses, NsFigures},
    track::{pressure::Pool, timewait::TwStats},
};

/// One namespace with series.
#[derive(Clone, Debug, PartialEq)]
pub struct Namespace {
    pub figures: NsFigures,
    /// Its TIME_WAIT sockets that pass the filters, by role (client,
    /// server, unknown).
    pub time_wait: [u64; 3],
}

impl Namespace {
    pub fn facts(&self) -> Option<&Facts> {
        self.figures.facts.as_ref()
    }
}

/// The pools shown, and what the others add up to.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pools {
    /// The worst ones, worst first.
    pub shown: Vec<Pool>,
    /// How many were left out.
    pub folded: u64,
    /// Their ports in use (TIME_WAIT and established).
    pub folded_in_use: u64,
}

impl Pools {
    /// The first `n` of `pools` (worst first, as `pressure::pools` orders
    /// them), the rest folded.
    pub fn fold(mut pools: Vec<Pool>, n: usize) -> Pools {
        let rest = pools.split_off(n.min(pools.len()));
        Pools {
            shown: pools,
            folded: rest.len() as u64,
            folded_in_use: rest.iter().map(|p| p.time_wait + p.established).sum(),
        }
    }
}

/// Everything a scrape shows.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Every namespace with series, by inode.
    pub namespaces: Vec<Namespace>,
    pub pools: Pools,
    pub tally: Tally,
    /// The live diagnosis, over [`Snapshot::window_s`].
    pub findings: Vec<Finding>,
    pub window_s: f64,
    /// Records read from the kernel.
    pub events: u64,
    pub lost: Losses,
    /// The TIME_WAIT table's own counts (the kernel disagreeing with
    /// tracing: missed, gone).
    pub tw: TwStats,
    pub programs: Vec<ProgramRuns>,
    pub process: Usage,
}

impl Snapshot {
    /// The `netns` label of namespace `netns`: its name, else `net:[inode]`.
    pub fn label_of(&self, netns: u32) -> String {
        self.namespaces
            .iter()
            .find(|n| n.figures.netns == netns)
            .map_or_else(|| format!("net:[{netns}]"), |n| n.figures.label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::track::pressure::PoolKey;

    fn pool(port: u16, time_wait: u64) -> Pool {
        Pool {
            key: PoolKey {
                netns: 1,
                laddr: "127.0.0.1".parse().unwrap(),
                raddr: "127.0.0.2".parse().unwrap(),
                rport: port,
            },
            range_size: 100,
            time_wait,
            established: 1,
            rate: 0.0,
            used: 0.0,
            projected: 0.0,
            flagged: false,
            reuse_applies: false,
            left: 0,
            failures: Default::default(),
            process: None,
        }
    }

    #[test]
    fn pools_beyond_the_first_are_folded_into_counts() {
        let pools: Vec<Pool> = (0..5).map(|i| pool(80 + i, 10)).collect();
        let folded = Pools::fold(pools.clone(), 2);
        assert_eq!(folded.shown, pools[..2]);
        assert_eq!((folded.folded, folded.folded_in_use), (3, 33));
        assert_eq!(Pools::fold(pools, 10).folded, 0);
    }
}
