//! tcpstate: every TCP state transition, every TIME_WAIT socket, and who
//! closed each connection, live from the kernel through eBPF.
//!
//! Data flows one way: [`loader`] (kernel programs, ring buffer) ->
//! [`event`] (decode) -> [`tracker`] (classification) -> [`filter`] ->
//! [`output`] (text, JSON Lines). [`cli`] parses the command line and
//! [`watch`] runs the loop.

pub mod btf;
pub mod cli;
pub mod event;
pub mod filter;
pub mod loader;
pub mod output;
pub mod sockdiag;
pub mod timewait;
pub mod tracefs;
pub mod tracker;
pub mod watch;
