"""Checks a rendered pod can be held to: no container but the sidecar can read the CA key.

The builders never produce such a pod; this exists so that tests, and the sandbox manager before
it creates a pod someone else may have patched, can prove it rather than trust it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from kubernetes.client import ApiClient

from k8s import constants as c

# Volumes that cannot carry a Secret's data.
_HARMLESS_VOLUME_KINDS = frozenset({"emptyDir", "configMap"})


def _as_dict(pod: Any) -> dict[str, Any]:
    if isinstance(pod, dict):
        return pod
    result: dict[str, Any] = ApiClient().sanitize_for_serialization(pod)
    return result


def _secret_source_may_expose_key(source: dict[str, Any], secret_name: str) -> bool:
    # Secret volumes name it secretName, projected sources name.
    if source.get("secretName", source.get("name")) != secret_name:
        return False
    items = source.get("items")
    # Without items every key of the Secret lands in the volume, tls.key included.
    return items is None or any(item.get("key") != c.TLS_CERT_KEY for item in items)


def volume_may_expose_key(volume: dict[str, Any], secret_name: str = c.CA_SECRET_NAME) -> bool:
    """Whether a pod volume (as a manifest dict) could put the CA key on a filesystem."""
    if "secret" in volume:
        return _secret_source_may_expose_key(volume["secret"], secret_name)
    if "projected" in volume:
        return any(
            "secret" in source and _secret_source_may_expose_key(source["secret"], secret_name)
            for source in volume["projected"].get("sources") or []
        )
    # Anything else (csi, hostPath, nfs, ...) is opaque to this check: count it as exposing.
    return not (_HARMLESS_VOLUME_KINDS & volume.keys())


def _all_containers(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        yield from spec.get(key) or []


def key_exposures(pod: Any, secret_name: str = c.CA_SECRET_NAME) -> list[str]:
    """Every way a container other than the auth-proxy sidecar could read the CA key.

    `pod` is a V1Pod or its manifest dict. Returns [] for a safe pod, else one line per finding.
    """
    spec = _as_dict(pod)["spec"]
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    found = []
    if spec.get("shareProcessNamespace"):
        found.append("shareProcessNamespace lets every container read the sidecar's files")
    for container in _all_containers(spec):
        name = container["name"]
        if name == c.SIDECAR_CONTAINER:
            continue
        for mount in container.get("volumeMounts") or []:
            volume = volumes.get(mount["name"])
            if volume is None or volume_may_expose_key(volume, secret_name):
                found.append(f"container {name} mounts volume {mount['name']}")
        for env in container.get("env") or []:
            ref = (env.get("valueFrom") or {}).get("secretKeyRef") or {}
            if ref.get("name") == secret_name:
                found.append(f"container {name} env {env['name']} reads Secret {secret_name}")
        for source in container.get("envFrom") or []:
            if (source.get("secretRef") or {}).get("name") == secret_name:
                found.append(f"container {name} envFrom reads Secret {secret_name}")
    return found
