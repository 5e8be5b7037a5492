//! Memory per live TIME_WAIT entry: heap bytes held by a table of one
//! million entries (IPv4 and IPv6 mixed, with owners), measured by a
//! counting allocator. Bar: at most 128 bytes per entry.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::atomic::{AtomicUsize, Ordering},
};

use tcpstate::{
    sock::{Comm, Owner, SockId, Tuple},
    track::{
        timewait::{Entry, ExitReason, LINUX_TIME_WAIT_NS, Table, TwSink},
        tracker::{Close, CloseKind, Closer, Role},
    },
};

/// The system allocator, counting bytes in use.
struct Counting;

static IN_USE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        IN_USE.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        IN_USE.fetch_add(new_size, Ordering::Relaxed);
        IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

struct Discard;

impl TwSink for Discard {
    fn tw_enter(&mut self, _: &Entry) {}
    fn tw_exit(&mut self, _: &Entry, _: ExitReason, _: u64) {}
}

const ENTRIES: u32 = 1_000_000;

fn main() {
    let before = IN_USE.load(Ordering::Relaxed);
    let mut table = Table::new(0, LINUX_TIME_WAIT_NS, 0, 1 << 21);
    let owner = Some(Owner {
        pid: 4242,
        tid: 4242,
        comm: Comm::new("nginx"),
    });
    for i in 0..ENTRIES {
        // Distinct 4-tuples: 25 peers x 40,000 ports; one in four IPv6.
        let (peer, port) = (i / 40_000, (i % 40_000) as u16 + 20_000);
        let (l, r) = if i % 4 == 0 {
            (
                IpAddr::V6(Ipv6Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, peer as u16)),
            )
        } else {
            (
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V4(Ipv4Addr::new(10, 0, 0, peer as u8)),
            )
        };
        let close = Close {
            ts_ns: u64::from(i),
            skaddr: u64::from(i),
            id: SockId {
                netns: 4026531840,
                tuple: Tuple::new(l, 443, r, port),
            },
            role: Role::Server,
            closer: Closer::Local,
            kind: CloseKind::Fin,
            time_wait: true,
            tw_refused: false,
            lifetime_ns: Some(1),
            owner,
        };
        table.on_close(&close, &mut Discard);
    }
    assert_eq!(table.len(), ENTRIES as usize);
    let bytes = IN_USE.load(Ordering::Relaxed) - before;
    println!(
        "timewait table: {} entries, {:.1} MiB of heap, {:.1} bytes per entry (bar: 128)",
        ENTRIES,
        bytes as f64 / (1 << 20) as f64,
        bytes as f64 / f64::from(ENTRIES)
    );
}
