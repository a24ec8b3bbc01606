"""k8s.pods: complete expected manifests, the CA key's reach, reserved env, labels, settings."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import ApiClient, V1Pod

from k8s import constants as c
from k8s.audit import key_exposures, volume_may_expose_key
from k8s.pods import (
    build_pod_spec,
    build_warm_pod_spec,
    is_reserved_env_name,
    proxy_env,
)
from k8s.settings import DEFAULT_SETTINGS, ProxySettings, Resources

EXPECTED_DIR = Path(__file__).parent / "k8s_expected"
# UPDATE_K8S_EXPECTED=1 rewrites the expected manifests; review the diff before committing it.
UPDATE_EXPECTED = os.environ.get("UPDATE_K8S_EXPECTED") == "1"

NATIVE = DEFAULT_SETTINGS
CONTAINER = DEFAULT_SETTINGS.replace(sidecar_mode=c.SIDECAR_MODE_CONTAINER)
NO_PROXY = DEFAULT_SETTINGS.replace(enable_auth_proxy=False)
UNENFORCED = DEFAULT_SETTINGS.replace(egress_enforcement=False)
CONTAINER_UNENFORCED = CONTAINER.replace(egress_enforcement=False)
ALL_SETTINGS = [
    pytest.param(NATIVE, id="native-sidecar"),
    pytest.param(CONTAINER, id="container-sidecar"),
    pytest.param(UNENFORCED, id="native-unenforced"),
    pytest.param(CONTAINER_UNENFORCED, id="container-unenforced"),
    pytest.param(NO_PROXY, id="proxy-off"),
]
PROXY_SETTINGS = ALL_SETTINGS[:4]
ENFORCED_SETTINGS = ALL_SETTINGS[:2]

# `ssl_cert_file` differs from SSL_CERT_FILE by case: only the proxy-family names are reserved in
# every case, so this one is the user's.
USER_ENV = {"TASK_ID": "t-42", "LANG": "C.UTF-8", "ssl_cert_file": "/home/user/ca.pem"}
USER_LABELS = {"team": "ml"}

# Scenario id -> builder call. Each has its complete expected manifest in k8s_expected/<id>.yaml.
SCENARIOS: dict[str, Callable[[], V1Pod]] = {
    "pod-native": lambda: build_pod_spec("demo", env=USER_ENV, labels=USER_LABELS, settings=NATIVE),
    "pod-container": lambda: build_pod_spec(
        "demo", env=USER_ENV, labels=USER_LABELS, settings=CONTAINER
    ),
    "pod-no-proxy": lambda: build_pod_spec(
        "demo", env=USER_ENV, labels=USER_LABELS, settings=NO_PROXY
    ),
    # What `python -m k8s pod --no-egress-enforcement` renders.
    "pod-unenforced": lambda: build_pod_spec(
        "demo", env=USER_ENV, labels=USER_LABELS, settings=UNENFORCED
    ),
    "warm-native": lambda: build_warm_pod_spec("python", settings=NATIVE),
    "warm-container": lambda: build_warm_pod_spec(
        "python", name="python-0", image="registry.example/executor:1.2", settings=CONTAINER
    ),
    "warm-no-proxy": lambda: build_warm_pod_spec("python", settings=NO_PROXY),
}


def to_dict(obj: Any) -> Any:
    return ApiClient().sanitize_for_serialization(obj)


def containers(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    spec = pod["spec"]
    return {x["name"]: x for x in (spec.get("initContainers") or []) + spec["containers"]}


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env") or []}


def mounts_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["mountPath"]: m for m in container.get("volumeMounts") or []}


def volumes_of(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in pod["spec"].get("volumes") or []}


# --- complete expected manifests ---------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_builder_matches_the_complete_expected_manifest(scenario: str) -> None:
    manifest = to_dict(SCENARIOS[scenario]())
    path = EXPECTED_DIR / f"{scenario}.yaml"
    if UPDATE_EXPECTED:
        EXPECTED_DIR.mkdir(exist_ok=True)
        path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    assert manifest == yaml.safe_load(path.read_text())


def test_every_expected_manifest_has_a_scenario() -> None:
    assert {p.stem for p in EXPECTED_DIR.glob("*.yaml")} == set(SCENARIOS)


def test_builders_return_typed_pods() -> None:
    for build in SCENARIOS.values():
        assert isinstance(build(), V1Pod)


# --- the contract, point by point (independently of the expected files) ------------------------


@pytest.mark.parametrize(
    ("settings", "init", "main"),
    [
        pytest.param(NATIVE, ["egress-lock", "ca-trust", "auth-proxy"], ["workload"], id="native"),
        pytest.param(
            CONTAINER, ["egress-lock", "ca-trust"], ["auth-proxy", "workload"], id="container"
        ),
        pytest.param(UNENFORCED, ["ca-trust", "auth-proxy"], ["workload"], id="native-unenforced"),
        pytest.param(
            CONTAINER_UNENFORCED, ["ca-trust"], ["auth-proxy", "workload"], id="container-un"
        ),
        pytest.param(NO_PROXY, None, ["workload"], id="proxy-off"),
    ],
)
def test_container_placement(
    settings: ProxySettings, init: list[str] | None, main: list[str]
) -> None:
    spec = to_dict(build_pod_spec("demo", settings=settings))["spec"]
    # The lock first: init containers run in order, so nothing else runs before it succeeded.
    # The trust files next: the workload needs them from its first instruction.
    if init is None:
        assert "initContainers" not in spec
    else:
        assert [x["name"] for x in spec["initContainers"]] == init
    assert [x["name"] for x in spec["containers"]] == main
    for x in spec.get("initContainers", []):
        # Only the native sidecar restarts; the lock and ca-trust are regular init containers.
        assert x.get("restartPolicy") == ("Always" if x["name"] == "auth-proxy" else None)
    for x in spec["containers"]:
        assert "restartPolicy" not in x


@pytest.mark.parametrize("settings", PROXY_SETTINGS)
def test_sidecar_contract(settings: ProxySettings) -> None:
    sidecar = containers(to_dict(build_pod_spec("demo", settings=settings)))["auth-proxy"]
    assert sidecar["image"] == "auth-proxy:dev"
    ports = [
        {"name": "proxy", "containerPort": 8080, "protocol": "TCP"},
        {"name": "health", "containerPort": 8081, "protocol": "TCP"},
    ]
    env = {
        "AUTH_PROXY_LISTEN_HOST": "127.0.0.1",
        "AUTH_PROXY_LISTEN_PORT": "8080",
        "AUTH_PROXY_HEALTH_HOST": "0.0.0.0",
        "AUTH_PROXY_HEALTH_PORT": "8081",
        "AUTH_PROXY_CA_DIR": "/certs",
        "AUTH_PROXY_POLICY": "/etc/auth-proxy/policy.yaml",
        "AUTH_PROXY_CONFDIR": "/tmp/auth-proxy",
        "AUTH_PROXY_LOG_LEVEL": "info",
    }
    if settings.egress_enforcement:
        # The listeners the lock redirects to; without the lock they are not started at all.
        ports += [
            {"name": "transparent", "containerPort": 8082, "protocol": "TCP"},
            {"name": "dns", "containerPort": 8053, "protocol": "UDP"},
            {"name": "dns-tcp", "containerPort": 8053, "protocol": "TCP"},
        ]
        env |= {"AUTH_PROXY_TRANSPARENT_PORT": "8082", "AUTH_PROXY_DNS_PORT": "8053"}
    assert sidecar["ports"] == ports
    assert env_of(sidecar) == env
    for probe, path in [
        ("startupProbe", "/readyz"),
        ("readinessProbe", "/readyz"),
        ("livenessProbe", "/healthz"),
    ]:
        assert sidecar[probe]["httpGet"] == {"path": path, "port": 8081}, probe
    assert sidecar["resources"] == {
        "requests": {"memory": "64Mi", "cpu": "100m"},
        "limits": {"memory": "128Mi", "cpu": "250m"},
    }
    assert sidecar["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10000,
        "runAsGroup": 10000,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


# --- the egress lock ---------------------------------------------------------------------------


@pytest.mark.parametrize("settings", ENFORCED_SETTINGS)
def test_egress_lock_contract(settings: ProxySettings) -> None:
    lock = to_dict(build_pod_spec("demo", settings=settings))["spec"]["initContainers"][0]
    assert lock == {
        "name": "egress-lock",
        # The sidecar's image: it carries nft and the lock command.
        "image": "auth-proxy:dev",
        "imagePullPolicy": "IfNotPresent",
        "command": [
            "auth-proxy-lock-egress",
            *("--sidecar-uid", "10000"),
            *("--transparent-port", "8082"),
            *("--dns-port", "8053"),
        ],
        "resources": {
            "requests": {"cpu": "10m", "memory": "16Mi"},
            "limits": {"cpu": "100m", "memory": "64Mi"},
        },
        "securityContext": {
            "runAsUser": 0,
            "runAsGroup": 0,
            "runAsNonRoot": False,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def test_egress_lock_follows_the_settings() -> None:
    settings = NATIVE.replace(
        sidecar_image="reg.example/auth-proxy:2",
        image_pull_policy="Always",
        transparent_port=15001,
        dns_port=15053,
        egress_lock_resources=Resources("5m", "8Mi", "50m", "32Mi"),
    )
    pod = to_dict(build_pod_spec("demo", settings=settings))
    lock, trust, sidecar = pod["spec"]["initContainers"]
    assert lock["image"] == trust["image"] == sidecar["image"] == "reg.example/auth-proxy:2"
    assert lock["imagePullPolicy"] == trust["imagePullPolicy"] == "Always"
    assert sidecar["imagePullPolicy"] == "Always"
    assert lock["command"][1:] == ["--sidecar-uid", "10000", "--transparent-port", "15001",
                                   "--dns-port", "15053"]  # fmt: skip
    assert lock["resources"]["limits"] == {"cpu": "50m", "memory": "32Mi"}
    # The sidecar listens where the lock redirects to.
    assert env_of(sidecar)["AUTH_PROXY_TRANSPARENT_PORT"] == "15001"
    assert env_of(sidecar)["AUTH_PROXY_DNS_PORT"] == "15053"
    assert {(p["name"], p["containerPort"], p["protocol"]) for p in sidecar["ports"]} >= {
        ("transparent", 15001, "TCP"),
        ("dns", 15053, "UDP"),
        ("dns-tcp", 15053, "TCP"),
    }


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda s: build_pod_spec("d", env=USER_ENV, settings=s), id="on-demand"),
        pytest.param(lambda s: build_warm_pod_spec("py", settings=s), id="warm"),
    ],
)
@pytest.mark.parametrize(
    "enforced", [NATIVE, CONTAINER], ids=["native-sidecar", "container-sidecar"]
)
def test_unenforced_is_the_same_pod_without_the_lock(
    build: Callable[[ProxySettings], V1Pod], enforced: ProxySettings
) -> None:
    on = to_dict(build(enforced))
    off = to_dict(build(enforced.replace(egress_enforcement=False)))
    # Strip exactly what enforcement adds: the lock, the sidecar's two listeners, the label.
    stripped = copy.deepcopy(on)
    spec = stripped["spec"]
    assert spec["initContainers"].pop(0)["name"] == "egress-lock"
    sidecar = containers(stripped)["auth-proxy"]
    sidecar["ports"] = [p for p in sidecar["ports"] if p["name"] in ("proxy", "health")]
    listeners = {"AUTH_PROXY_TRANSPARENT_PORT", "AUTH_PROXY_DNS_PORT"}
    sidecar["env"] = [e for e in sidecar["env"] if e["name"] not in listeners]
    assert stripped["metadata"]["labels"]["sandbox.dev/egress"] == "enforced"
    stripped["metadata"]["labels"]["sandbox.dev/egress"] = "unenforced"
    assert stripped == off


@pytest.mark.parametrize("settings", PROXY_SETTINGS)
def test_ca_trust_contract(settings: ProxySettings) -> None:
    trust = containers(to_dict(build_pod_spec("demo", settings=settings)))["ca-trust"]
    assert trust == {
        "name": "ca-trust",
        # The sidecar's image: its system roots and the command; the workload image may be any.
        "image": "auth-proxy:dev",
        "imagePullPolicy": "IfNotPresent",
        "command": [
            "auth-proxy-trust",
            *("--ca", "/etc/proxy-ca/ca.crt"),
            *("--out", "/var/lib/proxy-ca"),
        ],
        "resources": {
            "requests": {"cpu": "10m", "memory": "32Mi"},
            "limits": {"cpu": "250m", "memory": "128Mi"},
        },
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10000,
            "runAsGroup": 10000,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [
            {"name": "proxy-ca-cert", "mountPath": "/etc/proxy-ca", "readOnly": True},
            {"name": "proxy-ca-bundle", "mountPath": "/var/lib/proxy-ca"},
        ],
    }


def test_ca_trust_follows_the_settings() -> None:
    settings = NATIVE.replace(ca_trust_resources=Resources("5m", "8Mi", "50m", "32Mi"))
    trust = containers(to_dict(build_pod_spec("demo", settings=settings)))["ca-trust"]
    assert trust["resources"]["limits"] == {"cpu": "50m", "memory": "32Mi"}


def test_the_trust_files_are_where_the_variables_point() -> None:
    # addons/trust.py names the files (the sidecar image carries addons/ only); the pod spec
    # points the variables at them.
    from addons import trust

    names = (trust.BUNDLE_FILE, trust.CERTS_DIR, trust.TRUSTSTORE_FILE, trust.CA_FILE)
    assert names == (
        c.CA_BUNDLE_FILE_NAME,
        c.CA_CERTS_DIR_NAME,
        c.TRUSTSTORE_FILE_NAME,
        c.TRUST_CA_FILE_NAME,
    )
    assert trust.TRUSTSTORE_PASSWORD == c.TRUSTSTORE_PASSWORD
    assert (trust.PROG, c.TRUST_COMMAND) == ("auth-proxy-trust", "auth-proxy-trust")
    paths = {c.CA_BUNDLE, c.CA_CERTS_DIR, c.TRUST_CA_CERT}
    assert set(proxy_env().values()) >= paths
    assert f"-Djavax.net.ssl.trustStore={c.TRUSTSTORE}" in proxy_env()["JAVA_TOOL_OPTIONS"]


@pytest.mark.parametrize("settings", ALL_SETTINGS)
def test_only_the_lock_gets_a_capability(settings: ProxySettings) -> None:
    for name, container in containers(to_dict(build_pod_spec("d", settings=settings))).items():
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, name
        assert context["capabilities"]["drop"] == ["ALL"], name
        # A workload with NET_ADMIN could flush the ruleset; with SETUID, become the sidecar.
        expected_add = ["NET_ADMIN"] if name == "egress-lock" else None
        assert context["capabilities"].get("add") == expected_add, name
        assert context.get("privileged") is None, name
        assert (context["runAsUser"] == 0) == (name == "egress-lock"), name


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({}, id="native"),
        pytest.param({"egress_enforcement": False}, id="unenforced"),
        pytest.param({"sidecar_mode": "container"}, id="container-sidecar"),
    ],
)
def test_the_workload_may_not_be_the_sidecars_uid(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError) as err:
        ProxySettings(workload_uid=c.SIDECAR_UID, **changes)
    text = str(err.value)
    for fragment in ("workload_uid 10000", "SIDECAR_UID 10000", "egress lock", "Fix:"):
        assert fragment in text, text


def test_without_the_proxy_any_workload_uid_is_allowed() -> None:
    settings = NO_PROXY.replace(workload_uid=c.SIDECAR_UID)
    workload = containers(to_dict(build_pod_spec("d", settings=settings)))["workload"]
    assert workload["securityContext"]["runAsUser"] == 10000


@pytest.mark.parametrize("settings", PROXY_SETTINGS)
def test_mounts_and_volumes(settings: ProxySettings) -> None:
    pod = to_dict(build_pod_spec("demo", settings=settings))
    by_name = containers(pod)
    volumes = volumes_of(pod)
    sidecar, workload = mounts_of(by_name["auth-proxy"]), mounts_of(by_name["workload"])

    ca = volumes[sidecar["/certs"]["name"]]
    assert sidecar["/certs"]["readOnly"] is True
    assert ca["secret"]["secretName"] == "sandbox-proxy-ca"

    policy = sidecar["/etc/auth-proxy"]
    assert policy["readOnly"] is True
    assert "subPath" not in policy, "a subPath mount never sees ConfigMap updates"
    assert volumes[policy["name"]]["configMap"]["name"] == "sandbox-proxy-policy"

    # The read-only root filesystem needs somewhere to write: mitmproxy's confdir lives in /tmp.
    assert "emptyDir" in volumes[sidecar["/tmp"]["name"]]
    assert not sidecar["/tmp"].get("readOnly")

    cert = workload["/etc/proxy-ca"]
    assert cert["readOnly"] is True
    assert volumes[cert["name"]]["secret"]["items"] == [{"key": "tls.crt", "path": "ca.crt"}]
    bundle = workload["/var/lib/proxy-ca"]
    assert "emptyDir" in volumes[bundle["name"]]
    # Written by ca-trust; the workload only reads it.
    assert bundle["readOnly"] is True
    assert set(workload) == {"/etc/proxy-ca", "/var/lib/proxy-ca"}

    trust = mounts_of(by_name["ca-trust"])
    assert set(trust) == {"/etc/proxy-ca", "/var/lib/proxy-ca"}
    assert trust["/etc/proxy-ca"] == cert
    assert trust["/var/lib/proxy-ca"]["name"] == bundle["name"]
    assert not trust["/var/lib/proxy-ca"].get("readOnly")


@pytest.mark.parametrize("settings", PROXY_SETTINGS)
def test_workload_env_contract(settings: ProxySettings) -> None:
    workload = containers(to_dict(build_pod_spec("demo", settings=settings)))["workload"]
    bundle = "/var/lib/proxy-ca/ca-bundle.crt"
    assert env_of(workload) == {
        "HTTP_PROXY": "http://127.0.0.1:8080",
        "HTTPS_PROXY": "http://127.0.0.1:8080",
        "http_proxy": "http://127.0.0.1:8080",
        "https_proxy": "http://127.0.0.1:8080",
        "NO_PROXY": "localhost,127.0.0.1,::1",
        "no_proxy": "localhost,127.0.0.1,::1",
        "NODE_USE_ENV_PROXY": "1",
        # Adds to Node's roots: our CA alone.
        "NODE_EXTRA_CA_CERTS": "/var/lib/proxy-ca/ca.crt",
        # Replace a tool's roots: the full bundle.
        "SSL_CERT_FILE": bundle,
        "REQUESTS_CA_BUNDLE": bundle,
        "CURL_CA_BUNDLE": bundle,
        "GIT_SSL_CAINFO": bundle,
        "PIP_CERT": bundle,
        "AWS_CA_BUNDLE": bundle,
        "CARGO_HTTP_CAINFO": bundle,
        "DENO_CERT": bundle,
        "CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE": bundle,
        "NIX_SSL_CERT_FILE": bundle,
        "BUNDLE_SSL_CA_CERT": bundle,
        "npm_config_cafile": bundle,
        "HTTPLIB2_CA_CERTS": bundle,
        "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH": bundle,
        "SSL_CERT_DIR": "/var/lib/proxy-ca/certs",
        "JAVA_TOOL_OPTIONS": (
            "-Djavax.net.ssl.trustStore=/var/lib/proxy-ca/truststore.p12 "
            "-Djavax.net.ssl.trustStoreType=PKCS12 -Djavax.net.ssl.trustStorePassword=changeit "
            "-Dhttps.proxyHost=127.0.0.1 -Dhttps.proxyPort=8080 "
            "-Dhttp.proxyHost=127.0.0.1 -Dhttp.proxyPort=8080 "
            "-Dhttp.nonProxyHosts=localhost|127.0.0.1|[::1]"
        ),
    }


def test_java_tool_options_follow_the_proxy_port() -> None:
    workload = containers(to_dict(build_pod_spec("d", settings=NATIVE.replace(proxy_port=3128))))[
        "workload"
    ]
    options = env_of(workload)["JAVA_TOOL_OPTIONS"].split(" ")
    assert "-Dhttps.proxyPort=3128" in options and "-Dhttp.proxyPort=3128" in options
    assert env_of(workload)["HTTPS_PROXY"] == "http://127.0.0.1:3128"


@pytest.mark.parametrize("settings", ALL_SETTINGS)
def test_workload_is_locked_down_and_keeps_its_entrypoint(settings: ProxySettings) -> None:
    workload = containers(to_dict(build_pod_spec("demo", settings=settings)))["workload"]
    assert workload["image"] == "sandbox-executor:dev"
    assert "command" not in workload and "args" not in workload
    context = workload["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] == 1000
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}


@pytest.mark.parametrize("settings", ALL_SETTINGS)
@pytest.mark.parametrize("warm", [False, True], ids=["on-demand", "warm"])
def test_pod_level_fields(settings: ProxySettings, warm: bool) -> None:
    pod = (
        build_warm_pod_spec("p", settings=settings)
        if warm
        else build_pod_spec("d", settings=settings)
    )
    spec = to_dict(pod)["spec"]
    assert spec["runtimeClassName"] == "kata-qemu"
    assert spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False
    assert spec["shareProcessNamespace"] is False


def test_runtime_class_can_be_left_to_the_cluster() -> None:
    spec = to_dict(build_pod_spec("d", settings=NATIVE.replace(runtime_class_name=None)))["spec"]
    assert "runtimeClassName" not in spec


@pytest.mark.parametrize(
    ("build", "status", "pool"),
    [
        pytest.param(lambda s: build_pod_spec("d", settings=s), "manual", None, id="on-demand"),
        pytest.param(lambda s: build_warm_pod_spec("py", settings=s), "warm", "py", id="warm"),
    ],
)
@pytest.mark.parametrize("settings", ALL_SETTINGS)
def test_labels(
    build: Callable[[ProxySettings], V1Pod], status: str, pool: str | None, settings: ProxySettings
) -> None:
    labels = to_dict(build(settings))["metadata"]["labels"]
    expected = {
        "app.kubernetes.io/managed-by": "sandbox-manager",
        "app.kubernetes.io/part-of": "sandbox",
        "app.kubernetes.io/component": "sandbox",
        "sandbox.dev/pool-status": status,
        "sandbox.dev/auth-proxy": "enabled" if settings.enable_auth_proxy else "disabled",
        "sandbox.dev/egress": (
            "enforced"
            if settings.enable_auth_proxy and settings.egress_enforcement
            else "unenforced"
        ),
    }
    if pool:
        expected["sandbox.dev/pool"] = pool
    assert labels == expected


def test_warm_pod_names() -> None:
    generated = to_dict(build_warm_pod_spec("python"))["metadata"]
    assert generated["generateName"] == "python-"
    assert "name" not in generated
    named = to_dict(build_warm_pod_spec("python", name="python-7"))["metadata"]
    assert named["name"] == "python-7"
    assert "generateName" not in named


def test_warm_pod_has_no_user_env() -> None:
    workload = containers(to_dict(build_warm_pod_spec("python")))["workload"]
    assert env_of(workload) == proxy_env()


# --- proxy off: the same pod without any of it -------------------------------------------------


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda s: build_pod_spec("d", env=USER_ENV, settings=s), id="on-demand"),
        pytest.param(lambda s: build_warm_pod_spec("py", settings=s), id="warm"),
    ],
)
def test_proxy_off_is_the_same_pod_without_the_proxy(
    build: Callable[[ProxySettings], V1Pod],
) -> None:
    on, off = to_dict(build(NATIVE)), to_dict(build(NO_PROXY))
    # Strip from the proxied pod exactly what the proxy adds; what is left must be the plain pod.
    stripped = copy.deepcopy(on)
    spec = stripped["spec"]
    del spec["initContainers"], spec["volumes"], spec["securityContext"]
    workload = spec["containers"][0]
    del workload["volumeMounts"]
    workload["env"] = [e for e in workload["env"] if e["name"] not in c.RESERVED_ENV_NAMES]
    if not workload["env"]:
        del workload["env"]
    stripped["metadata"]["labels"]["sandbox.dev/auth-proxy"] = "disabled"
    stripped["metadata"]["labels"]["sandbox.dev/egress"] = "unenforced"
    assert stripped == off
    assert "auth-proxy" not in containers(off)
    assert "volumes" not in off["spec"]


def test_proxy_off_lets_the_user_set_proxy_variables() -> None:
    env = {"HTTPS_PROXY": "http://corp-proxy:3128", "SSL_CERT_FILE": "/etc/corp.pem"}
    workload = containers(to_dict(build_pod_spec("d", env=env, settings=NO_PROXY)))["workload"]
    assert env_of(workload) == env


# --- the CA key never reaches the workload -----------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_key_never_reaches_the_workload(scenario: str) -> None:
    pod = to_dict(SCENARIOS[scenario]())
    assert key_exposures(pod) == []
    # And, spelled out: every volume that could hold tls.key is mounted by the sidecar alone.
    volumes = volumes_of(pod)
    for container in containers(pod).values():
        for mount in container.get("volumeMounts") or []:
            if volume_may_expose_key(volumes[mount["name"]]):
                assert container["name"] == "auth-proxy", mount


def test_the_sidecar_does_get_the_key() -> None:
    pod = to_dict(build_pod_spec("d"))
    sidecar = containers(pod)["auth-proxy"]
    ca_volume = volumes_of(pod)[mounts_of(sidecar)["/certs"]["name"]]
    assert volume_may_expose_key(ca_volume), "the audit would be vacuous otherwise"
    assert "items" not in ca_volume["secret"]


def _mount_into_workload(pod: dict[str, Any], volume: dict[str, Any]) -> dict[str, Any]:
    pod = copy.deepcopy(pod)
    pod["spec"]["volumes"].append(volume)
    workload = containers(pod)["workload"]
    workload["volumeMounts"].append({"name": volume["name"], "mountPath": "/x"})
    return pod


@pytest.mark.parametrize(
    "volume",
    [
        pytest.param(
            {"name": "leak", "secret": {"secretName": "sandbox-proxy-ca"}}, id="whole-secret"
        ),
        pytest.param(
            {
                "name": "leak",
                "secret": {
                    "secretName": "sandbox-proxy-ca",
                    "items": [{"key": "tls.crt", "path": "a"}, {"key": "tls.key", "path": "b"}],
                },
            },
            id="items-include-the-key",
        ),
        pytest.param(
            {
                "name": "leak",
                "projected": {"sources": [{"secret": {"name": "sandbox-proxy-ca"}}]},
            },
            id="projected-secret",
        ),
        pytest.param({"name": "leak", "hostPath": {"path": "/var/lib/kubelet"}}, id="host-path"),
    ],
)
def test_the_audit_catches_a_leaking_volume(volume: dict[str, Any]) -> None:
    pod = _mount_into_workload(to_dict(build_pod_spec("d")), volume)
    assert key_exposures(pod) == ["container workload mounts volume leak"]


@pytest.mark.parametrize(
    ("mutate", "finding"),
    [
        pytest.param(
            lambda pod: containers(pod)["workload"]["env"].append(
                {
                    "name": "K",
                    "valueFrom": {"secretKeyRef": {"name": "sandbox-proxy-ca", "key": "tls.key"}},
                }
            ),
            "env K",
            id="secret-key-ref",
        ),
        pytest.param(
            lambda pod: containers(pod)["workload"].__setitem__(
                "envFrom", [{"secretRef": {"name": "sandbox-proxy-ca"}}]
            ),
            "envFrom",
            id="env-from",
        ),
        pytest.param(
            lambda pod: pod["spec"].__setitem__("shareProcessNamespace", True),
            "shareProcessNamespace",
            id="shared-process-namespace",
        ),
    ],
)
def test_the_audit_catches_other_leaks(mutate: Callable[[Any], None], finding: str) -> None:
    pod = to_dict(build_pod_spec("d"))
    mutate(pod)
    [found] = key_exposures(pod)
    assert finding in found


def test_the_audit_accepts_a_typed_pod() -> None:
    assert key_exposures(build_pod_spec("d")) == []


# --- user env: kept, but the reserved names are the proxy's ------------------------------------


RESERVED = sorted(c.RESERVED_ENV_NAMES)
# Names tools read in any case: every spelling is reserved.
CASE_VARIANTS = [
    "Http_Proxy",
    "HTTPS_proxy",
    "No_Proxy",
    "hTTp_pRoXy",
    "NPM_CONFIG_CAFILE",
    "npm_CONFIG_cafile",
    "Npm_Config_Cafile",
]


@pytest.mark.parametrize("name", RESERVED + CASE_VARIANTS)
@pytest.mark.parametrize("settings", PROXY_SETTINGS)
def test_reserved_env_cannot_be_overridden(name: str, settings: ProxySettings) -> None:
    with pytest.raises(ValueError, match=rf"env variable {name} is reserved"):
        build_pod_spec("d", env={"OK": "1", name: "http://evil:1"}, settings=settings)


@pytest.mark.parametrize(
    "name",
    [
        # Read in one spelling only (getenv is case-sensitive), so other spellings are the user's.
        "ssl_cert_file",
        "Node_Extra_CA_Certs",
        "java_tool_options",
        "ssl_cert_dir",
        "Aws_Ca_Bundle",
        "node_use_env_proxy",
        # Not ours at all; JDK_JAVA_OPTIONS is the documented way to add JVM flags.
        "JDK_JAVA_OPTIONS",
        "NPM_CONFIG_CAFILE_X",
        "HTTP_PROXY_USER",
        "ALL_PROXY",
        "FTP_PROXY",
    ],
)
def test_other_names_are_not_reserved(name: str) -> None:
    assert not is_reserved_env_name(name)
    workload = containers(to_dict(build_pod_spec("d", env={name: "v"})))["workload"]
    assert env_of(workload)[name] == "v"


def test_user_env_survives_in_order_before_the_proxy_env() -> None:
    env = {"Z_LAST_ALPHABETICALLY": "1", "A_FIRST": "two words", "EMPTY": "", "EQ": "a=b=c"}
    workload = containers(to_dict(build_pod_spec("d", env=env)))["workload"]
    names = [e["name"] for e in workload["env"]]
    assert names[: len(env)] == list(env)
    assert env_of(workload) == env | proxy_env()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        pytest.param({"": "x"}, "name ''", id="empty-name"),
        pytest.param({"A=B": "x"}, "name 'A=B'", id="equals-in-name"),
        pytest.param({"A\nB": "x"}, "name 'A\\\\nB'", id="newline-in-name"),
        pytest.param({"N": 3}, "env variable N", id="non-string-value"),
    ],
)
def test_malformed_env_is_refused(env: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_pod_spec("d", env=env)


# --- names, labels, settings -------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["Demo", "-demo", "demo-", "de_mo", "", "a" * 254], ids=lambda n: repr(n)[:20]
)
def test_bad_pod_names(name: str) -> None:
    with pytest.raises(ValueError, match="pod name"):
        build_pod_spec(name)
    with pytest.raises(ValueError, match="pod name"):
        build_warm_pod_spec("pool", name=name)


@pytest.mark.parametrize("pool", ["Py", "py.thon", "py_thon", "", "p" * 58])
def test_bad_pool_names(pool: str) -> None:
    with pytest.raises(ValueError, match="pool name"):
        build_warm_pod_spec(pool)


@pytest.mark.parametrize(
    "key",
    [c.LABEL_POOL_STATUS, c.LABEL_POOL, c.LABEL_MANAGED_BY, c.LABEL_AUTH_PROXY, c.LABEL_EGRESS],
)
def test_managed_labels_cannot_be_overridden(key: str) -> None:
    with pytest.raises(ValueError, match=key):
        build_pod_spec("d", labels={key: "x"})
    with pytest.raises(ValueError, match=key):
        build_warm_pod_spec("p", labels={key: "x"})


@pytest.mark.parametrize(
    "labels",
    [{"bad key!": "v"}, {"k": "bad value!"}, {"k": "v" * 64}, {"UPPER.example/k": "v"}],
    ids=["key-chars", "value-chars", "value-too-long", "prefix-not-dns"],
)
def test_invalid_labels(labels: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="label"):
        build_pod_spec("d", labels=labels)


def test_custom_image_and_resources() -> None:
    resources = Resources("1", "2Gi", "2", "4Gi")
    workload = containers(to_dict(build_pod_spec("d", image="python:3.12", resources=resources)))[
        "workload"
    ]
    assert workload["image"] == "python:3.12"
    assert workload["resources"] == {
        "requests": {"cpu": "1", "memory": "2Gi"},
        "limits": {"cpu": "2", "memory": "4Gi"},
    }


def test_settings_flow_into_the_pod() -> None:
    settings = ProxySettings(
        sidecar_image="registry.example/auth-proxy:1.0",
        executor_image="registry.example/executor:1.0",
        proxy_port=3128,
        health_port=9090,
        ca_secret_name="other-ca",
        policy_configmap_name="other-policy",
        runtime_class_name="kata-clh",
        log_level="debug",
    )
    pod = to_dict(build_pod_spec("d", settings=settings))
    by_name = containers(pod)
    sidecar, workload = by_name["auth-proxy"], by_name["workload"]
    assert sidecar["image"] == "registry.example/auth-proxy:1.0"
    assert workload["image"] == "registry.example/executor:1.0"
    assert [p["containerPort"] for p in sidecar["ports"]] == [3128, 9090, 8082, 8053, 8053]
    assert sidecar["readinessProbe"]["httpGet"]["port"] == 9090
    assert env_of(sidecar)["AUTH_PROXY_LISTEN_PORT"] == "3128"
    assert env_of(sidecar)["AUTH_PROXY_LOG_LEVEL"] == "debug"
    assert env_of(workload)["HTTPS_PROXY"] == "http://127.0.0.1:3128"
    secrets = {v["secret"]["secretName"] for v in pod["spec"]["volumes"] if "secret" in v}
    assert secrets == {"other-ca"}
    assert volumes_of(pod)["proxy-policy"]["configMap"]["name"] == "other-policy"
    assert pod["spec"]["runtimeClassName"] == "kata-clh"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param({"sidecar_mode": "sidecar"}, "sidecar_mode", id="unknown-mode"),
        pytest.param({"proxy_port": 0}, "proxy_port", id="port-zero"),
        pytest.param({"health_port": 70000}, "health_port", id="port-too-big"),
        pytest.param({"health_port": 8080}, "both 8080", id="ports-clash"),
        pytest.param({"transparent_port": 0}, "transparent_port 0", id="transparent-zero"),
        pytest.param({"dns_port": 65536}, "dns_port 65536", id="dns-too-big"),
        pytest.param({"dns_port": True}, "dns_port True", id="dns-bool"),
        pytest.param({"transparent_port": "8082"}, "transparent_port '8082'", id="port-string"),
        pytest.param(
            {"transparent_port": 8080},
            "proxy_port and transparent_port are both 8080",
            id="transparent-is-proxy",
        ),
        pytest.param(
            {"dns_port": 8081}, "health_port and dns_port are both 8081", id="dns-is-health"
        ),
        pytest.param(
            {"dns_port": 8082},
            "transparent_port and dns_port are both 8082",
            id="dns-is-transparent",
        ),
        pytest.param({"egress_enforcement": "no"}, "egress_enforcement", id="enforcement-not-bool"),
        pytest.param({"sidecar_image": ""}, "sidecar_image", id="empty-image"),
        pytest.param({"runtime_class_name": ""}, "runtime_class_name", id="empty-runtime-class"),
        pytest.param({"workload_uid": 0}, "workload_uid", id="root-workload"),
        pytest.param({"log_level": "verbose"}, "log_level", id="unknown-log-level"),
        pytest.param({"sidecar_tmp_size": "lots"}, "sidecar_tmp_size", id="bad-size"),
    ],
)
def test_invalid_settings(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ProxySettings(**changes)


def test_invalid_resources() -> None:
    with pytest.raises(ValueError, match="memory_limit"):
        Resources("100m", "64Mi", "250m", "128 MB")


def test_default_settings() -> None:
    s = DEFAULT_SETTINGS
    assert (s.sidecar_image, s.executor_image) == ("auth-proxy:dev", "sandbox-executor:dev")
    assert (s.proxy_port, s.health_port) == (8080, 8081)
    assert (s.ca_secret_name, s.policy_configmap_name) == (
        "sandbox-proxy-ca",
        "sandbox-proxy-policy",
    )
    assert s.runtime_class_name == "kata-qemu"
    assert s.sidecar_mode == "native"
    assert s.enable_auth_proxy is True
    assert s.sidecar_resources == Resources("100m", "64Mi", "250m", "128Mi")
    assert (s.egress_enforcement, s.enforces_egress) == (True, True)
    assert (s.transparent_port, s.dns_port) == (8082, 8053)
    assert s.egress_lock_resources == Resources("10m", "16Mi", "100m", "64Mi")
    assert s.ca_trust_resources == Resources("10m", "32Mi", "250m", "128Mi")
    assert s.workload_uid != c.SIDECAR_UID


def test_every_trust_variable_is_reserved() -> None:
    # The issue's list: each one, exactly as tools spell it.
    listed = [
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "GIT_SSL_CAINFO",
        "PIP_CERT",
        "NODE_EXTRA_CA_CERTS",
        "NODE_USE_ENV_PROXY",
        "AWS_CA_BUNDLE",
        "CARGO_HTTP_CAINFO",
        "DENO_CERT",
        "CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE",
        "NIX_SSL_CERT_FILE",
        "BUNDLE_SSL_CA_CERT",
        "npm_config_cafile",
        "HTTPLIB2_CA_CERTS",
        "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH",
        "JAVA_TOOL_OPTIONS",
    ]
    assert set(listed) <= c.RESERVED_ENV_NAMES
    assert set(proxy_env()) == c.RESERVED_ENV_NAMES
    for name in c.CASE_INSENSITIVE_RESERVED_ENV_NAMES:
        assert name == name.lower() and name in {n.lower() for n in c.RESERVED_ENV_NAMES}


def test_interface_constants() -> None:
    # Shared with the sidecar image, the lock command and the e2e tests (issue 14): exact.
    assert (c.TRANSPARENT_PORT, c.TRANSPARENT_PORT_NAME) == (8082, "transparent")
    assert (c.DNS_PORT, c.DNS_PORT_NAME, c.DNS_TCP_PORT_NAME) == (8053, "dns", "dns-tcp")
    assert (c.EGRESS_INIT_CONTAINER, c.EGRESS_LOCK_COMMAND, c.EGRESS_TABLE) == (
        "egress-lock",
        "auth-proxy-lock-egress",
        "auth_proxy_egress",
    )
    assert (c.LABEL_EGRESS, c.EGRESS_ENFORCED, c.EGRESS_UNENFORCED) == (
        "sandbox.dev/egress",
        "enforced",
        "unenforced",
    )
    assert (c.ENV_TRANSPARENT_PORT, c.ENV_DNS_PORT) == (
        "AUTH_PROXY_TRANSPARENT_PORT",
        "AUTH_PROXY_DNS_PORT",
    )
    assert c.SIDECAR_UID == 10000
    # Shared with the sidecar image and the docs (issue 16): exact.
    assert (c.TRUST_INIT_CONTAINER, c.TRUST_COMMAND) == ("ca-trust", "auth-proxy-trust")
    assert (c.CA_BUNDLE, c.CA_CERTS_DIR, c.TRUSTSTORE, c.TRUST_CA_CERT) == (
        "/var/lib/proxy-ca/ca-bundle.crt",
        "/var/lib/proxy-ca/certs",
        "/var/lib/proxy-ca/truststore.p12",
        "/var/lib/proxy-ca/ca.crt",
    )
    assert c.TRUSTSTORE_PASSWORD == "changeit"
