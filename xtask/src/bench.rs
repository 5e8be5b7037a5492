//! Benchmarks. Placeholder replaced below.
