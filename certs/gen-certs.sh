#!/usr/bin/env bash
# Make a CA (ECDSA P-256) and a serving certificate for restrictor's webhook Service, for
# `helm install ... --set tls.mode=secret`.
#
# Usage: certs/gen-certs.sh [SERVICE] [NAMESPACE] [OUTDIR]
#   defaults: restrictor restrictor-system ./certs/out
# Writes OUTDIR/ca.crt, OUTDIR/tls.crt, OUTDIR/tls.key (0600) and prints the caBundle and the
# commands that install them. The CA key is deleted after signing unless KEEP_CA_KEY=1
# (keep it only if you will sign the renewal with the same CA; then guard it).
# Env: CA_DAYS (default 3650), CERT_DAYS (default 365), KEEP_CA_KEY (0).
set -euo pipefail

SERVICE="${1:-restrictor}"
NAMESPACE="${2:-restrictor-system}"
OUTDIR="${3:-./certs/out}"
CA_DAYS="${CA_DAYS:-3650}"
CERT_DAYS="${CERT_DAYS:-365}"
KEEP_CA_KEY="${KEEP_CA_KEY:-0}"
SECRET_NAME="${SECRET_NAME:-${SERVICE}-tls}"

valid_dns_label='^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'
[[ "${SERVICE}" =~ ${valid_dns_label} ]] || { echo "invalid service name: ${SERVICE}" >&2; exit 2; }
[[ "${NAMESPACE}" =~ ${valid_dns_label} ]] || { echo "invalid namespace: ${NAMESPACE}" >&2; exit 2; }
command -v openssl >/dev/null || { echo "openssl is required" >&2; exit 2; }

umask 077
mkdir -p "${OUTDIR}"
work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT

# --- CA -----------------------------------------------------------------------
openssl ecparam -name prime256v1 -genkey -noout -out "${work}/ca.key"
openssl req -x509 -new -sha256 -key "${work}/ca.key" -days "${CA_DAYS}" \
  -subj "/CN=${SERVICE}.${NAMESPACE} webhook CA" \
  -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -addext "subjectKeyIdentifier=hash" \
  -out "${work}/ca.crt"

# --- serving certificate -----------------------------------------------------
openssl ecparam -name prime256v1 -genkey -noout -out "${work}/tls.key"
openssl req -new -sha256 -key "${work}/tls.key" \
  -subj "/CN=${SERVICE}.${NAMESPACE}.svc" -out "${work}/tls.csr"
cat > "${work}/leaf.ext" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid,issuer
subjectAltName=DNS:${SERVICE},DNS:${SERVICE}.${NAMESPACE},DNS:${SERVICE}.${NAMESPACE}.svc,DNS:${SERVICE}.${NAMESPACE}.svc.cluster.local
EXT
openssl x509 -req -sha256 -in "${work}/tls.csr" -CA "${work}/ca.crt" -CAkey "${work}/ca.key" \
  -CAcreateserial -days "${CERT_DAYS}" -extfile "${work}/leaf.ext" -out "${work}/tls.crt" 2>/dev/null

# Sanity: the chain verifies and the SANs are there.
openssl verify -CAfile "${work}/ca.crt" -purpose sslserver "${work}/tls.crt" >/dev/null

install -m 0644 "${work}/ca.crt" "${OUTDIR}/ca.crt"
install -m 0644 "${work}/tls.crt" "${OUTDIR}/tls.crt"
install -m 0600 "${work}/tls.key" "${OUTDIR}/tls.key"
if [[ "${KEEP_CA_KEY}" == "1" ]]; then
  install -m 0600 "${work}/ca.key" "${OUTDIR}/ca.key"
fi

CA_BUNDLE="$(base64 < "${OUTDIR}/ca.crt" | tr -d '\n')"

cat <<MSG
Wrote ${OUTDIR}/ca.crt, ${OUTDIR}/tls.crt, ${OUTDIR}/tls.key (0600)$( [[ "${KEEP_CA_KEY}" == "1" ]] && echo ", ${OUTDIR}/ca.key (0600)" ).
Serving certificate: SANs ${SERVICE}, ${SERVICE}.${NAMESPACE}, ${SERVICE}.${NAMESPACE}.svc, ${SERVICE}.${NAMESPACE}.svc.cluster.local; expires in ${CERT_DAYS} days.

caBundle (base64 of ca.crt):
${CA_BUNDLE}

Install (fullnameOverride pins the Service name to "${SERVICE}", the name in the certificate):

kubectl create namespace ${NAMESPACE} --dry-run=client -o yaml | kubectl apply -f -
kubectl -n ${NAMESPACE} create secret tls ${SECRET_NAME} --cert=${OUTDIR}/tls.crt --key=${OUTDIR}/tls.key
helm install restrictor charts/restrictor -n ${NAMESPACE} --set fullnameOverride=${SERVICE} --set tls.mode=secret --set tls.secretName=${SECRET_NAME} --set tls.caBundle=${CA_BUNDLE}
MSG
