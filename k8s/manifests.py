"""Pure builders for the objects sandbox pods depend on: the CA Secret and the policy ConfigMap."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from kubernetes import client

from addons.policy import VERSION as POLICY_VERSION
from addons.policy import PolicyError, parse_policy
from addons.policy_file import load_yaml
from k8s import constants as c


class ManifestError(ValueError):
    """Input that cannot become a manifest. The message names the input and the fix."""


def _labels(component: str) -> dict[str, str]:
    return {
        c.LABEL_MANAGED_BY: c.MANAGED_BY,
        c.LABEL_PART_OF: c.PART_OF,
        c.LABEL_COMPONENT: component,
    }


# --- the CA Secret -----------------------------------------------------------------------------


def check_ca_pair(cert_pem: bytes, key_pem: bytes, source: str = "the CA") -> None:
    """Raise ManifestError unless cert_pem is a CA certificate and key_pem its private key."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as e:
        raise ManifestError(f"{source}: the certificate is not a PEM certificate ({e})") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as e:
        raise ManifestError(
            f"{source}: the key is not an unencrypted PEM private key ({e})"
        ) from None
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise ManifestError(
            f"{source}: the certificate is not a CA certificate (no basicConstraints CA:TRUE). "
            "Fix: generate one with python ca/generate.py --out DIR"
        )
    if key.public_key() != cert.public_key():
        raise ManifestError(f"{source}: the private key does not belong to the certificate")


def build_ca_secret(
    cert_pem: bytes, key_pem: bytes, name: str = c.CA_SECRET_NAME
) -> client.V1Secret:
    """The CA Secret (type kubernetes.io/tls): tls.crt and tls.key, checked to be a CA pair."""
    check_ca_pair(cert_pem, key_pem)
    return client.V1Secret(
        api_version="v1",
        kind="Secret",
        metadata=client.V1ObjectMeta(name=name, labels=_labels(c.COMPONENT_CA)),
        type=c.CA_SECRET_TYPE,
        data={
            c.TLS_CERT_KEY: base64.b64encode(cert_pem).decode("ascii"),
            c.TLS_KEY_KEY: base64.b64encode(key_pem).decode("ascii"),
        },
    )


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise ManifestError(
            f"cannot read the {what} {path}: {e.strerror or e}. "
            f"Fix: generate the CA with python ca/generate.py --out {path.parent}"
        ) from None


def load_ca_secret(ca_dir: str | Path, name: str = c.CA_SECRET_NAME) -> client.V1Secret:
    """The CA Secret from the ca.crt and ca.key that ca/generate.py wrote into `ca_dir`."""
    ca_dir = Path(ca_dir)
    cert_path, key_path = ca_dir / c.CA_CERT_FILE, ca_dir / c.CA_KEY_FILE
    cert_pem = _read(cert_path, "CA certificate")
    key_pem = _read(key_path, "CA key")
    check_ca_pair(cert_pem, key_pem, source=f"{cert_path} and {key_path}")
    return build_ca_secret(cert_pem, key_pem, name)


# --- the policy ConfigMap ----------------------------------------------------------------------


def policy_text_from_domains(domains: Iterable[str]) -> str:
    """Policy file v1 text allowing exactly `domains` (default ports, no ranges)."""
    return yaml.safe_dump(
        {"version": POLICY_VERSION, "allowed_domains": list(domains)},
        sort_keys=False,
        default_flow_style=False,
    )


def merge_policy_text(text: str, extra_domains: Iterable[str], source: str) -> str:
    """`text` with extra allowed_domains appended (duplicates dropped). Validates both."""
    parse_policy(text, source)
    data = load_yaml(text, source)  # the proxy's strict YAML, as just validated
    domains = list(data.get("allowed_domains") or [])
    for domain in extra_domains:
        if domain not in domains:
            domains.append(domain)
    data["allowed_domains"] = domains
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def build_policy_configmap(
    policy_text: str, name: str = c.POLICY_CONFIGMAP_NAME, source: str = c.POLICY_KEY
) -> client.V1ConfigMap:
    """The policy ConfigMap (key policy.yaml), validated with the proxy's own loader first.

    Raises addons.policy.PolicyError naming `source` and the bad entry, exactly what the proxy
    would report at start-up, so a broken policy never reaches the cluster.
    """
    parse_policy(policy_text, source)
    return client.V1ConfigMap(
        api_version="v1",
        kind="ConfigMap",
        metadata=client.V1ObjectMeta(name=name, labels=_labels(c.COMPONENT_POLICY)),
        data={c.POLICY_KEY: policy_text},
    )


__all__ = [
    "ManifestError",
    "PolicyError",
    "build_ca_secret",
    "build_policy_configmap",
    "check_ca_pair",
    "load_ca_secret",
    "merge_policy_text",
    "policy_text_from_domains",
]
