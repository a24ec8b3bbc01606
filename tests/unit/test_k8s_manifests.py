"""k8s.manifests: the CA Secret and the policy ConfigMap."""

from __future__ import annotations

import base64
import datetime
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes.client import ApiClient, V1ConfigMap, V1Secret

from addons.policy import PolicyError, parse_policy
from ca import generate
from k8s import constants as c
from k8s.manifests import (
    ManifestError,
    build_ca_secret,
    build_policy_configmap,
    check_ca_pair,
    load_ca_secret,
    merge_policy_text,
    policy_text_from_domains,
)


@pytest.fixture(scope="module")
def ca_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ca")
    generate.write_ca(generate.build_ca(), out, force=True)
    return out


def to_dict(obj: Any) -> Any:
    return ApiClient().sanitize_for_serialization(obj)


def not_a_ca() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "leaf")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


# --- the CA Secret -----------------------------------------------------------------------------


def test_ca_secret_is_complete(ca_dir: Path) -> None:
    secret = load_ca_secret(ca_dir)
    assert isinstance(secret, V1Secret)
    cert_pem, key_pem = (ca_dir / "ca.crt").read_bytes(), (ca_dir / "ca.key").read_bytes()
    assert to_dict(secret) == {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "sandbox-proxy-ca",
            "labels": {
                "app.kubernetes.io/managed-by": "sandbox-manager",
                "app.kubernetes.io/part-of": "sandbox",
                "app.kubernetes.io/component": "auth-proxy-ca",
            },
        },
        "type": "kubernetes.io/tls",
        "data": {
            "tls.crt": base64.b64encode(cert_pem).decode(),
            "tls.key": base64.b64encode(key_pem).decode(),
        },
    }


def test_ca_secret_name(ca_dir: Path) -> None:
    assert to_dict(load_ca_secret(ca_dir, "other-ca"))["metadata"]["name"] == "other-ca"


@pytest.mark.parametrize("missing", ["ca.crt", "ca.key"])
def test_missing_ca_file_is_named(tmp_path: Path, ca_dir: Path, missing: str) -> None:
    for name in ("ca.crt", "ca.key"):
        if name != missing:
            (tmp_path / name).write_bytes((ca_dir / name).read_bytes())
    with pytest.raises(ManifestError, match=re.escape(str(tmp_path / missing))) as raised:
        load_ca_secret(tmp_path)
    assert "ca/generate.py" in str(raised.value)


def test_key_of_another_ca_is_refused(tmp_path: Path, ca_dir: Path) -> None:
    other = generate.build_ca()
    (tmp_path / "ca.crt").write_bytes((ca_dir / "ca.crt").read_bytes())
    (tmp_path / "ca.key").write_bytes(other.key_pem())
    with pytest.raises(ManifestError, match="does not belong"):
        load_ca_secret(tmp_path)


def test_a_leaf_certificate_is_refused() -> None:
    with pytest.raises(ManifestError, match="not a CA certificate"):
        check_ca_pair(*not_a_ca())


@pytest.mark.parametrize(
    ("cert", "key", "message"),
    [
        pytest.param(b"garbage", None, "not a PEM certificate", id="cert-garbage"),
        pytest.param(None, b"garbage", "not an unencrypted PEM private key", id="key-garbage"),
    ],
)
def test_garbage_is_refused(
    ca_dir: Path, cert: bytes | None, key: bytes | None, message: str
) -> None:
    cert = cert or (ca_dir / "ca.crt").read_bytes()
    key = key or (ca_dir / "ca.key").read_bytes()
    with pytest.raises(ManifestError, match=message):
        build_ca_secret(cert, key)


# --- the policy ConfigMap ----------------------------------------------------------------------


def test_policy_configmap_is_complete() -> None:
    text = policy_text_from_domains(["httpbin.org", "*.example.com"])
    configmap = build_policy_configmap(text)
    assert isinstance(configmap, V1ConfigMap)
    assert to_dict(configmap) == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "sandbox-proxy-policy",
            "labels": {
                "app.kubernetes.io/managed-by": "sandbox-manager",
                "app.kubernetes.io/part-of": "sandbox",
                "app.kubernetes.io/component": "auth-proxy-policy",
            },
        },
        "data": {
            "policy.yaml": "version: v1\nallowed_domains:\n- httpbin.org\n- '*.example.com'\n"
        },
    }


def test_policy_from_domains_is_what_the_proxy_loads() -> None:
    policy = parse_policy(policy_text_from_domains(["HTTPBIN.org.", "*.example.com"]), "t")
    assert policy.exact == {"httpbin.org"}
    assert policy.wildcard_suffixes == {"example.com"}
    assert policy.ports == {443, 80}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        pytest.param(policy_text_from_domains(["*"]), "allowed_domains[0] '*'", id="bare-star"),
        pytest.param(
            policy_text_from_domains(["ok.org", "foo.*.com"]),
            "allowed_domains[1] 'foo.*.com'",
            id="inner-star",
        ),
        pytest.param(policy_text_from_domains(["bad_host!"]), "'bad_host!'", id="bad-chars"),
        pytest.param("allowed_domains: [a.org]\n", "missing 'version'", id="no-version"),
        pytest.param("version: v2\n", "unknown version", id="wrong-version"),
        pytest.param("version: v1\nallowed_domain: [a.org]\n", "allowed_domains", id="typo-key"),
        pytest.param("version: v1\nallowed_ports: [0]\n", "allowed_ports[0]", id="bad-port"),
        pytest.param("version: [v1\n", "not valid YAML", id="broken-yaml"),
    ],
)
def test_invalid_policy_is_refused_with_the_proxys_message(text: str, fragment: str) -> None:
    with pytest.raises(PolicyError) as raised:
        build_policy_configmap(text, source="my-policy.yaml")
    assert str(raised.value).startswith("my-policy.yaml: ")
    assert fragment in str(raised.value)


def test_policy_text_is_kept_verbatim() -> None:
    text = "# reviewed by security\nversion: v1\nallowed_domains:\n  - pypi.org  # pip\n"
    assert build_policy_configmap(text).data == {"policy.yaml": text}


def test_merge_keeps_ports_and_ranges_and_dedupes() -> None:
    text = (
        "version: v1\nallowed_domains: [a.org]\nallowed_ports: [443]\nallow_ranges: [10.0.0.0/8]\n"
    )
    merged = merge_policy_text(text, ["b.org", "a.org"], "f.yaml")
    assert yaml.safe_load(merged) == {
        "version": "v1",
        "allowed_domains": ["a.org", "b.org"],
        "allowed_ports": [443],
        "allow_ranges": ["10.0.0.0/8"],
    }


def test_merge_into_a_file_without_domains() -> None:
    merged = merge_policy_text("version: v1\n", ["b.org"], "f.yaml")
    assert yaml.safe_load(merged) == {"version": "v1", "allowed_domains": ["b.org"]}


def test_merge_validates_the_file_first() -> None:
    with pytest.raises(PolicyError, match=r"f\.yaml"):
        merge_policy_text("version: v9\n", ["b.org"], "f.yaml")


def test_constants_match_the_contract() -> None:
    assert (c.CA_SECRET_NAME, c.CA_SECRET_TYPE) == ("sandbox-proxy-ca", "kubernetes.io/tls")
    assert (c.TLS_CERT_KEY, c.TLS_KEY_KEY) == ("tls.crt", "tls.key")
    assert (c.POLICY_CONFIGMAP_NAME, c.POLICY_KEY) == ("sandbox-proxy-policy", "policy.yaml")
    assert c.POLICY_PATH == "/etc/auth-proxy/policy.yaml"
    assert c.WORKLOAD_CA_CERT == "/etc/proxy-ca/ca.crt"
    assert c.CA_BUNDLE == "/var/lib/proxy-ca/ca-bundle.crt"
    assert (c.SIDECAR_CA_DIR, c.SIDECAR_CONFDIR) == ("/certs", "/tmp/auth-proxy")
    assert c.PROXY_URL == "http://127.0.0.1:8080"
