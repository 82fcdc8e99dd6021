//! TLS material: the serving certificate and key restrictor presents.

/// A serving certificate chain and its private key, both PEM. Produced by the file watcher
/// (`--tls-cert`/`--tls-key`) or by the self-managed certificate authority; consumed by the TLS server.
#[derive(Clone, PartialEq, Eq)]
pub struct ServingPem {
    pub cert_chain: String,
    pub key: String,
}

impl std::fmt::Debug for ServingPem {
    // Never print key material, not even in debug logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingPem")
            .field("cert_chain_len", &self.cert_chain.len())
            .finish_non_exhaustive()
    }
}
