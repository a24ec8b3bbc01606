"""Every name, label key, port, path and env var the sandbox pods use, in one place.

These strings are an interface: the images (images/sidecar, images/executor), the e2e tests and
the sandbox manager rely on them. Change them only together with their users.
"""

from __future__ import annotations

# --- containers --------------------------------------------------------------------------------
SIDECAR_CONTAINER = "auth-proxy"
WORKLOAD_CONTAINER = "workload"
# A regular init container, first in initContainers, that locks the pod's network with nftables
# so that every socket not owned by SIDECAR_UID can leave only through the sidecar.
EGRESS_INIT_CONTAINER = "egress-lock"
EGRESS_LOCK_COMMAND = "auth-proxy-lock-egress"  # console script in the sidecar image, on PATH
EGRESS_TABLE = "auth_proxy_egress"  # the one nftables `inet` table it installs
# A regular init container, after the lock and before the sidecar, that writes the workload's
# trust material (TRUST_* below) into the CA_BUNDLE_VOLUME emptyDir, so that any workload image
# trusts our CA without anything of ours in it.
TRUST_INIT_CONTAINER = "ca-trust"
TRUST_COMMAND = "auth-proxy-trust"  # console script in the sidecar image (addons/trust.py)

DEFAULT_SIDECAR_IMAGE = "auth-proxy:dev"
DEFAULT_EXECUTOR_IMAGE = "sandbox-executor:dev"

# The sidecar runs as this user and group (see images/sidecar); the executor image as EXECUTOR_UID.
SIDECAR_UID = 10000
SIDECAR_GID = 10000
EXECUTOR_UID = 1000
EXECUTOR_GID = 1000

# --- ports and probes --------------------------------------------------------------------------
PROXY_PORT = 8080
PROXY_PORT_NAME = "proxy"
HEALTH_PORT = 8081
HEALTH_PORT_NAME = "health"
# The proxy listens on loopback only, so nothing outside the pod can use it as an open proxy; the
# health port listens on every interface because kubelet probes come from the node.
PROXY_LISTEN_HOST = "127.0.0.1"
HEALTH_LISTEN_HOST = "0.0.0.0"
# Where the lock redirects the workload's traffic: all TCP to the transparent listener, DNS (UDP
# and TCP port 53) to the DNS listener. Loopback only, like the proxy port.
TRANSPARENT_PORT = 8082
TRANSPARENT_PORT_NAME = "transparent"
DNS_PORT = 8053
DNS_PORT_NAME = "dns"  # UDP
DNS_TCP_PORT_NAME = "dns-tcp"  # TCP, the same number
READYZ_PATH = "/readyz"
HEALTHZ_PATH = "/healthz"

# --- the sidecar's environment (read by the sidecar image's entrypoint) ------------------------
ENV_LISTEN_HOST = "AUTH_PROXY_LISTEN_HOST"
ENV_LISTEN_PORT = "AUTH_PROXY_LISTEN_PORT"
ENV_HEALTH_HOST = "AUTH_PROXY_HEALTH_HOST"
ENV_HEALTH_PORT = "AUTH_PROXY_HEALTH_PORT"
ENV_CA_DIR = "AUTH_PROXY_CA_DIR"
ENV_POLICY = "AUTH_PROXY_POLICY"
ENV_CONFDIR = "AUTH_PROXY_CONFDIR"
ENV_LOG_LEVEL = "AUTH_PROXY_LOG_LEVEL"
# Empty or unset: that listener is off (a pod without enforced egress).
ENV_TRANSPARENT_PORT = "AUTH_PROXY_TRANSPARENT_PORT"
ENV_DNS_PORT = "AUTH_PROXY_DNS_PORT"
DEFAULT_LOG_LEVEL = "info"
LOG_LEVELS = ("error", "warn", "info", "debug")  # what the sidecar entrypoint accepts

# --- the CA ------------------------------------------------------------------------------------
CA_SECRET_NAME = "sandbox-proxy-ca"
CA_SECRET_TYPE = "kubernetes.io/tls"
TLS_CERT_KEY = "tls.crt"
TLS_KEY_KEY = "tls.key"
# Files ca/generate.py writes; the CA Secret is made from these two.
CA_CERT_FILE = "ca.crt"
CA_KEY_FILE = "ca.key"

# In the sidecar only: the whole Secret, key included.
SIDECAR_CA_VOLUME = "proxy-ca"
SIDECAR_CA_DIR = "/certs"
# In the workload: a second volume from the same Secret that projects tls.crt alone.
WORKLOAD_CA_VOLUME = "proxy-ca-cert"
WORKLOAD_CA_DIR = "/etc/proxy-ca"
WORKLOAD_CA_FILE_NAME = "ca.crt"
WORKLOAD_CA_CERT = f"{WORKLOAD_CA_DIR}/{WORKLOAD_CA_FILE_NAME}"
# The ca-trust init container writes these into an emptyDir that the workload mounts (writable,
# so the executor image's entrypoint still runs on a read-only root filesystem). The file names
# are addons/trust.py's.
CA_BUNDLE_VOLUME = "proxy-ca-bundle"
CA_BUNDLE_DIR = "/var/lib/proxy-ca"
CA_BUNDLE_FILE_NAME = "ca-bundle.crt"  # system roots + our CA (PEM)
CA_CERTS_DIR_NAME = "certs"  # the same as OpenSSL hash names (<hash>.0), for SSL_CERT_DIR
TRUSTSTORE_FILE_NAME = "truststore.p12"  # the same as a PKCS#12 Java truststore
TRUST_CA_FILE_NAME = "ca.crt"  # our CA alone
TRUSTSTORE_PASSWORD = "changeit"  # the JDK's default; a truststore holds no secret
CA_BUNDLE = f"{CA_BUNDLE_DIR}/{CA_BUNDLE_FILE_NAME}"
CA_CERTS_DIR = f"{CA_BUNDLE_DIR}/{CA_CERTS_DIR_NAME}"
TRUSTSTORE = f"{CA_BUNDLE_DIR}/{TRUSTSTORE_FILE_NAME}"
TRUST_CA_CERT = f"{CA_BUNDLE_DIR}/{TRUST_CA_FILE_NAME}"

# --- the policy --------------------------------------------------------------------------------
POLICY_CONFIGMAP_NAME = "sandbox-proxy-policy"
POLICY_KEY = "policy.yaml"
POLICY_VOLUME = "proxy-policy"
# Mounted as a directory, never with subPath: subPath mounts never see ConfigMap updates.
POLICY_DIR = "/etc/auth-proxy"
POLICY_PATH = f"{POLICY_DIR}/{POLICY_KEY}"

# --- the sidecar's scratch space (read-only root filesystem) -----------------------------------
SIDECAR_TMP_VOLUME = "auth-proxy-tmp"
SIDECAR_TMP_DIR = "/tmp"
SIDECAR_CONFDIR = "/tmp/auth-proxy"

# --- the workload's environment ----------------------------------------------------------------
PROXY_URL = f"http://{PROXY_LISTEN_HOST}:{PROXY_PORT}"
NO_PROXY_HOSTS = "localhost,127.0.0.1,::1"
PROXY_ENV_NAMES = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")
NO_PROXY_ENV_NAMES = ("NO_PROXY", "no_proxy")
# Variables that ADD to a tool's roots take our CA alone.
CA_CERT_ENV_NAMES = ("NODE_EXTRA_CA_CERTS",)  # Node.js
# Variables that REPLACE a tool's roots take the full bundle (system roots + our CA).
CA_BUNDLE_ENV_NAMES = (
    "SSL_CERT_FILE",  # OpenSSL and what uses it (Python ssl, httpx, Ruby, openssl CLI), Go
    "REQUESTS_CA_BUNDLE",  # Python requests
    "CURL_CA_BUNDLE",  # curl, and requests again
    "GIT_SSL_CAINFO",  # git
    "PIP_CERT",  # pip
    "AWS_CA_BUNDLE",  # AWS CLI and SDKs
    "CARGO_HTTP_CAINFO",  # Cargo
    "DENO_CERT",  # Deno
    "CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE",  # gcloud
    "NIX_SSL_CERT_FILE",  # Nix
    "BUNDLE_SSL_CA_CERT",  # Bundler
    "npm_config_cafile",  # npm (which reads npm_config_* in any case)
    "HTTPLIB2_CA_CERTS",  # httplib2
    "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH",  # gRPC (C core: Python, Ruby, C++)
)
# A directory of OpenSSL hash names (<hash>.0), which OpenSSL and Go also search.
CA_DIR_ENV_NAMES = ("SSL_CERT_DIR",)
# Node.js 24 (and 22.21+): fetch and https follow HTTP(S)_PROXY / NO_PROXY; without it, they
# ignore them.
NODE_PROXY_ENV_NAME = "NODE_USE_ENV_PROXY"
# Read by every JVM (java, javac, jshell, Gradle and Maven daemons): the truststore and the
# proxy, which the JVM does not take from HTTPS_PROXY. Users add flags with JDK_JAVA_OPTIONS
# (read by the `java` launcher of JDK 9+, after this one), which stays theirs.
JAVA_OPTIONS_ENV_NAME = "JAVA_TOOL_OPTIONS"
RESERVED_ENV_NAMES = frozenset(
    PROXY_ENV_NAMES
    + NO_PROXY_ENV_NAMES
    + CA_CERT_ENV_NAMES
    + CA_BUNDLE_ENV_NAMES
    + CA_DIR_ENV_NAMES
    + (NODE_PROXY_ENV_NAME, JAVA_OPTIONS_ENV_NAME)
)
# Tools read both spellings of these (curl prefers lower case, Go upper; npm lower-cases the
# names of its npm_config_* variables), so a user variable in any case would redirect, exempt or
# re-trust traffic: they are reserved regardless of case. Every other name is read in one
# spelling only (getenv is case-sensitive: OpenSSL, Node, the JVM, git, pip, Cargo, Bundler,
# gcloud, AWS, Deno, Nix, gRPC, httplib2), so another spelling is a different, harmless variable.
CASE_INSENSITIVE_RESERVED_ENV_NAMES = frozenset(
    {"http_proxy", "https_proxy", "no_proxy", "npm_config_cafile"}
)

# --- labels ------------------------------------------------------------------------------------
LABEL_PREFIX = "sandbox.dev"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_COMPONENT = "app.kubernetes.io/component"
MANAGED_BY = "sandbox-manager"
PART_OF = "sandbox"
COMPONENT_SANDBOX = "sandbox"
COMPONENT_CA = "auth-proxy-ca"
COMPONENT_POLICY = "auth-proxy-policy"

LABEL_POOL_STATUS = f"{LABEL_PREFIX}/pool-status"
POOL_STATUS_MANUAL = "manual"  # created on demand for one request
POOL_STATUS_WARM = "warm"  # idle in a pool, ready to be claimed
# The manager relabels a warm pod to this when it hands the pod out, so no one claims it twice.
POOL_STATUS_CLAIMED = "claimed"
LABEL_POOL = f"{LABEL_PREFIX}/pool"
# Lets an audit find every sandbox that runs without the proxy: -l sandbox.dev/auth-proxy=disabled
LABEL_AUTH_PROXY = f"{LABEL_PREFIX}/auth-proxy"
AUTH_PROXY_ENABLED = "enabled"
AUTH_PROXY_DISABLED = "disabled"
# Whether the egress lock runs: -l sandbox.dev/egress=unenforced finds every pod whose workload
# can reach the network around the proxy.
LABEL_EGRESS = f"{LABEL_PREFIX}/egress"
EGRESS_ENFORCED = "enforced"
EGRESS_UNENFORCED = "unenforced"

# --- pod level ---------------------------------------------------------------------------------
DEFAULT_RUNTIME_CLASS = "kata-qemu"
SIDECAR_MODE_NATIVE = "native"  # an init container with restartPolicy Always (Kubernetes 1.29+)
SIDECAR_MODE_CONTAINER = "container"  # a regular container, for clusters before 1.29
SIDECAR_MODES = (SIDECAR_MODE_NATIVE, SIDECAR_MODE_CONTAINER)
