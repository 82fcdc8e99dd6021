//! TLS material: the serving certificate and key restrictor presents, and the self-managed
//! certificate authority that issues it.
//!
//! Everything here is pure (no I/O, the clock is a parameter): [`CertState`] is the whole material
//! kept in the Secret, [`plan`] decides the next rotation step from `now`, and [`CertState::apply`]
//! performs it. The cluster side (`crate::cluster`) stores the state, injects the bundle and runs
//! the timer.
//!
//! # Rotation protocol
//!
//! The Secret holds one of three phases (annotation [`PHASE_ANNOTATION`]):
//!
//! | phase        | signs `tls.crt` | `ca-bundle.crt`          | extra keys                      |
//! |--------------|-----------------|--------------------------|---------------------------------|
//! | `stable`     | `ca.crt`        | `ca.crt`                 |                                 |
//! | `ca-overlap` | `ca.crt` (old)  | `ca.crt` + `next-ca.crt` | `next-ca.crt`, `next-ca.key`    |
//! | `ca-switched`| `ca.crt` (new)  | `previous-ca.crt` + `ca.crt` | `previous-ca.crt`           |
//!
//! * The serving certificate is renewed (same CA) at two thirds of its life; its `notAfter` never
//!   exceeds its CA's.
//! * At two thirds of the CA's life a new CA is generated and only *added* to the bundle
//!   (`stable` → `ca-overlap`). The serving certificate is still signed by the old CA.
//! * `ca-overlap` → `ca-switched` happens only once the overlap bundle is observed in every webhook's
//!   `caBundle` **and** [`CertPolicy::propagation_delay`] has passed since the overlap began: then the new
//!   CA signs a new serving certificate, and every replica that reloads serves it — the API server
//!   already trusts it.
//! * The old CA stays in the bundle until the last serving certificate it signed has expired
//!   (annotation [`RETIRE_ANNOTATION`], the `notAfter` of the old-CA certificate at the switch):
//!   whichever certificate a lagging replica may still present, the bundle trusts it for its whole
//!   life. Certificates issued later are issued by the new CA, so no acknowledgement between replicas
//!   is needed. Only then (`ca-switched` → `stable`) the bundle holds the new CA only.
//! * If the CA itself is unreadable or expired the material is regenerated from scratch (nothing
//!   valid is being served anyway).

use std::collections::BTreeMap;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use time::{Duration, OffsetDateTime, format_description::well_known::Rfc3339};

/// A serving certificate chain and its private key, both PEM. Produced by the file watcher
/// (`--tls-cert`/`--tls-key`) or by the self-managed certificate authority; consumed by the TLS server.
/// The same pair as any other certificate, so that `Debug` has one owner that never prints a key.
pub type ServingPem = CertKeyPem;

/// Secret keys.
const CA_CERT_KEY: &str = "ca.crt";
const CA_KEY_KEY: &str = "ca.key";
const TLS_CERT_KEY: &str = "tls.crt";
const TLS_KEY_KEY: &str = "tls.key";
const CA_BUNDLE_KEY: &str = "ca-bundle.crt";
const NEXT_CA_CERT_KEY: &str = "next-ca.crt";
const NEXT_CA_KEY_KEY: &str = "next-ca.key";
const PREVIOUS_CA_CERT_KEY: &str = "previous-ca.crt";
/// Secret annotations.
pub const PHASE_ANNOTATION: &str = "restrictor.io/cert-phase";
pub const OVERLAP_SINCE_ANNOTATION: &str = "restrictor.io/ca-overlap-since";
pub const RETIRE_ANNOTATION: &str = "restrictor.io/retire-previous-ca-after";

/// Errors of certificate generation and parsing.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot parse {what}: {reason}")]
    Parse { what: &'static str, reason: String },
    #[error("the Secret lacks key {0:?}")]
    MissingKey(&'static str),
    #[error("invalid annotation {key}: {reason}")]
    Annotation { key: &'static str, reason: String },
}

/// Lifetimes of the material. The defaults suit production; tests shorten them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertPolicy {
    /// Life of a CA (default 10 years). Rotation starts at two thirds of it.
    pub ca_validity: Duration,
    /// Life of a serving certificate (default 1 year), renewed at two thirds. Must be shorter than a
    /// third of `ca_validity` so a CA rotation always finishes before the old CA expires.
    pub serving_validity: Duration,
    /// Time between the overlap bundle being observed in the webhook configuration and the switch
    /// to the new CA, for the API server's informer to catch up (default 2 minutes).
    pub propagation_delay: Duration,
    /// `notBefore` is set this far in the past, for clock skew (default 5 minutes).
    pub backdate: Duration,
}

impl Default for CertPolicy {
    fn default() -> Self {
        Self {
            ca_validity: Duration::days(3650),
            serving_validity: Duration::days(365),
            propagation_delay: Duration::minutes(2),
            backdate: Duration::minutes(5),
        }
    }
}

/// The DNS names of the webhook service: `NAME`, `NAME.NS`, `NAME.NS.svc`, `NAME.NS.svc.cluster.local`.
pub fn service_dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// A certificate (for serving, the whole chain) and its private key, PEM.
/// `Debug` never prints the key, not even in debug logs.
#[derive(Clone, PartialEq, Eq)]
pub struct CertKeyPem {
    pub cert: String,
    pub key: String,
}

impl std::fmt::Debug for CertKeyPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertKeyPem")
            .field("cert_len", &self.cert.len())
            .finish_non_exhaustive()
    }
}

/// Where a CA rotation stands; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Stable,
    CaOverlap,
    CaSwitched,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Stable => "stable",
            Phase::CaOverlap => "ca-overlap",
            Phase::CaSwitched => "ca-switched",
        }
    }
}

/// The whole self-managed material, as stored in the Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertState {
    /// The CA signing the serving certificate.
    pub ca: CertKeyPem,
    /// The serving certificate, signed by `ca`.
    pub serving: CertKeyPem,
    /// `ca-overlap`: the incoming CA, trusted but not yet signing.
    pub next_ca: Option<CertKeyPem>,
    /// `ca-overlap`: when the incoming CA was added to the bundle.
    pub overlap_since: Option<OffsetDateTime>,
    /// `ca-switched`: the outgoing CA's certificate (its key is dropped), still trusted.
    pub previous_ca_cert: Option<String>,
    /// `ca-switched`: when the last certificate the outgoing CA signed expires.
    pub retire_previous_after: Option<OffsetDateTime>,
}

/// Validity window of a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// Two thirds into the window: when the certificate is renewed.
    pub fn renew_at(&self) -> OffsetDateTime {
        self.not_before + (self.not_after - self.not_before) * 2 / 3
    }
}

/// Parses `notBefore`/`notAfter` of the first certificate of a PEM string.
pub fn parse_validity(pem: &str) -> Result<Validity, CertError> {
    with_first_cert(pem, "certificate", |cert| {
        let v = cert.validity();
        Ok(Validity {
            not_before: v.not_before.to_datetime(),
            not_after: v.not_after.to_datetime(),
        })
    })
}

fn with_first_cert<T>(
    pem: &str,
    what: &'static str,
    f: impl FnOnce(&x509_parser::certificate::X509Certificate<'_>) -> Result<T, CertError>,
) -> Result<T, CertError> {
    let parse_err = |reason: String| CertError::Parse { what, reason };
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| parse_err(format!("PEM: {e}")))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| parse_err(format!("X.509: {e}")))?;
    f(&cert)
}

/// DNS SANs of the first certificate of a PEM string.
fn dns_sans(pem: &str) -> Result<Vec<String>, CertError> {
    with_first_cert(pem, "serving certificate", |cert| {
        let sans = cert
            .subject_alternative_name()
            .map_err(|e| CertError::Parse {
                what: "serving certificate",
                reason: format!("subjectAltName: {e}"),
            })?;
        Ok(sans
            .map(|ext| {
                ext.value
                    .general_names
                    .iter()
                    .filter_map(|n| match n {
                        x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default())
    })
}

/// `dns_names` plus the names the current serving certificate already carries: two replicas
/// configured with different names (during a rename) converge instead of renewing in turn forever.
fn keep_names(current_serving: &str, dns_names: &[String]) -> Vec<String> {
    let mut names = dns_names.to_vec();
    for san in dns_sans(current_serving).unwrap_or_default() {
        if !names.contains(&san) {
            names.push(san);
        }
    }
    names
}

/// Raw DER of the issuer (for a leaf) or subject (for a CA) name, to match a certificate to its CA.
fn issuer_raw(pem: &str) -> Result<Vec<u8>, CertError> {
    with_first_cert(pem, "serving certificate", |c| {
        Ok(c.tbs_certificate.issuer.as_raw().to_vec())
    })
}
fn subject_raw(pem: &str) -> Result<Vec<u8>, CertError> {
    with_first_cert(pem, "CA certificate", |c| {
        Ok(c.tbs_certificate.subject.as_raw().to_vec())
    })
}

fn generate_ca(now: OffsetDateTime, policy: &CertPolicy) -> Result<CertKeyPem, CertError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    // Unique per CA (like kube's "kube-ca@<unix>"), so two CAs in one bundle never share a subject.
    dn.push(
        DnType::CommonName,
        format!(
            "restrictor-ca@{}.{}",
            now.unix_timestamp(),
            now.nanosecond()
        ),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - policy.backdate;
    params.not_after = now + policy.ca_validity;
    let cert = params.self_signed(&key)?;
    Ok(CertKeyPem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

fn issue_serving(
    ca: &CertKeyPem,
    dns_names: &[String],
    now: OffsetDateTime,
    policy: &CertPolicy,
) -> Result<CertKeyPem, CertError> {
    let ca_key = KeyPair::from_pem(&ca.key)?;
    let ca_validity = parse_validity(&ca.cert)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert, ca_key)?;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::new(dns_names.to_vec())?;
    let mut dn = DistinguishedName::new();
    if let Some(cn) = dns_names.get(2).or_else(|| dns_names.first()) {
        dn.push(DnType::CommonName, cn.clone());
    }
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = now - policy.backdate;
    params.not_after = (now + policy.serving_validity).min(ca_validity.not_after);
    let cert = params.signed_by(&key, &issuer)?;
    Ok(CertKeyPem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// One rotation step; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// New serving certificate from the current CA.
    RenewServing,
    /// Generate the next CA and add it to the bundle.
    StartCaOverlap,
    /// The next CA becomes the signing CA and issues a new serving certificate.
    SwitchCa,
    /// Drop the previous CA from the bundle.
    RetirePreviousCa,
    /// The CA is unusable: new CA and serving certificate, bundle replaced.
    Regenerate,
}

/// What [`plan`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The step to perform now, if any.
    pub step: Option<Step>,
    /// When to plan again (the earliest deadline); `None` when only an event (the bundle being
    /// injected) can make progress.
    pub next_deadline: Option<OffsetDateTime>,
    /// The switch to the next CA waits for the overlap bundle to be injected.
    pub waiting_for_injection: bool,
}

/// Decides the next rotation step. `bundle_injected` tells whether every webhook's `caBundle`
/// currently equals [`CertState::ca_bundle`]; `dns_names` are the names the serving certificate must carry.
pub fn plan(
    state: &CertState,
    dns_names: &[String],
    now: OffsetDateTime,
    bundle_injected: bool,
    policy: &CertPolicy,
) -> Plan {
    let step_now = |step| Plan {
        step: Some(step),
        next_deadline: Some(now),
        waiting_for_injection: false,
    };
    let ca = match parse_validity(&state.ca.cert) {
        Ok(v) if now < v.not_after && KeyPair::from_pem(&state.ca.key).is_ok() => v,
        _ => return step_now(Step::Regenerate),
    };
    let mut deadlines: Vec<OffsetDateTime> = Vec::new();
    let mut waiting_for_injection = false;
    match state.phase() {
        Phase::CaSwitched => {
            // Without the annotation, the previous CA's own expiry is a safe bound: nothing it
            // signed outlives it.
            let retire = state
                .retire_previous_after
                .or_else(|| {
                    let prev = state.previous_ca_cert.as_deref()?;
                    parse_validity(prev)
                        .ok()
                        .map(|v| v.not_after + Duration::seconds(1))
                })
                .unwrap_or(now);
            if now >= retire {
                return step_now(Step::RetirePreviousCa);
            }
            deadlines.push(retire);
        }
        Phase::CaOverlap => {
            let next_ok = state
                .next_ca
                .as_ref()
                .is_some_and(|n| parse_validity(&n.cert).is_ok_and(|v| now < v.not_after));
            if !next_ok {
                // A broken next CA: start the overlap again with a fresh one.
                return step_now(Step::StartCaOverlap);
            }
            // Without the annotation (edited by hand), the next CA's own notBefore tells when the
            // overlap began.
            let since = state.overlap_since.or_else(|| {
                let next = state.next_ca.as_ref()?;
                parse_validity(&next.cert)
                    .ok()
                    .map(|v| v.not_before + policy.backdate)
            });
            let switch_at = since.unwrap_or(now) + policy.propagation_delay;
            if bundle_injected && now >= switch_at {
                return step_now(Step::SwitchCa);
            }
            if bundle_injected {
                deadlines.push(switch_at);
            } else {
                waiting_for_injection = true;
            }
        }
        Phase::Stable => {
            let rotate_at = ca.renew_at();
            if now >= rotate_at {
                return step_now(Step::StartCaOverlap);
            }
            deadlines.push(rotate_at);
        }
    }
    let serving_ok = (|| -> Result<Option<OffsetDateTime>, CertError> {
        let v = parse_validity(&state.serving.cert)?;
        KeyPair::from_pem(&state.serving.key)?;
        let sans = dns_sans(&state.serving.cert)?;
        let names_ok = dns_names.iter().all(|n| sans.contains(n));
        let issuer_ok = issuer_raw(&state.serving.cert)? == subject_raw(&state.ca.cert)?;
        Ok((names_ok && issuer_ok && now < v.renew_at()).then(|| v.renew_at()))
    })();
    match serving_ok {
        Ok(Some(renew_at)) => deadlines.push(renew_at),
        _ => return step_now(Step::RenewServing),
    }
    Plan {
        step: None,
        next_deadline: deadlines.into_iter().min(),
        waiting_for_injection,
    }
}

impl CertState {
    /// Fresh material: a new CA and a serving certificate for `dns_names`.
    pub fn generate(
        dns_names: &[String],
        now: OffsetDateTime,
        policy: &CertPolicy,
    ) -> Result<Self, CertError> {
        let ca = generate_ca(now, policy)?;
        let serving = issue_serving(&ca, dns_names, now, policy)?;
        Ok(Self {
            ca,
            serving,
            next_ca: None,
            overlap_since: None,
            previous_ca_cert: None,
            retire_previous_after: None,
        })
    }

    pub fn phase(&self) -> Phase {
        if self.next_ca.is_some() {
            Phase::CaOverlap
        } else if self.previous_ca_cert.is_some() {
            Phase::CaSwitched
        } else {
            Phase::Stable
        }
    }

    /// The PEM bundle the webhook configuration must carry: every CA that may have signed a
    /// certificate some replica serves, oldest first.
    pub fn ca_bundle(&self) -> String {
        let mut bundle = String::new();
        let mut push = |pem: &str| {
            bundle.push_str(pem.trim_end());
            bundle.push('\n');
        };
        if let Some(prev) = &self.previous_ca_cert {
            push(prev);
        }
        push(&self.ca.cert);
        if let Some(next) = &self.next_ca {
            push(&next.cert);
        }
        bundle
    }

    /// What the TLS server presents: the serving certificate and its key.
    pub fn serving_pem(&self) -> ServingPem {
        self.serving.clone()
    }

    /// Performs `step` (from [`plan`]) and returns the new state.
    pub fn apply(
        &self,
        step: Step,
        dns_names: &[String],
        now: OffsetDateTime,
        policy: &CertPolicy,
    ) -> Result<Self, CertError> {
        let mut next = self.clone();
        match step {
            Step::Regenerate => return Self::generate(dns_names, now, policy),
            Step::RenewServing => {
                let names = keep_names(&self.serving.cert, dns_names);
                next.serving = issue_serving(&self.ca, &names, now, policy)?;
            }
            Step::StartCaOverlap => {
                next.next_ca = Some(generate_ca(now, policy)?);
                next.overlap_since = Some(now);
                next.previous_ca_cert = None;
                next.retire_previous_after = None;
            }
            Step::SwitchCa => {
                let Some(new_ca) = self.next_ca.clone() else {
                    return Ok(next);
                };
                // Every certificate the old CA signed expires by the current one's notAfter
                // (later ones were issued later with the same lifetime, or capped by the CA).
                // One second past it, as a certificate is still valid at its exact notAfter.
                let retire = parse_validity(&self.serving.cert)
                    .map(|v| v.not_after)
                    .or_else(|_| parse_validity(&self.ca.cert).map(|v| v.not_after))?
                    + Duration::seconds(1);
                let names = keep_names(&self.serving.cert, dns_names);
                next.serving = issue_serving(&new_ca, &names, now, policy)?;
                next.previous_ca_cert = Some(self.ca.cert.clone());
                next.retire_previous_after = Some(retire);
                next.ca = new_ca;
                next.next_ca = None;
                next.overlap_since = None;
            }
            Step::RetirePreviousCa => {
                next.previous_ca_cert = None;
                next.retire_previous_after = None;
            }
        }
        Ok(next)
    }

    /// Secret `data` (string values) and annotations holding this state.
    pub fn to_secret(&self) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
        let mut data = BTreeMap::new();
        data.insert(CA_CERT_KEY.into(), self.ca.cert.clone());
        data.insert(CA_KEY_KEY.into(), self.ca.key.clone());
        data.insert(TLS_CERT_KEY.into(), self.serving.cert.clone());
        data.insert(TLS_KEY_KEY.into(), self.serving.key.clone());
        data.insert(CA_BUNDLE_KEY.into(), self.ca_bundle());
        let mut annotations = BTreeMap::new();
        annotations.insert(PHASE_ANNOTATION.into(), self.phase().as_str().into());
        if let Some(next) = &self.next_ca {
            data.insert(NEXT_CA_CERT_KEY.into(), next.cert.clone());
            data.insert(NEXT_CA_KEY_KEY.into(), next.key.clone());
        }
        if let Some(prev) = &self.previous_ca_cert {
            data.insert(PREVIOUS_CA_CERT_KEY.into(), prev.clone());
        }
        let fmt = |t: OffsetDateTime| t.format(&Rfc3339).unwrap_or_default();
        if let Some(t) = self.overlap_since {
            annotations.insert(OVERLAP_SINCE_ANNOTATION.into(), fmt(t));
        }
        if let Some(t) = self.retire_previous_after {
            annotations.insert(RETIRE_ANNOTATION.into(), fmt(t));
        }
        (data, annotations)
    }

    /// Reads the state back from Secret `data` (decoded bytes) and annotations.
    /// `ca-bundle.crt` and the phase annotation are derived, so they are not read.
    pub fn from_secret(
        data: &BTreeMap<String, Vec<u8>>,
        annotations: &BTreeMap<String, String>,
    ) -> Result<Self, CertError> {
        let get = |key: &'static str| -> Result<String, CertError> {
            let bytes = data.get(key).ok_or(CertError::MissingKey(key))?;
            String::from_utf8(bytes.clone()).map_err(|_| CertError::Parse {
                what: key,
                reason: "not UTF-8".into(),
            })
        };
        let opt = |key: &'static str| data.contains_key(key).then(|| get(key)).transpose();
        let time = |key: &'static str| -> Result<Option<OffsetDateTime>, CertError> {
            annotations
                .get(key)
                .map(|v| {
                    OffsetDateTime::parse(v, &Rfc3339).map_err(|e| CertError::Annotation {
                        key,
                        reason: e.to_string(),
                    })
                })
                .transpose()
        };
        let next_ca = match (opt(NEXT_CA_CERT_KEY)?, opt(NEXT_CA_KEY_KEY)?) {
            (Some(cert), Some(key)) => Some(CertKeyPem { cert, key }),
            _ => None,
        };
        let previous_ca_cert = opt(PREVIOUS_CA_CERT_KEY)?;
        let retire_previous_after = time(RETIRE_ANNOTATION)?;
        Ok(Self {
            ca: CertKeyPem {
                cert: get(CA_CERT_KEY)?,
                key: get(CA_KEY_KEY)?,
            },
            serving: CertKeyPem {
                cert: get(TLS_CERT_KEY)?,
                key: get(TLS_KEY_KEY)?,
            },
            overlap_since: next_ca
                .as_ref()
                .and_then(|_| time(OVERLAP_SINCE_ANNOTATION).ok().flatten()),
            next_ca,
            retire_previous_after: previous_ca_cert.as_ref().and(retire_previous_after),
            previous_ca_cert,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use std::sync::Arc;

    fn names() -> Vec<String> {
        service_dns_names("restrictor", "kube-system")
    }

    fn t0() -> OffsetDateTime {
        time::macros::datetime!(2026-01-01 00:00 UTC)
    }

    /// Short lifetimes: CA 90 days, serving 10 days.
    fn policy() -> CertPolicy {
        CertPolicy {
            ca_validity: Duration::days(90),
            serving_validity: Duration::days(10),
            propagation_delay: Duration::minutes(2),
            backdate: Duration::minutes(5),
        }
    }

    fn der_certs(pem: &str) -> Vec<CertificateDer<'static>> {
        x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
            .map(|p| CertificateDer::from(p.expect("pem").contents))
            .collect()
    }

    /// Would a TLS client trusting exactly `bundle` accept `serving` for the service name at `now`?
    fn trusts(bundle: &str, serving: &str, now: OffsetDateTime) -> bool {
        let mut roots = rustls::RootCertStore::empty();
        for der in der_certs(bundle) {
            roots.add(der).expect("root");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("verifier");
        let leaf = der_certs(serving).remove(0);
        let name = ServerName::try_from("restrictor.kube-system.svc").expect("name");
        let at =
            UnixTime::since_unix_epoch(std::time::Duration::from_secs(now.unix_timestamp() as u64));
        verifier
            .verify_server_cert(&leaf, &[], &name, &[], at)
            .is_ok()
    }

    #[test]
    fn generated_material_is_valid_and_round_trips() {
        let p = policy();
        let s = CertState::generate(&names(), t0(), &p).unwrap();
        assert_eq!(s.phase(), Phase::Stable);
        assert!(trusts(&s.ca_bundle(), &s.serving.cert, t0()));
        let sans = dns_sans(&s.serving.cert).unwrap();
        assert_eq!(sans, names());
        let v = parse_validity(&s.serving.cert).unwrap();
        assert_eq!(v.not_after, t0() + Duration::days(10));
        let (data, ann) = s.to_secret();
        let bytes = data.into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
        assert_eq!(CertState::from_secret(&bytes, &ann).unwrap(), s);
        assert!(!format!("{s:?}").contains("PRIVATE"));
        let pl = plan(&s, &names(), t0(), true, &p);
        assert_eq!(pl.step, None);
        assert_eq!(pl.next_deadline, Some(v.renew_at()));
    }

    #[test]
    fn serving_renewed_at_two_thirds_and_on_name_change() {
        let p = policy();
        let s = CertState::generate(&names(), t0(), &p).unwrap();
        let v = parse_validity(&s.serving.cert).unwrap();
        let before = v.renew_at() - Duration::seconds(1);
        assert_eq!(plan(&s, &names(), before, true, &p).step, None);
        assert_eq!(
            plan(&s, &names(), v.renew_at(), true, &p).step,
            Some(Step::RenewServing)
        );
        let other = service_dns_names("other", "kube-system");
        assert_eq!(
            plan(&s, &other, t0(), true, &p).step,
            Some(Step::RenewServing)
        );
        let both = s.apply(Step::RenewServing, &other, t0(), &p).unwrap();
        assert_eq!(plan(&both, &names(), t0(), true, &p).step, None);
        assert_eq!(plan(&both, &other, t0(), true, &p).step, None);
        let renewed = s
            .apply(Step::RenewServing, &names(), v.renew_at(), &p)
            .unwrap();
        assert_eq!(renewed.ca, s.ca);
        assert_ne!(renewed.serving, s.serving);
        assert_eq!(plan(&renewed, &names(), v.renew_at(), true, &p).step, None);
    }

    #[test]
    fn expired_ca_regenerates_and_garbage_regenerates() {
        let p = policy();
        let s = CertState::generate(&names(), t0(), &p).unwrap();
        let late = t0() + Duration::days(91);
        assert_eq!(
            plan(&s, &names(), late, true, &p).step,
            Some(Step::Regenerate)
        );
        let mut broken = s.clone();
        broken.ca.cert = "garbage".into();
        assert_eq!(
            plan(&broken, &names(), t0(), true, &p).step,
            Some(Step::Regenerate)
        );
        let mut broken = s.clone();
        broken.serving.cert = "garbage".into();
        assert_eq!(
            plan(&broken, &names(), t0(), true, &p).step,
            Some(Step::RenewServing)
        );
    }

    /// Fresh material at `t0`, its serving certificate renewed `lead` before the CA's rotation
    /// time; returns it with that time.
    fn due_for_ca_rotation(p: &CertPolicy, lead: Duration) -> (CertState, OffsetDateTime) {
        let s = CertState::generate(&names(), t0(), p).unwrap();
        let rotate_at = parse_validity(&s.ca.cert).unwrap().renew_at();
        let s = s
            .apply(Step::RenewServing, &names(), rotate_at - lead, p)
            .unwrap();
        (s, rotate_at)
    }

    #[test]
    fn switch_waits_for_injection_and_propagation() {
        let p = policy();
        // Keep the serving cert fresh so only the CA schedule matters.
        let (s, rotate_at) = due_for_ca_rotation(&p, Duration::days(1));
        assert_eq!(
            plan(&s, &names(), rotate_at, true, &p).step,
            Some(Step::StartCaOverlap)
        );
        let o = s
            .apply(Step::StartCaOverlap, &names(), rotate_at, &p)
            .unwrap();
        assert_eq!(o.phase(), Phase::CaOverlap);
        assert_eq!(der_certs(&o.ca_bundle()).len(), 2);
        assert_eq!(o.serving, s.serving, "the old CA still signs");
        let later = rotate_at + Duration::hours(1);
        let waiting = plan(&o, &names(), later, false, &p);
        assert_eq!(waiting.step, None);
        assert!(waiting.waiting_for_injection);
        let early = plan(&o, &names(), rotate_at + Duration::minutes(1), true, &p);
        assert_eq!(early.step, None);
        assert_eq!(early.next_deadline, Some(rotate_at + p.propagation_delay));
        assert_eq!(
            plan(&o, &names(), later, true, &p).step,
            Some(Step::SwitchCa)
        );
    }

    #[test]
    fn missing_phase_annotations_fall_back_safely() {
        let p = policy();
        let (s, rotate_at) = due_for_ca_rotation(&p, Duration::ZERO);
        let mut o = s
            .apply(Step::StartCaOverlap, &names(), rotate_at, &p)
            .unwrap();
        o.overlap_since = None;
        let pl = plan(&o, &names(), rotate_at, true, &p);
        assert_eq!(pl.step, None);
        assert_eq!(pl.next_deadline, Some(rotate_at + p.propagation_delay));
        let switch_at = rotate_at + p.propagation_delay;
        let mut sw = o.apply(Step::SwitchCa, &names(), switch_at, &p).unwrap();
        sw.retire_previous_after = None;
        let prev_expiry = parse_validity(sw.previous_ca_cert.as_deref().unwrap())
            .unwrap()
            .not_after;
        let late = prev_expiry - Duration::hours(1);
        let sw = sw.apply(Step::RenewServing, &names(), late, &p).unwrap();
        let pl = plan(&sw, &names(), late, true, &p);
        assert_eq!(
            pl.step, None,
            "the previous CA is kept until its own expiry"
        );
        assert_eq!(pl.next_deadline, Some(prev_expiry + Duration::seconds(1)));
    }

    /// Drives the schedule over two CA lifetimes with a replica that lags one state behind and
    /// checks the invariants of the protocol at every step.
    #[test]
    fn rotation_never_untrusts_a_served_certificate() {
        let p = policy();
        let mut now = t0();
        let mut state = CertState::generate(&names(), now, &p).unwrap();
        // What the webhook configuration currently holds.
        let mut injected = state.ca_bundle();
        let mut served: Vec<String> = Vec::new();
        let mut seen_phases = Vec::new();
        let mut bundles_sizes = Vec::new();
        let end = t0() + Duration::days(200);
        while now < end {
            let pl = plan(&state, &names(), now, injected == state.ca_bundle(), &p);
            match pl.step {
                Some(step) => {
                    assert_ne!(
                        step,
                        Step::Regenerate,
                        "the schedule never lets the CA expire"
                    );
                    served.push(state.serving.cert.clone());
                    let next = state.apply(step, &names(), now, &p).unwrap();
                    if step == Step::SwitchCa {
                        // The new serving cert is trusted by the bundle injected before the switch.
                        assert!(trusts(&injected, &next.serving.cert, now));
                    }
                    // A replica still serving any earlier certificate that has not expired stays
                    // trusted by the new bundle.
                    for old in &served {
                        let alive = now <= parse_validity(old).unwrap().not_after;
                        assert!(
                            !alive || trusts(&next.ca_bundle(), old, now),
                            "{step:?} dropped the CA of a served certificate"
                        );
                    }
                    assert!(trusts(&next.ca_bundle(), &next.serving.cert, now));
                    seen_phases.push(next.phase());
                    bundles_sizes.push(der_certs(&next.ca_bundle()).len());
                    state = next;
                }
                None => {
                    // Inject (the cluster side does this right after every write).
                    if pl.waiting_for_injection || injected != state.ca_bundle() {
                        injected = state.ca_bundle();
                        continue;
                    }
                    let deadline = pl.next_deadline.expect("a deadline");
                    assert!(deadline > now);
                    // Every certificate ever served in the past stays trusted until its expiry:
                    now = deadline;
                }
            }
            assert!(trusts(&injected, &state.serving.cert, now) || injected != state.ca_bundle());
        }
        assert!(seen_phases.contains(&Phase::CaOverlap));
        assert!(seen_phases.contains(&Phase::CaSwitched));
        assert!(bundles_sizes.contains(&2));
        assert_eq!(state.phase(), Phase::Stable);
    }
}
