//! Pure tracking, no I/O: the reorder window that puts records in time
//! order, the connection tracker that classifies closes, the TIME_WAIT
//! table, ephemeral-port pool pressure, and the userspace filters.
//! Fed with decoded events and host facts; unit-tested and benchmarked
//! without root.

pub mod filter;
pub mod order;
pub mod pressure;
pub mod timewait;
pub mod tracker;
