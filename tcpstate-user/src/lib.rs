//! tcpstate: every TCP state transition, every TIME_WAIT socket, and who
//! closed each connection, live from the kernel through eBPF.
//!
//! Data flows one way: [`kernel`] (the programs, the ring buffer, decoding)
//! -> [`track`] (classification, the TIME_WAIT table, filters, pressure;
//! pure) -> [`diagnose`] (findings and fixes; pure) -> [`render`] (text,
//! JSON Lines, HTML, Prometheus). [`export`] keeps the counters and
//! snapshots that `tcpstate serve` exposes. [`host`] supplies what the
//! kernel's tables and /proc say (sock_diag, namespaces, owners, sysctls),
//! [`cmd`] runs the loop and the subcommands, [`cli`] parses the command
//! line, [`messages`] is the one writer of stderr, and [`sock`] is the
//! vocabulary they all share.

pub mod cli;
pub mod cmd;
pub mod diagnose;
pub mod export;
pub mod host;
pub mod kernel;
pub mod messages;
pub mod render;
pub mod sock;
pub mod track;
