//! The Secret holding the self-managed material: read, create (first replica wins), update with
//! optimistic concurrency.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use time::OffsetDateTime;
use tracing::{info, warn};

use super::errors::{ApiCall, ClusterError, call};
use crate::certs::{
    CertPolicy, CertState, OVERLAP_SINCE_ANNOTATION, PHASE_ANNOTATION, RETIRE_ANNOTATION,
};

/// The material and the `resourceVersion` it was read at.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub state: CertState,
    pub secret: Secret,
}

pub(crate) struct SecretStore {
    api: Api<Secret>,
    namespace: String,
    name: String,
}

impl SecretStore {
    pub fn new(client: kube::Client, namespace: &str, name: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    fn call(&self, verb: &'static str) -> ApiCall {
        ApiCall::new(verb, "", "secrets")
            .name(&self.name)
            .namespace(&self.namespace)
    }

    /// Reads the Secret; creates it with fresh material when absent (on 409 another replica was
    /// first: read what it wrote). Unreadable material is replaced by fresh material.
    pub async fn load_or_create(
        &self,
        dns_names: &[String],
        now: OffsetDateTime,
        policy: &CertPolicy,
    ) -> Result<Stored, ClusterError> {
        for _ in 0..3 {
            let existing = call(self.call("get"), self.api.get_opt(&self.name)).await?;
            let Some(secret) = existing else {
                let state = CertState::generate(dns_names, now, policy)?;
                let mut secret = Secret {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        namespace: Some(self.namespace.clone()),
                        labels: Some(BTreeMap::from([(
                            "app.kubernetes.io/managed-by".to_string(),
                            "restrictor".to_string(),
                        )])),
                        ..Default::default()
                    },
                    type_: Some("Opaque".to_string()),
                    ..Default::default()
                };
                fill(&mut secret, &state);
                match call(
                    self.call("create"),
                    self.api.create(&PostParams::default(), &secret),
                )
                .await
                {
                    Ok(created) => {
                        info!(secret = %self.name, namespace = %self.namespace, "created the certificate Secret with a new CA and serving certificate");
                        return Ok(Stored {
                            state,
                            secret: created,
                        });
                    }
                    Err(e) if e.is_conflict() => {
                        info!(secret = %self.name, "another replica created the certificate Secret first; reading it");
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            };
            let data: BTreeMap<String, Vec<u8>> = secret
                .data
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            let annotations = secret.metadata.annotations.clone().unwrap_or_default();
            match CertState::from_secret(&data, &annotations) {
                Ok(state) => return Ok(Stored { state, secret }),
                Err(e) => {
                    warn!(secret = %self.name, error = %e, "the certificate Secret holds unusable material; replacing it");
                    let state = CertState::generate(dns_names, now, policy)?;
                    let stored = Stored { state, secret };
                    match self.update(&stored, stored.state.clone()).await {
                        Ok(s) => return Ok(s),
                        Err(e) if e.is_conflict() => continue,
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Err(ClusterError::Other(format!(
            "the Secret {:?} in namespace {:?} kept changing while being read or created",
            self.name, self.namespace
        )))
    }

    /// Writes `state` over `stored` with its `resourceVersion` (409 when someone wrote in between).
    pub async fn update(&self, stored: &Stored, state: CertState) -> Result<Stored, ClusterError> {
        let mut secret = stored.secret.clone();
        fill(&mut secret, &state);
        let written = call(
            self.call("update"),
            self.api
                .replace(&self.name, &PostParams::default(), &secret),
        )
        .await?;
        Ok(Stored {
            state,
            secret: written,
        })
    }
}

/// Puts the state into the Secret: `data` replaced, our annotations set (stale ones removed),
/// everything else kept.
fn fill(secret: &mut Secret, state: &CertState) {
    let (data, ours) = state.to_secret();
    secret.data = Some(
        data.into_iter()
            .map(|(k, v)| (k, ByteString(v.into_bytes())))
            .collect(),
    );
    secret.string_data = None;
    let annotations = secret
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new);
    for key in [
        PHASE_ANNOTATION,
        OVERLAP_SINCE_ANNOTATION,
        RETIRE_ANNOTATION,
    ] {
        annotations.remove(key);
    }
    annotations.extend(ours);
}
