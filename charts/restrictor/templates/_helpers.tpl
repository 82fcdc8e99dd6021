{{/* Chart name. */}}
{{- define "restrictor.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: <release>-<chart>, or <release> when it already contains the chart name. */}}
{{- define "restrictor.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "restrictor.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "restrictor.selectorLabels" -}}
app.kubernetes.io/name: {{ include "restrictor.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "restrictor.labels" -}}
helm.sh/chart: {{ include "restrictor.chart" . }}
{{ include "restrictor.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: restrictor
{{- end }}

{{- define "restrictor.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{- define "restrictor.serviceAccountName" -}}
{{- default (include "restrictor.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{- define "restrictor.webhookName" -}}
{{- default (include "restrictor.fullname" .) .Values.webhook.name }}
{{- end }}

{{- define "restrictor.serviceName" -}}
{{- include "restrictor.fullname" . }}
{{- end }}

{{/* Secret holding the serving certificate (created by restrictor, cert-manager, or the admin). */}}
{{- define "restrictor.tlsSecretName" -}}
{{- if .Values.tls.secretName }}
{{- .Values.tls.secretName }}
{{- else if eq .Values.tls.mode "secret" }}
{{- fail "tls.mode=secret needs tls.secretName: the name of an existing kubernetes.io/tls Secret in the release namespace (--set tls.secretName=NAME --set tls.caBundle=BASE64; certs/gen-certs.sh prints both)" }}
{{- else }}
{{- printf "%s-tls" (include "restrictor.fullname" .) }}
{{- end }}
{{- end }}

{{- define "restrictor.leaseName" -}}
{{- default (printf "%s-reconcile" (include "restrictor.fullname" .)) .Values.reconcileExisting.leaseName }}
{{- end }}

{{/* The Lease held by the one replica that writes the PolicyReports. */}}
{{- define "restrictor.reportsLeaseName" -}}
{{- printf "%s-reports" (include "restrictor.fullname" .) }}
{{- end }}

{{/* "true" when restrictor itself talks to the Kubernetes API (needs a token and RBAC). */}}
{{- define "restrictor.needsApi" -}}
{{- if or (eq .Values.tls.mode "self-managed") .Values.reconcileExisting.enabled .Values.reports.enabled .Values.events.enabled }}true{{ end }}
{{- end }}

{{/* Validation of value combinations the schema cannot express. */}}
{{- define "restrictor.validate" -}}
{{- if eq .Values.tls.mode "secret" }}
{{- if not .Values.tls.secretName }}
{{- fail "tls.mode=secret needs tls.secretName: the name of an existing kubernetes.io/tls Secret in the release namespace (--set tls.secretName=NAME --set tls.caBundle=BASE64; certs/gen-certs.sh prints both)" }}
{{- end }}
{{- if not .Values.tls.caBundle }}
{{- fail "tls.mode=secret needs tls.caBundle: the base64-encoded PEM of the CA that signed the certificate in tls.secretName (certs/gen-certs.sh prints it)" }}
{{- end }}
{{- if not (contains "-----BEGIN CERTIFICATE-----" (b64dec .Values.tls.caBundle)) }}
{{- fail "tls.caBundle must be base64 of a PEM certificate (it does not decode to '-----BEGIN CERTIFICATE-----'); use: base64 -w0 ca.crt" }}
{{- end }}
{{- else if .Values.tls.caBundle }}
{{- fail (printf "tls.caBundle is only used with tls.mode=secret (tls.mode is %s)" .Values.tls.mode) }}
{{- end }}
{{- $drain := add (int .Values.preStopSleepSeconds) (int .Values.shutdown.delaySeconds) (int .Values.shutdown.graceSeconds) }}
{{- if le (int .Values.terminationGracePeriodSeconds) (int $drain) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be greater than preStopSleepSeconds (%d) + shutdown.delaySeconds (%d) + shutdown.graceSeconds (%d), or the kubelet kills restrictor while it drains" (int .Values.terminationGracePeriodSeconds) (int .Values.preStopSleepSeconds) (int .Values.shutdown.delaySeconds) (int .Values.shutdown.graceSeconds)) }}
{{- end }}
{{- end }}

{{/* The restricted pod security context shared by the server and the hook Job. */}}
{{- define "restrictor.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
# Mounted Secret files get group 65532, so the key can stay mode 0440 and still be readable.
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "restrictor.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- /*
The admission probe's grants (src/cluster/probe.rs, rollout.rs), in the ClusterRole or in a Role
per reconciled namespace (templates/rbac.yaml).
*/}}
{{- define "restrictor.probeRules" -}}
# The admission probe: before restarting anything in a namespace, restrictor creates a pod there
# with dryRun=All and checks that restrictor's answer comes back, i.e. that the API server really
# calls restrictor there. RBAC cannot limit create to dry runs; the ValidatingAdmissionPolicy
# <fullname>-dry-run-pods-only refuses any other pod create by this ServiceAccount.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["create"]
# Why a restarted workload's pods were not created (FailedCreate events of its ReplicaSet).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["list"]
{{- end }}
