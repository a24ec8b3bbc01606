"""ca/generate.py: the CA's shape, the files it writes, and that real consumers accept it."""

from __future__ import annotations

import datetime
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

from ca import generate

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl CLI")


@pytest.fixture(scope="module")
def ec_ca() -> generate.CA:
    return generate.build_ca()


@pytest.fixture(scope="module")
def ca_dir(tmp_path_factory: pytest.TempPathFactory, ec_ca: generate.CA) -> Path:
    out = tmp_path_factory.mktemp("ca") / "out"
    generate.write_ca(ec_ca, out)
    return out


def run_generate(
    *args: str, as_module: bool = False, cwd: Path = REPO
) -> subprocess.CompletedProcess[str]:
    # As a script, run from a directory other than the repo root too: it must not need sys.path.
    entry = ["-m", "ca.generate"] if as_module else [str(REPO / "ca" / "generate.py")]
    return subprocess.run(
        [PYTHON, *entry, *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def make_leaf(ca: generate.CA, host: str) -> x509.Certificate:
    """A server leaf the way a TLS-intercepting proxy mints one."""
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca.cert.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(ca.key, hashes.SHA256())
    )


def verify_server(ca_cert: x509.Certificate, leaf: x509.Certificate, host: str) -> None:
    store = verification.Store([ca_cert])
    verifier = verification.PolicyBuilder().store(store).build_server_verifier(x509.DNSName(host))
    chain = verifier.verify(leaf, [])
    assert chain[-1] == ca_cert


# --- the certificate ---------------------------------------------------------------------------


def test_extensions_are_exactly_the_ca_profile(ec_ca: generate.CA) -> None:
    exts = {ext.oid: ext for ext in ec_ca.cert.extensions}
    assert set(exts) == {
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
    }
    bc = exts[ExtensionOID.BASIC_CONSTRAINTS]
    assert bc.critical
    assert bc.value == x509.BasicConstraints(ca=True, path_length=0)
    ku = exts[ExtensionOID.KEY_USAGE]
    assert ku.critical
    assert ku.value == x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )
    ski = exts[ExtensionOID.SUBJECT_KEY_IDENTIFIER]
    assert not ski.critical
    assert ski.value == x509.SubjectKeyIdentifier.from_public_key(ec_ca.key.public_key())
    aki = exts[ExtensionOID.AUTHORITY_KEY_IDENTIFIER]
    assert not aki.critical
    assert aki.value.key_identifier == ski.value.digest


def test_self_signed_with_default_name(ec_ca: generate.CA) -> None:
    cert = ec_ca.cert
    assert cert.subject == cert.issuer
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "sandbox auth-proxy CA"
    )
    cert.verify_directly_issued_by(cert)
    assert cert.version == x509.Version.v3
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)


@pytest.mark.parametrize(
    ("key_type", "key_class", "size"),
    [
        pytest.param("ec", ec.EllipticCurvePrivateKey, 256, id="ec-is-p256"),
        pytest.param("rsa", rsa.RSAPrivateKey, generate.RSA_KEY_SIZE, id="rsa-3072"),
    ],
)
def test_key_types(key_type: str, key_class: type, size: int) -> None:
    ca = generate.build_ca(key_type=key_type)
    assert isinstance(ca.key, key_class)
    assert ca.key.key_size == size
    if isinstance(ca.key, ec.EllipticCurvePrivateKey):
        assert isinstance(ca.key.curve, ec.SECP256R1)
    assert ca.cert.public_key() == ca.key.public_key()


def test_unknown_key_type_is_refused() -> None:
    with pytest.raises(ValueError, match="dsa"):
        generate.build_ca(key_type="dsa")


@pytest.mark.parametrize("days", [1, 365, 3650], ids=["one-day", "a-year", "ten-years"])
def test_validity_is_as_asked(days: int) -> None:
    now = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    cert = generate.build_ca(days=days, now=now).cert
    assert cert.not_valid_after_utc == now + datetime.timedelta(days=days)
    # Backdated a little for clock skew, never into the future.
    assert now - datetime.timedelta(hours=2) < cert.not_valid_before_utc <= now


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param({"days": 0}, "days", id="zero-days"),
        pytest.param({"days": -5}, "days", id="negative-days"),
        pytest.param({"common_name": "  "}, "common name", id="blank-cn"),
    ],
)
def test_build_ca_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        generate.build_ca(**kwargs)


def test_common_name_is_used() -> None:
    cert = generate.build_ca(common_name="my dev CA").cert
    assert cert.subject.rfc4514_string() == "CN=my dev CA"


def test_each_ca_is_new(ec_ca: generate.CA) -> None:
    other = generate.build_ca()
    assert other.cert.serial_number != ec_ca.cert.serial_number
    assert other.cert.public_key() != ec_ca.cert.public_key()


# --- the files ---------------------------------------------------------------------------------


def test_writes_the_four_files_with_modes(ca_dir: Path, ec_ca: generate.CA) -> None:
    assert sorted(p.name for p in ca_dir.iterdir() if not p.name.startswith("mitmproxy-dh")) == [
        "ca.crt",
        "ca.key",
        "mitmproxy-ca-cert.pem",
        "mitmproxy-ca.pem",
    ]
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in ca_dir.iterdir()}
    assert modes["ca.key"] == 0o600
    assert modes["mitmproxy-ca.pem"] == 0o600, "it holds the key too"
    assert modes["ca.crt"] == 0o644
    assert modes["mitmproxy-ca-cert.pem"] == 0o644
    assert stat.S_IMODE(ca_dir.stat().st_mode) == 0o700


def test_file_contents(ca_dir: Path, ec_ca: generate.CA) -> None:
    cert_pem = (ca_dir / "ca.crt").read_bytes()
    assert x509.load_pem_x509_certificate(cert_pem) == ec_ca.cert
    assert (ca_dir / "mitmproxy-ca-cert.pem").read_bytes() == cert_pem
    key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), None)
    assert key.public_key() == ec_ca.cert.public_key()
    combined = (ca_dir / "mitmproxy-ca.pem").read_bytes()
    assert combined == (ca_dir / "ca.key").read_bytes() + cert_pem
    assert x509.load_pem_x509_certificates(combined) == [ec_ca.cert]


def test_no_temporary_files_are_left(ca_dir: Path) -> None:
    assert not [p for p in ca_dir.iterdir() if p.name.startswith(".")]


def test_key_is_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        generate.write_ca(generate.build_ca(), tmp_path / "ca")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "ca" / "ca.key").stat().st_mode) == 0o600


@pytest.mark.parametrize("present", generate.OUTPUT_FILES)
def test_refuses_to_overwrite_any_part_of_a_ca(tmp_path: Path, present: str) -> None:
    (tmp_path / present).write_text("precious")
    with pytest.raises(generate.CAExistsError, match=present):
        generate.write_ca(generate.build_ca(), tmp_path)
    assert (tmp_path / present).read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == [present], "nothing half-written"


def test_force_replaces(tmp_path: Path) -> None:
    first, second = generate.build_ca(), generate.build_ca()
    generate.write_ca(first, tmp_path)
    generate.write_ca(second, tmp_path, force=True)
    assert x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes()) == second.cert
    assert stat.S_IMODE((tmp_path / "ca.key").stat().st_mode) == 0o600


def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = generate._write_temp
    calls = []

    def flaky(directory: Path, name: str, content: bytes, mode: int) -> Path:
        calls.append(name)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(directory, name, content, mode)

    monkeypatch.setattr(generate, "_write_temp", flaky)
    with pytest.raises(OSError, match="No space"):
        generate.write_ca(generate.build_ca(), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_failed_rename_rolls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = generate._place_new
    calls = []

    def flaky(temp: Path, final: Path) -> None:
        calls.append(final)
        if len(calls) == 3:
            raise OSError(5, "I/O error")
        real(temp, final)

    monkeypatch.setattr(generate, "_place_new", flaky)
    with pytest.raises(OSError, match="I/O"):
        generate.write_ca(generate.build_ca(), tmp_path)
    assert list(tmp_path.iterdir()) == []


# --- the command line --------------------------------------------------------------------------


@pytest.mark.parametrize("as_module", [False, True], ids=["script", "module"])
def test_cli_writes_a_ca(tmp_path: Path, as_module: bool) -> None:
    out = tmp_path / "nested" / "ca"
    cwd = REPO if as_module else tmp_path
    result = run_generate(
        "--out", str(out), "--common-name", "cli CA", "--days", "30", "--key-type", "rsa",
        as_module=as_module, cwd=cwd,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    cert = x509.load_pem_x509_certificate((out / "ca.crt").read_bytes())
    assert cert.subject.rfc4514_string() == "CN=cli CA"
    assert isinstance(cert.public_key(), rsa.RSAPublicKey)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime == datetime.timedelta(days=30) + generate.CLOCK_SKEW
    assert stat.S_IMODE((out / "ca.key").stat().st_mode) == 0o600


def test_cli_refuses_overwrite_then_force_replaces(tmp_path: Path) -> None:
    assert run_generate("--out", str(tmp_path)).returncode == 0
    before = (tmp_path / "ca.crt").read_bytes()
    refused = run_generate("--out", str(tmp_path))
    assert refused.returncode == 1
    assert str(tmp_path / "ca.crt") in refused.stderr
    assert "--force" in refused.stderr
    assert (tmp_path / "ca.crt").read_bytes() == before
    forced = run_generate("--out", str(tmp_path), "--force")
    assert forced.returncode == 0, forced.stderr
    assert (tmp_path / "ca.crt").read_bytes() != before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--days", "0"], "--days", id="zero-days"),
        pytest.param(["--days", "ten"], "--days", id="days-not-a-number"),
        pytest.param(["--key-type", "dsa"], "--key-type", id="unknown-key-type"),
        pytest.param(["--common-name", ""], "--common-name", id="empty-cn"),
    ],
)
def test_cli_bad_arguments(tmp_path: Path, args: list[str], message: str) -> None:
    result = run_generate("--out", str(tmp_path / "ca"), *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / "ca").exists()


def test_cli_requires_out() -> None:
    result = run_generate()
    assert result.returncode == 2
    assert "--out" in result.stderr


# --- consumers accept it -----------------------------------------------------------------------


@pytest.mark.parametrize("key_type", generate.KEY_TYPES)
def test_leaf_signed_by_the_ca_verifies(key_type: str) -> None:
    ca = generate.build_ca(key_type=key_type)
    verify_server(ca.cert, make_leaf(ca, "httpbin.org"), "httpbin.org")


def test_leaf_from_another_ca_does_not_verify(ec_ca: generate.CA) -> None:
    stranger = generate.build_ca()
    with pytest.raises(verification.VerificationError):
        verify_server(ec_ca.cert, make_leaf(stranger, "httpbin.org"), "httpbin.org")


@needs_openssl
def test_openssl_reads_the_ca(ca_dir: Path) -> None:
    result = subprocess.run(
        ["openssl", "x509", "-in", str(ca_dir / "ca.crt"), "-noout", "-text"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "CA:TRUE, pathlen:0" in result.stdout
    assert "Certificate Sign, CRL Sign" in result.stdout


@needs_openssl
def test_openssl_verifies_ca_and_leaf(tmp_path: Path, ec_ca: generate.CA) -> None:
    ca_file, leaf_file = tmp_path / "ca.crt", tmp_path / "leaf.crt"
    ca_file.write_bytes(ec_ca.cert_pem())
    leaf = make_leaf(ec_ca, "example.com")
    leaf_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    for cert in (ca_file, leaf_file):
        result = subprocess.run(
            ["openssl", "verify", "-x509_strict", "-CAfile", str(ca_file), str(cert)],
            capture_output=True, text=True,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr


def test_mitmproxy_loads_the_dir_and_mints_a_chaining_leaf(tmp_path: Path) -> None:
    from mitmproxy.certs import CertStore

    out = tmp_path / "ca"
    assert run_generate("--out", str(out)).returncode == 0
    store = CertStore.from_store(out, "mitmproxy", 2048)
    ca_cert = x509.load_pem_x509_certificate((out / "ca.crt").read_bytes())
    assert store.default_ca.to_cryptography() == ca_cert
    entry = store.get_cert("httpbin.org", [x509.DNSName("httpbin.org")])
    leaf = entry.cert.to_cryptography()
    leaf.verify_directly_issued_by(ca_cert)
    verify_server(ca_cert, leaf, "httpbin.org")
