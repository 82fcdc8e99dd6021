//! The MutatingWebhookConfiguration: `caBundle` injection and uninstall.

use base64::Engine;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};
use tracing::{debug, info, warn};

use super::errors::{ApiCall, ClusterError, call};

const GROUP: &str = "admissionregistration.k8s.io";
const RESOURCE: &str = "mutatingwebhookconfigurations";

pub(crate) fn api_call(verb: &'static str, name: &str) -> ApiCall {
    ApiCall::new(verb, GROUP, RESOURCE).name(name)
}

/// Whether every webhook of `config` carries exactly `bundle` (and there is at least one).
pub(crate) fn carries(config: &MutatingWebhookConfiguration, bundle: &[u8]) -> bool {
    let webhooks = config.webhooks.as_deref().unwrap_or_default();
    !webhooks.is_empty()
        && webhooks
            .iter()
            .all(|w| w.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice()) == Some(bundle))
}

/// The JSON patch setting `caBundle` of every webhook, guarded by `test` ops on each webhook's name
/// and current `caBundle`: a concurrent reorder or edit makes the API server reject it instead of
/// our write clobbering it.
pub(crate) fn injection_patch(config: &MutatingWebhookConfiguration, bundle: &[u8]) -> Value {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut ops = Vec::new();
    for (i, w) in config.webhooks.iter().flatten().enumerate() {
        ops.push(json!({"op": "test", "path": format!("/webhooks/{i}/name"), "value": w.name}));
        let path = format!("/webhooks/{i}/clientConfig/caBundle");
        match &w.client_config.ca_bundle {
            Some(current) => {
                ops.push(json!({"op": "test", "path": path, "value": b64.encode(&current.0)}));
                ops.push(json!({"op": "replace", "path": path, "value": b64.encode(bundle)}));
            }
            None => ops.push(json!({"op": "add", "path": path, "value": b64.encode(bundle)})),
        }
    }
    Value::Array(ops)
}

/// Makes every webhook of the configuration `name` carry `bundle`. Returns whether it does now
/// (`false` when the configuration is absent or has no webhooks, or kept changing under us).
pub(crate) async fn ensure_ca_bundle(
    api: &Api<MutatingWebhookConfiguration>,
    name: &str,
    bundle: &[u8],
) -> Result<bool, ClusterError> {
    for _ in 0..3 {
        let Some(config) = call(api_call("get", name), api.get_opt(name)).await? else {
            warn!(webhook_config = %name, "the MutatingWebhookConfiguration does not exist (yet); caBundle not injected");
            return Ok(false);
        };
        if config.webhooks.as_deref().unwrap_or_default().is_empty() {
            warn!(webhook_config = %name, "the MutatingWebhookConfiguration has no webhooks; nothing to inject");
            return Ok(false);
        }
        if carries(&config, bundle) {
            debug!(webhook_config = %name, "caBundle already current");
            return Ok(true);
        }
        let patch: json_patch::Patch = serde_json::from_value(injection_patch(&config, bundle))
            .map_err(|e| ClusterError::Other(format!("building the caBundle patch: {e}")))?;
        let params = PatchParams::default();
        match call(
            api_call("patch", name),
            api.patch(name, &params, &Patch::Json::<()>(patch)),
        )
        .await
        {
            Ok(patched) => {
                let ok = carries(&patched, bundle);
                info!(webhook_config = %name, webhooks = patched.webhooks.as_ref().map_or(0, Vec::len), "injected the CA bundle into caBundle");
                if ok {
                    return Ok(true);
                }
            }
            // A failed `test` op (the object changed since we read it) or a conflict: read again.
            Err(e) if matches!(e.code(), Some(409 | 422)) => {
                debug!(webhook_config = %name, error = %e, "caBundle patch lost a race; retrying");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// Deletes the MutatingWebhookConfiguration `name` so a removed restrictor never leaves a
/// `failurePolicy: Fail` webhook behind. Already absent is success: returns whether it existed.
pub async fn uninstall(
    client: kube::Client,
    webhook_config_name: &str,
) -> Result<bool, ClusterError> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client);
    match call(
        api_call("delete", webhook_config_name),
        api.delete(webhook_config_name, &DeleteParams::default()),
    )
    .await
    {
        Ok(_) => {
            info!(webhook_config = %webhook_config_name, "deleted the MutatingWebhookConfiguration");
            Ok(true)
        }
        Err(e) if e.is_not_found() => {
            info!(webhook_config = %webhook_config_name, "the MutatingWebhookConfiguration is already gone");
            Ok(false)
        }
        Err(e) => Err(e),
    }
}
