//! Facts read from the host: the kernel's socket table (sock_diag), network
//! namespaces and the containers they belong to (cgroups), the owners of
//! sockets (/proc), TCP sysctls and netstat counters, the clocks, and
//! tcpstate's own CPU and memory.

pub mod cgroup;
pub mod clock;
pub mod netns;
pub mod owners;
pub mod process;
pub mod snapshot;
pub mod sockdiag;
pub mod sysctl;
