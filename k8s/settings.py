"""Deployment settings for sandbox pods: what an operator tunes per cluster, in one dataclass."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from kubernetes import client

from k8s import constants as c

# Kubernetes quantities: a number with an optional binary or decimal suffix ("100m", "64Mi", "1").
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")


@dataclass(frozen=True)
class Resources:
    """Requests and limits for one container, as Kubernetes quantities."""

    cpu_request: str
    memory_request: str
    cpu_limit: str
    memory_limit: str

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, str) or not _QUANTITY.match(value):
                raise ValueError(f"resources {f.name}={value!r} is not a Kubernetes quantity")

    def to_v1(self) -> client.V1ResourceRequirements:
        return client.V1ResourceRequirements(
            requests={"cpu": self.cpu_request, "memory": self.memory_request},
            limits={"cpu": self.cpu_limit, "memory": self.memory_limit},
        )


SIDECAR_RESOURCES = Resources(
    cpu_request="100m", memory_request="64Mi", cpu_limit="250m", memory_limit="128Mi"
)
# The egress lock runs one short nft transaction and exits: it needs little, and briefly.
EGRESS_LOCK_RESOURCES = Resources(
    cpu_request="10m", memory_request="16Mi", cpu_limit="100m", memory_limit="64Mi"
)
# The trust writer reads ~150 roots and writes four files (about 35 MiB resident, under 1 s).
CA_TRUST_RESOURCES = Resources(
    cpu_request="10m", memory_request="32Mi", cpu_limit="250m", memory_limit="128Mi"
)
WORKLOAD_RESOURCES = Resources(
    cpu_request="250m", memory_request="256Mi", cpu_limit="1", memory_limit="1Gi"
)


@dataclass(frozen=True)
class ProxySettings:
    """How sandbox pods are built. The defaults are the documented deployment."""

    enable_auth_proxy: bool = True
    # "native": an init container with restartPolicy Always (1.29+), started and ready before
    # the workload, stopped after it. "container": a regular container, for older clusters.
    sidecar_mode: str = c.SIDECAR_MODE_NATIVE
    sidecar_image: str = c.DEFAULT_SIDECAR_IMAGE
    executor_image: str = c.DEFAULT_EXECUTOR_IMAGE
    # The :dev tags are built locally and never pushed, so Always would fail to pull them.
    image_pull_policy: str = "IfNotPresent"
    proxy_port: int = c.PROXY_PORT
    health_port: int = c.HEALTH_PORT
    # With the proxy enabled: the egress-lock init container locks the pod's network so that the
    # workload reaches nothing except through the sidecar (its transparent and DNS listeners
    # catch what ignores the proxy variables). Off: the workload can go around the proxy.
    egress_enforcement: bool = True
    transparent_port: int = c.TRANSPARENT_PORT
    dns_port: int = c.DNS_PORT
    sidecar_resources: Resources = field(default=SIDECAR_RESOURCES)
    egress_lock_resources: Resources = field(default=EGRESS_LOCK_RESOURCES)
    ca_trust_resources: Resources = field(default=CA_TRUST_RESOURCES)
    workload_resources: Resources = field(default=WORKLOAD_RESOURCES)
    ca_secret_name: str = c.CA_SECRET_NAME
    policy_configmap_name: str = c.POLICY_CONFIGMAP_NAME
    # None leaves runtimeClassName out (the cluster's default runtime).
    runtime_class_name: str | None = c.DEFAULT_RUNTIME_CLASS
    log_level: str = c.DEFAULT_LOG_LEVEL
    # The executor image runs as this uid; set explicitly so runAsNonRoot holds for any image.
    workload_uid: int = c.EXECUTOR_UID
    workload_gid: int = c.EXECUTOR_GID
    # Off by default: sandboxed code expects to install packages and write files.
    workload_read_only_root_filesystem: bool = False
    sidecar_tmp_size: str = "64Mi"
    ca_bundle_size: str = "16Mi"

    def __post_init__(self) -> None:
        if self.sidecar_mode not in c.SIDECAR_MODES:
            raise ValueError(
                f"sidecar_mode {self.sidecar_mode!r} is unknown; use one of {c.SIDECAR_MODES}"
            )
        self._check_ports()
        if not isinstance(self.egress_enforcement, bool):
            raise ValueError(
                f"egress_enforcement must be True or False, got {self.egress_enforcement!r}"
            )
        for name in ("sidecar_image", "executor_image", "ca_secret_name", "policy_configmap_name"):
            if not getattr(self, name):
                raise ValueError(f"{name} must not be empty")
        if self.runtime_class_name == "":
            raise ValueError("runtime_class_name must be a name, or None for the cluster default")
        if self.log_level not in c.LOG_LEVELS:
            raise ValueError(f"log_level {self.log_level!r} is unknown; use one of {c.LOG_LEVELS}")
        for name in ("workload_uid", "workload_gid"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be a non-root id, got {getattr(self, name)}")
        if self.enable_auth_proxy and self.workload_uid == c.SIDECAR_UID:
            # The egress lock exempts the sidecar's uid, and a process of the same uid could
            # signal or inspect the proxy: the workload would own the boundary that holds it.
            raise ValueError(
                f"workload_uid {self.workload_uid} is the auth-proxy sidecar's uid (SIDECAR_UID "
                f"{c.SIDECAR_UID}): its traffic would be exempt from the egress lock. Fix: run "
                f"the workload as another uid (the executor image uses {c.EXECUTOR_UID})"
            )
        for name in ("sidecar_tmp_size", "ca_bundle_size"):
            if not _QUANTITY.match(getattr(self, name)):
                raise ValueError(f"{name}={getattr(self, name)!r} is not a Kubernetes quantity")

    def _check_ports(self) -> None:
        names = ("proxy_port", "health_port", "transparent_port", "dns_port")
        seen: dict[int, str] = {}
        for name in names:
            port = getattr(self, name)
            if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
                raise ValueError(f"{name} {port!r} is not a port (1-65535)")
            # All four listen in the sidecar, in the one network namespace of the pod.
            if port in seen:
                raise ValueError(
                    f"{seen[port]} and {name} are both {port}: each sidecar listener needs its "
                    "own port"
                )
            seen[port] = name

    @property
    def enforces_egress(self) -> bool:
        """Whether pods get the egress lock: it needs the proxy, whose listeners it redirects to."""
        return self.enable_auth_proxy and self.egress_enforcement

    @property
    def proxy_url(self) -> str:
        return f"http://{c.PROXY_LISTEN_HOST}:{self.proxy_port}"

    def replace(self, **changes: object) -> ProxySettings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


DEFAULT_SETTINGS = ProxySettings()
