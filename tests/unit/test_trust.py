"""auth-proxy-trust (addons/trust.py): the files a workload trusts our CA with, checked with the
tools that read them (openssl CLI, cryptography's PKCS#12 reader), and every refusal."""

from __future__ import annotations

import datetime
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from addons import trust
from ca.generate import CA, build_ca

ROOT = Path(__file__).resolve().parents[2]
SYSTEM_ROOTS = Path("/etc/ssl/certs/ca-certificates.crt")
FILES = {"ca-bundle.crt", "certs", "truststore.p12", "ca.crt"}
# A few distribution roots have a non-positive serial, which cryptography warns about on load.
pytestmark = pytest.mark.filterwarnings("ignore:Parsed a serial number:UserWarning")


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def leaf(ca: CA, name: str = "tls.test") -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.cert.public_key()),  # type: ignore[arg-type]
            False,
        )
        .sign(ca.key, hashes.SHA256())  # type: ignore[arg-type]
    )


def openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", *args], capture_output=True, text=True, timeout=30, check=False
    )


@pytest.fixture(scope="module")
def ours() -> CA:
    return build_ca("test auth-proxy CA")


@pytest.fixture
def ca_file(tmp_path: Path, ours: CA) -> Path:
    path = tmp_path / "ca.crt"
    path.write_bytes(pem(ours.cert))
    return path


@pytest.fixture
def out(tmp_path: Path) -> Path:
    path = tmp_path / "out"
    path.mkdir()
    return path


def run(ca: Path, out: Path, roots: Path = SYSTEM_ROOTS) -> int:
    return trust.main(["--ca", str(ca), "--out", str(out), "--roots", str(roots)])


# --- the files -----------------------------------------------------------------------------------


def test_the_bundle_holds_every_root_then_ours(ca_file: Path, out: Path, ours: CA) -> None:
    assert run(ca_file, out) == 0
    assert {p.name for p in out.iterdir() if not p.name.startswith(".")} == FILES
    bundle = x509.load_pem_x509_certificates((out / "ca-bundle.crt").read_bytes())
    roots = x509.load_pem_x509_certificates(SYSTEM_ROOTS.read_bytes())
    assert len(roots) > 50, "the host's roots: the test would be vacuous otherwise"
    assert bundle == [*roots, ours.cert]
    assert (out / "ca.crt").read_bytes() == pem(ours.cert)


def test_the_bundle_verifies_a_leaf_of_ours_with_openssl(
    ca_file: Path, out: Path, ours: CA, tmp_path: Path
) -> None:
    assert run(ca_file, out) == 0
    leaf_file = tmp_path / "leaf.pem"
    leaf_file.write_bytes(pem(leaf(ours)))
    for how in (["-CAfile", str(out / "ca-bundle.crt")], ["-CApath", str(out / "certs")]):
        proc = openssl("verify", "-x509_strict", "-no-CAfile", "-no-CApath", *how, str(leaf_file))
        assert proc.returncode == 0 and ": OK" in proc.stdout, (how, proc.stdout, proc.stderr)
    # Control: without our files the same leaf is refused.
    proc = openssl("verify", "-CAfile", str(SYSTEM_ROOTS), str(leaf_file))
    assert proc.returncode != 0


def test_hashed_names_are_openssls(ca_file: Path, out: Path, ours: CA) -> None:
    assert run(ca_file, out) == 0
    certs = out / "certs"
    names = sorted(p.name for p in certs.iterdir())
    roots = x509.load_pem_x509_certificates(SYSTEM_ROOTS.read_bytes())
    assert len(names) == len({r.fingerprint(hashes.SHA256()) for r in roots} | {b"ours"})
    # A few against the openssl CLI (one process each): the first, the last, ours, a middle one.
    ours_name = next(n for n in names if (certs / n).read_bytes() == pem(ours.cert))
    for name in {names[0], names[len(names) // 2], names[-1], ours_name}:
        proc = openssl("x509", "-subject_hash", "-noout", "-in", str(certs / name))
        assert proc.returncode == 0, proc.stderr
        assert name.split(".")[0] == proc.stdout.strip(), name


def test_colliding_subjects_get_the_next_index(tmp_path: Path, out: Path) -> None:
    # Same subject, other keys: one hash, three files (.0 .1 .2), and a CApath lookup of each.
    same = [build_ca("collision CA") for _ in range(3)]
    roots = tmp_path / "roots.pem"
    roots.write_bytes(pem(same[0].cert) + pem(same[1].cert))
    ca = tmp_path / "ours.pem"
    ca.write_bytes(pem(same[2].cert))
    assert run(ca, out, roots) == 0
    h = openssl("x509", "-subject_hash", "-noout", "-in", str(ca)).stdout.strip()
    assert sorted(p.name for p in (out / "certs").iterdir()) == [f"{h}.0", f"{h}.1", f"{h}.2"]
    assert (out / "certs" / f"{h}.2").read_bytes() == pem(same[2].cert)
    for i, issuer in enumerate(same):
        leaf_file = tmp_path / f"leaf{i}.pem"
        leaf_file.write_bytes(pem(leaf(issuer)))
        proc = openssl("verify", "-no-CAfile", "-CApath", str(out / "certs"), str(leaf_file))
        assert proc.returncode == 0, (i, proc.stdout, proc.stderr)


def test_the_truststore_holds_the_roots_and_ours(ca_file: Path, out: Path, ours: CA) -> None:
    assert run(ca_file, out) == 0
    store = pkcs12.load_pkcs12((out / "truststore.p12").read_bytes(), b"changeit")
    assert store.key is None and store.cert is None
    certs = {c.certificate: c.friendly_name for c in store.additional_certs}
    assert certs[ours.cert] == b"auth-proxy-ca"
    roots = x509.load_pem_x509_certificates(SYSTEM_ROOTS.read_bytes())
    assert set(roots) | {ours.cert} == set(certs)
    assert len(set(certs.values())) == len(certs), "Java aliases must be unique"
    with pytest.raises(ValueError):
        pkcs12.load_pkcs12((out / "truststore.p12").read_bytes(), b"wrong")


def test_our_ca_is_listed_once_when_it_is_a_system_root_too(
    tmp_path: Path, out: Path, ours: CA, ca_file: Path
) -> None:
    roots = tmp_path / "roots.pem"
    roots.write_bytes(pem(build_ca("other root").cert) + pem(ours.cert))
    assert run(ca_file, out, roots) == 0
    assert len(list((out / "certs").iterdir())) == 2
    store = pkcs12.load_pkcs12((out / "truststore.p12").read_bytes(), b"changeit")
    assert len(store.additional_certs) == 2


def test_modes_and_layout(ca_file: Path, out: Path) -> None:
    assert run(ca_file, out) == 0
    for name in ("ca-bundle.crt", "truststore.p12", "ca.crt"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644, name
    certs = out / "certs"
    assert certs.is_symlink() and stat.S_IMODE(certs.stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in certs.iterdir()} == {0o644}
    # Nothing half-written is left behind: the files, and the one directory certs points at.
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [os.readlink(certs)]


def test_running_again_gives_the_same_files(ca_file: Path, out: Path) -> None:
    assert run(ca_file, out) == 0
    first = snapshot(out)
    assert run(ca_file, out) == 0
    assert snapshot(out) == first


def test_a_new_ca_replaces_the_old_one_everywhere(
    ca_file: Path, out: Path, tmp_path: Path, ours: CA
) -> None:
    assert run(ca_file, out) == 0
    old_dir = os.readlink(out / "certs")
    new = build_ca("rotated CA")
    ca_file.write_bytes(pem(new.cert))
    assert run(ca_file, out) == 0
    assert not (out / old_dir).exists(), "the previous certs directory is removed"
    files = [p.read_bytes() for p in (out / "certs").iterdir()]
    assert pem(new.cert) in files and pem(ours.cert) not in files
    assert (out / "ca.crt").read_bytes() == pem(new.cert)
    assert (out / "ca-bundle.crt").read_bytes().endswith(pem(new.cert))


def test_a_plain_certs_directory_is_replaced(ca_file: Path, out: Path) -> None:
    (out / "certs").mkdir()
    (out / "certs" / "stale.0").write_text("x")
    assert run(ca_file, out) == 0
    assert (out / "certs").is_symlink() and not (out / "certs" / "stale.0").exists()


def snapshot(out: Path) -> dict[str, object]:
    certs = {p.name: p.read_bytes() for p in (out / "certs").iterdir()}
    store = pkcs12.load_pkcs12((out / "truststore.p12").read_bytes(), b"changeit")
    return {
        "bundle": (out / "ca-bundle.crt").read_bytes(),
        "ca": (out / "ca.crt").read_bytes(),
        "certs": certs,
        # PKCS#12 salts are random: the same certificates, not the same bytes.
        "store": sorted((c.friendly_name, pem(c.certificate)) for c in store.additional_certs),
        "entries": sorted(p.name for p in out.iterdir()),
    }


# --- refusals ------------------------------------------------------------------------------------


def _leaf_file(tmp: Path) -> Path:
    path = tmp / "leaf.pem"
    path.write_bytes(pem(leaf(build_ca("issuer"))))
    return path


def _garbage(tmp: Path) -> Path:
    path = tmp / "garbage.pem"
    path.write_text("this is not a certificate\n")
    return path


def _der(tmp: Path) -> Path:
    path = tmp / "ca.der"
    path.write_bytes(build_ca("der CA").cert.public_bytes(serialization.Encoding.DER))
    return path


def _broken_pem(tmp: Path) -> Path:
    path = tmp / "broken.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    return path


def _ca_then_leaf(tmp: Path) -> Path:
    path = tmp / "mixed.pem"
    path.write_bytes(pem(build_ca("first").cert) + _leaf_file(tmp).read_bytes())
    return path


@pytest.mark.parametrize(
    ("make_ca", "fragments"),
    [
        pytest.param(lambda t: t / "missing.crt", ["cannot read the CA certificate",
                     "No such file", "mount the CA Secret"], id="missing"),
        pytest.param(lambda t: t, ["cannot read the CA certificate", "Is a directory"],
                     id="a-directory"),
        pytest.param(_garbage, ["holds no PEM certificate", "mount the CA Secret"],
                     id="not-pem"),
        pytest.param(_der, ["holds no PEM certificate"], id="der-not-pem"),
        pytest.param(_broken_pem, ["not a certificate"], id="broken-pem-block"),
        pytest.param(_leaf_file, ["is not a CA", "CN=tls.test", "basicConstraints CA:TRUE",
                     "not a leaf's"], id="a-leaf"),
        pytest.param(_ca_then_leaf, ["is not a CA", "CN=tls.test"], id="ca-then-leaf"),
    ],
)  # fmt: skip
def test_a_bad_ca_is_refused(
    make_ca, fragments: list[str], tmp_path: Path, out: Path, capsys: pytest.CaptureFixture
) -> None:
    ca = make_ca(tmp_path)
    assert run(ca, out) == trust.EXIT_FAILED
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("auth-proxy-trust: trust files NOT written: ")
    assert str(ca) in captured.err
    for fragment in fragments:
        assert fragment in captured.err, captured.err
    assert list(out.iterdir()) == [], "nothing is written for a bad CA"


@pytest.mark.parametrize(
    ("make_roots", "fragments"),
    [
        pytest.param(lambda t: t / "none.crt", ["cannot read the system roots", "No such file",
                     "install Debian's ca-certificates", "--roots"], id="missing"),
        pytest.param(_garbage, ["holds no certificate", "--roots"], id="no-certificate"),
        pytest.param(_broken_pem, ["holds no certificate"], id="only-broken-blocks"),
    ],
)  # fmt: skip
def test_bad_roots_are_refused(
    make_roots, fragments: list[str], tmp_path: Path, out: Path, ca_file: Path,
    capsys: pytest.CaptureFixture,
) -> None:  # fmt: skip
    roots = make_roots(tmp_path)
    assert run(ca_file, out, roots) == trust.EXIT_FAILED
    err = capsys.readouterr().err
    assert str(roots) in err
    for fragment in fragments:
        assert fragment in err, err
    assert list(out.iterdir()) == []


def test_unparsable_roots_are_left_out_and_counted(
    tmp_path: Path, out: Path, ca_file: Path, capsys: pytest.CaptureFixture
) -> None:
    roots = tmp_path / "roots.pem"
    roots.write_bytes(pem(build_ca("good root").cert) + _broken_pem(tmp_path).read_bytes())
    assert run(ca_file, out, roots) == 0
    assert '"roots":1,"roots_skipped":1' in capsys.readouterr().out
    assert len(list((out / "certs").iterdir())) == 2


@pytest.mark.parametrize(
    "make_out",
    [
        pytest.param(lambda t: t / "absent", id="absent"),
        pytest.param(lambda t: (t / "file").write_text("x") and t / "file", id="a-file"),
    ],
)
def test_an_unusable_out_is_refused(
    make_out, tmp_path: Path, ca_file: Path, capsys: pytest.CaptureFixture
) -> None:
    target = make_out(tmp_path)
    assert run(ca_file, target) == trust.EXIT_FAILED
    err = capsys.readouterr().err
    assert f"--out {target} is not a directory" in err
    assert "mount a writable emptyDir there" in err


def test_the_summary_line(
    ca_file: Path, out: Path, ours: CA, capsys: pytest.CaptureFixture
) -> None:
    assert run(ca_file, out) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["event"] == "ca-trust-written"
    assert line["ca_subject"] == "CN=test auth-proxy CA"
    assert line["ca_sha256"] == ours.cert.fingerprint(hashes.SHA256()).hex()
    assert line["roots_skipped"] == 0 and line["roots"] > 50


def test_the_sidecar_image_and_the_package_ship_the_command() -> None:
    dockerfile = (ROOT / "images" / "sidecar" / "Dockerfile").read_text()
    assert "'from addons.trust import main'" in dockerfile
    assert "> /opt/venv/bin/auth-proxy-trust" in dockerfile
    assert 'auth-proxy-trust = "addons.trust:main"' in (ROOT / "pyproject.toml").read_text()
