//! Tracker throughput on a synthetic stream shaped like a loopback
//! connection storm: per connection, the server's 5 transitions and the
//! client's 5, interleaved as the kernel reports them; half of the
//! connections close server-first (the server enters TIME_WAIT), half
//! client-first (the client does). The tracker feeds the TIME_WAIT table,
//! as in `tcpstate`. Bar: 5 million events/s on one core. A second run adds
//! JSON rendering, the cost `watch --json` pays per event.

use std::net::{IpAddr, Ipv4Addr};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tcpstate::{
    host::clock::Clock,
    kernel::decode::{Event, Kind},
    render::{Printer, json::Json},
    sock::{Comm, Owner, SockId, State, Tuple},
    track::{
        timewait::{self, Entry, ExitReason, TwSink},
        tracker::{BindFailure, Close, ConnectFailure, Sink, Tracker, Transition},
    },
};
use tcpstate_ebpf::life::Life;

const CONNS: u64 = 50_000;

/// Feeds the TIME_WAIT table and counts its entries.
struct Table {
    table: timewait::Table,
    transitions: u64,
}

impl Table {
    fn new() -> Table {
        Table {
            table: timewait::Table::new(0, timewait::LINUX_TIME_WAIT_NS, 0, 1 << 21),
            transitions: 0,
        }
    }
}

/// The table's changes are not rendered here.
struct Discard;

impl TwSink for Discard {
    fn tw_enter(&mut self, _: &Entry) {}
    fn tw_exit(&mut self, _: &Entry, _: ExitReason, _: u64) {}
}

impl Sink for Table {
    fn transition(&mut self, t: &Transition) {
        self.transitions += 1;
        self.table.on_transition(t, &mut Discard);
    }
    fn close(&mut self, c: &Close) {
        self.table.on_close(c, &mut Discard);
    }
    fn connect_failed(&mut self, _: &ConnectFailure) {}
    fn bind_failed(&mut self, _: &BindFailure) {}
}

fn storm() -> Vec<Event> {
    use State as S;
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let owner = Some(Owner {
        pid: 4242,
        tid: 4242,
        comm: Comm::new("storm"),
    });
    let mut events = Vec::with_capacity(CONNS as usize * 10);
    let mut ts = 1_000_000_000u64;
    for i in 0..CONNS {
        let cport = 32768 + (i % 28000) as u16;
        let client_sk = 0xffff_8881_0000_0000 + i * 4096;
        let server_sk = client_sk + 2048;
        let server_first = i % 2 == 0;
        let client = (client_sk, Tuple::new(lo, cport, lo, 8080));
        let server = (server_sk, Tuple::new(lo, 8080, lo, cport));
        let c = |old, new| (client.0, client.1, old, new);
        let s = |old, new| (server.0, server.1, old, new);
        let mut seq = vec![
            c(S::CLOSE, S::SYN_SENT),
            s(S::LISTEN, S::SYN_RECV),
            s(S::SYN_RECV, S::ESTABLISHED),
            c(S::SYN_SENT, S::ESTABLISHED),
        ];
        let (first, second) = if server_first {
            (server, client)
        } else {
            (client, server)
        };
        let f = |old, new| (first.0, first.1, old, new);
        let p = |old, new| (second.0, second.1, old, new);
        seq.extend([
            f(S::ESTABLISHED, S::FIN_WAIT1),
            p(S::ESTABLISHED, S::CLOSE_WAIT),
            f(S::FIN_WAIT1, S::FIN_WAIT2),
            p(S::CLOSE_WAIT, S::LAST_ACK),
            f(S::FIN_WAIT2, S::CLOSE),
            p(S::LAST_ACK, S::CLOSE),
        ]);
        // Each socket's life, as the kernel keeps it.
        let mut lives = [(client_sk, Life::default()), (server_sk, Life::default())];
        for (skaddr, tuple, old, new) in seq {
            ts += 5_000;
            let (_, life) = lives
                .iter_mut()
                .find(|(sk, _)| *sk == skaddr)
                .expect("one of the two sockets");
            *life = life.after(old.0, new.0, ts);
            let life = *life;
            events.push(Event {
                ts_ns: ts,
                kind: Kind::Transition { old, new },
                skaddr,
                id: SockId {
                    netns: 4026531840,
                    tuple,
                },
                prev_ts_ns: Some(ts - 5_000),
                owner,
                life,
            });
        }
    }
    events
}

fn bench(c: &mut Criterion) {
    let events = storm();
    let mut group = c.benchmark_group("tracker");
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function("storm_events", |b| {
        b.iter(|| {
            let mut tracker = Tracker::default();
            let mut out = Table::new();
            for ev in &events {
                tracker.on_event(ev, &mut out);
            }
            tracker.finish(&mut out);
            // Every connection entered TIME_WAIT; ports wrap, so later ones
            // reuse earlier 4-tuples, as in a real storm.
            assert_eq!(out.table.stats().entered, CONNS);
            out.transitions
        })
    });
    // The same stream through the JSON renderer, as `watch --json` runs it.
    group.bench_function("storm_events_json", |b| {
        let clock = Clock::system();
        b.iter(|| {
            let mut tracker = Tracker::default();
            let mut out = Json::new(
                std::io::BufWriter::with_capacity(1 << 18, std::io::sink()),
                clock,
            );
            for ev in &events {
                tracker.on_event(ev, &mut out);
            }
            tracker.finish(&mut out);
            out.flush();
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
