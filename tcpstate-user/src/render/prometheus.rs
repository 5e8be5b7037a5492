//! `tcpstate serve`'s metrics: a [`Snapshot`] encoded, at scrape time, in
//! the Prometheus text format (0.0.4) or OpenMetrics, by prometheus-client.
//! Names follow Prometheus's conventions: the `tcpstate_` prefix, base
//! units, `_total` for counters; every label is bounded (see `export`).

use std::sync::Arc;

use prometheus_client::{
    collector::Collector,
    encoding::{
        DescriptorEncoder, EncodeMetric as _, MetricEncoder, NoLabelSet, prometheus_text, text,
    },
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::{Registry, Unit},
};

use crate::{
    export::{
        snapshot::Snapshot,
        tally::{CloseKey, Process},
    },
    host::cgroup::Workload,
    render::endpoint,
    track::{
        pressure::Pool,
        timewait::ExitReason,
        tracker::{FailReason, Role},
    },
};

/// The `Content-Type` of OpenMetrics, which a scraper asks for in `Accept`.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The `Content-Type` of the Prometheus text format.
pub const PROMETHEUS_TEXT: &str = prometheus_text::CONTENT_TYPE;

/// Findings exported as series, the most severe first (`/findings` has
/// them all).
pub const FINDINGS_MAX: usize = 20;

const ROLES: [Role; 3] = [Role::Client, Role::Server, Role::Unknown];
const EXITS: [ExitReason; 4] = [
    ExitReason::Expired,
    ExitReason::Reused,
    ExitReason::Gone,
    ExitReason::Overflow,
];

/// The exposition of `snapshot`: OpenMetrics when `openmetrics`, else the
/// Prometheus text format.
pub fn encode(snapshot: Arc<Snapshot>, openmetrics: bool) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Metrics(snapshot)));
    let mut out = String::new();
    let written = if openmetrics {
        text::encode(&mut out, &registry)
    } else {
        prometheus_text::encode(&mut out, &registry)
    };
    // Writing into a String fails only if an encoder rejects a value,
    // which these (finite numbers, escaped labels) never give it.
    written.expect("encoding metrics into a string");
    out
}

#[derive(Debug)]
struct Metrics(Arc<Snapshot>);

type Labels = Vec<(&'static str, String)>;

/// One figure of a pool.
type PoolFigure = fn(&Pool) -> f64;

/// One metric family: its descriptor, then each series.
fn family<V>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    kind: MetricType,
    series: impl IntoIterator<Item = (Labels, V)>,
    mut sample: impl FnMut(V, MetricEncoder) -> Result<(), std::fmt::Error>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, unit, kind)?;
    for (labels, value) in series {
        sample(value, metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge<V: prometheus_client::encoding::EncodeGaugeValue + std::fmt::Debug>(
    v: V,
    e: MetricEncoder,
) -> Result<(), std::fmt::Error> {
    ConstGauge::new(v).encode(e)
}

fn counter(v: u64, e: MetricEncoder) -> Result<(), std::fmt::Error> {
    ConstCounter::new(v).encode(e)
}

fn counter_f64(v: f64, e: MetricEncoder) -> Result<(), std::fmt::Error> {
    ConstCounter::new(v).encode(e)
}

impl Collector for Metrics {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &*self.0;
        self.namespaces(&mut e)?;
        self.counts(&mut e)?;
        self.pools(&mut e)?;
        self.findings(&mut e)?;
        // Self-observation.
        family(
            &mut e,
            "tcpstate_events",
            "Records read from the kernel.",
            None,
            MetricType::Counter,
            [(vec![], s.events)],
            counter,
        )?;
        let l = s.lost;
        let lost = [
            ("ring_full", l.ring_full),
            ("nested", l.nested),
            ("inferred", l.inferred),
            ("unread", l.unread),
        ];
        family(
            &mut e,
            "tcpstate_events_lost",
            "Events tcpstate could not record, by reason: the ring buffer was full, \
             the kernel skipped a nested run, a gap inferred from a socket's new life, \
             records left unread at the end.",
            None,
            MetricType::Counter,
            lost.map(|(reason, n)| (vec![("reason", reason.to_string())], n)),
            counter,
        )?;
        let disagreements = [
            ("missed", s.tw.missed),
            ("gone", s.tw.exited(ExitReason::Gone)),
        ];
        family(
            &mut e,
            "tcpstate_reconcile_disagreements",
            "TIME_WAIT sockets on which the kernel's table and tracing disagreed: \
             missed (the kernel had it, tracing had not seen it), gone (it left the \
             kernel's table early, for a reason no tracepoint reports).",
            None,
            MetricType::Counter,
            disagreements.map(|(kind, n)| (vec![("kind", kind.to_string())], n)),
            counter,
        )?;
        family(
            &mut e,
            "tcpstate_timewait_table_dropped",
            "TIME_WAIT sockets not tracked because tcpstate's table was full.",
            None,
            MetricType::Counter,
            [(vec![], s.tw.dropped)],
            counter,
        )?;
        let program = |name: &str| vec![("program", name.to_string())];
        family(
            &mut e,
            "tcpstate_bpf_program_runs",
            "Runs of each eBPF program (counted while kernel.bpf_stats_enabled is 1).",
            None,
            MetricType::Counter,
            s.programs.iter().map(|p| (program(&p.name), p.runs)),
            counter,
        )?;
        family(
            &mut e,
            "tcpstate_bpf_program_run",
            "Time spent in each eBPF program (counted while kernel.bpf_stats_enabled is 1).",
            Some(&Unit::Seconds),
            MetricType::Counter,
            s.programs
                .iter()
                .map(|p| (program(&p.name), p.run_ns as f64 / 1e9)),
            counter_f64,
        )?;
        family(
            &mut e,
            "process_cpu",
            "User and system CPU time tcpstate used.",
            Some(&Unit::Seconds),
            MetricType::Counter,
            [(vec![], s.process.cpu_seconds)],
            counter_f64,
        )?;
        family(
            &mut e,
            "process_resident_memory",
            "tcpstate's resident memory.",
            Some(&Unit::Bytes),
            MetricType::Gauge,
            [(vec![], s.process.resident_bytes as i64)],
            gauge,
        )
    }
}

impl Metrics {
    fn netns(&self, netns: u32) -> (&'static str, String) {
        ("netns", self.0.label_of(netns))
    }

    /// Per namespace: its identity, TIME_WAIT sockets, bucket limit and
    /// the kernel's refusals.
    fn namespaces(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &*self.0;
        family(
            e,
            "tcpstate_netns_info",
            "A network namespace: its inode, and the pod, container or unit its \
             processes run in.",
            None,
            MetricType::Gauge,
            s.namespaces.iter().map(|n| {
                let f = &n.figures;
                let mut labels = vec![self.netns(f.netns), ("inode", f.netns.to_string())];
                labels.extend(workload_labels(f.workload.as_ref()));
                (labels, 1)
            }),
            gauge,
        )?;
        family(
            e,
            "tcpstate_timewait_sockets",
            "TIME_WAIT sockets now, by the role of their connection.",
            None,
            MetricType::Gauge,
            s.namespaces.iter().flat_map(|n| {
                ROLES.map(|role| {
                    let labels = vec![
                        self.netns(n.figures.netns),
                        ("role", role.as_str().to_string()),
                    ];
                    (labels, n.time_wait[role as usize] as i64)
                })
            }),
            gauge,
        )?;
        family(
            e,
            "tcpstate_tw_buckets_limit",
            "net.ipv4.tcp_max_tw_buckets of the namespace: TIME_WAIT sockets beyond it \
             are refused.",
            None,
            MetricType::Gauge,
            s.namespaces.iter().filter_map(|n| {
                let limit = n.facts()?.max_tw_buckets as i64;
                Some((vec![self.netns(n.figures.netns)], limit))
            }),
            gauge,
        )?;
        family(
            e,
            "tcpstate_timewait_overflow",
            "TIME_WAIT sockets the namespace's kernel refused, its buckets full \
             (TcpExt TCPTimeWaitOverflow).",
            None,
            MetricType::Counter,
            s.namespaces.iter().filter_map(|n| {
                let refused = n.facts()?.tw_overflow;
                Some((vec![self.netns(n.figures.netns)], refused))
            }),
            counter,
        )
    }

    /// The counters kept from the stream.
    fn counts(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let t = &self.0.tally;
        family(
            e,
            "tcpstate_timewait_entered",
            "Connections that entered TIME_WAIT.",
            None,
            MetricType::Counter,
            t.entered.iter().map(|(&ns, &n)| (vec![self.netns(ns)], n)),
            counter,
        )?;
        family(
            e,
            "tcpstate_timewait_exited",
            "TIME_WAIT sockets that ended, by reason: expired, reused (a new \
             connection took the 4-tuple), gone (early, unseen), overflow (refused).",
            None,
            MetricType::Counter,
            t.exited.iter().flat_map(|(&ns, by)| {
                EXITS.map(|r| {
                    let labels = vec![self.netns(ns), ("reason", r.as_str().to_string())];
                    (labels, by[r as usize])
                })
            }),
            counter,
        )?;
        family(
            e,
            "tcpstate_connect_failures",
            "Failed connect() calls, by reason: no_local_port (EADDRNOTAVAIL, the \
             pool is exhausted), refused, timeout, other.",
            None,
            MetricType::Counter,
            t.failures.iter().flat_map(|(&ns, by)| {
                FailReason::ALL.map(|r| {
                    let labels = vec![self.netns(ns), ("reason", r.as_str().to_string())];
                    (labels, by[r as usize])
                })
            }),
            counter,
        )?;
        family(
            e,
            "tcpstate_closes",
            "Connections closed, by namespace, role, who closed first (closer), how \
             (kind: fin, rst_sent, rst_received, abort) and process (comm; `other` \
             beyond the most active few).",
            None,
            MetricType::Counter,
            t.closes.iter().map(|(k, &n)| (self.close_labels(k), n)),
            counter,
        )?;
        let mut metric = e.encode_descriptor(
            "tcpstate_connection_lifetime",
            "How long connections lived, from the first SYN to the close, by role.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for role in ROLES {
            let h = &t.lifetimes[role as usize];
            let labels: Labels = vec![("role", role.as_str().to_string())];
            metric
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets(), None)?;
        }
        Ok(())
    }

    fn close_labels(&self, k: &CloseKey) -> Labels {
        let mut labels = Vec::with_capacity(5);
        if let Some(ns) = k.netns {
            labels.push(self.netns(ns));
        }
        if let Some(role) = k.role {
            labels.push(("role", role.as_str().to_string()));
        }
        if let Some(closer) = k.closer {
            labels.push(("closer", closer.as_str().to_string()));
        }
        if let Some(kind) = k.kind {
            labels.push(("kind", kind.as_str().to_string()));
        }
        let comm = match k.process {
            Process::Named(comm) => Some(comm.as_str().into_owned()),
            Process::Other => Some("other".to_string()),
            Process::Unknown => Some("unknown".to_string()),
            Process::Omitted => None,
        };
        labels.extend(comm.map(|c| ("comm", c)));
        labels
    }

    /// The pools shown, and the count of those folded.
    fn pools(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let pools = &self.0.pools;
        let labels = |p: &Pool| -> Labels {
            vec![
                self.netns(p.key.netns),
                ("local", p.key.laddr.to_string()),
                ("remote", endpoint(p.key.raddr, p.key.rport)),
            ]
        };
        let per_pool: [(&str, &str, PoolFigure); 4] = [
            (
                "tcpstate_port_pool_ports",
                "Local ports connect() can use toward the destination: the namespace's \
                 ip_local_port_range less its reserved ports.",
                |p| f64::from(p.range_size),
            ),
            (
                "tcpstate_port_pool_in_use",
                "Local ports the pool holds: TIME_WAIT and established sockets.",
                |p| (p.time_wait + p.established) as f64,
            ),
            (
                "tcpstate_port_pool_left",
                "Local ports connect() can still get toward the destination.",
                |p| p.left as f64,
            ),
            (
                "tcpstate_port_pool_projected_ratio",
                "TIME_WAIT entry rate x TIME_WAIT length / usable ports: at 1 or more the \
                 pool runs out at the current rate.",
                |p| p.projected,
            ),
        ];
        for (name, help, value) in per_pool {
            family(
                e,
                name,
                help,
                None,
                MetricType::Gauge,
                pools.shown.iter().map(|p| (labels(p), value(p))),
                gauge,
            )?;
        }
        family(
            e,
            "tcpstate_port_pools_folded",
            "Pools not shown one by one (beyond --top-pools, the worst first).",
            None,
            MetricType::Gauge,
            [(vec![], pools.folded as i64)],
            gauge,
        )?;
        family(
            e,
            "tcpstate_port_pools_folded_in_use",
            "Local ports the pools not shown hold, together.",
            None,
            MetricType::Gauge,
            [(vec![], pools.folded_in_use as i64)],
            gauge,
        )
    }

    /// One series per active finding, for alerts without arithmetic.
    fn findings(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &*self.0;
        family(
            e,
            "tcpstate_finding",
            "1 for each finding of the live diagnosis, the 20 most severe (see /findings \
             for them all, with their evidence and fixes).",
            None,
            MetricType::Gauge,
            s.findings.iter().take(FINDINGS_MAX).map(|f| {
                let p = &f.place;
                let mut labels = vec![
                    ("kind", f.kind.as_str().to_string()),
                    ("severity", f.severity.as_str().to_string()),
                ];
                labels.extend(p.netns.map(|ns| self.netns(ns)));
                labels.extend(p.pool().map(|pool| ("pool", pool)));
                labels.extend(p.local().map(|local| ("local", local)));
                labels.extend(p.processes.first().map(|c| ("process", c.clone())));
                (labels, 1)
            }),
            gauge,
        )?;
        family(
            e,
            "tcpstate_findings_window",
            "How long the live diagnosis has observed.",
            Some(&Unit::Seconds),
            MetricType::Gauge,
            [(vec![], s.window_s)],
            gauge,
        )
    }
}

/// The pod, container or unit a namespace's processes run in, as labels.
fn workload_labels(w: Option<&Workload>) -> Labels {
    let mut labels = Vec::new();
    match w {
        Some(Workload::Pod { uid, container }) => {
            labels.push(("pod_uid", uid.clone()));
            labels.extend(container.as_ref().map(|c| ("container", c.uri())));
        }
        Some(Workload::Container(c)) => labels.push(("container", c.uri())),
        Some(Workload::Unit(unit)) => labels.push(("unit", unit.clone())),
        None => {}
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        export::{
            snapshot::{Namespace, Pools},
            tally::{CloseLabels, Tally},
        },
        host::sysctl::Facts,
        render::NsFigures,
    };

    fn snapshot() -> Snapshot {
        let figures = NsFigures {
            netns: 4026531840,
            name: Some("pod:web \"1\"".into()),
            workload: None,
            facts: Some(Facts {
                max_tw_buckets: 100,
                tw_overflow: 7,
                ..Facts::default()
            }),
            time_wait: 3,
            tw_refused: None,
        };
        let mut tally = Tally::new(CloseLabels::ALL, 5, 10);
        tally.connect_failed(4026531840, FailReason::NoLocalPort);
        tally.tw_enter(4026531840);
        tally.close(&crate::track::tracker::Close {
            ts_ns: 0,
            skaddr: 1,
            id: crate::sock::SockId {
                netns: 4026531840,
                tuple: crate::track::tracker::tests::tuple(40000, 80),
            },
            role: Role::Client,
            closer: crate::track::tracker::Closer::Local,
            kind: crate::track::tracker::CloseKind::Fin,
            time_wait: true,
            tw_refused: false,
            lifetime_ns: Some(2_000_000),
            owner: None,
        });
        Snapshot {
            namespaces: vec![Namespace {
                figures,
                time_wait: [2, 1, 0],
            }],
            pools: Pools::default(),
            tally,
            findings: Vec::new(),
            window_s: 10.0,
            events: 42,
            lost: Default::default(),
            tw: Default::default(),
            programs: Vec::new(),
            process: Default::default(),
        }
    }

    #[test]
    fn prometheus_text_names_counters_with_total_and_escapes_labels() {
        let out = encode(Arc::new(snapshot()), false);
        assert!(
            out.contains("# TYPE tcpstate_events_total counter\n"),
            "{out}"
        );
        assert!(out.contains("tcpstate_events_total 42\n"), "{out}");
        assert!(
            out.contains(
                "tcpstate_timewait_sockets{netns=\"pod:web \\\"1\\\"\",role=\"client\"} 2\n"
            ),
            "{out}"
        );
        assert!(
            out.contains(
                "tcpstate_connect_failures_total{netns=\"pod:web \\\"1\\\"\",reason=\"no_local_port\"} 1\n"
            ),
            "{out}"
        );
        assert!(out.contains("tcpstate_tw_buckets_limit{netns=\"pod:web \\\"1\\\"\"} 100\n"));
        assert!(
            out.contains(
                "tcpstate_connection_lifetime_seconds_bucket{role=\"client\",le=\"0.005\"} 1\n\
                 tcpstate_connection_lifetime_seconds_bucket{role=\"client\",le=\"0.01\"} 1\n"
            ),
            "{out}"
        );
        assert!(
            out.contains(
                "tcpstate_connection_lifetime_seconds_bucket{role=\"client\",le=\"+Inf\"} 1\n"
            ),
            "{out}"
        );
        assert!(
            out.contains(
                "tcpstate_closes_total{netns=\"pod:web \\\"1\\\"\",role=\"client\",closer=\"local\",kind=\"fin\",comm=\"unknown\"} 1\n"
            ),
            "{out}"
        );
        assert!(!out.contains("# EOF"));
    }

    #[test]
    fn openmetrics_ends_with_eof() {
        let out = encode(Arc::new(snapshot()), true);
        assert!(out.contains("# TYPE tcpstate_events counter\n"), "{out}");
        assert!(out.ends_with("# EOF\n"), "{out}");
    }
}
