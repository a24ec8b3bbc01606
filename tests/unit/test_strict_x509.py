"""Strict X.509 verifiers accept our CA (ca/generate.py) and the leaves mitmproxy mints with it.

Clients that workloads run check certificates harder than mitmproxy's own tests do: Python 3.13
turns on `VERIFY_X509_STRICT` in `ssl.create_default_context()` (RFC 5280 profile: key
identifiers, key usage on CAs, critical basicConstraints), OpenSSL 3 has `-x509_strict`, Go's
crypto/x509 and the JVM's PKIX validator have their own rules. Each one runs here, for real:

- python-ssl:       a TLS handshake to a loopback server serving the leaf, from a default context
                    with VERIFY_X509_STRICT (set explicitly too) and check_hostname
- openssl-verify:   `openssl verify -x509_strict -purpose sslserver -verify_hostname|-verify_ip`
- openssl-s_client: a handshake with the same flags and -verify_return_error
- go:               tests/unit/strict_x509/verify.go (crypto/x509 Verify with DNSName and
                    serverAuth, then a crypto/tls handshake), run with `go run`
- java:             tests/unit/strict_x509/Verify.java (PKIX TrustManagerFactory over a KeyStore
                    holding only the CA, checkServerTrusted per authType, then an SSLSocket
                    handshake with HTTPS endpoint identification), run with `java Verify.java`

The leaves are minted exactly as the proxy mints them: mitmproxy's CertStore loaded from the
confdir files ca/generate.py writes, `get_cert(cn, sans)` with the names TlsConfig would pass. The
server sends the leaf alone, as mitmproxy does with a one-certificate CA file.

Go and the JDK are test dependencies (.ci/run installs golang-go and default-jdk-headless). Their
absence fails the test with the package to install; nothing here is skipped.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID
from mitmproxy.certs import CertStore

from ca import generate

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "strict_x509"
GO_VERIFIER = FIXTURES / "verify.go"
JAVA_VERIFIER = FIXTURES / "Verify.java"
# What the CI machine installs for these verifiers (.ci/run); named in the failure when missing.
TOOL_PACKAGES = {
    "go": "golang-go",
    "java": "default-jdk-headless",
    "javac": "default-jdk-headless",
    "openssl": "openssl",
}
# CA/Browser Forum and Apple cap server leaves at 398 days; mitmproxy mints 199-day leaves.
MAX_LEAF_DAYS = 398
# RFC 5280 4.1.2.2: a positive INTEGER of at most 20 octets (its DER content, sign bit included).
MAX_SERIAL_OCTETS = 20
RUN_TIMEOUT = 180


# --- the leaves, minted as the proxy mints them ------------------------------------------------


def dns(name: str) -> x509.GeneralName:
    return x509.DNSName(name)


def ip(text: str) -> x509.GeneralName:
    return x509.IPAddress(ipaddress.ip_address(text))


LONG_NAME = f"{'a' * 40}.{'b' * 40}.test"  # 86 characters: mitmproxy leaves the subject empty


@dataclass(frozen=True)
class LeafCase:
    """What TlsConfig.get_cert passes to CertStore.get_cert, and the name a client checks."""

    cn: str
    sans: tuple[x509.GeneralName, ...]
    name: str


# The shapes TlsConfig produces: SNI only (CONNECT), no SNI (an IP literal), the upstream cert's
# wildcard first, a name too long for a CN, SNI plus the transparent-mode server address.
LEAF_CASES = {
    "dns": LeafCase("api.test", (dns("api.test"),), "api.test"),
    "ipv4": LeafCase("127.0.0.1", (ip("127.0.0.1"),), "127.0.0.1"),
    "ipv6": LeafCase("::1", (ip("::1"),), "::1"),
    "wildcard": LeafCase(
        "*.wild.test",
        (dns("*.wild.test"), dns("wild.test"), dns("a.wild.test")),
        "b.wild.test",
    ),
    "long-name-no-cn": LeafCase(LONG_NAME, (dns(LONG_NAME),), LONG_NAME),
    "dns-and-server-ip": LeafCase("api.test", (dns("api.test"), ip("10.0.0.7")), "10.0.0.7"),
}


def is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def write_confdir(ca: generate.CA, confdir: Path) -> CertStore:
    """The CA files as the sidecar has them, and mitmproxy's store loaded from them."""
    generate.write_ca(ca, confdir)
    # As TlsConfig.configure does it (key_size only matters when mitmproxy makes its own CA).
    return CertStore.from_store(confdir, "mitmproxy", 2048)


def mint(store: CertStore, case: LeafCase, out: Path) -> Path:
    leaf = store.get_cert(case.cn, list(case.sans)).cert
    out.write_bytes(leaf.to_pem())
    return out


# --- a loopback TLS server that serves one leaf ------------------------------------------------


@contextlib.contextmanager
def tls_server(leaf: Path, key: Path) -> Iterator[int]:
    """Serve handshakes with `leaf` alone on 127.0.0.1 until the block ends. Yields the port."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(leaf, key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        deadline = time.monotonic() + RUN_TIMEOUT * 2
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(10)
                # A client that rejects the leaf aborts the handshake; it reports why itself.
                with contextlib.suppress(OSError), context.wrap_socket(conn, server_side=True) as s:
                    s.recv(1)

    thread = threading.Thread(target=serve, name="strict-x509-server", daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()


# --- the verifiers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    ca: Path
    chain: Path
    name: str
    port: int


@dataclass(frozen=True)
class Outcome:
    ok: bool
    detail: str


# A verifier checks several targets in one go: Go builds and the JVM starts once per batch.
Verifier = Callable[[list[Target]], list[Outcome]]


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(
            f"{tool} is not installed: install the Debian package {TOOL_PACKAGES[tool]} "
            "(.ci/run does); these verifier tests are not optional"
        )
    return path


def run(command: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def outcome_of(result: subprocess.CompletedProcess) -> Outcome:
    return Outcome(result.returncode == 0, (result.stdout + result.stderr).strip())


def one_by_one(check: Callable[[Target], Outcome]) -> Verifier:
    return lambda targets: [check(t) for t in targets]


def strict_client_context(ca: Path, strict: bool = True) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    if sys.version_info >= (3, 13):
        assert context.verify_flags & ssl.VERIFY_X509_STRICT, "3.13's default turned it off?"
    if strict:
        context.verify_flags |= ssl.VERIFY_X509_STRICT
    else:
        context.verify_flags &= ~ssl.VERIFY_X509_STRICT
    assert context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED
    return context


def python_handshake(t: Target, strict: bool = True) -> Outcome:
    context = strict_client_context(t.ca, strict)
    try:
        with (
            socket.create_connection(("127.0.0.1", t.port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=t.name),
        ):
            return Outcome(True, "handshake done")
    except ssl.SSLError as e:
        return Outcome(False, str(e))


def name_flag(name: str) -> list[str]:
    return ["-verify_ip", name] if is_ip(name) else ["-verify_hostname", name]


def openssl_verify(t: Target) -> Outcome:
    return outcome_of(
        run(
            [
                need("openssl"), "verify", "-x509_strict", "-purpose", "sslserver",
                "-CAfile", str(t.ca), *name_flag(t.name), str(t.chain),
            ]
        )
    )  # fmt: skip


def openssl_s_client(t: Target) -> Outcome:
    sni = [] if is_ip(t.name) else ["-servername", t.name]
    return outcome_of(
        run(
            [
                need("openssl"), "s_client", "-brief", "-connect", f"127.0.0.1:{t.port}", *sni,
                "-CAfile", str(t.ca), "-x509_strict", "-purpose", "sslserver",
                "-verify_return_error", *name_flag(t.name),
            ]
        )
    )  # fmt: skip


def toolchain_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GO", "JAVA_", "JDK_"))}
    # Nothing may reach a network: no module proxy, no toolchain download (Go >= 1.21).
    env.update(GOPROXY="off", GOTOOLCHAIN="local", GOFLAGS="")
    if "HOME" not in env and "XDG_CACHE_HOME" not in env:
        env["GOCACHE"] = str(Path(os.environ.get("TMPDIR", "/tmp")) / "strict-x509-gocache")
    return env


def batch(command: list[str], targets: list[Target]) -> list[Outcome]:
    """Run a verifier program over `targets`: it prints one OK or FAIL line per target."""
    args = [a for t in targets for a in (str(t.ca), str(t.chain), t.name, f"127.0.0.1:{t.port}")]
    result = run([*command, *args], toolchain_env())
    lines = [line for line in result.stdout.splitlines() if line.startswith(("OK", "FAIL "))]
    if result.returncode not in (0, 1) or len(lines) != len(targets):
        pytest.fail(
            f"{command[:2]} exited {result.returncode} with {len(lines)} of {len(targets)} "
            f"answers:\n{result.stdout}\n{result.stderr}"
        )
    return [Outcome(line == "OK", line) for line in lines]


def go_verify(targets: list[Target]) -> list[Outcome]:
    return batch([need("go"), "run", str(GO_VERIFIER)], targets)


def java_verify(targets: list[Target]) -> list[Outcome]:
    need("javac")  # the single-file source launcher needs the JDK's compiler, not just a JRE
    return batch([need("java"), str(JAVA_VERIFIER)], targets)


VERIFIERS: dict[str, Verifier] = {
    "python-ssl": one_by_one(python_handshake),
    "openssl-verify": one_by_one(openssl_verify),
    "openssl-s_client": one_by_one(openssl_s_client),
    "go": go_verify,
    "java": java_verify,
}


class Checks:
    """Targets served for a whole module; each verifier runs over all of them once, when a test
    first asks, so a missing toolchain fails only that verifier's tests."""

    def __init__(self, targets: dict[str, Target]) -> None:
        self.targets = targets
        self.done: dict[str, dict[str, Outcome]] = {}

    def outcome(self, verifier: str, check_id: str) -> Outcome:
        if verifier not in self.done:
            ids = list(self.targets)
            outcomes = VERIFIERS[verifier]([self.targets[i] for i in ids])
            self.done[verifier] = dict(zip(ids, outcomes, strict=True))
        return self.done[verifier][check_id]


# --- fixtures ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Minted:
    ca: generate.CA
    confdir: Path
    leaves: dict[str, Path]

    @property
    def ca_file(self) -> Path:
        return self.confdir / generate.CA_CERT

    @property
    def key_file(self) -> Path:
        # mitmproxy's leaves carry the CA's own public key, so the CA key is the server key.
        return self.confdir / generate.CA_KEY


def mint_all(ca: generate.CA, workdir: Path, cases: dict[str, LeafCase]) -> Minted:
    store = write_confdir(ca, workdir / "confdir")
    leaves = {
        case_id: mint(store, case, workdir / f"{case_id}.pem") for case_id, case in cases.items()
    }
    return Minted(ca, workdir / "confdir", leaves)


def serve_all(minted: Minted, stack: contextlib.ExitStack) -> dict[str, Target]:
    """Serve each leaf on its own loopback port until `stack` closes."""
    return {
        case_id: Target(
            minted.ca_file,
            leaf,
            LEAF_CASES[case_id].name,
            stack.enter_context(tls_server(leaf, minted.key_file)),
        )
        for case_id, leaf in minted.leaves.items()
    }


@pytest.fixture(scope="module", params=generate.KEY_TYPES)
def minted(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Minted:
    workdir = tmp_path_factory.mktemp(f"strict-{request.param}")
    return mint_all(generate.build_ca(key_type=request.param), workdir, LEAF_CASES)


@pytest.fixture(scope="module")
def checks(minted: Minted) -> Iterator[Checks]:
    """Every leaf case, plus two that must fail: the dns leaf checked as another name, and
    checked against a CA the client does not trust."""
    stranger = minted.confdir.parent / "stranger.crt"
    stranger.write_bytes(generate.build_ca().cert_pem())
    with contextlib.ExitStack() as stack:
        targets = serve_all(minted, stack)
        dns_target = targets["dns"]
        targets["wrong-name"] = replace(dns_target, name="other.test")
        targets["foreign-ca"] = replace(dns_target, ca=stranger)
        yield Checks(targets)


# --- every verifier accepts every leaf ---------------------------------------------------------


@pytest.mark.parametrize("case_id", LEAF_CASES)
@pytest.mark.parametrize("verifier", VERIFIERS)
def test_verifier_accepts_the_minted_leaf(checks: Checks, verifier: str, case_id: str) -> None:
    outcome = checks.outcome(verifier, case_id)
    name = checks.targets[case_id].name
    assert outcome.ok, f"{verifier} rejected the {case_id} leaf as {name}: {outcome.detail}"


def test_python_default_context_is_strict_on_313() -> None:
    # The point of the issue: a stock 3.13 client is strict without being asked.
    assert sys.version_info >= (3, 13), "the project's venv is Python 3.13"
    assert ssl.create_default_context().verify_flags & ssl.VERIFY_X509_STRICT


# --- and really verifies: a wrong name or a foreign CA is rejected by each ---------------------

# What each verifier says, so a rejection for some other reason does not pass as this one.
REJECTIONS = {
    "wrong-name": {
        "python-ssl": "Hostname mismatch",
        "openssl-verify": "hostname mismatch",
        "openssl-s_client": "hostname mismatch",
        "go": "not other.test",
        "java": "No subject alternative DNS name matching other.test",
    },
    "foreign-ca": {
        "python-ssl": "unable to get local issuer certificate",
        "openssl-verify": "unable to get local issuer certificate",
        "openssl-s_client": "unable to get local issuer certificate",
        "go": "unknown authority",
        "java": "PKIX path",
    },
}


@pytest.mark.parametrize("check_id", REJECTIONS)
@pytest.mark.parametrize("verifier", VERIFIERS)
def test_verifier_rejects(checks: Checks, verifier: str, check_id: str) -> None:
    outcome = checks.outcome(verifier, check_id)
    assert not outcome.ok, f"{verifier} accepted the {check_id} check"
    assert REJECTIONS[check_id][verifier] in outcome.detail, outcome.detail


# --- the strict flags bite: a CA missing what RFC 5280 asks for is rejected --------------------

_KEY_USAGE_NO_CERT_SIGN = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


@dataclass(frozen=True)
class Flaw:
    drop: tuple[x509.ObjectIdentifier, ...] = ()
    swap: tuple[x509.Extension, ...] = ()
    # What OpenSSL (and so Python's ssl) reports in strict mode: any one of these, since a
    # verifier may stop at the first of several errors, in its own order.
    strict_says: tuple[str, ...] = ()
    # Also rejected by OpenSSL without the strict flag.
    lax_rejects: bool = False


FLAWS = {
    "no-subject-key-id": Flaw(
        drop=(ExtensionOID.SUBJECT_KEY_IDENTIFIER,),
        strict_says=("Missing Subject Key Identifier",),
    ),
    "no-key-usage": Flaw(
        drop=(ExtensionOID.KEY_USAGE,),
        strict_says=(
            "CA cert does not include key usage extension",
            "Path length given without key usage keyCertSign",
        ),
    ),
    "basic-constraints-not-critical": Flaw(
        swap=(
            x509.Extension(
                ExtensionOID.BASIC_CONSTRAINTS, False, x509.BasicConstraints(ca=True, path_length=0)
            ),
        ),
        strict_says=("Basic Constraints of CA cert not marked critical",),
    ),
    # Lax OpenSSL takes a self-signed certificate with keyCertSign for a CA; strict does not.
    "no-basic-constraints": Flaw(
        drop=(ExtensionOID.BASIC_CONSTRAINTS,),
        strict_says=("Key usage keyCertSign invalid for non-CA cert", "invalid CA certificate"),
    ),
    "key-usage-without-cert-sign": Flaw(
        swap=(x509.Extension(ExtensionOID.KEY_USAGE, True, _KEY_USAGE_NO_CERT_SIGN),),
        strict_says=("key usage does not include certificate signing", "invalid CA certificate"),
        lax_rejects=True,
    ),
}
# Go and the JVM do not check key identifiers or criticality, but do check these two.
GO_JAVA_REJECT = ("no-basic-constraints", "key-usage-without-cert-sign")


def flawed(ca: generate.CA, flaw: Flaw) -> generate.CA:
    """`ca` re-signed with an extension dropped or replaced, everything else kept."""
    good = ca.cert
    swapped = {ext.oid: ext for ext in flaw.swap}
    builder = (
        x509.CertificateBuilder()
        .subject_name(good.subject)
        .issuer_name(good.issuer)
        .public_key(good.public_key())
        .serial_number(good.serial_number)
        .not_valid_before(good.not_valid_before_utc)
        .not_valid_after(good.not_valid_after_utc)
    )
    for ext in good.extensions:
        if ext.oid in flaw.drop:
            continue
        ext = swapped.get(ext.oid, ext)
        builder = builder.add_extension(ext.value, ext.critical)
    return generate.CA(key=ca.key, cert=builder.sign(ca.key, hashes.SHA256()))


@pytest.fixture(scope="module")
def flawed_checks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Checks]:
    """The dns leaf, minted by mitmproxy from each flawed CA, served; check ids are flaw ids."""
    base = generate.build_ca()
    with contextlib.ExitStack() as stack:
        targets = {}
        for flaw_id, flaw in FLAWS.items():
            workdir = tmp_path_factory.mktemp(f"flaw-{flaw_id}")
            minted = mint_all(flawed(base, flaw), workdir, {"dns": LEAF_CASES["dns"]})
            targets[flaw_id] = serve_all(minted, stack)["dns"]
        yield Checks(targets)


@pytest.mark.parametrize("flaw_id", FLAWS)
@pytest.mark.parametrize("verifier", ["python-ssl", "openssl-verify", "openssl-s_client"])
def test_strict_verifiers_reject_a_flawed_ca(
    flawed_checks: Checks, verifier: str, flaw_id: str
) -> None:
    outcome = flawed_checks.outcome(verifier, flaw_id)
    assert not outcome.ok, f"{verifier} accepted a CA with {flaw_id}"
    detail = outcome.detail.lower()
    assert any(says.lower() in detail for says in FLAWS[flaw_id].strict_says), outcome.detail


@pytest.mark.parametrize("flaw_id", FLAWS)
def test_the_strict_flag_is_what_catches_them(flawed_checks: Checks, flaw_id: str) -> None:
    """Control: without VERIFY_X509_STRICT most flaws pass, so the flag is what bites above (and
    a client older than Python 3.13 would not have told us)."""
    outcome = python_handshake(flawed_checks.targets[flaw_id], strict=False)
    assert outcome.ok is not FLAWS[flaw_id].lax_rejects, outcome.detail


@pytest.mark.parametrize("flaw_id", GO_JAVA_REJECT)
@pytest.mark.parametrize("verifier", ["go", "java"])
def test_go_and_java_check_the_ca_constraints(
    flawed_checks: Checks, verifier: str, flaw_id: str
) -> None:
    outcome = flawed_checks.outcome(verifier, flaw_id)
    assert not outcome.ok, f"{verifier} accepted a CA with {flaw_id}"


# --- the fields, checked one by one ------------------------------------------------------------


def serial_octets(serial: int) -> int:
    # DER INTEGER content length: one more octet than the magnitude needs when its top bit is set.
    return serial.bit_length() // 8 + 1


def extension(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.Extension:
    return cert.extensions.get_extension_for_class(kind)


@pytest.fixture(scope="module")
def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def test_ca_basic_constraints_critical_ca_true(minted: Minted) -> None:
    bc = extension(minted.ca.cert, x509.BasicConstraints)
    assert bc.critical
    assert bc.value.ca is True


def test_ca_key_usage_critical_cert_sign_and_crl_sign(minted: Minted) -> None:
    ku = extension(minted.ca.cert, x509.KeyUsage)
    assert ku.critical
    assert ku.value.key_cert_sign
    assert ku.value.crl_sign


def test_ca_key_identifiers(minted: Minted) -> None:
    cert = minted.ca.cert
    ski = extension(cert, x509.SubjectKeyIdentifier)
    assert not ski.critical, "RFC 5280 4.2.1.2: MUST NOT be critical"
    assert ski.value.digest
    aki = extension(cert, x509.AuthorityKeyIdentifier)
    assert not aki.critical, "RFC 5280 4.2.1.1: MUST NOT be critical"
    assert aki.value.key_identifier == ski.value.digest, "self-signed: AKI is its own SKI"


def test_ca_is_v3_sha256_and_a_strong_named_key(minted: Minted) -> None:
    cert = minted.ca.cert
    assert cert.version == x509.Version.v3
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    assert cert.subject == cert.issuer
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME), "an empty issuer is refused"
    key = cert.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        assert isinstance(key.curve, ec.SECP256R1)  # a named curve, never explicit parameters
    else:
        assert isinstance(key, rsa.RSAPublicKey)
        assert key.key_size >= 2048


def test_ca_validity_within_limits(minted: Minted, now: datetime.datetime) -> None:
    cert = minted.ca.cert
    assert cert.not_valid_before_utc <= now < cert.not_valid_after_utc
    assert now - cert.not_valid_before_utc <= generate.CLOCK_SKEW + datetime.timedelta(minutes=5)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime <= datetime.timedelta(days=generate.MAX_DAYS) + generate.CLOCK_SKEW


@pytest.mark.parametrize("days", [1, generate.DEFAULT_DAYS, generate.MAX_DAYS], ids=str)
def test_ca_serial_positive_and_at_most_20_octets(days: int) -> None:
    for _ in range(20):
        serial = generate.build_ca(days=days).cert.serial_number
        assert serial > 0
        assert serial_octets(serial) <= MAX_SERIAL_OCTETS


@pytest.mark.parametrize("case_id", LEAF_CASES)
def test_leaf_fields(minted: Minted, case_id: str, now: datetime.datetime) -> None:
    case = LEAF_CASES[case_id]
    leaf = x509.load_pem_x509_certificate(minted.leaves[case_id].read_bytes())
    ca_ski = extension(minted.ca.cert, x509.SubjectKeyIdentifier).value.digest

    aki = extension(leaf, x509.AuthorityKeyIdentifier)
    assert not aki.critical
    assert aki.value.key_identifier == ca_ski, "AKI must match the CA's SKI byte for byte"
    assert leaf.issuer == minted.ca.cert.subject
    leaf.verify_directly_issued_by(minted.ca.cert)

    assert leaf.serial_number > 0
    assert serial_octets(leaf.serial_number) <= MAX_SERIAL_OCTETS

    assert leaf.not_valid_before_utc <= now < leaf.not_valid_after_utc
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert lifetime <= datetime.timedelta(days=MAX_LEAF_DAYS)

    eku = extension(leaf, x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    with pytest.raises(x509.ExtensionNotFound):
        extension(leaf, x509.BasicConstraints)  # absent means not a CA

    san = extension(leaf, x509.SubjectAlternativeName)
    names = [str(n.value) for n in san.value]
    assert names, "an empty SAN is refused in strict mode"
    assert [str(n.value) for n in case.sans] == names
    cns = [str(a.value) for a in leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    # Never a CN-only leaf: any CN is one of the SANs (Go and browsers ignore the CN).
    assert all(cn in names for cn in cns)
    if not cns and len(leaf.subject) == 0:
        assert san.critical, "RFC 5280 4.2.1.6: with an empty subject the SAN is critical"


# --- the CA as the test harness and the sidecar make it: the CLI --------------------------------


@pytest.mark.parametrize("key_type", generate.KEY_TYPES)
def test_cli_generated_ca_passes_strict_python_and_openssl(tmp_path: Path, key_type: str) -> None:
    confdir = tmp_path / "confdir"
    result = subprocess.run(
        [sys.executable, str(REPO / "ca" / "generate.py"), "--out", str(confdir),
         "--key-type", key_type],
        capture_output=True, text=True, timeout=RUN_TIMEOUT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    store = CertStore.from_store(confdir, "mitmproxy", 2048)
    leaf = mint(store, LEAF_CASES["dns"], tmp_path / "leaf.pem")
    with tls_server(leaf, confdir / generate.CA_KEY) as port:
        target = Target(confdir / generate.CA_CERT, leaf, "api.test", port)
        for verifier in (python_handshake, openssl_verify, openssl_s_client):
            outcome = verifier(target)
            assert outcome.ok, f"{verifier.__name__}: {outcome.detail}"
    ca_alone = outcome_of(
        run([need("openssl"), "verify", "-x509_strict", "-CAfile", str(target.ca), str(target.ca)])
    )
    assert ca_alone.ok, ca_alone.detail
