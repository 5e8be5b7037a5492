//! The full-screen view's cost per refresh with 100,000 TIME_WAIT entries:
//! taking the frame (the entries copied), grouping and sorting them, and
//! drawing a 200x50 screen. At the default 1 s interval the share of one
//! core it uses is this time per second; the bar is under 25%.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use criterion::{Criterion, criterion_group, criterion_main};
use ratatui::{Terminal, backend::TestBackend};
use tcpstate::{
    cli::GroupBy,
    render::{
        Frame, Rates,
        tui::{
            draw,
            state::{Grouping, Model, Ui},
        },
    },
    sock::{Comm, Owner, SockId, Tuple},
    track::{
        timewait::{Entry, ExitReason, LINUX_TIME_WAIT_NS, Table, TwSink},
        tracker::{Close, CloseKind, Closer, Role},
    },
};

const ENTRIES: u32 = 100_000;

struct Discard;

impl TwSink for Discard {
    fn tw_enter(&mut self, _: &Entry) {}
    fn tw_exit(&mut self, _: &Entry, _: ExitReason, _: u64) {}
}

/// 100,000 entries: 250 peers, a quarter IPv6, ten process names.
fn table() -> Table {
    let mut table = Table::new(0, LINUX_TIME_WAIT_NS, 0, 1 << 18);
    for i in 0..ENTRIES {
        let (peer, port) = (i / 400, (i % 400) as u16 + 20_000);
        let (l, r) = if i % 4 == 0 {
            (
                IpAddr::V6(Ipv6Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, peer as u16)),
            )
        } else {
            (
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V4(Ipv4Addr::new(10, 0, (peer / 250) as u8, (peer % 250) as u8)),
            )
        };
        let close = Close {
            ts_ns: u64::from(i) * 500_000,
            skaddr: u64::from(i),
            id: SockId {
                netns: 4026531840,
                tuple: Tuple::new(l, port, r, 443),
            },
            role: Role::Client,
            closer: Closer::Local,
            kind: CloseKind::Fin,
            time_wait: true,
            tw_refused: false,
            lifetime_ns: Some(1),
            owner: Some(Owner {
                pid: 4242 + i % 10,
                tid: 4242,
                comm: Comm::new(&format!("client-{}", i % 10)),
            }),
        };
        table.on_close(&close, &mut Discard);
    }
    table
}

fn refresh(c: &mut Criterion) {
    let table = table();
    let frame = Frame {
        now_ns: u64::from(ENTRIES) * 500_000,
        entries: table.entries().collect(),
        pools: Vec::new(),
        namespaces: Vec::new(),
        stats: table.stats(),
        reconciliations: 1,
        lost: 0,
        rates: Some(Rates {
            entered_per_s: 2000.0,
            exited_per_s: 2000.0,
        }),
        connect_failed: Some([0; 4]),
        group_by: GroupBy::Peer,
        filtered: false,
        findings: Vec::new(),
    };
    let mut terminal = Terminal::new(TestBackend::new(200, 50)).unwrap();
    let mut model = Model::default();
    let ui = Ui::new(Grouping::Peer, 1.0);
    c.bench_function("tui refresh, 100,000 entries, 200x50", |b| {
        b.iter(|| {
            model.update(&frame);
            let rows = ui.rows(&model);
            terminal
                .draw(|f| draw::draw(f, &model, &ui, &rows))
                .unwrap();
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = refresh
}
criterion_main!(benches);
