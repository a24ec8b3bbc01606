#!/bin/bash
# Entrypoint of the auth-proxy sidecar image.
#
# Builds mitmproxy's confdir in a writable folder from the CA mounted read-only (a Kubernetes TLS
# Secret: tls.crt + tls.key), then execs the proxy. Extra arguments are passed on to the proxy.
# Environment (all optional):
#   AUTH_PROXY_LISTEN_HOST  127.0.0.1                    proxy listen address
#   AUTH_PROXY_LISTEN_PORT  8080                         proxy port
#   AUTH_PROXY_HEALTH_HOST  0.0.0.0                      /healthz and /readyz address
#   AUTH_PROXY_HEALTH_PORT  8081                         health port
#   AUTH_PROXY_CA_DIR       /certs                       holds tls.crt and tls.key (read-only)
#   AUTH_PROXY_POLICY       /etc/auth-proxy/policy.yaml  allowlist policy; changes are followed
#   AUTH_PROXY_CONFDIR      /tmp/auth-proxy              writable; mitmproxy's confdir
#   AUTH_PROXY_LOG_LEVEL    info                         error | warn | info | debug
#   AUTH_PROXY_TRANSPARENT_PORT  (unset: off)   transparent listener for TCP the pod's nftables
#                                               rules redirect (loopback; ::1 too when present)
#   AUTH_PROXY_DNS_PORT          (unset: off)   DNS listener (UDP and TCP) for redirected port 53
set -euo pipefail

listen_host="${AUTH_PROXY_LISTEN_HOST:-127.0.0.1}"
listen_port="${AUTH_PROXY_LISTEN_PORT:-8080}"
health_host="${AUTH_PROXY_HEALTH_HOST:-0.0.0.0}"
health_port="${AUTH_PROXY_HEALTH_PORT:-8081}"
ca_dir="${AUTH_PROXY_CA_DIR:-/certs}"
policy="${AUTH_PROXY_POLICY:-/etc/auth-proxy/policy.yaml}"
confdir="${AUTH_PROXY_CONFDIR:-/tmp/auth-proxy}"
log_level="${AUTH_PROXY_LOG_LEVEL:-info}"
transparent_port="${AUTH_PROXY_TRANSPARENT_PORT:-}"
dns_port="${AUTH_PROXY_DNS_PORT:-}"

say() { printf 'auth-proxy-entrypoint: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 64; }

case "${log_level,,}" in
    debug) verbosity=debug ;;
    info) verbosity=info ;;
    warn | warning) verbosity=warn ;;
    error | err) verbosity=error ;;
    *) die "AUTH_PROXY_LOG_LEVEL=$log_level: use error, warn, info or debug" ;;
esac
for port in "$listen_port" "$health_port" ${transparent_port:+"$transparent_port"} \
    ${dns_port:+"$dns_port"}; do
    [[ $port =~ ^[0-9]+$ ]] && ((port > 0 && port < 65536)) || die "invalid port: $port"
done

umask 077
ca_args=()
mkdir -p "$confdir" || die "cannot create AUTH_PROXY_CONFDIR=$confdir (it must be writable)"
confdir="$(cd "$confdir" && pwd -P)"
if [[ -d $ca_dir && "$(cd "$ca_dir" && pwd -P)" == "$confdir" ]]; then
    die "AUTH_PROXY_CONFDIR must not be the CA folder $ca_dir (mitmproxy writes into its confdir)"
fi

# Never reuse a CA left in the confdir by an earlier run (say, an ephemeral one, in an emptyDir
# that outlives the container): it is either rebuilt or regenerated. The proxy's CA check never
# deletes files, so this folder's owner (this script) clears them.
rm -f "$confdir"/mitmproxy-ca.pem "$confdir"/mitmproxy-ca-cert.pem "$confdir"/mitmproxy-ca-cert.cer \
    "$confdir"/mitmproxy-ca-cert.p12 "$confdir"/mitmproxy-ca.p12

if [[ -f $ca_dir/tls.crt && -f $ca_dir/tls.key ]]; then
    [[ -r $ca_dir/tls.key ]] || die "$ca_dir/tls.key is not readable by uid $(id -u)"
    grep -q -- '-----BEGIN CERTIFICATE-----' "$ca_dir/tls.crt" || die "$ca_dir/tls.crt holds no PEM certificate"
    grep -q -- 'PRIVATE KEY-----' "$ca_dir/tls.key" || die "$ca_dir/tls.key holds no PEM private key"
    cat "$ca_dir/tls.key" "$ca_dir/tls.crt" > "$confdir/.mitmproxy-ca.pem.tmp"
    mv -f "$confdir/.mitmproxy-ca.pem.tmp" "$confdir/mitmproxy-ca.pem"
    cp "$ca_dir/tls.crt" "$confdir/mitmproxy-ca-cert.pem"
    # These copies are newer than the proxy process (`exec` keeps this shell's start time), and
    # need not look older: the proxy's CA check (addons/ca_check.py) takes a CA for one mitmproxy
    # made up at start only if mitmproxy-ca.p12, which mitmproxy writes with it, is fresh too.
    # Nothing here writes that file, and the `rm -f` above clears one left by an earlier run.
    say "using the CA from $ca_dir"
else
    for line in \
        "################################################################################" \
        "WARNING: no CA at $ca_dir/tls.crt + $ca_dir/tls.key." \
        "WARNING: using an EPHEMERAL CA made for this container only: clients will not trust" \
        "WARNING: it, and it changes on every start. Mount the CA Secret at $ca_dir." \
        "################################################################################"; do
        say "$line"
    done
    ca_args=(--set ca_required=false)
fi

# The pod's rules redirect to loopback: 127.0.0.1, and ::1 for IPv6 when the pod has it.
loopbacks=(127.0.0.1)
if grep -qs '^0\{31\}1 ' /proc/net/if_inet6; then
    loopbacks+=(::1)
fi
modes=()
if [[ -n $transparent_port || -n $dns_port ]]; then
    modes+=(--mode regular)
    for address in "${loopbacks[@]}"; do
        if [[ -n $transparent_port ]]; then modes+=(--mode "transparent@$address:$transparent_port"); fi
        if [[ -n $dns_port ]]; then modes+=(--set "dns_listen=$address:$dns_port"); fi
    done
fi

args=(
    --listen-host "$listen_host"
    --listen-port "$listen_port"
    "${modes[@]}"
    --set "confdir=$confdir"
    --set "health_host=$health_host"
    --set "health_port=$health_port"
    --set "termlog_verbosity=$verbosity"
    "${ca_args[@]}"
)
if [[ -f $policy ]]; then
    args+=(--set "allowlist=$policy")
else
    say "WARNING: no policy at $policy: every request is DENIED (see /readyz)"
fi

say "proxy on $listen_host:$listen_port, health on $health_host:$health_port${transparent_port:+, transparent on :$transparent_port}${dns_port:+, DNS on :$dns_port}"
exec auth-proxy "${args[@]}" "$@"
