//! The connection tracker: turns the raw transition stream into annotated
//! transitions and one `close` record per connection (role, closer, kind,
//! lifetime, whether this end entered TIME_WAIT), or, for a `connect()`
//! that never established, one `connect_failed` record saying why.
//!
//! Pure logic over [`Event`]s, with no kernel access. Every record carries
//! its socket's life as the kernel follows it (`tcpstate_ebpf::life`: when
//! it began, the states it entered), so the same classification serves the
//! full stream and the closes-only one. It rests on the facts in the design
//! notes:
//! - `ESTABLISHED -> FIN_WAIT1` means this end closed first, `ESTABLISHED ->
//!   CLOSE_WAIT` the peer did, `FIN_WAIT1 -> CLOSING` both at once
//!   (`Life::closer`);
//! - TIME_WAIT never appears as a new state: `FIN_WAIT2 -> CLOSE` or
//!   `CLOSING -> CLOSE` without a reset is the full socket handing over to its
//!   TIME_WAIT mini-socket;
//! - a received RST is reported before the `CLOSE`; a sent RST may come just
//!   before or just after it, so a close that went through no FIN states is
//!   held for a short grace period waiting for its `tcp_send_reset`;
//! - a client socket that goes `SYN_SENT -> CLOSE` never established: with
//!   local port 0, `connect()` found no free local port (`inet_hash_connect`
//!   failed after the state was set); after a received RST, the peer
//!   refused; after at least one unanswered SYN (the first retransmission
//!   is due 1 s in), nobody answered.

use std::collections::{VecDeque, hash_map::Entry};

use rustc_hash::FxHashMap;

use tcpstate_ebpf::life::Life;

use crate::{
    kernel::decode::{Event, Kind},
    sock::{Owner, SockId, State},
};

/// How long (kernel time) a close with no FIN exchange waits for the
/// `tcp_send_reset` that the kernel reports right after the `CLOSE`.
pub const RESET_GRACE_NS: u64 = 20_000_000;

/// Default cap on tracked connections.
pub const DEFAULT_MAX_CONNS: usize = 1 << 20;

pub use tcpstate_ebpf::life::{Closer, Role};

/// How the connection ended.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum CloseKind {
    /// Graceful FIN exchange.
    Fin,
    /// This end sent an RST.
    RstSent,
    /// The peer sent an RST.
    RstReceived,
    /// Neither FIN nor RST: a timeout or another abort.
    Abort,
    /// Not seen: the socket's address began a new life before its end
    /// reached tracing (transitions were missed).
    Unknown,
}

impl CloseKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseKind::Fin => "fin",
            CloseKind::RstSent => "rst_sent",
            CloseKind::RstReceived => "rst_received",
            CloseKind::Abort => "abort",
            CloseKind::Unknown => "unknown",
        }
    }
}

/// Annotation of one transition, for the readable output.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Note {
    None,
    Connect,
    Listen,
    PassiveOpen,
    ActiveClose,
    PassiveClose,
    CloseAfterPeer,
    /// `close()` on a socket already half-closed by `shutdown(SHUT_WR)`:
    /// the kernel reports the state it keeps, e.g. `FIN_WAIT1 -> FIN_WAIT1`.
    CloseAfterShutdown,
    SimultaneousClose,
    TimeWait,
    TimeWaitRefused,
    Closed,
    RstReceived,
    RstSent,
    Abort,
    ListenerClosed,
    ConnectFailed(FailReason),
}

impl Note {
    pub fn as_str(self) -> &'static str {
        match self {
            Note::None => "",
            Note::Connect => "connect",
            Note::Listen => "listen",
            Note::PassiveOpen => "passive open",
            Note::ActiveClose => "active close",
            Note::PassiveClose => "passive close",
            Note::CloseAfterPeer => "close after peer",
            Note::CloseAfterShutdown => "close after shutdown",
            Note::SimultaneousClose => "simultaneous close",
            Note::TimeWait => "enters TIME_WAIT",
            Note::TimeWaitRefused => "TIME_WAIT refused (tcp_max_tw_buckets full)",
            Note::Closed => "closed",
            Note::RstReceived => "rst received",
            Note::RstSent => "rst sent",
            Note::Abort => "abort",
            Note::ListenerClosed => "listener closed",
            Note::ConnectFailed(FailReason::NoLocalPort) => "connect failed: no local port",
            Note::ConnectFailed(FailReason::Refused) => "connect failed: refused",
            Note::ConnectFailed(FailReason::Timeout) => "connect failed: timeout",
            Note::ConnectFailed(FailReason::Other) => "connect failed",
        }
    }

    fn of_close(kind: CloseKind, time_wait: bool) -> Note {
        match kind {
            CloseKind::Fin if time_wait => Note::TimeWait,
            CloseKind::Fin => Note::Closed,
            CloseKind::RstSent => Note::RstSent,
            CloseKind::RstReceived => Note::RstReceived,
            CloseKind::Abort => Note::Abort,
            CloseKind::Unknown => Note::None,
        }
    }
}

/// Why a `connect()` never established.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum FailReason {
    /// No free local port toward that destination: `EADDRNOTAVAIL`.
    NoLocalPort,
    /// The peer answered the SYN with an RST: `ECONNREFUSED`.
    Refused,
    /// No answer to the SYN and its retransmissions, until the kernel
    /// (`ETIMEDOUT`) or the application gave up.
    Timeout,
    /// Anything else: an ICMP error, or the application closed the socket
    /// within the first second.
    Other,
}

impl FailReason {
    pub const ALL: [FailReason; 4] = [
        FailReason::NoLocalPort,
        FailReason::Refused,
        FailReason::Timeout,
        FailReason::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailReason::NoLocalPort => "no_local_port",
            FailReason::Refused => "refused",
            FailReason::Timeout => "timeout",
            FailReason::Other => "other",
        }
    }

    /// The error `connect()` returned, where the reason implies it (a
    /// timeout may have been the application's own).
    pub fn errno(self) -> Option<&'static str> {
        match self {
            FailReason::NoLocalPort => Some("EADDRNOTAVAIL"),
            FailReason::Refused => Some("ECONNREFUSED"),
            FailReason::Timeout | FailReason::Other => None,
        }
    }

    /// Classifies a client's `SYN_SENT -> CLOSE`.
    fn of(lport: u16, reset_received: bool, waited_ns: Option<u64>) -> FailReason {
        /// The first SYN retransmission (initial RTO, RFC 6298).
        const FIRST_RETRANSMIT_NS: u64 = 1_000_000_000;
        if lport == 0 {
            FailReason::NoLocalPort
        } else if reset_received {
            FailReason::Refused
        } else if waited_ns.is_some_and(|w| w >= FIRST_RETRANSMIT_NS) {
            FailReason::Timeout
        } else {
            FailReason::Other
        }
    }
}

/// A `connect()` that never established.
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct ConnectFailure {
    pub ts_ns: u64,
    pub skaddr: u64,
    /// The destination and namespace; the local port is 0 for
    /// [`FailReason::NoLocalPort`].
    pub id: SockId,
    pub reason: FailReason,
    /// The error `connect()` returned, when the syscall said it (a call
    /// that failed before its socket reached `SYN_SENT`: no route, a
    /// firewall); else the reason implies it, if anything does.
    pub errno: Option<i32>,
    /// Time spent in `SYN_SENT`, when its start was seen.
    pub waited_ns: Option<u64>,
    pub owner: Option<Owner>,
}

/// A `bind()` that failed with `EADDRINUSE`: another socket holds the
/// address, a listener or, typically, TIME_WAIT sockets of a server that
/// closed first and restarts without `SO_REUSEADDR`.
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct BindFailure {
    pub ts_ns: u64,
    pub skaddr: u64,
    /// The address and port asked for (the remote end is unset).
    pub id: SockId,
    /// The socket had `SO_REUSEADDR` set.
    pub reuseaddr: bool,
    /// The socket had `SO_REUSEPORT` set.
    pub reuseport: bool,
    /// TIME_WAIT sockets of that namespace on that local port when it
    /// failed; set downstream, where the table is known.
    pub time_wait_on_port: Option<usize>,
    /// The calling process.
    pub owner: Option<Owner>,
}

impl ConnectFailure {
    /// The name of the error `connect()` returned: traced, or implied by
    /// the reason.
    pub fn errno_name(&self) -> Option<std::borrow::Cow<'static, str>> {
        match self.errno {
            Some(n) => Some(format!("{:?}", nix::errno::Errno::from_raw(n)).into()),
            None => self.reason.errno().map(std::borrow::Cow::Borrowed),
        }
    }
}

/// One state transition, annotated.
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct Transition {
    pub ts_ns: u64,
    pub skaddr: u64,
    pub id: SockId,
    pub old: State,
    pub new: State,
    /// Time spent in `old`, when its start was seen.
    pub in_old_ns: Option<u64>,
    pub owner: Option<Owner>,
    pub note: Note,
}

/// The end of one connection (its full socket reached CLOSE).
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct Close {
    pub ts_ns: u64,
    pub skaddr: u64,
    pub id: SockId,
    pub role: Role,
    pub closer: Closer,
    pub kind: CloseKind,
    /// This end entered TIME_WAIT.
    pub time_wait: bool,
    /// This end would have entered TIME_WAIT, but its namespace's
    /// `tcp_max_tw_buckets` were all taken: the kernel made no TIME_WAIT
    /// socket (`TCPTimeWaitOverflow`). Set downstream, where the table's
    /// size is known.
    pub tw_refused: bool,
    /// From SYN_SENT / SYN_RECV to CLOSE, when the start was seen.
    pub lifetime_ns: Option<u64>,
    pub owner: Option<Owner>,
}

/// Where the tracker's output goes.
pub trait Sink {
    fn transition(&mut self, t: &Transition);
    fn close(&mut self, c: &Close);
    fn connect_failed(&mut self, f: &ConnectFailure);
    fn bind_failed(&mut self, b: &BindFailure);
}

/// Counters of what the tracker saw and what its cap dropped.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct Stats {
    pub transitions: u64,
    pub resets: u64,
    pub closes: u64,
    /// `connect()`s that never established (no `close` for them).
    pub connect_failures: u64,
    /// `bind()`s that failed with `EADDRINUSE`.
    pub bind_failures: u64,
    /// New connections not tracked because the table was full.
    pub untracked: u64,
    /// Connections whose end tracing never saw: their socket address began
    /// a new life first. Each hides at least one missed transition, lost in
    /// the kernel or counted there as lost.
    pub unfinished: u64,
}

/// What we know about one live connection.
#[derive(Clone, Copy, Debug)]
struct Conn {
    /// The socket as last seen (the local port is 0 until `connect()`
    /// picks one).
    id: SockId,
    /// Its life as the kernel follows it: role, closer, opening time.
    life: Life,
    reset_received: bool,
    reset_sent: bool,
    owner: Option<Owner>,
}

impl Conn {
    fn new(id: SockId) -> Conn {
        Conn {
            id,
            life: Life::default(),
            reset_received: false,
            reset_sent: false,
            owner: None,
        }
    }

    /// Starts a new life of the socket (the kernel may reuse a freed
    /// socket's address). Returns the previous life when it was seen
    /// opening but never closing: transitions were missed.
    fn begin(&mut self, id: SockId, life: Life, owner: Option<Owner>) -> Option<Conn> {
        let previous = *self;
        if previous.life.seen == 0 {
            // Only resets were seen: they are this life's (a closes-only
            // stream reports a reset before the life's first record).
            *self = Conn {
                id,
                life,
                owner: owner.or(previous.owner),
                ..previous
            };
            return None;
        }
        *self = Conn {
            life,
            owner,
            ..Conn::new(id)
        };
        (previous.life.opened_ns != 0).then_some(previous)
    }
}

/// A close with no FIN exchange, waiting to learn whether an RST was sent.
struct Pending {
    deadline_ns: u64,
    transition: Transition,
    close: Close,
}

/// The connection tracker.
pub struct Tracker {
    conns: FxHashMap<u64, Conn>,
    /// Owner of each listening port, per network namespace, to attribute the
    /// connections accepted from it before the server touches them.
    listeners: FxHashMap<(u32, u16), Option<Owner>>,
    pending: VecDeque<Pending>,
    max_conns: usize,
    stats: Stats,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker::new(DEFAULT_MAX_CONNS)
    }
}

impl Tracker {
    pub fn new(max_conns: usize) -> Tracker {
        Tracker {
            conns: FxHashMap::default(),
            listeners: FxHashMap::default(),
            pending: VecDeque::new(),
            max_conns,
            stats: Stats::default(),
        }
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Names the owner of a port that was listening before tracing began
    /// (its `listen()` was never seen). A traced `LISTEN` wins.
    pub fn seed_listener(&mut self, netns: u32, port: u16, owner: Owner) {
        self.listeners.entry((netns, port)).or_insert(Some(owner));
    }

    /// Connections currently tracked.
    pub fn live(&self) -> usize {
        self.conns.len()
    }

    /// Feeds one event; outputs go to `sink` in order.
    pub fn on_event(&mut self, ev: &Event, sink: &mut impl Sink) {
        self.flush(ev.ts_ns, sink);
        match ev.kind {
            Kind::Transition { old, new } => self.on_transition(ev, old, new, sink),
            Kind::ResetReceived => self.on_reset(ev, false, sink),
            Kind::ResetSent => self.on_reset(ev, true, sink),
            Kind::ConnectError { errno } => {
                self.stats.connect_failures += 1;
                sink.connect_failed(&ConnectFailure {
                    ts_ns: ev.ts_ns,
                    skaddr: ev.skaddr,
                    id: ev.id,
                    reason: FailReason::Other,
                    errno: Some(i32::from(errno)),
                    waited_ns: None,
                    owner: ev.owner,
                });
            }
            Kind::BindFailed {
                reuseaddr,
                reuseport,
            } => {
                self.stats.bind_failures += 1;
                sink.bind_failed(&BindFailure {
                    ts_ns: ev.ts_ns,
                    skaddr: ev.skaddr,
                    id: ev.id,
                    reuseaddr,
                    reuseport,
                    time_wait_on_port: None,
                    owner: ev.owner,
                });
            }
        }
    }

    /// Resolves held closes whose grace period ended before `now_ns`
    /// (kernel monotonic time): no RST was sent, so they were aborts.
    pub fn flush(&mut self, now_ns: u64, sink: &mut impl Sink) {
        while self
            .pending
            .front()
            .is_some_and(|p| p.deadline_ns <= now_ns)
        {
            if let Some(p) = self.pending.pop_front() {
                emit(p, CloseKind::Abort, sink);
            }
        }
    }

    /// Resolves everything still held (at exit).
    pub fn finish(&mut self, sink: &mut impl Sink) {
        self.flush(u64::MAX, sink);
    }

    fn on_reset(&mut self, ev: &Event, sent: bool, sink: &mut impl Sink) {
        self.stats.resets += 1;
        let held = self
            .pending
            .iter()
            .position(|p| p.close.skaddr == ev.skaddr);
        if sent && let Some(p) = held.and_then(|i| self.pending.remove(i)) {
            emit(p, CloseKind::RstSent, sink);
            return;
        }
        if let Some(conn) = self.conn_mut(ev.skaddr, ev.id) {
            if sent {
                conn.reset_sent = true;
            } else {
                conn.reset_received = true;
            }
            conn.owner = ev.owner.or(conn.owner);
        }
    }

    /// The connection's entry, created if the table has room.
    fn conn_mut(&mut self, skaddr: u64, id: SockId) -> Option<&mut Conn> {
        let full = self.conns.len() >= self.max_conns;
        match self.conns.entry(skaddr) {
            Entry::Occupied(e) => Some(e.into_mut()),
            Entry::Vacant(_) if full => {
                self.stats.untracked += 1;
                None
            }
            Entry::Vacant(e) => Some(e.insert(Conn::new(id))),
        }
    }

    fn on_transition(&mut self, ev: &Event, old: State, new: State, sink: &mut impl Sink) {
        self.stats.transitions += 1;
        let mut t = Transition {
            ts_ns: ev.ts_ns,
            skaddr: ev.skaddr,
            id: ev.id,
            old,
            new,
            in_old_ns: ev.prev_ts_ns.map(|p| ev.ts_ns.saturating_sub(p)),
            owner: ev.owner,
            note: Note::None,
        };

        // Listening sockets are not connections: remember their owner only.
        if new == State::LISTEN {
            self.listeners
                .insert((ev.id.netns, ev.id.tuple.lport), ev.owner);
            t.note = Note::Listen;
            sink.transition(&t);
            return;
        }
        if old == State::LISTEN && new == State::CLOSE {
            self.listeners.remove(&(ev.id.netns, ev.id.tuple.lport));
            t.note = Note::ListenerClosed;
            sink.transition(&t);
            return;
        }

        // An accepted connection belongs to its listener's owner until a
        // process touches it (the kernel's records carry that process from
        // then on).
        let listener_owner = if ev.owner.is_none() && ev.life.role() == Role::Server {
            self.listeners
                .get(&(ev.id.netns, ev.id.tuple.lport))
                .copied()
                .flatten()
        } else {
            None
        };
        let Some(conn) = self.conn_mut(ev.skaddr, ev.id) else {
            // Table full: report the transition, classify nothing.
            sink.transition(&t);
            return;
        };
        // The previous life's owner, should this record begin a new one.
        let previous_owner = conn.owner;
        let mut unfinished = None;
        if ev.life.opened_ns != 0 && ev.life.opened_ns != conn.life.opened_ns {
            // The first record of a life: its opening, or in a
            // closes-only stream the first one the kernel writes.
            unfinished = conn.begin(ev.id, ev.life, ev.owner.or(listener_owner));
        } else {
            conn.life.seen |= ev.life.seen;
            conn.owner = ev.owner.or(conn.owner).or(listener_owner);
        }
        t.owner = conn.owner;
        t.note = match (old, new) {
            // The kernel re-reports a state, e.g. close() after shutdown().
            (State::FIN_WAIT1 | State::FIN_WAIT2 | State::CLOSING | State::LAST_ACK, _)
                if old == new =>
            {
                Note::CloseAfterShutdown
            }
            _ if old == new => Note::None,
            (State::CLOSE, State::SYN_SENT) => Note::Connect,
            (State::LISTEN, State::SYN_RECV) => Note::PassiveOpen,
            (_, State::FIN_WAIT1) => Note::ActiveClose,
            (_, State::CLOSE_WAIT) => Note::PassiveClose,
            (State::CLOSE_WAIT, State::LAST_ACK) => Note::CloseAfterPeer,
            (_, State::CLOSING) => Note::SimultaneousClose,
            _ => Note::None,
        };
        if new != State::LISTEN && new != State::SYN_SENT && ev.id.tuple.lport != 0 {
            conn.id = ev.id;
        }
        if let Some(previous) = unfinished {
            // Its end was missed: close it now, as unknown.
            self.stats.unfinished += 1;
            self.stats.closes += 1;
            sink.close(&Close {
                ts_ns: ev.ts_ns,
                skaddr: ev.skaddr,
                id: previous.id,
                role: previous.life.role(),
                closer: previous.life.closer(),
                kind: CloseKind::Unknown,
                time_wait: false,
                tw_refused: false,
                lifetime_ns: None,
                owner: previous_owner,
            });
        }
        if new != State::CLOSE {
            sink.transition(&t);
            return;
        }

        let conn = self
            .conns
            .remove(&ev.skaddr)
            .unwrap_or_else(|| Conn::new(ev.id));
        if old == State::SYN_SENT {
            let waited_ns = t.in_old_ns;
            let reason = FailReason::of(ev.id.tuple.lport, conn.reset_received, waited_ns);
            self.stats.connect_failures += 1;
            t.note = Note::ConnectFailed(reason);
            sink.transition(&t);
            sink.connect_failed(&ConnectFailure {
                ts_ns: ev.ts_ns,
                skaddr: ev.skaddr,
                id: ev.id,
                reason,
                errno: None,
                waited_ns,
                owner: conn.owner,
            });
            return;
        }
        self.stats.closes += 1;
        let graceful_end = matches!(old, State::FIN_WAIT2 | State::CLOSING | State::LAST_ACK);
        let kind = if conn.reset_received {
            Some(CloseKind::RstReceived)
        } else if conn.reset_sent {
            Some(CloseKind::RstSent)
        } else if graceful_end {
            Some(CloseKind::Fin)
        } else {
            None
        };
        let close = Close {
            ts_ns: ev.ts_ns,
            skaddr: ev.skaddr,
            id: ev.id,
            role: conn.life.role(),
            closer: conn.life.closer(),
            kind: kind.unwrap_or(CloseKind::Abort),
            time_wait: false,
            tw_refused: false,
            lifetime_ns: (conn.life.opened_ns != 0)
                .then(|| ev.ts_ns.saturating_sub(conn.life.opened_ns)),
            owner: conn.owner,
        };
        let pending = Pending {
            deadline_ns: ev.ts_ns.saturating_add(RESET_GRACE_NS),
            transition: t,
            close,
        };
        match kind {
            Some(kind) => emit(pending, kind, sink),
            // No FIN exchange and no reset yet: wait for a `tcp_send_reset`.
            None => self.pending.push_back(pending),
        }
    }
}

/// Completes a close with its kind and writes the transition and the close.
fn emit(mut p: Pending, kind: CloseKind, sink: &mut impl Sink) {
    let c = &mut p.close;
    c.kind = kind;
    c.time_wait =
        kind == CloseKind::Fin && matches!(p.transition.old, State::FIN_WAIT2 | State::CLOSING);
    if c.closer == Closer::Unknown {
        c.closer = match kind {
            CloseKind::RstSent => Closer::Local,
            CloseKind::RstReceived => Closer::Remote,
            CloseKind::Fin | CloseKind::Abort | CloseKind::Unknown => Closer::Unknown,
        };
    }
    p.transition.note = Note::of_close(kind, c.time_wait);
    sink.transition(&p.transition);
    sink.close(&p.close);
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::sock::{Comm, Family, Tuple};

    /// Collects what the tracker emits.
    #[derive(Default)]
    pub(crate) struct Collect {
        pub transitions: Vec<Transition>,
        pub closes: Vec<Close>,
        pub failures: Vec<ConnectFailure>,
        pub binds: Vec<BindFailure>,
    }

    impl Sink for Collect {
        fn transition(&mut self, t: &Transition) {
            self.transitions.push(*t);
        }
        fn close(&mut self, c: &Close) {
            self.closes.push(*c);
        }
        fn connect_failed(&mut self, f: &ConnectFailure) {
            self.failures.push(*f);
        }
        fn bind_failed(&mut self, b: &BindFailure) {
            self.binds.push(*b);
        }
    }

    pub(crate) fn tuple(lport: u16, rport: u16) -> Tuple {
        Tuple {
            family: Family::V4,
            laddr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            lport,
            raddr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            rport,
        }
    }

    pub(crate) fn owner(pid: u32) -> Owner {
        Owner {
            pid,
            tid: pid,
            comm: Comm::new("test"),
        }
    }

    /// Builds the event stream of one socket.
    pub(crate) struct Sock {
        pub skaddr: u64,
        pub tuple: Tuple,
        pub ts: u64,
        pub events: Vec<Event>,
        /// The life and the owner the kernel keeps for the socket.
        life: Life,
        owner: Option<Owner>,
    }

    impl Sock {
        pub(crate) fn new(skaddr: u64, lport: u16, rport: u16) -> Sock {
            Sock {
                skaddr,
                tuple: tuple(lport, rport),
                ts: 1_000_000_000,
                events: Vec::new(),
                life: Life::default(),
                owner: None,
            }
        }

        pub(crate) fn go(mut self, old: State, new: State, owner: Option<Owner>) -> Sock {
            self.push(Kind::Transition { old, new }, owner);
            self
        }

        pub(crate) fn reset(mut self, sent: bool) -> Sock {
            self.push(
                if sent {
                    Kind::ResetSent
                } else {
                    Kind::ResetReceived
                },
                None,
            );
            self
        }

        fn push(&mut self, kind: Kind, owner: Option<Owner>) {
            self.ts += 1_000_000;
            let prev = self.events.last().map(|e| e.ts_ns);
            // The kernel's records carry the owner last captured for the
            // socket, and its life.
            let life = match kind {
                Kind::Transition { old, new } => {
                    if tcpstate_ebpf::life::begins(old.0, new.0) {
                        self.owner = None;
                    }
                    self.life = self.life.after(old.0, new.0, self.ts);
                    self.life
                }
                _ => Life::default(),
            };
            self.owner = owner.or(self.owner);
            let owner = self.owner;
            self.events.push(Event {
                ts_ns: self.ts,
                kind,
                skaddr: self.skaddr,
                id: SockId {
                    netns: 4026531840,
                    tuple: self.tuple,
                },
                prev_ts_ns: prev,
                owner,
                life,
            });
        }
    }

    fn run(events: &[Event]) -> Collect {
        let mut tracker = Tracker::default();
        let mut out = Collect::default();
        for ev in events {
            tracker.on_event(ev, &mut out);
        }
        tracker.finish(&mut out);
        out
    }

    use State as S;

    fn server_closes_first() -> (Sock, Sock) {
        let me = Some(owner(100));
        let server = Sock::new(1, 80, 40000)
            .go(S::LISTEN, S::SYN_RECV, None)
            .go(S::SYN_RECV, S::ESTABLISHED, None)
            .go(S::ESTABLISHED, S::FIN_WAIT1, me)
            .go(S::FIN_WAIT1, S::FIN_WAIT2, None)
            .go(S::FIN_WAIT2, S::CLOSE, None);
        let client = Sock::new(2, 40000, 80)
            .go(S::CLOSE, S::SYN_SENT, Some(owner(200)))
            .go(S::SYN_SENT, S::ESTABLISHED, None)
            .go(S::ESTABLISHED, S::CLOSE_WAIT, None)
            .go(S::CLOSE_WAIT, S::LAST_ACK, Some(owner(200)))
            .go(S::LAST_ACK, S::CLOSE, None);
        (server, client)
    }

    /// Both ends close at once.
    fn simultaneous_close_sock() -> Sock {
        Sock::new(4, 40002, 80)
            .go(S::CLOSE, S::SYN_SENT, None)
            .go(S::SYN_SENT, S::ESTABLISHED, None)
            .go(S::ESTABLISHED, S::FIN_WAIT1, None)
            .go(S::FIN_WAIT1, S::CLOSING, None)
            .go(S::CLOSING, S::CLOSE, None)
    }

    /// An accepted connection the peer resets.
    fn rst_received_sock() -> Sock {
        Sock::new(5, 80, 40003)
            .go(S::LISTEN, S::SYN_RECV, None)
            .go(S::SYN_RECV, S::ESTABLISHED, None)
            .reset(false)
            .go(S::ESTABLISHED, S::CLOSE, None)
    }

    /// SO_LINGER 0: the kernel reports CLOSE, then tcp_send_reset.
    fn lingered_sock() -> Sock {
        Sock::new(7, 40005, 80)
            .go(S::CLOSE, S::SYN_SENT, Some(owner(7)))
            .go(S::SYN_SENT, S::ESTABLISHED, None)
            .go(S::ESTABLISHED, S::CLOSE, Some(owner(7)))
            .reset(true)
    }

    /// A refused connect(): the RST is reported before the CLOSE.
    fn refused_sock() -> Sock {
        Sock::new(41, 40001, 81)
            .go(S::CLOSE, S::SYN_SENT, Some(owner(9)))
            .reset(false)
            .go(S::SYN_SENT, S::CLOSE, None)
    }

    /// A connection set up before tracing began, closed by the peer.
    fn open_before_tracing_sock() -> Sock {
        Sock::new(12, 5432, 40010)
            .go(S::ESTABLISHED, S::CLOSE_WAIT, None)
            .go(S::CLOSE_WAIT, S::LAST_ACK, Some(owner(12)))
            .go(S::LAST_ACK, S::CLOSE, None)
    }

    #[test]
    fn server_closes_first_server_end() {
        let (server, _) = server_closes_first();
        let out = run(&server.events);
        assert_eq!(out.closes.len(), 1);
        let c = out.closes[0];
        assert_eq!(
            (c.role, c.closer, c.kind, c.time_wait),
            (Role::Server, Closer::Local, CloseKind::Fin, true)
        );
        assert_eq!(c.lifetime_ns, Some(4_000_000));
        assert_eq!(c.owner.map(|o| o.pid), Some(100));
        let notes: Vec<_> = out.transitions.iter().map(|t| t.note).collect();
        assert_eq!(
            notes,
            [
                Note::PassiveOpen,
                Note::None,
                Note::ActiveClose,
                Note::None,
                Note::TimeWait
            ]
        );
    }

    /// These sockets' events that `keep` passes, in time order, as the
    /// kernel interleaves them.
    fn merged(socks: &[&Sock], keep: impl Fn(&Event) -> bool) -> Vec<Event> {
        let mut events: Vec<Event> = socks
            .iter()
            .flat_map(|s| s.events.iter().copied())
            .filter(|e| keep(e))
            .collect();
        events.sort_by_key(|e| e.ts_ns);
        events
    }

    #[test]
    fn a_closes_only_stream_classifies_as_the_full_one() {
        let (server, client) = server_closes_first();
        let listener = Sock::new(13, 80, 0).go(S::CLOSE, S::LISTEN, Some(owner(42)));
        let simultaneous = simultaneous_close_sock();
        let reset = rst_received_sock();
        let linger = lingered_sock();
        let refused = refused_sock();
        let older = open_before_tracing_sock();
        let socks = [
            &listener,
            &server,
            &client,
            &simultaneous,
            &reset,
            &linger,
            &refused,
            &older,
        ];
        let full = merged(&socks, |_| true);
        // What a closes-only stream carries.
        let thin = merged(&socks, |e| match e.kind {
            Kind::Transition { old, new } => tcpstate_ebpf::life::in_closes_only(old.0, new.0),
            _ => true,
        });
        // Two records a connection (handshake done, closed) and the resets.
        assert_eq!((thin.len(), full.len()), (16, 30));
        let (full, thin) = (run(&full), run(&thin));
        assert_eq!(thin.closes, full.closes);
        assert_eq!(thin.failures, full.failures);
        assert_eq!(full.closes.len(), 6);
        let owner_of = |skaddr| {
            let c = thin.closes.iter().find(|c| c.skaddr == skaddr);
            c.and_then(|c| c.owner).map(|o| o.pid)
        };
        // An accepted connection is its listener's until a process touches
        // it.
        assert_eq!((owner_of(1), owner_of(5)), (Some(100), Some(42)));
        assert_eq!(thin.failures[0].reason, FailReason::Refused);
    }

    #[test]
    fn close_after_shutdown_is_named_and_changes_nothing() {
        // shutdown(SHUT_WR), then close(), as Python's http.server does.
        let server = Sock::new(1, 80, 40000)
            .go(S::LISTEN, S::SYN_RECV, None)
            .go(S::SYN_RECV, S::ESTABLISHED, None)
            .go(S::ESTABLISHED, S::FIN_WAIT1, Some(owner(100)))
            .go(S::FIN_WAIT1, S::FIN_WAIT1, Some(owner(100)))
            .go(S::FIN_WAIT1, S::FIN_WAIT2, None)
            .go(S::FIN_WAIT2, S::CLOSE, None);
        let out = run(&server.events);
        assert_eq!(out.transitions[3].note, Note::CloseAfterShutdown);
        let c = out.closes[0];
        assert_eq!(
            (c.role, c.closer, c.kind, c.time_wait),
            (Role::Server, Closer::Local, CloseKind::Fin, true)
        );
    }

    #[test]
    fn server_closes_first_client_end() {
        let (_, client) = server_closes_first();
        let out = run(&client.events);
        let c = out.closes[0];
        assert_eq!(
            (c.role, c.closer, c.kind, c.time_wait),
            (Role::Client, Closer::Remote, CloseKind::Fin, false)
        );
        assert_eq!(c.owner.map(|o| o.pid), Some(200));
        // Every transition after connect() carries the owner.
        assert!(
            out.transitions
                .iter()
                .all(|t| t.owner.map(|o| o.pid) == Some(200))
        );
    }

    #[test]
    fn client_closes_first() {
        let me = Some(owner(300));
        let client = Sock::new(3, 40001, 80)
            .go(S::CLOSE, S::SYN_SENT, me)
            .go(S::SYN_SENT, S::ESTABLISHED, None)
            .go(S::ESTABLISHED, S::FIN_WAIT1, me)
            .go(S::FIN_WAIT1, S::FIN_WAIT2, None)
            .go(S::FIN_WAIT2, S::CLOSE, None);
        let c = run(&client.events).closes[0];
        assert_eq!(
            (c.role, c.closer, c.kind, c.time_wait),
            (Role::Client, Closer::Local, CloseKind::Fin, true)
        );
    }

    #[test]
    fn simultaneous_close() {
        let out = run(&simultaneous_close_sock().events);
        let c = out.closes[0];
        assert_eq!(
            (c.closer, c.kind, c.time_wait),
            (Closer::Simultaneous, CloseKind::Fin, true)
        );
        assert_eq!(out.transitions[3].note, Note::SimultaneousClose);
    }

    #[test]
    fn rst_received_makes_no_time_wait() {
        let out = run(&rst_received_sock().events);
        let c = out.closes[0];
        assert_eq!(
            (c.role, c.closer, c.kind, c.time_wait),
            (Role::Server, Closer::Remote, CloseKind::RstReceived, false)
        );
        assert_eq!(out.transitions.last().unwrap().note, Note::RstReceived);
    }

    #[test]
    fn rst_received_in_fin_wait2_is_not_time_wait() {
        let sock = Sock::new(6, 80, 40004)
            .go(S::ESTABLISHED, S::FIN_WAIT1, None)
            .go(S::FIN_WAIT1, S::FIN_WAIT2, None)
            .reset(false)
            .go(S::FIN_WAIT2, S::CLOSE, None);
        let c = run(&sock.events).closes[0];
        assert_eq!(
            (c.closer, c.kind, c.time_wait),
            (Closer::Local, CloseKind::RstReceived, false)
        );
    }

    #[test]
    fn rst_sent_after_close_is_matched() {
        let out = run(&lingered_sock().events);
        assert_eq!(out.closes.len(), 1);
        let c = out.closes[0];
        assert_eq!(
            (c.role, c.closer, c.kind, c.time_wait),
            (Role::Client, Closer::Local, CloseKind::RstSent, false)
        );
        // The CLOSE transition is emitted with the close, annotated.
        assert_eq!(out.transitions.len(), 3);
        assert_eq!(out.transitions[2].note, Note::RstSent);
    }

    #[test]
    fn rst_sent_before_close_is_matched() {
        let sock = Sock::new(8, 40006, 80)
            .go(S::ESTABLISHED, S::FIN_WAIT1, None)
            .reset(true)
            .go(S::FIN_WAIT1, S::CLOSE, None);
        let c = run(&sock.events).closes[0];
        assert_eq!((c.closer, c.kind), (Closer::Local, CloseKind::RstSent));
    }

    #[test]
    fn close_without_fin_or_reset_is_an_abort_after_the_grace() {
        let sock = Sock::new(9, 40007, 80)
            .go(S::CLOSE, S::SYN_SENT, None)
            .go(S::SYN_SENT, S::ESTABLISHED, None)
            .go(S::ESTABLISHED, S::CLOSE, None);
        let mut tracker = Tracker::default();
        let mut out = Collect::default();
        for ev in &sock.events {
            tracker.on_event(ev, &mut out);
        }
        assert!(out.closes.is_empty(), "held for the grace period");
        let close_ts = sock.events[2].ts_ns;
        tracker.flush(close_ts + RESET_GRACE_NS - 1, &mut out);
        assert!(out.closes.is_empty());
        tracker.flush(close_ts + RESET_GRACE_NS, &mut out);
        let c = out.closes[0];
        assert_eq!(
            (c.closer, c.kind, c.time_wait),
            (Closer::Unknown, CloseKind::Abort, false)
        );
    }

    #[test]
    fn later_event_resolves_a_held_close() {
        let a = Sock::new(10, 40008, 80).go(S::ESTABLISHED, S::CLOSE, None);
        let mut b = Sock::new(11, 40009, 80);
        b.ts = a.ts + RESET_GRACE_NS + 1;
        let b = b.go(S::CLOSE, S::SYN_SENT, None);
        let out = run(&[a.events[0], b.events[0]]);
        // The abort comes out before the later event's transition.
        assert_eq!(out.transitions[0].skaddr, 10);
        assert_eq!(out.closes[0].kind, CloseKind::Abort);
    }

    #[test]
    fn connection_open_before_tracing() {
        let out = run(&open_before_tracing_sock().events);
        let c = out.closes[0];
        assert_eq!(
            (c.role, c.closer, c.kind, c.time_wait, c.lifetime_ns),
            (Role::Unknown, Closer::Remote, CloseKind::Fin, false, None)
        );
        assert_eq!(out.transitions[0].in_old_ns, None);
        assert_eq!(out.transitions[1].in_old_ns, Some(1_000_000));
    }

    #[test]
    fn accepted_sockets_inherit_the_listener_owner() {
        let listener = Sock::new(13, 8080, 0).go(S::CLOSE, S::LISTEN, Some(owner(42)));
        let child = Sock::new(14, 8080, 40011)
            .go(S::LISTEN, S::SYN_RECV, None)
            .go(S::SYN_RECV, S::ESTABLISHED, None);
        let mut events = listener.events.clone();
        events.extend(child.events);
        let out = run(&events);
        assert_eq!(out.transitions[0].note, Note::Listen);
        assert_eq!(out.transitions[1].owner.map(|o| o.pid), Some(42));
        assert_eq!(out.transitions[2].owner.map(|o| o.pid), Some(42));
        assert!(out.closes.is_empty(), "listeners are not connections");
    }

    #[test]
    fn a_listener_from_before_tracing_lends_its_seeded_owner() {
        let child = Sock::new(14, 8080, 40011)
            .go(S::LISTEN, S::SYN_RECV, None)
            .go(S::SYN_RECV, S::ESTABLISHED, None);
        let netns = child.events[0].id.netns;
        let accepted = |tracker: &mut Tracker| {
            let mut out = Collect::default();
            for ev in &child.events {
                tracker.on_event(ev, &mut out);
            }
            out.transitions
                .iter()
                .map(|t| t.owner.map(|o| o.pid))
                .collect::<Vec<_>>()
        };

        assert_eq!(accepted(&mut Tracker::default()), [None, None]);

        let mut tracker = Tracker::default();
        tracker.seed_listener(netns, 8080, owner(7));
        tracker.seed_listener(netns, 9090, owner(8));
        assert_eq!(accepted(&mut tracker), [Some(7), Some(7)]);

        // A listen() seen by tracing is the more precise source.
        let mut tracker = Tracker::default();
        let listener = Sock::new(13, 8080, 0).go(S::CLOSE, S::LISTEN, Some(owner(42)));
        tracker.on_event(&listener.events[0], &mut Collect::default());
        tracker.seed_listener(netns, 8080, owner(7));
        assert_eq!(accepted(&mut tracker), [Some(42), Some(42)]);
    }

    #[test]
    fn a_reused_socket_address_starts_a_new_connection() {
        // The first life's CLOSE was never seen (e.g. lost): its state must
        // not leak into the next socket at the same address.
        let first = Sock::new(30, 80, 40020)
            .go(S::LISTEN, S::SYN_RECV, None)
            .go(S::SYN_RECV, S::ESTABLISHED, None)
            .go(S::ESTABLISHED, S::FIN_WAIT1, Some(owner(1)));
        let mut second = Sock::new(30, 40021, 80);
        second.ts = first.ts;
        let second = second
            .go(S::CLOSE, S::SYN_SENT, Some(owner(2)))
            .go(S::SYN_SENT, S::ESTABLISHED, None)
            .go(S::ESTABLISHED, S::CLOSE_WAIT, None)
            .go(S::CLOSE_WAIT, S::LAST_ACK, Some(owner(2)))
            .go(S::LAST_ACK, S::CLOSE, None);
        let mut events = first.events;
        events.extend(second.events);
        let closes = run(&events).closes;
        // The first life ends, unseen, as unknown, with its own facts.
        let unseen = closes[0];
        assert_eq!(
            (
                unseen.kind,
                unseen.role,
                unseen.closer,
                unseen.owner.map(|o| o.pid)
            ),
            (CloseKind::Unknown, Role::Server, Closer::Local, Some(1))
        );
        let c = closes[1];
        assert_eq!(
            (c.role, c.closer, c.owner.map(|o| o.pid)),
            (Role::Client, Closer::Remote, Some(2))
        );
        assert_eq!(c.lifetime_ns, Some(4_000_000));
    }

    #[test]
    fn cap_counts_untracked_connections() {
        let mut tracker = Tracker::new(1);
        let mut out = Collect::default();
        let a = Sock::new(20, 1, 2).go(S::CLOSE, S::SYN_SENT, None);
        let b = Sock::new(21, 3, 4).go(S::CLOSE, S::SYN_SENT, None);
        tracker.on_event(&a.events[0], &mut out);
        tracker.on_event(&b.events[0], &mut out);
        assert_eq!(tracker.live(), 1);
        assert_eq!(tracker.stats().untracked, 1);
        assert_eq!(out.transitions.len(), 2, "transitions are still reported");
    }

    #[test]
    fn a_new_life_before_the_end_was_seen_counts_as_unfinished() {
        let mut tracker = Tracker::new(16);
        let mut out = Collect::default();
        // FIN_WAIT1 -> FIN_WAIT2 -> CLOSE missed: the address starts over.
        let sock = Sock::new(30, 80, 5000)
            .go(S::LISTEN, S::SYN_RECV, None)
            .go(S::SYN_RECV, S::ESTABLISHED, None)
            .go(S::ESTABLISHED, S::FIN_WAIT1, None)
            .go(S::LISTEN, S::SYN_RECV, None)
            .go(S::SYN_RECV, S::ESTABLISHED, None)
            .go(S::ESTABLISHED, S::FIN_WAIT1, None)
            .go(S::FIN_WAIT1, S::FIN_WAIT2, None)
            .go(S::FIN_WAIT2, S::CLOSE, None);
        for ev in &sock.events {
            tracker.on_event(ev, &mut out);
        }
        tracker.finish(&mut out);
        assert_eq!(tracker.stats().unfinished, 1);
        assert_eq!(out.closes.len(), 2, "the first life closed as unknown");
        let first = out.closes[0];
        assert_eq!(first.kind, CloseKind::Unknown);
        assert_eq!((first.role, first.closer), (Role::Server, Closer::Local));
        assert_eq!((first.time_wait, first.lifetime_ns), (false, None));
        assert_eq!(first.id.tuple.lport, 80);
        assert_eq!(out.closes[1].kind, CloseKind::Fin);
        // A complete life followed by another is not unfinished.
        let sock = Sock::new(31, 80, 5001)
            .go(S::CLOSE, S::SYN_SENT, None)
            .go(S::SYN_SENT, S::CLOSE, None)
            .go(S::CLOSE, S::SYN_SENT, None);
        for ev in &sock.events {
            tracker.on_event(ev, &mut out);
        }
        assert_eq!(tracker.stats().unfinished, 1);
    }

    #[test]
    fn connects_that_never_establish_are_failures_not_closes() {
        let me = Some(owner(9));
        // No local port: the state is set before the port search fails.
        let no_port =
            Sock::new(40, 0, 80)
                .go(S::CLOSE, S::SYN_SENT, me)
                .go(S::SYN_SENT, S::CLOSE, me);
        let refused = refused_sock();
        // No answer for 3 s (two SYNs unanswered).
        let mut timeout = Sock::new(42, 40002, 82).go(S::CLOSE, S::SYN_SENT, me);
        timeout.ts += 3_000_000_000;
        let timeout = timeout.go(S::SYN_SENT, S::CLOSE, None);
        // Given up by the application at once.
        let other =
            Sock::new(43, 40003, 83)
                .go(S::CLOSE, S::SYN_SENT, me)
                .go(S::SYN_SENT, S::CLOSE, me);
        let mut tracker = Tracker::default();
        let mut out = Collect::default();
        for sock in [&no_port, &refused, &timeout, &other] {
            for ev in &sock.events {
                tracker.on_event(ev, &mut out);
            }
        }
        tracker.finish(&mut out);
        assert!(out.closes.is_empty(), "{:?}", out.closes);
        let reasons: Vec<_> = out.failures.iter().map(|f| f.reason).collect();
        assert_eq!(
            reasons,
            [
                FailReason::NoLocalPort,
                FailReason::Refused,
                FailReason::Timeout,
                FailReason::Other
            ]
        );
        assert!(out.failures.iter().all(|f| f.owner == me));
        assert_eq!(out.failures[0].id.tuple.rport, 80);
        assert_eq!(out.failures[2].waited_ns, Some(3_001_000_000));
        assert_eq!(
            out.failures[0].errno_name().as_deref(),
            Some("EADDRNOTAVAIL")
        );
        let unreachable = ConnectFailure {
            errno: Some(101),
            ..out.failures[3]
        };
        assert_eq!(unreachable.errno_name().as_deref(), Some("ENETUNREACH"));
        assert_eq!(FailReason::NoLocalPort.errno(), Some("EADDRNOTAVAIL"));
        assert_eq!(FailReason::Timeout.errno(), None);
        let stats = tracker.stats();
        assert_eq!((stats.connect_failures, stats.closes), (4, 0));
        let last = out.transitions.last().unwrap();
        assert_eq!(last.note, Note::ConnectFailed(FailReason::Other));
        assert_eq!(tracker.live(), 0);
    }

    #[test]
    fn a_failed_bind_passes_through_and_leaves_connections_alone() {
        let mut bind = Sock::new(50, 8080, 0);
        bind.push(
            Kind::BindFailed {
                reuseaddr: false,
                reuseport: false,
            },
            Some(owner(7)),
        );
        let mut tracker = Tracker::default();
        let mut out = Collect::default();
        tracker.on_event(&bind.events[0], &mut out);
        assert_eq!(out.binds.len(), 1);
        let b = out.binds[0];
        assert_eq!(
            (b.id.tuple.lport, b.owner, b.reuseaddr),
            (8080, Some(owner(7)), false)
        );
        assert_eq!(b.time_wait_on_port, None);
        assert!(out.transitions.is_empty() && out.closes.is_empty());
        assert_eq!((tracker.stats().bind_failures, tracker.live()), (1, 0));
    }
}
