#!/bin/bash
# Entrypoint of the sandbox executor image.
#
# When the proxy's CA is mounted (PROXY_CA_CERT, default /etc/proxy-ca/ca.crt), make sure a bundle
# of the system roots plus that CA exists at PROXY_CA_BUNDLE (default
# /var/lib/proxy-ca/ca-bundle.crt) and point curl, git, OpenSSL, Python (ssl, urllib, requests,
# pip) and Node at it. In a pod, the `ca-trust` init container (auth-proxy-trust, from the sidecar
# image) has already written it, with more, and the pod spec sets the variables for every
# process: the bundle is then left as it is. Run alone (docker run with the CA mounted), this
# script writes it. Without the CA the container starts as before. Then exec the command.
set -euo pipefail

ca="${PROXY_CA_CERT:-/etc/proxy-ca/ca.crt}"
bundle="${PROXY_CA_BUNDLE:-/var/lib/proxy-ca/ca-bundle.crt}"
system_roots=/etc/ssl/certs/ca-certificates.crt

say() { printf 'executor-entrypoint: %s\n' "$*" >&2; }

if [[ -f $ca ]]; then
    if ! grep -q -- '-----BEGIN CERTIFICATE-----' "$ca"; then
        say "error: $ca holds no PEM certificate"
        exit 64
    fi
    if [[ -s $bundle ]]; then
        say "using the CA bundle at $bundle (written by the pod's ca-trust init container)"
    else
        bundle_dir="$(dirname "$bundle")"
        if ! { mkdir -p "$bundle_dir" 2>/dev/null && [[ -w $bundle_dir ]]; }; then
            fallback="${TMPDIR:-/tmp}/proxy-ca/ca-bundle.crt"
            say "warning: $bundle_dir is not writable; writing the CA bundle to $fallback instead"
            bundle="$fallback"
            mkdir -p "$(dirname "$bundle")"
        fi
        tmp="$(mktemp "$(dirname "$bundle")/.ca-bundle.XXXXXX")"
        {
            [[ -r $system_roots ]] && cat "$system_roots"
            printf '\n# auth-proxy CA from %s\n' "$ca"
            cat "$ca"
        } > "$tmp"
        chmod 0644 "$tmp"
        mv -f "$tmp" "$bundle"
    fi
    export SSL_CERT_FILE="$bundle" REQUESTS_CA_BUNDLE="$bundle" CURL_CA_BUNDLE="$bundle" \
        GIT_SSL_CAINFO="$bundle" PIP_CERT="$bundle" NODE_EXTRA_CA_CERTS="$ca"
fi

exec "$@"
