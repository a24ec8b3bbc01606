"""Pure builders for sandbox pods: typed V1 objects in, typed V1 objects out, no API calls.

A sandbox pod holds the `workload` container and, when the auth proxy is enabled, the
`auth-proxy` sidecar that all of the workload's HTTP(S) goes through. The workload trusts the
internal CA through files the `ca-trust` init container writes (from the sidecar image, so any
workload image works) from a volume that carries the certificate alone; the CA's private key is
mounted into the sidecar only. With egress enforcement (the default) the `egress-lock` init container
runs first and locks the pod's network (nftables) so that every socket not owned by the
sidecar's uid is redirected to the sidecar's transparent and DNS listeners or refused.
"""

from __future__ import annotations

from collections.abc import Mapping

from kubernetes import client

from k8s import constants as c
from k8s.settings import DEFAULT_SETTINGS, ProxySettings, Resources
from k8s.validation import (
    MANAGED_LABEL_KEYS,
    check_user_env,
    check_user_labels,
    is_reserved_env_name,
    validate_pod_name,
    validate_pool_name,
)

__all__ = [
    "MANAGED_LABEL_KEYS",
    "build_pod_spec",
    "build_warm_pod_spec",
    "check_user_env",
    "check_user_labels",
    "is_reserved_env_name",
    "validate_pod_name",
    "validate_pool_name",
]


# --- pieces ------------------------------------------------------------------------------------


def _env(pairs: Mapping[str, str]) -> list[client.V1EnvVar]:
    return [client.V1EnvVar(name=name, value=value) for name, value in pairs.items()]


def java_tool_options(settings: ProxySettings = DEFAULT_SETTINGS) -> str:
    """The JVM's truststore and proxy: it reads neither SSL_CERT_FILE nor HTTPS_PROXY."""
    host, port = c.PROXY_LISTEN_HOST, settings.proxy_port
    # nonProxyHosts is the JVM's NO_PROXY ('|'-separated; one value, so no shell quoting).
    non_proxy = "|".join(h if ":" not in h else f"[{h}]" for h in c.NO_PROXY_HOSTS.split(","))
    return " ".join(
        [
            f"-Djavax.net.ssl.trustStore={c.TRUSTSTORE}",
            "-Djavax.net.ssl.trustStoreType=PKCS12",
            f"-Djavax.net.ssl.trustStorePassword={c.TRUSTSTORE_PASSWORD}",
            f"-Dhttps.proxyHost={host}",
            f"-Dhttps.proxyPort={port}",
            f"-Dhttp.proxyHost={host}",
            f"-Dhttp.proxyPort={port}",
            f"-Dhttp.nonProxyHosts={non_proxy}",
        ]
    )


def proxy_env(settings: ProxySettings = DEFAULT_SETTINGS) -> dict[str, str]:
    """The workload's reserved variables: proxy, no-proxy and CA trust."""
    env = dict.fromkeys(c.PROXY_ENV_NAMES, settings.proxy_url)
    env |= dict.fromkeys(c.NO_PROXY_ENV_NAMES, c.NO_PROXY_HOSTS)
    env[c.NODE_PROXY_ENV_NAME] = "1"
    env |= dict.fromkeys(c.CA_CERT_ENV_NAMES, c.TRUST_CA_CERT)
    env |= dict.fromkeys(c.CA_BUNDLE_ENV_NAMES, c.CA_BUNDLE)
    env |= dict.fromkeys(c.CA_DIR_ENV_NAMES, c.CA_CERTS_DIR)
    env[c.JAVA_OPTIONS_ENV_NAME] = java_tool_options(settings)
    return env


def sidecar_env(settings: ProxySettings = DEFAULT_SETTINGS) -> dict[str, str]:
    """The sidecar entrypoint's variables, all set so the manifest says where everything is."""
    env = {
        c.ENV_LISTEN_HOST: c.PROXY_LISTEN_HOST,
        c.ENV_LISTEN_PORT: str(settings.proxy_port),
        c.ENV_HEALTH_HOST: c.HEALTH_LISTEN_HOST,
        c.ENV_HEALTH_PORT: str(settings.health_port),
        c.ENV_CA_DIR: c.SIDECAR_CA_DIR,
        c.ENV_POLICY: c.POLICY_PATH,
        c.ENV_CONFDIR: c.SIDECAR_CONFDIR,
        c.ENV_LOG_LEVEL: settings.log_level,
    }
    if settings.enforces_egress:
        # Only where the lock redirects to them: an unenforced pod runs no listener it never uses.
        env[c.ENV_TRANSPARENT_PORT] = str(settings.transparent_port)
        env[c.ENV_DNS_PORT] = str(settings.dns_port)
    return env


def egress_lock_command(settings: ProxySettings = DEFAULT_SETTINGS) -> list[str]:
    """The egress-lock init container's command (the sidecar image's console script)."""
    return [
        c.EGRESS_LOCK_COMMAND,
        "--sidecar-uid",
        str(c.SIDECAR_UID),
        "--transparent-port",
        str(settings.transparent_port),
        "--dns-port",
        str(settings.dns_port),
    ]


def trust_command() -> list[str]:
    """The ca-trust init container's command (the sidecar image's console script)."""
    return [c.TRUST_COMMAND, "--ca", c.WORKLOAD_CA_CERT, "--out", c.CA_BUNDLE_DIR]


def _restricted_security_context(
    uid: int, gid: int, read_only_root: bool
) -> client.V1SecurityContext:
    return client.V1SecurityContext(
        run_as_non_root=True,
        run_as_user=uid,
        run_as_group=gid,
        read_only_root_filesystem=read_only_root,
        allow_privilege_escalation=False,
        capabilities=client.V1Capabilities(drop=["ALL"]),
        seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault"),
    )


def _http_probe(
    path: str, port: int, period: int, failure_threshold: int, timeout: int = 1
) -> client.V1Probe:
    return client.V1Probe(
        http_get=client.V1HTTPGetAction(path=path, port=port),
        period_seconds=period,
        failure_threshold=failure_threshold,
        timeout_seconds=timeout,
    )


def _sidecar_ports(settings: ProxySettings) -> list[client.V1ContainerPort]:
    ports = [
        (c.PROXY_PORT_NAME, settings.proxy_port, "TCP"),
        (c.HEALTH_PORT_NAME, settings.health_port, "TCP"),
    ]
    if settings.enforces_egress:
        ports += [
            (c.TRANSPARENT_PORT_NAME, settings.transparent_port, "TCP"),
            (c.DNS_PORT_NAME, settings.dns_port, "UDP"),
            (c.DNS_TCP_PORT_NAME, settings.dns_port, "TCP"),
        ]
    return [
        client.V1ContainerPort(name=name, container_port=port, protocol=protocol)
        for name, port, protocol in ports
    ]


def build_egress_lock_container(settings: ProxySettings = DEFAULT_SETTINGS) -> client.V1Container:
    """The egress-lock init container: installs the pod's nftables ruleset, checks it, exits.

    It must run before the sidecar and the workload, so that no process of the pod ever has an
    unlocked network; a failure (no nf_tables, no NET_ADMIN) fails the pod before the workload.
    """
    return client.V1Container(
        name=c.EGRESS_INIT_CONTAINER,
        # The sidecar image carries nft and the lock command: no other image to trust or pull.
        image=settings.sidecar_image,
        image_pull_policy=settings.image_pull_policy,
        command=egress_lock_command(settings),
        resources=settings.egress_lock_resources.to_v1(),
        # Root with NET_ADMIN alone: what writing the network namespace's nftables takes. Root,
        # because a non-root process loses added capabilities at exec (Kubernetes sets no
        # ambient ones) and file capabilities are a privilege gain, which no_new_privs forbids.
        security_context=client.V1SecurityContext(
            run_as_non_root=False,
            run_as_user=0,
            run_as_group=0,
            read_only_root_filesystem=True,
            allow_privilege_escalation=False,
            capabilities=client.V1Capabilities(drop=["ALL"], add=["NET_ADMIN"]),
            seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault"),
        ),
        # What is missing (nf_tables, NAT redirect, skuid matching, the capability) then shows
        # in `kubectl describe pod`.
        termination_message_policy="FallbackToLogsOnError",
    )


def build_trust_container(settings: ProxySettings = DEFAULT_SETTINGS) -> client.V1Container:
    """The ca-trust init container: writes the workload's CA bundle, hashed certificate folder,
    Java truststore and CA copy into the shared emptyDir, then exits.

    From the sidecar image (its system roots, our command), so the workload image needs nothing
    of ours. It sees the CA's certificate alone, never the key.
    """
    return client.V1Container(
        name=c.TRUST_INIT_CONTAINER,
        image=settings.sidecar_image,
        image_pull_policy=settings.image_pull_policy,
        command=trust_command(),
        resources=settings.ca_trust_resources.to_v1(),
        security_context=_restricted_security_context(c.SIDECAR_UID, c.SIDECAR_GID, True),
        # A bad CA certificate or an unwritable folder then shows in `kubectl describe pod`.
        termination_message_policy="FallbackToLogsOnError",
        volume_mounts=[
            client.V1VolumeMount(
                name=c.WORKLOAD_CA_VOLUME, mount_path=c.WORKLOAD_CA_DIR, read_only=True
            ),
            client.V1VolumeMount(name=c.CA_BUNDLE_VOLUME, mount_path=c.CA_BUNDLE_DIR),
        ],
    )


def build_sidecar_container(settings: ProxySettings = DEFAULT_SETTINGS) -> client.V1Container:
    """The auth-proxy container; in native mode an init container with restartPolicy Always."""
    return client.V1Container(
        name=c.SIDECAR_CONTAINER,
        image=settings.sidecar_image,
        image_pull_policy=settings.image_pull_policy,
        # Only a native sidecar (an init container) takes a restartPolicy.
        restart_policy="Always" if settings.sidecar_mode == c.SIDECAR_MODE_NATIVE else None,
        ports=_sidecar_ports(settings),
        env=_env(sidecar_env(settings)),
        # A native sidecar's startupProbe holds the workload back until the proxy is ready, so
        # the workload's first request never races the proxy's start: up to 30 s for that.
        startup_probe=_http_probe(c.READYZ_PATH, settings.health_port, 1, 30),
        # Ready means a policy is loaded and the proxy listens (its body names any reload error).
        readiness_probe=_http_probe(c.READYZ_PATH, settings.health_port, 5, 3),
        liveness_probe=_http_probe(c.HEALTHZ_PATH, settings.health_port, 10, 3, timeout=2),
        resources=settings.sidecar_resources.to_v1(),
        security_context=_restricted_security_context(c.SIDECAR_UID, c.SIDECAR_GID, True),
        # A start-up failure (a bad policy) then shows in `kubectl describe pod`.
        termination_message_policy="FallbackToLogsOnError",
        volume_mounts=[
            client.V1VolumeMount(
                name=c.SIDECAR_CA_VOLUME, mount_path=c.SIDECAR_CA_DIR, read_only=True
            ),
            client.V1VolumeMount(name=c.POLICY_VOLUME, mount_path=c.POLICY_DIR, read_only=True),
            client.V1VolumeMount(name=c.SIDECAR_TMP_VOLUME, mount_path=c.SIDECAR_TMP_DIR),
        ],
    )


def build_workload_container(
    image: str,
    env: Mapping[str, str],
    resources: Resources,
    settings: ProxySettings = DEFAULT_SETTINGS,
) -> client.V1Container:
    """The workload container. The image's own entrypoint and command are kept."""
    mounts: list[client.V1VolumeMount] | None = None
    env_vars = dict(env)
    if settings.enable_auth_proxy:
        # The reserved variables go last: should a duplicate ever slip past check_user_env,
        # Kubernetes keeps the last definition, which is then the proxy's.
        env_vars |= proxy_env(settings)
        mounts = [
            client.V1VolumeMount(
                name=c.WORKLOAD_CA_VOLUME, mount_path=c.WORKLOAD_CA_DIR, read_only=True
            ),
            # Written by the ca-trust init container; the workload only reads it.
            client.V1VolumeMount(
                name=c.CA_BUNDLE_VOLUME, mount_path=c.CA_BUNDLE_DIR, read_only=True
            ),
        ]
    return client.V1Container(
        name=c.WORKLOAD_CONTAINER,
        image=image,
        image_pull_policy=settings.image_pull_policy,
        env=_env(env_vars) or None,
        resources=resources.to_v1(),
        security_context=_restricted_security_context(
            settings.workload_uid,
            settings.workload_gid,
            settings.workload_read_only_root_filesystem,
        ),
        volume_mounts=mounts,
    )


def build_proxy_volumes(settings: ProxySettings = DEFAULT_SETTINGS) -> list[client.V1Volume]:
    return [
        # The whole CA Secret, tls.key included: mounted into the sidecar only. 0440 with the
        # pod's fsGroup (the sidecar's group) keeps the key unreadable to any other user.
        client.V1Volume(
            name=c.SIDECAR_CA_VOLUME,
            secret=client.V1SecretVolumeSource(
                secret_name=settings.ca_secret_name, default_mode=0o440
            ),
        ),
        # The same Secret for the workload, with items selecting tls.crt alone: the key is not
        # in this volume at all, so no mount of it can expose the key.
        client.V1Volume(
            name=c.WORKLOAD_CA_VOLUME,
            secret=client.V1SecretVolumeSource(
                secret_name=settings.ca_secret_name,
                items=[client.V1KeyToPath(key=c.TLS_CERT_KEY, path=c.WORKLOAD_CA_FILE_NAME)],
                default_mode=0o444,
            ),
        ),
        client.V1Volume(
            name=c.POLICY_VOLUME,
            config_map=client.V1ConfigMapVolumeSource(
                name=settings.policy_configmap_name, default_mode=0o444
            ),
        ),
        client.V1Volume(
            name=c.SIDECAR_TMP_VOLUME,
            empty_dir=client.V1EmptyDirVolumeSource(size_limit=settings.sidecar_tmp_size),
        ),
        client.V1Volume(
            name=c.CA_BUNDLE_VOLUME,
            empty_dir=client.V1EmptyDirVolumeSource(size_limit=settings.ca_bundle_size),
        ),
    ]


def sandbox_labels(
    pool_status: str, settings: ProxySettings, pool: str | None = None
) -> dict[str, str]:
    labels = {
        c.LABEL_MANAGED_BY: c.MANAGED_BY,
        c.LABEL_PART_OF: c.PART_OF,
        c.LABEL_COMPONENT: c.COMPONENT_SANDBOX,
        c.LABEL_POOL_STATUS: pool_status,
        c.LABEL_AUTH_PROXY: (
            c.AUTH_PROXY_ENABLED if settings.enable_auth_proxy else c.AUTH_PROXY_DISABLED
        ),
        c.LABEL_EGRESS: c.EGRESS_ENFORCED if settings.enforces_egress else c.EGRESS_UNENFORCED,
    }
    if pool is not None:
        labels[c.LABEL_POOL] = pool
    return labels


def _build_pod(
    metadata: client.V1ObjectMeta,
    image: str,
    env: Mapping[str, str],
    resources: Resources,
    settings: ProxySettings,
) -> client.V1Pod:
    workload = build_workload_container(image, env, resources, settings)
    init_containers: list[client.V1Container] | None = None
    containers = [workload]
    volumes: list[client.V1Volume] | None = None
    pod_security: client.V1PodSecurityContext | None = None
    if settings.enable_auth_proxy:
        sidecar = build_sidecar_container(settings)
        # The lock goes first: init containers run one by one, in order, each to completion
        # (a native sidecar to started), so nothing else in the pod runs before it succeeded.
        # Then the trust files, which the workload needs from its first instruction.
        init_containers = (
            [build_egress_lock_container(settings)] if settings.enforces_egress else []
        )
        init_containers.append(build_trust_container(settings))
        if settings.sidecar_mode == c.SIDECAR_MODE_NATIVE:
            init_containers.append(sidecar)
        else:
            # First, so that it is started first (though without any ordering guarantee).
            containers = [sidecar, workload]
        volumes = build_proxy_volumes(settings)
        # Group ownership of the secret volume, so the non-root sidecar can read the 0440 key.
        pod_security = client.V1PodSecurityContext(fs_group=c.SIDECAR_GID)
    return client.V1Pod(
        api_version="v1",
        kind="Pod",
        metadata=metadata,
        spec=client.V1PodSpec(
            runtime_class_name=settings.runtime_class_name,
            restart_policy="Never",
            # Sandboxed code gets no Kubernetes API credentials and no service discovery env.
            automount_service_account_token=False,
            enable_service_links=False,
            # Explicit: a shared process namespace would let the workload read the sidecar's
            # files (the CA key) through /proc/<pid>/root.
            share_process_namespace=False,
            security_context=pod_security,
            init_containers=init_containers,
            containers=containers,
            volumes=volumes,
        ),
    )


# --- the builders ------------------------------------------------------------------------------


def build_pod_spec(
    name: str,
    *,
    image: str | None = None,
    env: Mapping[str, str] | None = None,
    resources: Resources | None = None,
    labels: Mapping[str, str] | None = None,
    settings: ProxySettings = DEFAULT_SETTINGS,
) -> client.V1Pod:
    """An on-demand sandbox pod for one request (pool status `manual`).

    `image` defaults to settings.executor_image, `resources` to settings.workload_resources.
    `env` is the user's: kept in order, but a variable the proxy reserves raises ValueError naming
    it. `labels` are added to the managed ones, which they may not override.
    """
    validate_pod_name(name)
    env = dict(env or {})
    check_user_env(env, settings)
    user_labels = dict(labels or {})
    check_user_labels(user_labels)
    metadata = client.V1ObjectMeta(
        name=name,
        labels=user_labels | sandbox_labels(c.POOL_STATUS_MANUAL, settings),
    )
    return _build_pod(
        metadata,
        image or settings.executor_image,
        env,
        resources or settings.workload_resources,
        settings,
    )


def build_warm_pod_spec(
    pool: str,
    *,
    name: str | None = None,
    image: str | None = None,
    resources: Resources | None = None,
    labels: Mapping[str, str] | None = None,
    settings: ProxySettings = DEFAULT_SETTINGS,
) -> client.V1Pod:
    """An idle pod for pool `pool` (pool status `warm`, label LABEL_POOL=pool), no user env.

    Without `name`, metadata.generateName is `<pool>-` and the API server picks the name (create
    it with `kubectl create`, since `kubectl apply` needs a name).
    """
    validate_pool_name(pool)
    if name is not None:
        validate_pod_name(name)
    user_labels = dict(labels or {})
    check_user_labels(user_labels)
    metadata = client.V1ObjectMeta(
        name=name,
        generate_name=None if name is not None else f"{pool}-",
        labels=user_labels | sandbox_labels(c.POOL_STATUS_WARM, settings, pool=pool),
    )
    return _build_pod(
        metadata,
        image or settings.executor_image,
        {},
        resources or settings.workload_resources,
        settings,
    )
