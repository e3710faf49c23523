//! bucketgate: admission and provisioning for Kubernetes object-storage buckets.
//!
//! Decisions are pure functions in [`admission`]; the I/O around them lives in [`server`]
//! (HTTPS), [`catalog`] (watch caches or a directory of YAML) and [`tls`] (certificates).

pub mod admission;
pub mod api;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod crds;
pub mod driver;
pub mod logs;
pub mod metrics;
pub mod naming;
pub mod policy;
pub mod poll;
pub mod provision;
pub mod server;
pub mod tls;

// Under load glibc's malloc was about a seventh of bucketgate's CPU; with jemalloc a review
// costs about a fifth less CPU in all, for 8 MB more at peak (BENCHMARKS.md). Set here, it
// is the allocator of everything built on this crate: the server, the load generator and
// its floor, the benchmarks and the tests.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
