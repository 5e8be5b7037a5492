//! What `tcpstate serve` exports: the counters kept from the stream
//! ([`tally`]) and the snapshot each refresh hands to the HTTP server
//! ([`snapshot`]); `render::prometheus` encodes it.

pub mod snapshot;
pub mod tally;
