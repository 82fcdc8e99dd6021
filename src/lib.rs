//! restrictor: a mutating admission webhook that makes pods pass the Pod Security Standards
//! "restricted" level, so that workloads created inside a vcluster survive the host namespace.

pub mod admission;
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
