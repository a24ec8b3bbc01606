"""Checks on what callers hand the pod builders: names, labels and environment variables."""

from __future__ import annotations

import re
from collections.abc import Mapping

from k8s import constants as c
from k8s.settings import ProxySettings

# DNS-1123 subdomain (pod names) and label (pool names; they end up in a label value).
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_GENERATE_NAME_SUFFIX = 5  # the random suffix the API server appends to generateName

MANAGED_LABEL_KEYS = frozenset(
    {
        c.LABEL_MANAGED_BY,
        c.LABEL_PART_OF,
        c.LABEL_COMPONENT,
        c.LABEL_POOL_STATUS,
        c.LABEL_POOL,
        c.LABEL_AUTH_PROXY,
        c.LABEL_EGRESS,
    }
)


def validate_pod_name(name: str) -> str:
    if len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        raise ValueError(
            f"pod name {name!r} is not a DNS-1123 subdomain: use lower-case letters, digits, "
            "'-' and '.', starting and ending with a letter or digit, at most 253 characters"
        )
    return name


def validate_pool_name(pool: str) -> str:
    # The pool name is a label value (at most 63) and the generateName prefix of its pods.
    if len(pool) > 63 - _GENERATE_NAME_SUFFIX - 1 or not _DNS_LABEL.match(pool):
        raise ValueError(
            f"pool name {pool!r} is not a DNS-1123 label: use lower-case letters, digits and '-', "
            f"starting and ending with a letter or digit, at most {63 - _GENERATE_NAME_SUFFIX - 1} "
            "characters"
        )
    return pool


def _validate_label(key: str, value: str) -> None:
    prefix, _, name = key.rpartition("/")
    key_ok = (
        bool(name)
        and len(name) <= 63
        and bool(_LABEL_NAME.match(name))
        and (not prefix or (len(prefix) <= 253 and bool(_DNS_SUBDOMAIN.match(prefix))))
    )
    if not key_ok:
        raise ValueError(f"label key {key!r} is not a valid Kubernetes label key")
    if not isinstance(value, str) or len(value) > 63 or not _LABEL_NAME.match(value):
        raise ValueError(f"label {key}={value!r}: the value is not a valid Kubernetes label value")


def check_user_labels(labels: Mapping[str, str]) -> None:
    """Raise ValueError for a label the builders own or one Kubernetes would reject."""
    for key, value in labels.items():
        if key in MANAGED_LABEL_KEYS:
            raise ValueError(f"label {key!r} is set by the pod builder and cannot be overridden")
        _validate_label(key, value)


def is_reserved_env_name(name: str) -> bool:
    return name in c.RESERVED_ENV_NAMES or name.lower() in c.CASE_INSENSITIVE_RESERVED_ENV_NAMES


def check_user_env(env: Mapping[str, str], settings: ProxySettings) -> None:
    """Raise ValueError for a user variable that is malformed or would override the proxy's."""
    for name, value in env.items():
        if not isinstance(name, str) or not name or "=" in name or not name.isprintable():
            raise ValueError(f"env variable name {name!r} is not valid")
        if not isinstance(value, str):
            raise ValueError(f"env variable {name}: the value must be a string, got {value!r}")
        if settings.enable_auth_proxy and is_reserved_env_name(name):
            raise ValueError(
                f"env variable {name} is reserved: the auth proxy sets it so that traffic goes "
                "through the proxy and trusts its CA. Remove it from the request"
            )
