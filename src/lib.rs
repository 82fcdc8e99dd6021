//! restrictor: a mutating admission webhook that makes pods pass the Pod Security Standards
//! "restricted" level, so that workloads created inside a vcluster survive the host namespace.

pub mod admission;
pub mod audit;
pub mod certs;
pub mod cli;
pub mod cluster;
pub mod engine;
pub mod manifest;
pub mod patch;
pub mod policy;
pub mod pss;
pub mod server;
pub mod workload;

// glibc malloc took about 40% of the server's samples under load (building and dropping JSON
// trees); mimalloc's thread-local free lists cut that. Not in the crate's own unit tests, whose
// allocation-counting test installs its own allocator.
#[cfg(not(test))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
