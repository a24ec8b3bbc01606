"""The pod runner's pure checks (tests/support/podspec.py), without Docker: which pod specs
`check_pod` accepts, and what it refuses, each with the field it names. Then the runner itself
(tests/support/podrunner.py) driven by a fake `docker`: the Docker options it derives from a pod,
and that a failed init container stops the pod before any later container is created."""

from __future__ import annotations

import base64
import copy
import itertools
import subprocess
from collections.abc import Callable, Iterator
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


# A regular init container like the egress lock: root, NET_ADMIN alone, its own command.
ROOT_INIT = {
    "name": "lock",
    "image": "auth-proxy:dev",
    "command": ["auth-proxy-lock-egress", "--sidecar-uid", "10000"],
    "terminationMessagePolicy": "FallbackToLogsOnError",
    "securityContext": {
        "runAsUser": 0,
        "runAsGroup": 0,
        "runAsNonRoot": False,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    },
}


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
                copy.deepcopy(ROOT_INIT),
                {
                    "name": "proxy",
                    "image": "auth-proxy:dev",
                    "restartPolicy": "Always",
                    "ports": [{"name": "health", "containerPort": 8081, "protocol": "TCP"}],
                    "startupProbe": {"httpGet": {"path": "/readyz", "port": "health"}},
                    "volumeMounts": [{"name": "ca", "mountPath": "/certs", "readOnly": True}],
                },
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


LOCK, INIT, CTR = "spec.initContainers.0", "spec.initContainers.1", "spec.containers.0"


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
    "root-init-alone": lambda pod: pod["spec"]["initContainers"].pop(1),
    "cap-prefixed-name": put(f"{LOCK}.securityContext.capabilities.add", ["CAP_NET_ADMIN"]),
    "cap-drop-named": put(f"{CTR}.securityContext.capabilities.drop", ["NET_RAW", "SETUID"]),
    "udp-port": put(f"{INIT}.ports.0.protocol", "UDP"),
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
    "port-sctp": (
        put(f"{INIT}.ports.0.protocol", "SCTP"),
        "ports[0].protocol = 'SCTP': only TCP and UDP",
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
    "privileged-root-init": (
        put(f"{LOCK}.securityContext.privileged", True),
        "(lock).securityContext.privileged = True: privileged containers are not run",
    ),
    "cap-unknown": (
        put(f"{LOCK}.securityContext.capabilities.add", ["NET_ADMINN"]),
        "(lock).securityContext.capabilities.add[0] = 'NET_ADMINN': not a Linux capability",
    ),
    "cap-lower-case": (
        put(f"{LOCK}.securityContext.capabilities.add", ["net_admin"]),
        "capabilities.add[0] = 'net_admin': not a Linux capability",
    ),
    "cap-unknown-drop": (
        put(f"{CTR}.securityContext.capabilities.drop", ["EVERYTHING"]),
        "(workload).securityContext.capabilities.drop[0] = 'EVERYTHING'",
    ),
    "cap-add-all": (
        put(f"{LOCK}.securityContext.capabilities.add", ["ALL"]),
        "(lock).securityContext.capabilities.add[0] = 'ALL': every capability is not granted",
    ),
    "cap-add-not-a-list": (
        put(f"{LOCK}.securityContext.capabilities.add", "NET_ADMIN"),
        "capabilities.add = 'NET_ADMIN': expected a list",
    ),
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


# --- the runner, driven by a fake docker -------------------------------------------------------


class FakeDocker:
    """Answers the docker commands the runner issues; records them. `wait` returns the exit code
    given for a container; `run` of one may write its termination message file, as a process in
    it would."""

    def __init__(
        self,
        exit_codes: dict[str, int] | None = None,
        logs: dict[str, str] | None = None,
        messages: dict[str, str] | None = None,
        hang: set[str] | None = None,
    ):
        self.exit_codes = exit_codes or {}
        self.logs = logs or {}
        self.messages = messages or {}
        self.hang = hang or set()
        self.calls: list[tuple[str, ...]] = []

    def __call__(
        self, *args: str, check: bool = True, timeout: float | None = None
    ) -> subprocess.CompletedProcess:
        self.calls.append(args)
        out = ""
        if args[:2] == ("image", "inspect"):
            out = "sha256:0" if "{{.Id}}" in args else ""
        elif args[0] == "run":
            self._run(args)
        elif args[0] == "inspect" and "{{.State.Pid}} {{.Id}}" in args:
            out = "4242 infra-id"
        elif args[0] == "inspect":
            out = "0 0"
        elif args[0] == "wait":
            if self.short(args[1]) in self.hang:
                raise subprocess.TimeoutExpired(["docker", *args], timeout or 0)
            out = f"{self.exit_codes.get(self.short(args[1]), 0)}\n"
        elif args[0] == "logs":
            out = self.logs.get(self.short(args[-1]), "")
        return subprocess.CompletedProcess(["docker", *args], 0, out, "")

    @staticmethod
    def short(docker_name: str) -> str:
        return docker_name.removeprefix("t-")

    def _run(self, args: tuple[str, ...]) -> None:
        name = self.short(args[args.index("--name") + 1])
        if name not in self.messages:
            return
        mounts = [args[i + 1] for i, a in enumerate(args) if a == "--mount"]
        [term] = [m for m in mounts if m.endswith("target=/dev/termination-log")]
        source = dict(part.split("=", 1) for part in term.split(",") if "=" in part)["source"]
        Path(source).write_text(self.messages[name])

    def runs(self) -> list[str]:
        """The containers created, in order (infra first)."""
        return [self.short(a[a.index("--name") + 1]) for a in self.calls if a[0] == "run"]

    def run_args(self, name: str) -> tuple[str, ...]:
        [args] = [
            a for a in self.calls if a[0] == "run" and a[a.index("--name") + 1] == f"t-{name}"
        ]
        return args


def project_pod(**changes: Any) -> dict:
    from kubernetes.client import ApiClient

    from k8s.pods import build_pod_spec
    from k8s.settings import DEFAULT_SETTINGS

    pod = build_pod_spec("demo", settings=DEFAULT_SETTINGS.replace(**changes))
    return ApiClient().sanitize_for_serialization(pod)


SECRET = {
    "metadata": {"name": c.CA_SECRET_NAME},
    "data": {"tls.crt": base64.b64encode(b"cert").decode(), "tls.key": "a2V5"},
}
CONFIG_MAP = {"metadata": {"name": c.POLICY_CONFIGMAP_NAME}, "data": {"policy.yaml": "v"}}


@pytest.fixture
def runner_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[FakeDocker], podrunner.PodRunner]]:
    # Volume folders are chowned to the pod's fsGroup; that needs root, which a unit test may
    # not have, and is not what these tests are about.
    monkeypatch.setattr(podrunner.os, "chown", lambda *a, **k: None)
    made: list[podrunner.PodRunner] = []

    def make(docker: FakeDocker) -> podrunner.PodRunner:
        runner = podrunner.PodRunner(
            docker, tmp_path / f"pod{len(made)}", name_prefix="t", secrets=[SECRET],
            config_maps=[CONFIG_MAP], pause_image="pause", log=lambda _: None,
        )  # fmt: skip
        # No real pod namespace: every probe passes, nothing listens.
        monkeypatch.setattr(runner, "probe_once", lambda probe: (200, "ok"))
        monkeypatch.setattr(runner, "_listening", lambda protocol: set())
        made.append(runner)
        return runner

    yield make
    for runner in made:
        runner.stop()


def test_the_lock_runs_first_as_root_with_net_admin_alone(runner_for: Any) -> None:
    docker = FakeDocker()
    runner = runner_for(docker)
    runner.start(project_pod())
    assert docker.runs() == ["infra", "egress-lock", "ca-trust", "auth-proxy", "workload"]
    # Waited for, to exit 0, after it was created and before the sidecar was.
    index = docker.calls.index
    assert (
        index(docker.run_args("egress-lock"))
        < index(("wait", "t-egress-lock"))
        < index(docker.run_args("auth-proxy"))
    )
    args = docker.run_args("egress-lock")
    text = " ".join(args)
    assert "--network container:t-infra" in text and "--ipc container:t-infra" in text
    assert "--user 0:0" in text and "--restart no" in text and "--read-only" in text
    assert "no-new-privileges" in text
    caps = [(a, b) for a, b in itertools.pairwise(args) if a.startswith("--cap-")]
    assert caps == [("--cap-drop", "ALL"), ("--cap-add", "NET_ADMIN")]
    assert "--privileged" not in args
    # The command replaces the image's entrypoint, arguments and all.
    at = args.index("--entrypoint")
    assert args[at:] == (
        "--entrypoint", "auth-proxy-lock-egress", "auth-proxy:dev",
        "--sidecar-uid", "10000", "--transparent-port", "8082", "--dns-port", "8053",
    )  # fmt: skip
    for name in ("auth-proxy", "workload"):
        other = docker.run_args(name)
        assert "--cap-add" not in other and ("--cap-drop", "ALL") in itertools.pairwise(other)
        assert "--user 0:" not in " ".join(other)
    assert runner.containers["egress-lock"].exit_code == 0
    assert "init container egress-lock completed (exit 0)" in runner.events


@pytest.mark.parametrize(
    ("make_docker", "needles"),
    [
        pytest.param(
            lambda: FakeDocker(
                {"egress-lock": 1}, logs={"egress-lock": "start\nerror: no nft binary\n"}
            ),
            ["exited 1", "termination message (FallbackToLogsOnError): start\nerror: no nft"],
            id="fallback-to-logs",
        ),
        pytest.param(
            lambda: FakeDocker(
                {"egress-lock": 3},
                logs={"egress-lock": "noise\n"},
                messages={"egress-lock": "kernel lacks nf_tables"},
            ),
            ["exited 3", "termination message (FallbackToLogsOnError): kernel lacks nf_tables"],
            id="message-file",
        ),
        pytest.param(
            lambda: FakeDocker({"egress-lock": 137}, logs={"egress-lock": "killed\n"}),
            ["exited 137", "killed"],
            id="killed",
        ),
        pytest.param(
            lambda: FakeDocker(hang={"egress-lock"}, logs={"egress-lock": "still waiting\n"}),
            ["did not exit within 300 s", "last log lines:\nstill waiting"],
            id="never-exits",
        ),
    ],
)
def test_a_failed_init_container_stops_the_pod_before_anything_else(
    runner_for: Any, make_docker: Callable[[], FakeDocker], needles: list[str]
) -> None:
    docker = make_docker()
    runner = runner_for(docker)
    with pytest.raises(podrunner.PodFailed) as err:
        runner.start(project_pod())
    message = str(err.value)
    assert message.startswith("init container egress-lock ")
    assert "no later container was created" in message
    for needle in needles:
        assert needle in message, message
    # Neither the sidecar nor the workload was ever created.
    assert docker.runs() == ["infra", "egress-lock"]
    runner.stop()
    removed = {a[-1] for a in docker.calls if a[:2] == ("rm", "-f")}
    assert removed == {"t-infra", "t-egress-lock"}


def test_file_policy_reports_the_file_and_the_logs(runner_for: Any) -> None:
    pod = project_pod()
    pod["spec"]["initContainers"][0]["terminationMessagePolicy"] = "File"
    docker = FakeDocker({"egress-lock": 2}, logs={"egress-lock": "a log line\n"})
    with pytest.raises(podrunner.PodFailed) as err:
        runner_for(docker).start(pod)
    message = str(err.value)
    assert "termination message (File): (empty)" in message
    assert "last log lines:\na log line" in message


def test_an_unenforced_pod_has_no_lock_to_wait_for(runner_for: Any) -> None:
    docker = FakeDocker()
    runner_for(docker).start(project_pod(egress_enforcement=False))
    assert docker.runs() == ["infra", "ca-trust", "auth-proxy", "workload"]
    # Only the trust files are waited for; nothing is given a capability.
    assert all(a[-1].endswith("ca-trust") for a in docker.calls if a[0] == "wait")
    assert not [a for a in docker.calls if "--cap-add" in a]
