"""The pod runner's pure checks (tests/support/podspec.py), without Docker: which pod specs
`check_pod` accepts, and what it refuses, each with the field it names."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from k8s import constants as c
from tests.support import podrunner
from tests.support.podspec import UnsupportedPodSpec, check_pod, quantity

EXPECTED = Path(__file__).resolve().parent / "k8s_expected"
SECRETS, CONFIG_MAPS = {"ca"}, {"policy"}

Mutation = Callable[[dict], Any]


def base_pod() -> dict:
    """A small pod using every feature the runner implements; check_pod accepts it."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "ns", "labels": {"a": "b"}, "annotations": {}},
        "spec": {
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 5,
            "hostAliases": [{"ip": "127.0.0.1", "hostnames": ["upstream.test"]}],
            "securityContext": {"fsGroup": 10000, "seccompProfile": {"type": "RuntimeDefault"}},
            "volumes": [
                {
                    "name": "ca",
                    "secret": {
                        "secretName": "ca",
                        "defaultMode": 0o440,
                        "items": [{"key": "tls.crt", "path": "tls.crt"}],
                    },
                },
                {"name": "policy", "configMap": {"name": "policy"}},
                {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
            ],
            "initContainers": [
                {
                    "name": "proxy",
                    "image": "auth-proxy:dev",
                    "restartPolicy": "Always",
                    "ports": [{"name": "health", "containerPort": 8081, "protocol": "TCP"}],
                    "startupProbe": {"httpGet": {"path": "/readyz", "port": "health"}},
                    "volumeMounts": [{"name": "ca", "mountPath": "/certs", "readOnly": True}],
                }
            ],
            "containers": [
                {
                    "name": "workload",
                    "image": "sandbox-executor:dev",
                    "imagePullPolicy": "Never",
                    "command": ["sleep", "infinity"],
                    "env": [{"name": "A", "value": "1"}],
                    "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}},
                    "securityContext": {
                        "runAsNonRoot": True,
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                    "readinessProbe": {
                        "httpGet": {
                            "path": "/",
                            "port": 8080,
                            "httpHeaders": [{"name": "X", "value": "1"}],
                        },
                        "periodSeconds": 1,
                    },
                }
            ],
        },
    }


def at(pod: dict, path: str) -> Any:
    """`pod` at a dotted path; numbers index lists ("spec.containers.0.image")."""
    node: Any = pod
    for part in path.split(".") if path else []:
        node = node[int(part)] if part.isdigit() else node[part]
    return node


def put(path: str, value: Any) -> Mutation:
    parent, _, key = path.rpartition(".")

    def mutate(pod: dict) -> None:
        node = at(pod, parent)
        node[int(key) if key.isdigit() else key] = copy.deepcopy(value)

    return mutate


def drop(path: str) -> Mutation:
    parent, _, key = path.rpartition(".")
    return lambda pod: at(pod, parent).pop(int(key) if key.isdigit() else key)


INIT, CTR = "spec.initContainers.0", "spec.containers.0"


# --- accepted ----------------------------------------------------------------------------------

ACCEPTED: dict[str, Mutation] = {
    "base": lambda pod: None,
    "restart-never": put("spec.restartPolicy", "Never"),
    "restart-on-failure": put("spec.restartPolicy", "OnFailure"),
    "no-restart-policy": drop("spec.restartPolicy"),
    "seccomp-unconfined": put("spec.securityContext.seccompProfile.type", "Unconfined"),
    "optional-unknown-secret": put("spec.volumes.0.secret", {"secretName": "x", "optional": True}),
    "optional-unknown-configmap": put("spec.volumes.1.configMap", {"name": "x", "optional": True}),
    "emptydir-null": put("spec.volumes.2.emptyDir", None),
    "emptydir-default-medium": put("spec.volumes.2.emptyDir", {"medium": ""}),
    "item-in-subfolder": put("spec.volumes.0.secret.items.0.path", "a/b.crt"),
    "pull-if-not-present": put(f"{CTR}.imagePullPolicy", "IfNotPresent"),
    "probe-port-number": put(f"{INIT}.startupProbe.httpGet.port", 8081),
    "probe-scheme-http": put(f"{CTR}.readinessProbe.httpGet.scheme", "HTTP"),
    "fallback-to-logs": put(f"{CTR}.terminationMessagePolicy", "FallbackToLogsOnError"),
    "default-termination-path": put(f"{CTR}.terminationMessagePath", "/dev/termination-log"),
    "dollar-without-paren": put(f"{CTR}.args", ["echo $HOME", "${X}"]),
    "requests-and-limits": put(
        f"{CTR}.resources", {"requests": {"cpu": "0.25", "memory": "1Gi"}, "limits": {"cpu": "2"}}
    ),
    "privileged-false": put(f"{CTR}.securityContext.privileged", False),
    "liveness-probe": put(f"{CTR}.livenessProbe", {"httpGet": {"port": 8080}}),
}


@pytest.mark.parametrize("mutate", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_check_pod_accepts(mutate: Mutation) -> None:
    pod = base_pod()
    mutate(pod)
    assert check_pod(pod, SECRETS, CONFIG_MAPS) == []


@pytest.mark.parametrize(
    "name", sorted(p.stem for p in EXPECTED.glob("pod-*.yaml")), ids=str
)  # the project's own pods, as the builders make them
def test_check_pod_accepts_the_projects_pods(name: str) -> None:
    pod = yaml.safe_load((EXPECTED / f"{name}.yaml").read_text())
    assert check_pod(pod, {c.CA_SECRET_NAME}, {c.POLICY_CONFIGMAP_NAME}) == []


# --- refused -----------------------------------------------------------------------------------

# id -> (mutation, the text the one problem carries: the field's path, and why)
REFUSED: dict[str, tuple[Mutation, str]] = {
    "unknown-pod-key": (put("status", {}), "pod.status"),
    "api-version": (put("apiVersion", "v2"), "apiVersion = 'v2': want v1"),
    "kind": (put("kind", "Deployment"), "kind = 'Deployment': want Pod"),
    "no-name": (drop("metadata.name"), "metadata.name = None: a name is required"),
    "generate-name": (put("metadata.generateName", "p-"), "metadata.generateName"),
    "host-network": (put("spec.hostNetwork", True), "spec.hostNetwork = True: not implemented"),
    "node-selector": (put("spec.nodeSelector", {"a": "b"}), "spec.nodeSelector"),
    "restart-policy": (put("spec.restartPolicy", "Sometimes"), "unknown restart policy"),
    "token-automount-default": (
        drop("spec.automountServiceAccountToken"),
        "spec.automountServiceAccountToken = None: the runner has no service account token",
    ),
    "token-automount-true": (put("spec.automountServiceAccountToken", True), "set it to false"),
    "service-links": (drop("spec.enableServiceLinks"), "spec.enableServiceLinks = None"),
    "host-alias-key": (put("spec.hostAliases.0.extra", 1), "spec.hostAliases[0].extra"),
    "pod-sysctls": (put("spec.securityContext.sysctls", []), "spec.securityContext.sysctls"),
    "seccomp-localhost": (
        put("spec.securityContext.seccompProfile", {"type": "Localhost"}),
        "spec.securityContext.seccompProfile.type = 'Localhost'",
    ),
    "seccomp-profile-key": (
        put("spec.securityContext.seccompProfile.localhostProfile", "x"),
        "seccompProfile.localhostProfile",
    ),
    "secret-unknown": (
        put("spec.volumes.0.secret.secretName", "missing"),
        "spec.volumes[0].secret.secretName = 'missing': no such Secret",
    ),
    "configmap-unknown": (
        put("spec.volumes.1.configMap.name", "missing"),
        "spec.volumes[1].configMap.name = 'missing': no such ConfigMap",
    ),
    "secret-key": (put("spec.volumes.0.secret.extra", 1), "spec.volumes[0].secret.extra"),
    "item-absolute": (
        put("spec.volumes.0.secret.items.0.path", "/etc/x"),
        "items[0].path = '/etc/x': must be a relative path",
    ),
    "item-dotdot": (
        put("spec.volumes.0.secret.items.0.path", "a/../../x"),
        "items[0].path = 'a/../../x'",
    ),
    "item-empty": (put("spec.volumes.0.secret.items.0.path", ""), "items[0].path = ''"),
    "item-key": (put("spec.volumes.0.secret.items.0.sha", "x"), "items[0].sha"),
    "emptydir-memory": (
        put("spec.volumes.2.emptyDir.medium", "Memory"),
        "emptyDir.medium = 'Memory': only the default",
    ),
    "emptydir-size": (
        put("spec.volumes.2.emptyDir.sizeLimit", "64MB"),
        "not a Kubernetes quantity",
    ),
    "no-image": (drop(f"{CTR}.image"), "(workload).image = None: required"),
    "pull-always": (put(f"{CTR}.imagePullPolicy", "Always"), "no registry here"),
    "container-restart-policy": (
        put(f"{CTR}.restartPolicy", "Always"),
        "(workload).restartPolicy = 'Always': only 'Always' on an init container",
    ),
    "termination-policy": (put(f"{CTR}.terminationMessagePolicy", "Both"), "= 'Both': unknown"),
    "termination-path": (
        put(f"{CTR}.terminationMessagePath", "/tmp/x"),
        "terminationMessagePath = '/tmp/x': only the default path",
    ),
    "command-var": (put(f"{CTR}.command", ["echo", "$(HOME)"]), "command[1] = '$(HOME)'"),
    "args-var": (put(f"{CTR}.args", ["$(A)"]), "args[0] = '$(A)': $(VAR) expansion"),
    "env-var": (put(f"{CTR}.env.0.value", "x$(A)"), "env[0].value = 'x$(A)'"),
    "env-value-from": (put(f"{CTR}.env.0.valueFrom", {}), "env[0].valueFrom"),
    "env-from": (put(f"{CTR}.envFrom", [{"secretRef": {"name": "ca"}}]), "(workload).envFrom"),
    "port-udp": (
        put(f"{INIT}.ports.0.protocol", "UDP"),
        "ports[0].protocol = 'UDP': only TCP",
    ),
    "host-port": (put(f"{INIT}.ports.0.hostPort", 80), "ports[0].hostPort"),
    "resource-gpu": (
        lambda pod: at(pod, f"{CTR}.resources.limits").update({"nvidia.com/gpu": "1"}),
        "resources.limits.nvidia.com/gpu = '1': only cpu and memory",
    ),
    "resource-quantity": (
        put(f"{CTR}.resources.limits.memory", "lots"),
        "resources.limits.memory = 'lots': not a Kubernetes quantity",
    ),
    "resource-claims": (put(f"{CTR}.resources.claims", []), "resources.claims"),
    "privileged": (put(f"{CTR}.securityContext.privileged", True), "privileged containers"),
    "proc-mount": (put(f"{CTR}.securityContext.procMount", "Unmasked"), "procMount"),
    "capabilities-key": (put(f"{CTR}.securityContext.capabilities.keep", []), "capabilities.keep"),
    "container-seccomp": (
        put(f"{CTR}.securityContext.seccompProfile", {"type": "Localhost"}),
        "(workload).securityContext.seccompProfile.type",
    ),
    "mount-unknown-volume": (
        put(f"{CTR}.volumeMounts.0.name", "nope"),
        "volumeMounts[0].name = 'nope': no such volume",
    ),
    "mount-relative": (put(f"{CTR}.volumeMounts.0.mountPath", "tmp"), "must be absolute"),
    "mount-subpath": (put(f"{CTR}.volumeMounts.0.subPath", "x"), "volumeMounts[0].subPath"),
    "probe-https": (
        put(f"{CTR}.readinessProbe.httpGet.scheme", "HTTPS"),
        "httpGet.scheme = 'HTTPS': only HTTP",
    ),
    "probe-unknown-port-name": (
        put(f"{INIT}.startupProbe.httpGet.port", "admin"),
        "httpGet.port = 'admin': a number or the name",
    ),
    "probe-header-key": (
        put(f"{CTR}.readinessProbe.httpGet.httpHeaders.0.extra", 1),
        "httpHeaders[0].extra",
    ),
    "probe-grpc-key": (put(f"{CTR}.readinessProbe.grpc", {"port": 1}), "readinessProbe.grpc"),
    "probe-host-key": (put(f"{CTR}.readinessProbe.httpGet.host", "x"), "httpGet.host"),
    "init-container-probe": (
        drop(f"{INIT}.restartPolicy"),
        "(proxy).startupProbe: only sidecars and containers take probes",
    ),
    "container-stdin": (put(f"{CTR}.stdin", True), "(workload).stdin"),
}


@pytest.mark.parametrize(("mutate", "needle"), REFUSED.values(), ids=REFUSED.keys())
def test_check_pod_refuses_naming_the_field(mutate: Mutation, needle: str) -> None:
    pod = base_pod()
    mutate(pod)
    problems = check_pod(pod, SECRETS, CONFIG_MAPS)
    assert len(problems) == 1, problems
    assert needle in problems[0], problems


# Changes that break more than one rule: every one is listed, not only the first.
SEVERAL: dict[str, tuple[Mutation, list[str]]] = {
    "host-path-volume": (
        put("spec.volumes.2", {"name": "tmp", "hostPath": {"path": "/"}}),
        ["spec.volumes[2].hostPath", "exactly one of secret, configMap, emptyDir"],
    ),
    "two-sources": (
        put("spec.volumes.2.configMap", {"name": "policy"}),
        ["spec.volumes[2] = ", "exactly one of"],
    ),
    "probe-exec": (
        put(f"{CTR}.livenessProbe", {"exec": {"command": ["true"]}}),
        ["livenessProbe.exec", "only httpGet probes", "httpGet.port = None"],
    ),
    "init-restart-on-failure": (
        put(f"{INIT}.restartPolicy", "OnFailure"),
        [
            "(proxy).restartPolicy = 'OnFailure': only 'Always' on an init container",
            "(proxy).startupProbe: only sidecars and containers take probes",
        ],
    ),
    "duplicate-name": (
        put(f"{CTR}.name", "proxy"),
        ["spec.containers[0](proxy) = 'proxy': duplicate name"],
    ),
    "no-containers": (
        put("spec.containers", []),
        ["spec.containers = None: at least one is required"],
    ),
    "not-an-object": (
        put("spec.securityContext", ["x"]),
        ["spec.securityContext: expected an object, got ['x']"],
    ),
}


@pytest.mark.parametrize(("mutate", "needles"), SEVERAL.values(), ids=SEVERAL.keys())
def test_check_pod_lists_every_problem(mutate: Mutation, needles: list[str]) -> None:
    pod = base_pod()
    mutate(pod)
    problems = "\n".join(check_pod(pod, SECRETS, CONFIG_MAPS))
    for needle in needles:
        assert needle in problems, problems


def test_many_problems_are_reported_at_once() -> None:
    pod = base_pod()
    for mutate, _ in REFUSED.values():
        mutate(pod)
    problems = check_pod(pod, SECRETS, CONFIG_MAPS)
    message = str(UnsupportedPodSpec(problems))
    assert "refusing to run rather than ignore them" in message
    assert len(problems) >= 40 and message.count("\n  - ") == len(problems)


# --- quantities --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", 1), ("0", 0), ("100m", 0.1), ("1.5", 1.5), ("2k", 2000), ("1M", 10**6),
        ("3G", 3 * 10**9), ("64Mi", 64 * 2**20), ("1Gi", 2**30), ("2Ti", 2 * 2**40),
        ("1Ei", 2**60), ("0.5Gi", 2**29),
    ],
    ids=lambda v: str(v),
)  # fmt: skip
def test_quantity_accepts(text: str, value: float) -> None:
    assert quantity(text) == pytest.approx(value)


@pytest.mark.parametrize(
    "text",
    ["", "-1", "+1", "1e3", "1mi", "1MB", "Mi", "1.5.2", " 1", "1 Gi", "0x10", "1K", "lots"],
    ids=lambda v: repr(v),
)
def test_quantity_refuses(text: str) -> None:
    with pytest.raises(ValueError, match=r"not a Kubernetes quantity"):
        quantity(text)


def test_the_runner_uses_these_checks() -> None:
    # The e2e tests import them from the runner; it must be the same code, not a copy.
    assert podrunner.check_pod is check_pod
    assert podrunner.UnsupportedPodSpec is UnsupportedPodSpec
    assert podrunner.quantity is quantity
