//! tcpstate: every TCP state transition, every TIME_WAIT socket, and who
//! closed each connection, live from the kernel through eBPF.
//!
//! Data flows one way: [`loader`] (kernel programs, ring buffer) ->
//! [`event`] (decode) -> [`tracker`] (classification) -> [`timewait`] (the
//! TIME_WAIT table, reconciled with [`sockdiag`]) -> [`filter`] ->
//! [`output`] (text, JSON Lines). [`owners`] names the owners of listeners
//! that predate tracing. [`engine`] runs that loop; [`watch`] and
//! [`twview`] are the commands' views; [`cli`] parses the command line.

pub mod btf;
pub mod cli;
pub mod engine;
pub mod event;
pub mod filter;
pub mod json;
pub mod loader;
pub mod output;
pub mod owners;
pub mod pressure;
pub mod sockdiag;
pub mod sysctl;
pub mod timewait;
pub mod tracefs;
pub mod tracker;
pub mod twview;
pub mod watch;
