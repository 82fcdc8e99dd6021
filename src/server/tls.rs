//! rustls configuration with a certificate resolver whose certificate can be swapped at any time:
//! new handshakes get the newest certificate, established connections keep theirs.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;

use super::admin::Condition;
use super::metrics::Metrics;
use crate::certs::ServingPem;

/// Why a certificate/key pair was rejected.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("no certificate found in the PEM certificate chain")]
    NoCertificate,
    #[error("cannot parse the PEM certificate chain: {0}")]
    Certificate(String),
    #[error("cannot parse the PEM private key: {0}")]
    Key(String),
    #[error("certificate and private key do not belong together or are unsupported: {0}")]
    Mismatch(String),
    #[error("cannot parse the certificate: {0}")]
    X509(String),
}

/// A parsed serving certificate, ready for handshakes.
pub struct LoadedCert {
    pub key: Arc<CertifiedKey>,
    /// notAfter of the leaf certificate, unix seconds.
    pub not_after: i64,
}

impl fmt::Debug for LoadedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedCert")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parses and checks a PEM certificate chain and key (the key must match the leaf certificate).
pub fn parse_pem(pem: &ServingPem) -> Result<LoadedCert, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.cert.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    let leaf = certs.first().ok_or(TlsError::NoCertificate)?;
    let (_, x509) =
        x509_parser::parse_x509_certificate(leaf).map_err(|e| TlsError::X509(e.to_string()))?;
    let not_after = x509.validity().not_after.timestamp();
    let key = PrivateKeyDer::from_pem_slice(pem.key.as_bytes())
        .map_err(|e| TlsError::Key(e.to_string()))?;
    let key = CertifiedKey::from_der(certs, key, &provider())
        .map_err(|e| TlsError::Mismatch(e.to_string()))?;
    Ok(LoadedCert {
        key: Arc::new(key),
        not_after,
    })
}

/// Hands out whatever certificate is current.
#[derive(Debug, Default)]
pub struct CertResolver {
    current: ArcSwapOption<CertifiedKey>,
}

impl CertResolver {
    pub fn set(&self, key: Arc<CertifiedKey>) {
        self.current.store(Some(key));
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.load_full()
    }
}

/// TLS 1.2 and 1.3 only, ALPN `h2` and `http/1.1`, certificate from `resolver`.
pub fn server_config(resolver: Arc<CertResolver>) -> Result<ServerConfig, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Applies TLS material to the resolver, metrics and readiness.
pub(crate) struct TlsApplier {
    pub resolver: Arc<CertResolver>,
    pub metrics: Arc<Metrics>,
    pub ready: Condition,
}

impl TlsApplier {
    pub fn apply(&self, pem: &ServingPem) -> Result<(), TlsError> {
        match parse_pem(pem) {
            Ok(loaded) => {
                self.resolver.set(loaded.key);
                self.metrics.certificate_expiry.set(loaded.not_after);
                self.metrics.tls_reloads.inc();
                self.ready.set(true);
                tracing::info!(not_after = loaded.not_after, "serving certificate loaded");
                Ok(())
            }
            Err(e) => {
                self.metrics.tls_reload_errors.inc();
                tracing::error!(error = %e, "serving certificate rejected; keeping the previous one");
                Err(e)
            }
        }
    }

    /// Applies every value published on `rx` until the sender is dropped.
    pub async fn follow(self, mut rx: watch::Receiver<Option<ServingPem>>) {
        while rx.changed().await.is_ok() {
            let pem = rx.borrow_and_update().clone();
            if let Some(pem) = pem {
                let _ = self.apply(&pem);
            }
        }
        tracing::debug!("TLS material channel closed; keeping the current certificate");
    }
}
