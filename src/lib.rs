//! restrictor: a mutating admission webhook that makes pods pass the Pod Security Standards
//! "restricted" level, so that workloads created inside a vcluster survive the host namespace.

pub mod admission;
pub mod certs;
pub mod policy;
pub mod server;
pub mod workload;
