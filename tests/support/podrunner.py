"""Run a Kubernetes Pod with Docker the way a kubelet would, for tests.

``PodRunner(...).start(pod)`` takes a ``V1Pod`` (or its sanitized dict, as ``kubectl`` would send
it), plus the Secrets and ConfigMaps it refers to, and:

1. checks every field of the pod against what this runner implements (`check_pod`, in
   tests/support/podspec.py): a field it does not know, or a value it cannot honour, raises
   `UnsupportedPodSpec` listing all of them (nothing runs);
2. writes each Secret / ConfigMap volume into a host folder laid out like the kubelet's atomic
   writer (``..data`` symlinks; ``items``, ``defaultMode`` and fsGroup ownership applied), and
   makes each emptyDir a host folder (mode 0777, setgid fsGroup group, sizeLimit checked);
3. starts an infra ("pause") container that owns the pod's network, IPC and UTS namespaces
   (``--network none``), then calls the caller's network hook with its PID (the CNI step);
4. starts the init containers in order, each joining the infra's namespaces: a regular one must
   exit 0, or the pod fails (`PodFailed` naming it, its exit code and its termination message)
   and no later container is ever created; a native sidecar (``restartPolicy: Always``) is
   started and its startupProbe is executed (HTTP GET from inside the pod's network namespace)
   before the next one starts. Every container runs with exactly the user, group and
   capabilities its securityContext asks for (``--cap-drop`` / ``--cap-add``), and gets a
   termination message file at /dev/termination-log, as the kubelet mounts one;
5. starts the containers, waits for their readiness probes, and keeps probing readiness and
   liveness in the background, recording failures;
6. ``stop()``: stops the containers, then the sidecars in reverse order (SIGTERM with the pod's
   grace period), records exit codes and restart counts, checks emptyDir size limits, removes
   every container and folder it made. Idempotent; safe after a failed start.

The one accepted substitution is the runtime: ``runtimeClassName`` (e.g. ``kata-qemu``) cannot be
honoured by Docker's runc; it is reported as a deviation and printed.

This module has no dependency on the project's ``k8s`` package, and none on pytest.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The checks are pure and live apart (unit tested without Docker); re-exported for callers.
from tests.support.podspec import (
    DEFAULT_TERMINATION_MESSAGE_PATH,
    UnsupportedPodSpec,
    check_pod,
    quantity,
)

DockerFn = Callable[..., subprocess.CompletedProcess]
Log = Callable[[str], None]

# The probe runs in the pod's network namespace (nsenter), as a short Python program.
_PROBE = r"""
import json, sys, urllib.error, urllib.request
url, timeout, headers = sys.argv[1], float(sys.argv[2]), json.loads(sys.argv[3])
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
request = urllib.request.Request(url, headers=headers)
try:
    with opener.open(request, timeout=timeout) as r:
        print(r.status, r.read(200).decode("latin-1").replace("\n", " "))
except urllib.error.HTTPError as e:
    print(e.code, e.read(200).decode("latin-1").replace("\n", " "))
except Exception as e:
    print(0, repr(e))
"""


class PodFailed(RuntimeError):
    """The pod did not start: a probe never passed, an init container failed, ..."""


DEFAULT_GRACE_SECONDS = 30
KUBELET_DEFAULT_MODE = 0o644
# The kubelet reads at most this much of a termination message file; with
# FallbackToLogsOnError and an empty file, the last 80 log lines, at most 2 KiB of them.
TERMINATION_MESSAGE_MAX_BYTES = 4096
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048
EMPTYDIR_MODE = 0o777
# A bound on every wait, whatever a probe says.
MAX_PROBE_WAIT = 300.0
MONITOR_MAX_SECONDS = 3600.0


def _sanitize(pod: Any) -> dict:
    if isinstance(pod, Mapping):
        return json.loads(json.dumps(pod))
    from kubernetes.client import ApiClient  # the client library, not the project's k8s package

    return ApiClient().sanitize_for_serialization(pod)


# --- running -------------------------------------------------------------------------------------


@dataclass
class Probe:
    """An httpGet probe, resolved: URL path, port, timing."""

    kind: str
    path: str
    port: int
    headers: dict[str, str]
    period: float
    failure_threshold: int
    success_threshold: int
    timeout: float
    initial_delay: float

    @classmethod
    def from_spec(cls, kind: str, spec: dict, ports: Mapping[str, int]) -> Probe:
        get = spec["httpGet"]
        port = get["port"]
        return cls(
            kind=kind,
            path=get.get("path") or "/",
            port=int(port if isinstance(port, int) else ports[port]),
            headers={h["name"]: h["value"] for h in get.get("httpHeaders") or []},
            period=float(spec.get("periodSeconds", 10)),
            failure_threshold=int(spec.get("failureThreshold", 3)),
            success_threshold=int(spec.get("successThreshold", 1)),
            timeout=float(spec.get("timeoutSeconds", 1)),
            initial_delay=float(spec.get("initialDelaySeconds", 0)),
        )

    def describe(self) -> str:
        return (
            f"{self.kind} GET :{self.port}{self.path} every {self.period:g}s, "
            f"timeout {self.timeout:g}s, failureThreshold {self.failure_threshold}"
        )


@dataclass
class ContainerExtras:
    """Test-only additions to one container, each printed as a deviation from the pod spec."""

    mounts: list[tuple[Path, str]] = field(default_factory=list)  # (host dir, path), read-only
    args: list[str] = field(default_factory=list)  # appended to the container's args
    why: str = ""


@dataclass
class RunningContainer:
    name: str  # the container's name in the pod
    docker_name: str
    sidecar: bool
    init: bool
    termination_message_policy: str
    probes: dict[str, Probe] = field(default_factory=dict)
    exit_code: int | None = None
    restart_count: int | None = None
    termination_message: str | None = None  # as the kubelet would report it, once it exited


@dataclass
class ProbeRecord:
    container: str
    kind: str
    status: int
    detail: str
    at: float


class PodRunner:
    """One pod at a time. Use ``start()`` then ``stop()`` (also as a context manager)."""

    def __init__(
        self,
        docker: DockerFn,
        workdir: Path,
        *,
        name_prefix: str,
        labels: Sequence[str] = (),
        secrets: Sequence[Any] = (),
        config_maps: Sequence[Any] = (),
        pause_image: str,
        log: Log = print,
        grace_cap: int | None = None,
        node_netns: str | None = None,
    ):
        self.docker = docker
        # Where probes come from: a kubelet probes from the node, into the pod's IP. A named
        # network namespace on the node's side of the pod's veth does the same; without one the
        # probe runs inside the pod's namespace (which a pod's egress lock would redirect).
        self.node_netns = node_netns
        self.workdir = Path(workdir)
        self.name_prefix = name_prefix
        self.labels = list(labels)
        self.secrets = {s["metadata"]["name"]: s for s in map(_sanitize, secrets)}
        self.config_maps = {c["metadata"]["name"]: c for c in map(_sanitize, config_maps)}
        self.pause_image = pause_image
        self.log = log
        self.grace_cap = grace_cap
        self.pod: dict = {}
        self.infra: str | None = None
        self.infra_id: str | None = None
        self.infra_pid: int | None = None
        self.pod_ip: str | None = None
        self.containers: dict[str, RunningContainer] = {}
        self.volume_dirs: dict[str, Path] = {}
        self.termination_files: dict[str, Path] = {}
        self.deviations: list[str] = []
        self.probe_log: list[ProbeRecord] = []
        self.failures: list[str] = []
        self.events: list[str] = []
        self._created: list[str] = []  # docker names, in creation order
        self._monitor_stop = threading.Event()
        self._monitor: threading.Thread | None = None
        self._stopped = False

    # -- helpers ----------------------------------------------------------------------------------

    def say(self, message: str) -> None:
        self.events.append(message)
        self.log(f"[pod] {message}")

    def deviation(self, message: str) -> None:
        self.deviations.append(message)
        self.log(f"[pod] DEVIATION: {message}")

    def docker_name(self, container: str) -> str:
        return f"{self.name_prefix}-{container}"

    def _label_args(self, container: str) -> list[str]:
        meta = self.pod["metadata"]
        args = [a for label in self.labels for a in ("--label", label)]
        args += ["--label", f"io.kubernetes.pod.name={meta['name']}"]
        args += ["--label", f"io.kubernetes.container.name={container}"]
        for key, value in (meta.get("labels") or {}).items():
            args += ["--label", f"pod-label.{key}={value}"]
        return args

    # -- start ------------------------------------------------------------------------------------

    def start(
        self,
        pod: Any,
        *,
        network: Callable[[int], str | None] | None = None,
        extras: Mapping[str, ContainerExtras] | None = None,
        infra_hosts: Mapping[str, str] | None = None,
    ) -> PodRunner:
        """Run `pod`. `network(infra_pid)` wires the pod's namespace and returns the pod IP.

        `infra_hosts` ({name: address}) become /etc/hosts entries of the pod (``--add-host`` on
        the infra container, shared by every container); `extras` are test-only additions per
        container. Both are printed as deviations.
        """
        self.pod = _sanitize(pod)
        problems = check_pod(self.pod, set(self.secrets), set(self.config_maps))
        if problems:
            raise UnsupportedPodSpec(problems)
        extras = dict(extras or {})
        spec = self.pod["spec"]
        all_names = {c["name"] for c in spec.get("initContainers", []) + spec["containers"]}
        unknown = set(extras) - all_names
        if unknown:
            raise ValueError(f"extras for containers the pod does not have: {sorted(unknown)}")
        self.say(f"pod {self.pod['metadata']['name']}: spec checked, every field is implemented")
        if spec.get("runtimeClassName"):
            self.deviation(
                f"runtimeClassName={spec['runtimeClassName']}: runs under Docker's runc, not "
                "that runtime (the one accepted substitution: no Kata VM here)"
            )
        self._check_images()
        self._materialize_volumes()
        self._start_infra(infra_hosts or {})
        if network is not None:
            self.pod_ip = network(self.infra_pid or 0)
        self.say(f"pod network ready; pod IP {self.pod_ip or '(none: probes use 127.0.0.1)'}")
        for ctr in spec.get("initContainers") or []:
            self._start_container(ctr, init=True, extras=extras.get(ctr["name"]))
        for ctr in spec["containers"]:
            self._start_container(ctr, init=False, extras=extras.get(ctr["name"]))
        for rc in self.containers.values():
            if "readiness" in rc.probes:
                self._probe_until(rc, rc.probes["readiness"])
        self._report_ports()
        self._monitor = threading.Thread(target=self._monitor_probes, daemon=True)
        self._monitor.start()
        self.say("pod Ready: every container started and every readiness probe passed")
        return self

    def _check_images(self) -> None:
        spec = self.pod["spec"]
        for ctr in spec.get("initContainers", []) + spec["containers"]:
            proc = self.docker("image", "inspect", "--format", "{{.Id}}", ctr["image"], check=False)
            if proc.returncode != 0:
                raise PodFailed(
                    f"container {ctr['name']}: image {ctr['image']} is not present and "
                    f"imagePullPolicy={ctr.get('imagePullPolicy', 'IfNotPresent')} with no "
                    "registry here: build it first (make images)"
                )

    def _fs_group(self) -> int | None:
        return (self.pod["spec"].get("securityContext") or {}).get("fsGroup")

    def _materialize_volumes(self) -> None:
        root = self.workdir / "volumes"
        root.mkdir(parents=True, exist_ok=True)
        fs_group = self._fs_group()
        for vol in self.pod["spec"].get("volumes") or []:
            target = root / vol["name"]
            target.mkdir()
            self.volume_dirs[vol["name"]] = target
            if "emptyDir" in vol:
                gid = fs_group if fs_group is not None else 0
                os.chown(target, 0, gid)
                # The kubelet makes emptyDirs 0777; with fsGroup the group owns it, setgid.
                target.chmod(EMPTYDIR_MODE | (0o2000 if fs_group is not None else 0))
                limit = (vol["emptyDir"] or {}).get("sizeLimit")
                self.say(
                    f"volume {vol['name']}: emptyDir -> {target} (0777, group {gid}"
                    f"{', setgid' if fs_group is not None else ''}"
                    f"{f', sizeLimit {limit} checked at stop' if limit else ''})"
                )
                continue
            if "secret" in vol:
                src = vol["secret"]
                obj = self.secrets.get(src["secretName"])
                data = {}
                if obj is not None:
                    data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
                    data |= {k: v.encode() for k, v in (obj.get("stringData") or {}).items()}
                what = f"Secret {src['secretName']}"
            else:
                src = vol["configMap"]
                obj = self.config_maps.get(src["name"])
                data = {}
                if obj is not None:
                    data = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
                    data |= {
                        k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()
                    }
                what = f"ConfigMap {src['name']}"
            files = self._write_projection(target, data, src, fs_group, vol["name"])
            self.say(
                f"volume {vol['name']}: {what} -> {target} (atomic-writer layout; "
                f"{', '.join(f'{p} {oct(m)}' for p, m in files)}; group {fs_group or 0})"
            )

    def _write_projection(
        self, target: Path, data: Mapping[str, bytes], src: dict, fs_group: int | None, vol: str
    ) -> list[tuple[str, int]]:
        """Write files like the kubelet's atomic writer: ..<timestamp>/, ..data, symlinks."""
        default_mode = src.get("defaultMode", KUBELET_DEFAULT_MODE)
        items = src.get("items")
        if items is None:
            chosen = [(key, key, default_mode) for key in sorted(data)]
        else:
            chosen = []
            for item in items:
                if item["key"] not in data:
                    raise PodFailed(f"volume {vol}: items selects key {item['key']!r}, absent")
                chosen.append((item["key"], item["path"], item.get("mode", default_mode)))
        gid = fs_group if fs_group is not None else 0
        stamp = datetime.datetime.now(datetime.UTC).strftime("..%Y_%m_%d_%H_%M_%S.%f")
        payload = target / stamp
        payload.mkdir()
        written = []
        for key, rel, mode in chosen:
            path = payload / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data[key])
            # With fsGroup the kubelet gives the group read access (SetVolumeOwnership, read-only).
            final = mode | (0o440 if fs_group is not None else 0)
            os.chown(path, 0, gid)
            path.chmod(final)
            written.append((rel, final))
        for d in [payload, *(p for p in payload.rglob("*") if p.is_dir())]:
            os.chown(d, 0, gid)
            d.chmod(0o755 | (0o2000 if fs_group is not None else 0))
        (target / "..data").symlink_to(stamp)
        for top in sorted({rel.split("/", 1)[0] for _, rel, _ in chosen}):
            (target / top).symlink_to(f"..data/{top}")
        os.chown(target, 0, gid)
        target.chmod(0o755 | (0o2000 if fs_group is not None else 0))
        return written

    def _start_infra(self, hosts: Mapping[str, str]) -> None:
        name = self.docker_name("infra")
        args = [
            "run", "-d", "--name", name, *self._label_args("POD"),
            "--network", "none", "--ipc", "shareable", "--hostname", self.pod["metadata"]["name"],
            "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "--user", "65535:65535", "--memory", "32m",
        ]  # fmt: skip
        for host, addr in hosts.items():
            args += ["--add-host", f"{host}:{addr}"]
        args += ["--entrypoint", "sleep", self.pause_image, "infinity"]
        self._created.append(name)
        self.docker(*args, timeout=60)
        self.infra = name
        pid, self.infra_id = self.docker(
            "inspect", "-f", "{{.State.Pid}} {{.Id}}", name
        ).stdout.split()
        self.infra_pid = int(pid)
        self.say(
            f"infra container {name} (pause = {self.pause_image} `sleep infinity`, "
            f"--network none, uid 65535) owns the pod's network/IPC/UTS namespaces, pid "
            f"{self.infra_pid}"
        )
        if hosts:
            self.deviation(
                "pod /etc/hosts gets "
                + ", ".join(f"{h} -> {a}" for h, a in hosts.items())
                + " (--add-host on the infra container, shared by every container; a cluster "
                "resolves names through its DNS instead)"
            )

    def _security_args(self, ctr: dict) -> tuple[list[str], list[str]]:
        """Docker options for the merged pod + container security context, and notes."""
        psc = self.pod["spec"].get("securityContext") or {}
        sc = ctr.get("securityContext") or {}
        merged = {k: psc[k] for k in ("runAsUser", "runAsGroup", "runAsNonRoot") if k in psc}
        merged |= sc
        seccomp = sc.get("seccompProfile") or psc.get("seccompProfile")
        args: list[str] = []
        notes: list[str] = []
        uid, gid = merged.get("runAsUser"), merged.get("runAsGroup")
        if uid is None:
            image_user = self.docker(
                "image", "inspect", "--format", "{{.Config.User}}", ctr["image"]
            ).stdout.strip()
            uid_text = image_user.split(":", 1)[0]
            if merged.get("runAsNonRoot") and not uid_text.isdigit():
                raise PodFailed(
                    f"container {ctr['name']}: runAsNonRoot with image user {image_user!r}, "
                    "which is not numeric (kubelet: CreateContainerConfigError)"
                )
            uid = int(uid_text) if uid_text.isdigit() else 0
        if merged.get("runAsNonRoot") and uid == 0:
            raise PodFailed(f"container {ctr['name']}: runAsNonRoot but would run as uid 0")
        if merged.get("runAsUser") is not None or gid is not None:
            args += ["--user", f"{uid}:{gid if gid is not None else 0}"]
            notes.append(f"--user {uid}:{gid if gid is not None else 0}")
        if merged.get("runAsNonRoot"):
            notes.append(f"runAsNonRoot checked (uid {uid})")
        groups = []
        if psc.get("fsGroup") is not None:
            groups.append(psc["fsGroup"])
        groups += psc.get("supplementalGroups") or []
        for g in groups:
            args += ["--group-add", str(g)]
        if groups:
            notes.append(f"--group-add {','.join(map(str, groups))} (fsGroup/supplementalGroups)")
        if sc.get("readOnlyRootFilesystem"):
            args.append("--read-only")
            notes.append("--read-only")
        if sc.get("allowPrivilegeEscalation") is False:
            args += ["--security-opt", "no-new-privileges"]
            notes.append("no-new-privileges")
        caps = sc.get("capabilities") or {}
        for cap in caps.get("drop") or []:
            args += ["--cap-drop", cap]
        for cap in caps.get("add") or []:
            args += ["--cap-add", cap]
        if caps:
            notes.append(f"caps drop {caps.get('drop') or []} add {caps.get('add') or []}")
        if seccomp:
            if seccomp["type"] == "Unconfined":
                args += ["--security-opt", "seccomp=unconfined"]
            notes.append(f"seccomp {seccomp['type']} (Docker's default profile)")
        return args, notes

    def _resource_args(self, ctr: dict) -> tuple[list[str], list[str]]:
        res = ctr.get("resources") or {}
        limits, requests = res.get("limits") or {}, res.get("requests") or {}
        args: list[str] = []
        if "memory" in limits:
            args += ["--memory", str(int(quantity(limits["memory"])))]
        if "cpu" in limits:
            args += ["--cpus", f"{quantity(limits['cpu']):g}"]
        if "memory" in requests:
            args += ["--memory-reservation", str(int(quantity(requests["memory"])))]
        if "cpu" in requests:
            # What the kubelet writes to cpu.shares for a request (millicores * 1024 / 1000).
            args += ["--cpu-shares", str(max(2, int(quantity(requests["cpu"]) * 1024)))]
        notes = [f"{k} {v}" for k, v in zip(args[::2], args[1::2], strict=True)]
        return args, notes

    def _start_container(self, ctr: dict, *, init: bool, extras: ContainerExtras | None) -> None:
        spec = self.pod["spec"]
        name = ctr["name"]
        sidecar = init and ctr.get("restartPolicy") == "Always"
        docker_name = self.docker_name(name)
        role = "native sidecar" if sidecar else ("init container" if init else "container")
        args = ["run", "-d", "--name", docker_name, *self._label_args(name)]
        args += ["--network", f"container:{self.infra}", "--ipc", f"container:{self.infra}"]
        if spec.get("shareProcessNamespace"):
            args += ["--pid", f"container:{self.infra}"]
        if sidecar:
            restart = "always"
        elif init:
            restart = "no"
        else:
            restart = {"Always": "always", "OnFailure": "on-failure", "Never": "no"}[
                spec.get("restartPolicy", "Always")
            ]
        args += ["--restart", restart]
        sec_args, sec_notes = self._security_args(ctr)
        res_args, res_notes = self._resource_args(ctr)
        args += sec_args + res_args
        for env in ctr.get("env") or []:
            args += ["-e", f"{env['name']}={env.get('value', '')}"]
        if ctr.get("workingDir"):
            args += ["--workdir", ctr["workingDir"]]
        mount_notes = []
        for mount in ctr.get("volumeMounts") or []:
            source = self.volume_dirs[mount["name"]]
            vol = next(v for v in spec["volumes"] if v["name"] == mount["name"])
            # The kubelet mounts Secret and ConfigMap volumes read-only whatever the mount says.
            ro = bool(mount.get("readOnly")) or "emptyDir" not in vol
            opt = f"type=bind,source={source},target={mount['mountPath']}"
            args += ["--mount", opt + (",readonly" if ro else "")]
            mount_notes.append(f"{mount['name']} -> {mount['mountPath']} ({'ro' if ro else 'rw'})")
        term = self._termination_file(name)
        args += ["--mount", f"type=bind,source={term},target={DEFAULT_TERMINATION_MESSAGE_PATH}"]
        mount_notes.append(f"termination message file -> {DEFAULT_TERMINATION_MESSAGE_PATH} (rw)")
        extra_args: list[str] = []
        if extras is not None:
            for host_dir, path in extras.mounts:
                args += ["--mount", f"type=bind,source={host_dir},target={path},readonly"]
            extra_args = list(extras.args)
            self.deviation(
                f"container {name}: test-only additions on top of the spec: "
                + "; ".join(
                    [f"mount {h} at {p} (ro)" for h, p in extras.mounts]
                    + ([f"args {' '.join(extra_args)}"] if extra_args else [])
                )
                + (f" -- {extras.why}" if extras.why else "")
            )
        command = ctr.get("command")
        cmd_args = list(ctr.get("args") or []) + extra_args
        if command:
            args += ["--entrypoint", command[0], ctr["image"], *command[1:], *cmd_args]
        elif cmd_args and not ctr.get("args"):
            # Kubernetes: no args means the image's CMD; keep it, then append ours.
            image_cmd = json.loads(
                self.docker(
                    "image", "inspect", "--format", "{{json .Config.Cmd}}", ctr["image"]
                ).stdout
                or "null"
            )
            args += [ctr["image"], *(image_cmd or []), *cmd_args]
        else:
            args += [ctr["image"], *cmd_args]
        rc = RunningContainer(
            name=name,
            docker_name=docker_name,
            sidecar=sidecar,
            init=init,
            termination_message_policy=ctr.get("terminationMessagePolicy", "File"),
        )
        ports = {p["name"]: p["containerPort"] for p in ctr.get("ports") or [] if "name" in p}
        for key, kind in (
            ("startupProbe", "startup"),
            ("readinessProbe", "readiness"),
            ("livenessProbe", "liveness"),
        ):
            if key in ctr:
                rc.probes[kind] = Probe.from_spec(kind, ctr[key], ports)
        self._created.append(docker_name)
        self.containers[name] = rc
        self.say(f"starting {role} {name} as {docker_name}: image {ctr['image']}")
        self.log(
            f"[pod]     command {command or '(image ENTRYPOINT)'}, args "
            f"{ctr.get('args') or '(image CMD)'}; restart {restart}"
        )
        self.log(f"[pod]     security: {', '.join(sec_notes) or 'none'}")
        self.log(f"[pod]     resources: {', '.join(res_notes) or 'none'}")
        self.log(f"[pod]     env: {', '.join(e['name'] for e in ctr.get('env') or []) or 'none'}")
        self.log(f"[pod]     mounts: {'; '.join(mount_notes) or 'none'}")
        for probe in rc.probes.values():
            self.log(f"[pod]     probe: {probe.describe()}")
        self.docker(*args, timeout=120)
        if init and not sidecar:
            self._wait_init(rc)
        elif "startup" in rc.probes:
            self._probe_until(rc, rc.probes["startup"])

    def _termination_file(self, name: str) -> Path:
        """The host file behind a container's /dev/termination-log: empty, writable by anyone."""
        path = self.workdir / "termination" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
        path.chmod(0o666)  # what the kubelet does, so a container of any uid can write it
        self.termination_files[name] = path
        return path

    def _wait_init(self, rc: RunningContainer) -> None:
        """A regular init container must exit 0 before anything after it is created."""
        try:
            proc = self.docker("wait", rc.docker_name, check=False, timeout=MAX_PROBE_WAIT)
        except subprocess.TimeoutExpired:
            raise PodFailed(
                f"init container {rc.name} did not exit within {MAX_PROBE_WAIT:g} s; no later "
                f"container was created\n{self._failure_detail(rc)}"
            ) from None
        text = proc.stdout.strip()
        code = int(text) if text.lstrip("-").isdigit() else -1
        rc.exit_code = code
        rc.termination_message = self._termination_message(rc)
        if code != 0:
            raise PodFailed(
                f"init container {rc.name} exited {code}; no later container was created\n"
                f"{self._failure_detail(rc)}"
            )
        self.say(f"init container {rc.name} completed (exit 0)")

    def _log_tail(self, rc: RunningContainer, lines: int = FALLBACK_LOG_LINES) -> str:
        logs = self.docker("logs", "--tail", str(lines), rc.docker_name, check=False)
        return logs.stdout + logs.stderr

    def _termination_message(self, rc: RunningContainer) -> str:
        """What the kubelet would report: the message file, else (FallbackToLogsOnError, after a
        failed exit) the tail of the logs."""
        path = self.termination_files.get(rc.name)
        message = ""
        if path is not None and path.is_file():
            with path.open("rb") as f:
                message = f.read(TERMINATION_MESSAGE_MAX_BYTES).decode("utf-8", "replace")
        failed = rc.exit_code is not None and rc.exit_code != 0
        if not message and failed and rc.termination_message_policy == "FallbackToLogsOnError":
            message = self._log_tail(rc)[-FALLBACK_LOG_BYTES:]
        return message

    def _failure_detail(self, rc: RunningContainer) -> str:
        """The termination message, plus the log tail when that is not already it (for tests)."""
        message = rc.termination_message if rc.exit_code is not None else None
        lines = []
        if message is not None:
            lines.append(
                f"termination message ({rc.termination_message_policy}): "
                + (message.rstrip() or "(empty)")
            )
        if not message or rc.termination_message_policy != "FallbackToLogsOnError":
            lines.append("last log lines:\n" + self._log_tail(rc)[-4000:])
        return "\n".join(lines)

    def probe_once(self, probe: Probe) -> tuple[int, str]:
        """Execute an httpGet probe from the node's side (`node_netns`) to the pod IP, as a
        kubelet does, or else from inside the pod's network namespace."""
        host = self.pod_ip or "127.0.0.1"
        url = f"http://{host}:{probe.port}{probe.path}"
        if self.node_netns and self.pod_ip:
            where = ["ip", "netns", "exec", self.node_netns]
        else:
            where = ["nsenter", f"--net=/proc/{self.infra_pid}/ns/net", "--"]
        cmd = [
            *where, sys.executable, "-I", "-c", _PROBE, url, str(probe.timeout),
            json.dumps(probe.headers),
        ]  # fmt: skip
        try:
            out = subprocess.run(
                cmd, capture_output=True, text=True, timeout=probe.timeout + 10, check=False
            )
        except subprocess.TimeoutExpired:
            return 0, "probe process timed out"
        status, _, detail = out.stdout.strip().partition(" ")
        try:
            return int(status), detail
        except ValueError:
            return 0, (out.stdout + out.stderr).strip()[-300:]

    def _probe_until(self, rc: RunningContainer, probe: Probe) -> None:
        """Probe until success (successThreshold in a row); fail after failureThreshold misses."""
        self.log(f"[pod]     executing {probe.kind} probe of {rc.name} ...")
        started = time.monotonic()
        time.sleep(min(probe.initial_delay, MAX_PROBE_WAIT))
        failures = successes = 0
        attempts = probe.failure_threshold + probe.success_threshold + 1
        for attempt in range(1, attempts + 1):
            t0 = time.monotonic()
            status, detail = self.probe_once(probe)
            self.probe_log.append(ProbeRecord(rc.name, probe.kind, status, detail, t0))
            if 200 <= status < 400:
                successes += 1
                if successes >= probe.success_threshold:
                    self.say(
                        f"{probe.kind} probe of {rc.name} passed (HTTP {status}) on attempt "
                        f"{attempt}, {time.monotonic() - started:.1f} s after start"
                    )
                    return
            else:
                successes = 0
                failures += 1
                if failures >= probe.failure_threshold:
                    break
            if time.monotonic() - started > MAX_PROBE_WAIT:
                break
            time.sleep(max(0.0, probe.period - (time.monotonic() - t0)))
        raise PodFailed(
            f"{probe.kind} probe of {rc.name} failed {failures} times (last: HTTP {status} "
            f"{detail[:200]}); {self._failure_detail(rc)}\n{self._state(rc)}"
        )

    def _state(self, rc: RunningContainer) -> str:
        proc = self.docker("inspect", "-f", "{{json .State}}", rc.docker_name, check=False)
        return f"state of {rc.docker_name}: {proc.stdout.strip()}"

    def _listening(self, protocol: str) -> set[str]:
        flag = {"TCP": "-Hltn", "UDP": "-Hlun"}[protocol]
        out = subprocess.run(
            ["nsenter", f"--net=/proc/{self.infra_pid}/ns/net", "--", "ss", flag],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
        return {line.split()[3] for line in out.stdout.splitlines() if len(line.split()) > 3}

    def _report_ports(self) -> None:
        listening = {protocol: self._listening(protocol) for protocol in ("TCP", "UDP")}
        for ctr in self.pod["spec"].get("initContainers", []) + self.pod["spec"]["containers"]:
            for port in ctr.get("ports") or []:
                protocol = port.get("protocol", "TCP")
                where = sorted(
                    a
                    for a in listening[protocol]
                    if a.rsplit(":", 1)[-1] == str(port["containerPort"])
                )
                self.say(
                    f"containerPort {port['containerPort']}/{protocol} ({port.get('name', '-')}) "
                    f"of {ctr['name']}: informational in Kubernetes; listening on "
                    f"{', '.join(where) or 'NOTHING'} in the pod namespace"
                )

    def _monitor_probes(self) -> None:
        """Keep running readiness and liveness probes like the kubelet (bounded in time)."""
        due: dict[tuple[str, str], float] = {}
        misses: dict[tuple[str, str], int] = {}
        started = time.monotonic()
        for rc in self.containers.values():
            for kind in ("readiness", "liveness"):
                if kind in rc.probes:
                    due[(rc.name, kind)] = started + rc.probes[kind].period
        while not self._monitor_stop.is_set() and time.monotonic() - started < MONITOR_MAX_SECONDS:
            if not due:
                return
            key, when = min(due.items(), key=lambda kv: kv[1])
            if self._monitor_stop.wait(max(0.0, when - time.monotonic())):
                return
            rc = self.containers[key[0]]
            probe = rc.probes[key[1]]
            status, detail = self.probe_once(probe)
            self.probe_log.append(
                ProbeRecord(rc.name, probe.kind, status, detail, time.monotonic())
            )
            if 200 <= status < 400:
                misses[key] = 0
            else:
                misses[key] = misses.get(key, 0) + 1
                if misses[key] >= probe.failure_threshold and not self._monitor_stop.is_set():
                    self.failures.append(
                        f"{probe.kind} probe of {rc.name} failed {misses[key]} times "
                        f"(HTTP {status} {detail[:200]})"
                    )
            due[key] = time.monotonic() + probe.period

    # -- stop -------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop like the kubelet (containers, then sidecars in reverse), then remove everything."""
        if self._stopped:
            return
        self._stopped = True
        self._monitor_stop.set()
        if self._monitor is not None:
            self._monitor.join(timeout=15)
        grace = int(
            (self.pod.get("spec") or {}).get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS)
        )
        if self.grace_cap is not None and grace > self.grace_cap:
            self.deviation(
                f"termination grace period capped at {self.grace_cap} s for the test "
                f"(the pod's is {grace} s): SIGTERM, then SIGKILL after {self.grace_cap} s"
            )
            grace = self.grace_cap
        order = [rc for rc in self.containers.values() if not rc.init]
        order += [rc for rc in reversed(list(self.containers.values())) if rc.sidecar]
        try:
            for rc in order:
                t0 = time.monotonic()
                self.docker(
                    "stop", "-t", str(grace), rc.docker_name, check=False, timeout=grace + 30
                )
                proc = self.docker(
                    "inspect", "-f", "{{.State.ExitCode}} {{.RestartCount}}", rc.docker_name,
                    check=False,
                )  # fmt: skip
                with contextlib.suppress(ValueError):
                    code, restarts = proc.stdout.split()
                    rc.exit_code, rc.restart_count = int(code), int(restarts)
                rc.termination_message = self._termination_message(rc)
                self.say(
                    f"stopped {rc.name} in {time.monotonic() - t0:.1f} s: exit code "
                    f"{rc.exit_code}, restarts {rc.restart_count}"
                )
            self._check_size_limits()
        finally:
            for name in reversed(self._created):
                self.docker("rm", "-f", "-v", name, check=False, timeout=60)
            if self._created:
                self.say(f"removed containers: {', '.join(reversed(self._created))}")
            for path in self.volume_dirs.values():
                shutil.rmtree(path, ignore_errors=True)
            shutil.rmtree(self.workdir / "termination", ignore_errors=True)
            self.say("removed volume folders")

    def _check_size_limits(self) -> None:
        for vol in self.pod["spec"].get("volumes") or []:
            limit = (vol.get("emptyDir") or {}).get("sizeLimit")
            path = self.volume_dirs.get(vol["name"])
            if not limit or path is None:
                continue
            used = sum(p.lstat().st_size for p in path.rglob("*") if p.is_file())
            if used > quantity(limit):
                self.failures.append(
                    f"emptyDir {vol['name']} holds {used} bytes > sizeLimit {limit} "
                    "(the kubelet would evict the pod)"
                )
            self.say(f"emptyDir {vol['name']}: {used} bytes used of sizeLimit {limit}")

    def __enter__(self) -> PodRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
