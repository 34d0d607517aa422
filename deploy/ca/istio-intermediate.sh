#!/usr/bin/env bash
# istio-intermediate.sh: make an intermediate CA for Ambit under Istio's root,
# so that both meshes share one root of trust (docs/migration.md, "Sharing
# Istio's root of trust").
#
# It does what Istio's tools/certs Makefile.selfsigned.mk does for a cluster
# intermediate (`make <cluster>-cacerts`): a new key, a CSR, a certificate
# signed by the root with CA:TRUE, pathlen:0, and cert-chain.pem = the
# intermediate then the root. Differences, on purpose: the key is ECDSA P-256
# (Istio's Makefile uses RSA 4096; Ambit's CA signs with either), the key
# usages are those of a CA (keyCertSign, cRLSign, digitalSignature; no
# keyEncipherment), and there is no DNS SAN (istiod's SAN has no meaning for
# Ambit's CA). Needs openssl (tested with 3.0; every flag used exists since
# 1.1.1), bash and the base tools (coreutils, grep, sed).
#
# Writes DIR/ca-cert.pem, DIR/ca-key.pem (mode 0600), DIR/root-cert.pem (the
# root) and DIR/cert-chain.pem, the layout of the Secret cacerts, and prints
# the kubectl command that creates that Secret in ambit-system.
set -euo pipefail

prog=$(basename "$0")

usage() {
  cat <<EOF
usage: $prog --root-cert FILE --root-key FILE --out DIR [--days N] [--org NAME]

Creates an intermediate CA for Ambit signed by Istio's root and writes the
Secret cacerts layout into DIR (which must not hold those files yet):
  ca-cert.pem     the intermediate (CN "Ambit Intermediate CA")
  ca-key.pem      its ECDSA P-256 key, mode 0600
  root-cert.pem   Istio's root certificate
  cert-chain.pem  the intermediate, then the root

  --root-cert FILE  Istio's root certificate (PEM, one self-signed CA)
  --root-key FILE   its private key (PEM, not encrypted)
  --out DIR         output directory (created if missing)
  --days N          validity of the intermediate in days (default 730, as Istio's)
  --org NAME        O= of the intermediate's subject (default Istio)

Where Istio's root is:
  * plug-in CA (Secret istio-system/cacerts exists): that Secret holds only
    Istio's intermediate key; the root key is root-key.pem wherever the
    operator made the root (e.g. the directory of Istio's tools/certs
    Makefile, or a vault).
  * Istio's self-signed CA (Secret istio-system/istio-ca-secret): that root
    is ca-cert.pem / ca-key.pem of the Secret:
      kubectl -n istio-system get secret istio-ca-secret \\
        -o jsonpath='{.data.ca-cert\\.pem}' | base64 -d > root-cert.pem
      (umask 077; kubectl -n istio-system get secret istio-ca-secret \\
        -o jsonpath='{.data.ca-key\\.pem}' | base64 -d > root-key.pem)
EOF
}

die() {
  echo "$prog: $*" >&2
  exit 1
}

# bad_usage: a command-line error, with the usage, exit 2.
bad_usage() {
  echo "$prog: $*" >&2
  usage >&2
  exit 2
}

root_cert="" root_key="" out="" days=730 org="Istio"
while [ $# -gt 0 ]; do
  case "$1" in
    --root-cert|--root-key|--out|--days|--org)
      [ $# -ge 2 ] || bad_usage "$1 needs a value"
      case "$1" in
        --root-cert) root_cert=$2 ;;
        --root-key) root_key=$2 ;;
        --out) out=$2 ;;
        --days) days=$2 ;;
        --org) org=$2 ;;
      esac
      shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) bad_usage "unknown argument $1" ;;
  esac
done
for flag in root-cert root-key out; do
  var=${flag//-/_}
  [ -n "${!var}" ] || bad_usage "--$flag is required"
done
[[ $days =~ ^[1-9][0-9]*$ ]] || die "--days $days: want a whole number of days, e.g. 730"
case "$org" in *[/=+,\\]*|"") die "--org \"$org\": want a plain name (no / = + , or backslash)" ;; esac

command -v openssl >/dev/null || die "openssl not found on PATH; install it (Debian: apt-get install openssl)"

# The inputs.
for f in "$root_cert" "$root_key"; do
  [ -f "$f" ] || die "$f: no such file"
  [ -r "$f" ] || die "$f: not readable"
done
n=$(grep -c -- '-----BEGIN CERTIFICATE-----' "$root_cert" || true)
[ "$n" -eq 1 ] || die "--root-cert $root_cert: holds $n PEM certificates, want exactly one: Istio's root (the one --root-key belongs to)"
text=$(openssl x509 -in "$root_cert" -noout -text 2>/dev/null) || die "--root-cert $root_cert: not a PEM certificate"
# Never prompt for a pass phrase: an encrypted key fails here.
key_pub=$(openssl pkey -in "$root_key" -passin pass: -pubout 2>/dev/null) ||
  die "--root-key $root_key: not a readable private key (PEM, not encrypted; decrypt it first with openssl pkey -in KEY -out PLAIN)"

grep -q 'CA:TRUE' <<<"$text" ||
  die "--root-cert $root_cert: not a CA certificate (basicConstraints CA:TRUE missing); pass Istio's root, not a workload or serving certificate"
if grep -q 'X509v3 Key Usage' <<<"$text"; then
  grep -A1 'X509v3 Key Usage' <<<"$text" | grep -q 'Certificate Sign' ||
    die "--root-cert $root_cert: its key usage lacks keyCertSign, so it cannot sign an intermediate"
fi
# Self-signed: subject = issuer, and its own key verifies its signature.
names=$(openssl x509 -in "$root_cert" -noout -subject -issuer -nameopt RFC2253)
[ "$(sed -n 's/^subject=//p' <<<"$names")" = "$(sed -n 's/^issuer=//p' <<<"$names")" ] &&
  openssl verify -no-CApath -check_ss_sig -CAfile "$root_cert" "$root_cert" >/dev/null 2>&1 ||
  die "--root-cert $root_cert: not self-signed; pass the root (Ambit's root-cert.pem must hold self-signed roots), not Istio's intermediate ca-cert.pem"
if ! openssl x509 -in "$root_cert" -noout -checkend $((days * 86400)) >/dev/null; then
  openssl x509 -in "$root_cert" -noout -checkend 0 >/dev/null ||
    die "--root-cert $root_cert: expired at $(openssl x509 -in "$root_cert" -noout -enddate | sed 's/^notAfter=//')"
  echo "$prog: warning: the root expires before the intermediate's $days days; leaves stop verifying when the root expires" >&2
fi
[ "$(openssl x509 -in "$root_cert" -noout -pubkey)" = "$key_pub" ] ||
  die "--root-key $root_key does not match --root-cert $root_cert (their public keys differ)"

mkdir -p "$out"
for f in ca-cert.pem ca-key.pem root-cert.pem cert-chain.pem; do
  [ ! -e "$out/$f" ] || die "$out/$f exists; remove it or choose another --out"
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Istio's intermediate.conf with the extensions above; they are set when
# the root signs (authorityKeyIdentifier needs the issuer), not in the CSR.
cat >"$tmp/intermediate.conf" <<EOF
[ req ]
encrypt_key = no
prompt = no
utf8 = yes
default_md = sha256
distinguished_name = req_dn
[ req_dn ]
O = $org
CN = Ambit Intermediate CA
[ ca_ext ]
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
basicConstraints = critical, CA:true, pathlen:0
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
EOF

# The key is written 0600 from the start, never readable by others.
(umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tmp/ca-key.pem" 2>/dev/null) ||
  die "generating the P-256 key failed"
openssl req -new -config "$tmp/intermediate.conf" -key "$tmp/ca-key.pem" -out "$tmp/ca.csr"
# -CAserial in the temporary directory: a random serial, and no .srl file
# left next to the root.
openssl x509 -req -days "$days" -CA "$root_cert" -CAkey "$root_key" -passin pass: \
  -CAserial "$tmp/root.srl" -CAcreateserial -sha256 \
  -extensions ca_ext -extfile "$tmp/intermediate.conf" \
  -in "$tmp/ca.csr" -out "$tmp/ca-cert.pem" 2>"$tmp/x509.err" ||
  die "signing the intermediate with the root failed: $(cat "$tmp/x509.err")"
# The root as one PEM block, without any text around it.
sed -n '/-----BEGIN CERTIFICATE-----/,/-----END CERTIFICATE-----/p' "$root_cert" >"$tmp/root-cert.pem"
openssl verify -no-CApath -CAfile "$tmp/root-cert.pem" "$tmp/ca-cert.pem" >/dev/null ||
  die "the new intermediate does not verify against the root (this is a bug in $prog)"
cat "$tmp/ca-cert.pem" "$tmp/root-cert.pem" >"$tmp/cert-chain.pem"

chmod 0644 "$tmp/ca-cert.pem" "$tmp/root-cert.pem" "$tmp/cert-chain.pem"
chmod 0600 "$tmp/ca-key.pem"
for f in ca-key.pem ca-cert.pem root-cert.pem cert-chain.pem; do
  mv "$tmp/$f" "$out/$f"
done

q=$(printf '%q' "${out%/}")
fp=$(openssl x509 -in "$out/root-cert.pem" -noout -fingerprint -sha256 | sed 's/^.*=//')
inter=$(openssl x509 -in "$out/ca-cert.pem" -noout -subject -enddate)
cat <<EOF
wrote $out/ca-cert.pem, ca-key.pem (0600), root-cert.pem, cert-chain.pem
intermediate: $(sed -n 's/^subject=//p' <<<"$inter"), until $(sed -n 's/^notAfter=//p' <<<"$inter")
root SHA-256 fingerprint: $fp

Create the Secret before installing Ambit (then install with pluginCA.enabled=true):
  kubectl create namespace ambit-system --dry-run=client -o yaml | kubectl apply -f -
  kubectl create secret generic cacerts -n ambit-system --from-file=$q/ca-cert.pem --from-file=$q/ca-key.pem --from-file=$q/root-cert.pem --from-file=$q/cert-chain.pem
EOF
