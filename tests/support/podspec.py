"""What the pod runner (tests/support/podrunner.py) can run: `check_pod` walks every field of a
pod (as the sanitized dict ``kubectl`` would send) and lists each one the runner does not
implement, or whose value it cannot honour. Pure: no Docker, no files, no project imports; unit
tested in tests/unit/test_podrunner_checks.py.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any


class UnsupportedPodSpec(ValueError):
    """The pod asks for something this runner cannot honour. Lists every such field."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__(
            "the pod runner cannot honour these pod spec fields (refusing to run rather than "
            "ignore them):\n  - " + "\n  - ".join(self.problems)
        )


# --- what is implemented: every key the walk accepts ---------------------------------------------

POD_KEYS = {"apiVersion", "kind", "metadata", "spec"}
METADATA_KEYS = {"name", "namespace", "labels", "annotations"}
SPEC_KEYS = {
    "runtimeClassName",
    "restartPolicy",
    "automountServiceAccountToken",
    "enableServiceLinks",
    "shareProcessNamespace",
    "securityContext",
    "initContainers",
    "containers",
    "volumes",
    "terminationGracePeriodSeconds",
    "hostAliases",
}
POD_SECURITY_KEYS = {
    "fsGroup",
    "runAsUser",
    "runAsGroup",
    "runAsNonRoot",
    "supplementalGroups",
    "seccompProfile",
}
CONTAINER_KEYS = {
    "name",
    "image",
    "imagePullPolicy",
    "command",
    "args",
    "workingDir",
    "env",
    "ports",
    "resources",
    "securityContext",
    "volumeMounts",
    "startupProbe",
    "readinessProbe",
    "livenessProbe",
    "restartPolicy",
    "terminationMessagePolicy",
    "terminationMessagePath",
}
CONTAINER_SECURITY_KEYS = {
    "runAsUser",
    "runAsGroup",
    "runAsNonRoot",
    "readOnlyRootFilesystem",
    "allowPrivilegeEscalation",
    "capabilities",
    "seccompProfile",
    "privileged",
}
PORT_KEYS = {"name", "containerPort", "protocol"}
MOUNT_KEYS = {"name", "mountPath", "readOnly"}
PROBE_KEYS = {
    "httpGet",
    "periodSeconds",
    "failureThreshold",
    "timeoutSeconds",
    "successThreshold",
    "initialDelaySeconds",
}
HTTP_GET_KEYS = {"path", "port", "scheme", "httpHeaders"}
VOLUME_KEYS = {"name", "secret", "configMap", "emptyDir"}
SECRET_SOURCE_KEYS = {"secretName", "items", "defaultMode", "optional"}
CONFIGMAP_SOURCE_KEYS = {"name", "items", "defaultMode", "optional"}
ITEM_KEYS = {"key", "path", "mode"}
EMPTYDIR_KEYS = {"sizeLimit", "medium"}
RESOURCE_NAMES = {"cpu", "memory"}
PORT_PROTOCOLS = {"TCP", "UDP"}  # containerPort is informational; SCTP has no use here
# Linux capabilities (capabilities(7)), as Kubernetes spells them: Docker's --cap-add/--cap-drop
# take the same names. A name outside this list is a typo the runtime would reject or ignore.
CAPABILITIES = frozenset({
    "AUDIT_CONTROL", "AUDIT_READ", "AUDIT_WRITE", "BLOCK_SUSPEND", "BPF", "CHECKPOINT_RESTORE",
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "IPC_LOCK", "IPC_OWNER",
    "KILL", "LEASE", "LINUX_IMMUTABLE", "MAC_ADMIN", "MAC_OVERRIDE", "MKNOD", "NET_ADMIN",
    "NET_BIND_SERVICE", "NET_BROADCAST", "NET_RAW", "PERFMON", "SETFCAP", "SETGID", "SETPCAP",
    "SETUID", "SYSLOG", "SYS_ADMIN", "SYS_BOOT", "SYS_CHROOT", "SYS_MODULE", "SYS_NICE",
    "SYS_PACCT", "SYS_PTRACE", "SYS_RAWIO", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG",
    "WAKE_ALARM",
})  # fmt: skip

DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"

_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_SUFFIX = {
    None: 1,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}  # fmt: skip


def quantity(value: str) -> float:
    """A Kubernetes quantity as a number ("100m" -> 0.1, "64Mi" -> 67108864)."""
    m = _QUANTITY.match(str(value))
    if not m:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    number, suffix = float(m.group(1)), m.group(2)
    return number / 1000 if suffix == "m" else number * _SUFFIX[suffix]


# --- the walk ------------------------------------------------------------------------------------


class _Walk:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def keys(self, obj: Any, allowed: set[str], where: str) -> dict:
        if not isinstance(obj, dict):
            self.problems.append(f"{where}: expected an object, got {obj!r}")
            return {}
        for key in sorted(set(obj) - allowed):
            self.problems.append(f"{where}.{key} = {obj[key]!r}: not implemented by the runner")
        return obj

    def value(self, ok: bool, where: str, value: Any, why: str) -> None:
        if not ok:
            self.problems.append(f"{where} = {value!r}: {why}")


def check_pod(pod: dict, known_secrets: set[str], known_config_maps: set[str]) -> list[str]:
    """Every problem with `pod` for this runner (an empty list: it can run it faithfully)."""
    w = _Walk()
    w.keys(pod, POD_KEYS, "pod")
    w.value(pod.get("apiVersion") == "v1", "apiVersion", pod.get("apiVersion"), "want v1")
    w.value(pod.get("kind") == "Pod", "kind", pod.get("kind"), "want Pod")
    meta = w.keys(pod.get("metadata", {}), METADATA_KEYS, "metadata")
    w.value(bool(meta.get("name")), "metadata.name", meta.get("name"), "a name is required")
    spec = w.keys(pod.get("spec", {}), SPEC_KEYS, "spec")
    w.value(
        spec.get("restartPolicy", "Always") in ("Always", "OnFailure", "Never"),
        "spec.restartPolicy", spec.get("restartPolicy"), "unknown restart policy",
    )  # fmt: skip
    w.value(
        spec.get("automountServiceAccountToken") is False,
        "spec.automountServiceAccountToken",
        spec.get("automountServiceAccountToken"),
        "the runner has no service account token to mount; set it to false",
    )
    w.value(
        spec.get("enableServiceLinks") is False,
        "spec.enableServiceLinks",
        spec.get("enableServiceLinks"),
        "the runner cannot inject service environment variables; set it to false",
    )
    for i, alias in enumerate(spec.get("hostAliases") or []):
        w.keys(alias, {"ip", "hostnames"}, f"spec.hostAliases[{i}]")
    psc = w.keys(spec.get("securityContext") or {}, POD_SECURITY_KEYS, "spec.securityContext")
    _check_seccomp(w, psc.get("seccompProfile"), "spec.securityContext.seccompProfile")

    volumes: dict[str, dict] = {}
    for i, vol in enumerate(spec.get("volumes") or []):
        where = f"spec.volumes[{i}]"
        w.keys(vol, VOLUME_KEYS, where)
        volumes[vol.get("name", "")] = vol
        sources = [k for k in ("secret", "configMap", "emptyDir") if k in vol]
        w.value(len(sources) == 1, where, vol, "exactly one of secret, configMap, emptyDir")
        if "secret" in vol:
            src = w.keys(vol["secret"], SECRET_SOURCE_KEYS, f"{where}.secret")
            _check_items(w, src, f"{where}.secret")
            w.value(
                src.get("secretName") in known_secrets or bool(src.get("optional")),
                f"{where}.secret.secretName", src.get("secretName"),
                "no such Secret was given to the runner (the kubelet would wait forever)",
            )  # fmt: skip
        if "configMap" in vol:
            src = w.keys(vol["configMap"], CONFIGMAP_SOURCE_KEYS, f"{where}.configMap")
            _check_items(w, src, f"{where}.configMap")
            w.value(
                src.get("name") in known_config_maps or bool(src.get("optional")),
                f"{where}.configMap.name", src.get("name"),
                "no such ConfigMap was given to the runner (the kubelet would wait forever)",
            )  # fmt: skip
        if "emptyDir" in vol:
            src = w.keys(vol["emptyDir"] or {}, EMPTYDIR_KEYS, f"{where}.emptyDir")
            w.value(
                src.get("medium", "") == "", f"{where}.emptyDir.medium", src.get("medium"),
                "only the default (node disk) medium is implemented",
            )  # fmt: skip
            if "sizeLimit" in src:
                _check_quantity(w, src["sizeLimit"], f"{where}.emptyDir.sizeLimit")

    names: set[str] = set()
    for kind in ("initContainers", "containers"):
        for i, ctr in enumerate(spec.get(kind) or []):
            where = f"spec.{kind}[{i}]({ctr.get('name')})"
            _check_container(w, ctr, where, kind, volumes)
            w.value(ctr.get("name") not in names, where, ctr.get("name"), "duplicate name")
            names.add(ctr.get("name"))
    w.value(bool(spec.get("containers")), "spec.containers", None, "at least one is required")
    return w.problems


def _check_quantity(w: _Walk, value: Any, where: str) -> None:
    try:
        quantity(value)
    except ValueError as e:
        w.problems.append(f"{where} = {value!r}: {e}")


def _check_seccomp(w: _Walk, profile: Any, where: str) -> None:
    if profile is None:
        return
    profile = w.keys(profile, {"type"}, where)
    w.value(
        profile.get("type") in ("RuntimeDefault", "Unconfined"), f"{where}.type",
        profile.get("type"), "only RuntimeDefault (Docker's default) and Unconfined",
    )  # fmt: skip


def _check_capabilities(w: _Walk, caps: Any, where: str) -> None:
    """Docker grants exactly these (--cap-drop / --cap-add), so each name must be a real one."""
    caps = w.keys(caps or {}, {"drop", "add"}, where)
    for part in ("drop", "add"):
        names = caps.get(part) or []
        if not isinstance(names, list):
            w.problems.append(f"{where}.{part} = {names!r}: expected a list of capability names")
            continue
        for j, name in enumerate(names):
            bare = name.removeprefix("CAP_") if isinstance(name, str) else name
            if part == "drop" and name == "ALL":
                continue
            if part == "add" and name == "ALL":
                # As good as privileged, which is not run either.
                w.problems.append(f"{where}.add[{j}] = 'ALL': every capability is not granted")
                continue
            w.value(
                bare in CAPABILITIES, f"{where}.{part}[{j}]", name,
                "not a Linux capability (capabilities(7), e.g. NET_ADMIN)",
            )  # fmt: skip


def _check_items(w: _Walk, src: dict, where: str) -> None:
    for j, item in enumerate(src.get("items") or []):
        item = w.keys(item, ITEM_KEYS, f"{where}.items[{j}]")
        path = str(item.get("path", ""))
        w.value(
            bool(path) and not path.startswith("/") and ".." not in path.split("/"),
            f"{where}.items[{j}].path", path, "must be a relative path without '..'",
        )  # fmt: skip


def _check_container(w: _Walk, ctr: dict, where: str, kind: str, volumes: dict) -> None:
    w.keys(ctr, CONTAINER_KEYS, where)
    w.value(bool(ctr.get("image")), f"{where}.image", ctr.get("image"), "required")
    w.value(
        ctr.get("imagePullPolicy", "IfNotPresent") in ("IfNotPresent", "Never"),
        f"{where}.imagePullPolicy", ctr.get("imagePullPolicy"),
        "no registry here: only IfNotPresent / Never (the image must be local)",
    )  # fmt: skip
    if "restartPolicy" in ctr:
        w.value(
            kind == "initContainers" and ctr["restartPolicy"] == "Always",
            f"{where}.restartPolicy", ctr["restartPolicy"],
            "only 'Always' on an init container (a native sidecar)",
        )  # fmt: skip
    for key in ("startupProbe",):
        if key in ctr and kind == "initContainers" and ctr.get("restartPolicy") != "Always":
            w.problems.append(f"{where}.{key}: only sidecars and containers take probes")
    w.value(
        ctr.get("terminationMessagePolicy", "File") in ("File", "FallbackToLogsOnError"),
        f"{where}.terminationMessagePolicy", ctr.get("terminationMessagePolicy"), "unknown",
    )  # fmt: skip
    w.value(
        ctr.get("terminationMessagePath", DEFAULT_TERMINATION_MESSAGE_PATH)
        == DEFAULT_TERMINATION_MESSAGE_PATH,
        f"{where}.terminationMessagePath", ctr.get("terminationMessagePath"),
        "only the default path",
    )  # fmt: skip
    for field_name in ("command", "args"):
        for j, arg in enumerate(ctr.get(field_name) or []):
            w.value(
                "$(" not in arg, f"{where}.{field_name}[{j}]", arg,
                "$(VAR) expansion is not implemented",
            )  # fmt: skip
    for j, env in enumerate(ctr.get("env") or []):
        env = w.keys(env, {"name", "value"}, f"{where}.env[{j}]")
        w.value(
            "$(" not in str(env.get("value", "")), f"{where}.env[{j}].value",
            env.get("value"), "$(VAR) expansion is not implemented",
        )  # fmt: skip
    ports = {}
    for j, port in enumerate(ctr.get("ports") or []):
        port = w.keys(port, PORT_KEYS, f"{where}.ports[{j}]")
        w.value(
            port.get("protocol", "TCP") in PORT_PROTOCOLS, f"{where}.ports[{j}].protocol",
            port.get("protocol"), "only TCP and UDP",
        )  # fmt: skip
        if "name" in port:
            ports[port["name"]] = port.get("containerPort")
    res = w.keys(ctr.get("resources") or {}, {"requests", "limits"}, f"{where}.resources")
    for part in ("requests", "limits"):
        for name, value in (res.get(part) or {}).items():
            w.value(
                name in RESOURCE_NAMES, f"{where}.resources.{part}.{name}", value,
                "only cpu and memory are mapped",
            )  # fmt: skip
            _check_quantity(w, value, f"{where}.resources.{part}.{name}")
    sc = w.keys(
        ctr.get("securityContext") or {}, CONTAINER_SECURITY_KEYS, f"{where}.securityContext"
    )
    _check_capabilities(w, sc.get("capabilities"), f"{where}.securityContext.capabilities")
    w.value(
        not sc.get("privileged"), f"{where}.securityContext.privileged",
        sc.get("privileged"), "privileged containers are not run",
    )  # fmt: skip
    _check_seccomp(w, sc.get("seccompProfile"), f"{where}.securityContext.seccompProfile")
    for j, mount in enumerate(ctr.get("volumeMounts") or []):
        mount = w.keys(mount, MOUNT_KEYS, f"{where}.volumeMounts[{j}]")
        w.value(
            mount.get("name") in volumes, f"{where}.volumeMounts[{j}].name",
            mount.get("name"), "no such volume in spec.volumes",
        )  # fmt: skip
        w.value(
            str(mount.get("mountPath", "")).startswith("/"),
            f"{where}.volumeMounts[{j}].mountPath", mount.get("mountPath"), "must be absolute",
        )  # fmt: skip
    for probe_key in ("startupProbe", "readinessProbe", "livenessProbe"):
        if probe_key not in ctr:
            continue
        pw = f"{where}.{probe_key}"
        probe = w.keys(ctr[probe_key], PROBE_KEYS, pw)
        w.value("httpGet" in probe, pw, probe, "only httpGet probes are implemented")
        get = w.keys(probe.get("httpGet") or {}, HTTP_GET_KEYS, f"{pw}.httpGet")
        w.value(
            get.get("scheme", "HTTP") == "HTTP", f"{pw}.httpGet.scheme", get.get("scheme"),
            "only HTTP",
        )  # fmt: skip
        port = get.get("port")
        w.value(
            isinstance(port, int) or port in ports, f"{pw}.httpGet.port", port,
            "a number or the name of one of the container's ports",
        )  # fmt: skip
        for j, header in enumerate(get.get("httpHeaders") or []):
            w.keys(header, {"name", "value"}, f"{pw}.httpGet.httpHeaders[{j}]")
