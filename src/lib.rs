//! bucketgate: admission and provisioning for Kubernetes object-storage buckets.
//!
//! Decisions are pure functions over data; the I/O lives at the edges. A map, in the order
//! a review and a Bucket travel:
//!
//! - [`api`]: the three kinds (Bucket, BucketClass, BucketContent); [`crds`] renders their
//!   CRDs from these types. [`naming`]: the name rules admission and provisioning share.
//! - [`server`]: the HTTPS routes over rustls; [`tls`] its certificate, reloaded from disk.
//! - [`admission`]: a review body decoded, the built-in rules (mutate, validate) run over
//!   it and a [`catalog::Catalog`], the patch and the answer written. [`policy`]: the
//!   admins' JSONPath policies, run after the built-in rules, loaded and reloaded from
//!   files, tested offline, and audited against the objects a cluster already holds.
//! - [`catalog`]: what admission knows of the cluster, from watches or a directory of YAML.
//! - [`config`]: which provisioners are served and with which driver, reloaded from disk.
//! - [`provision`]: the provisioning loop (kube-runtime controllers, one leader), whose
//!   decisions are in `provision::plan` and whose steps are in `provision::reconcile`;
//!   [`driver`]: the stores behind one small trait (S3).
//! - [`metrics`], [`logs`] and [`poll`]: Prometheus metrics, JSON log lines, file polling.
//! - [`cli`]: the commands (`serve`, `certs`, `crds`, `review`, `policy`, `config`).

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
pub mod turns;

// Under load glibc's malloc was about a seventh of bucketgate's CPU; with jemalloc a review
// costs about a fifth less CPU in all, for 8 MB more at peak (BENCHMARKS.md). Set here, it
// is the allocator of everything built on this crate: the server, the load generator and
// its floor, the benchmarks and the tests.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
