"""addons/ca_check.py: which CAs it accepts and refuses, and that it never deletes a file.

The last tests run the real proxies: mitmdump, where mitmproxy generates a CA before the addon
can look (it is refused, and left in place), and a CA copied in by a shell that then execs the
proxy, as the sidecar's entrypoint does (accepted as it is, with no `touch -r`)."""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from mitmproxy import certs, exceptions

from addons import ca_check
from ca import generate
from tests.support.processes import wait_until
from tests.support.proxy import PROXY_COMMANDS, Proxy
from tests.support.testnet import LoopbackNet

KINDS = sorted(PROXY_COMMANDS)
DAY = datetime.timedelta(days=1)
NOW = datetime.datetime.now(datetime.UTC)


def _pem(ca: generate.CA) -> bytes:
    return ca.key_pem() + ca.cert_pem()


def _write(confdir: Path, content: bytes) -> None:
    confdir.mkdir(parents=True, exist_ok=True)
    (confdir / ca_check.CA_FILE).write_bytes(content)


def _valid(d: Path) -> None:
    _write(d, _pem(generate.build_ca()))


def _missing(d: Path) -> None:
    d.mkdir()


def _directory(d: Path) -> None:
    (d / ca_check.CA_FILE).mkdir(parents=True)  # root reads any file; not a directory


def _garbage(d: Path) -> None:
    _write(d, b"not a pem at all\n")


def _key_only(d: Path) -> None:
    _write(d, generate.build_ca().key_pem())


def _cert_only(d: Path) -> None:
    _write(d, generate.build_ca().cert_pem())


def _mismatched(d: Path) -> None:
    _write(d, generate.build_ca().key_pem() + generate.build_ca().cert_pem())


def _expired(d: Path) -> None:
    _write(d, _pem(generate.build_ca(days=1, now=NOW - 10 * DAY)))


def _not_yet_valid(d: Path) -> None:
    _write(d, _pem(generate.build_ca(days=30, now=NOW + 10 * DAY)))


def _dangling_symlink(d: Path) -> None:
    d.mkdir()
    (d / ca_check.CA_FILE).symlink_to(d / "gone.pem")


Setup = Callable[[Path], None]


@pytest.mark.parametrize(
    ("setup", "required", "problem"),
    [
        (_missing, True, "missing"),
        (_dangling_symlink, True, "unreadable"),
        (_directory, True, "unreadable"),
        (_garbage, True, "no usable PEM private key"),
        (_cert_only, True, "no usable PEM private key"),
        (_key_only, True, "holds no PEM certificate"),
        (_mismatched, True, "does not match"),
        (_expired, True, "expired"),
        (_not_yet_valid, True, "not valid before"),
        (_garbage, False, "no usable PEM private key"),
    ],
    ids=[
        "missing", "dangling-symlink", "directory", "garbage", "cert-only", "key-only",
        "mismatched", "expired", "not-yet-valid", "garbage-not-required",
    ],
)  # fmt: skip
def test_check_confdir_refuses(tmp_path: Path, setup: Setup, required: bool, problem: str) -> None:
    confdir = tmp_path / "confdir"
    setup(confdir)
    before = _snapshot(confdir)
    with pytest.raises(exceptions.OptionsError) as raised:
        ca_check.check_confdir(str(confdir), required)
    message = str(raised.value)
    assert str(confdir / ca_check.CA_FILE) in message and problem in message, message
    assert "Fix: " in message
    assert _snapshot(confdir) == before


@pytest.mark.parametrize(
    ("setup", "required", "found"),
    [(_valid, True, True), (_valid, False, True), (_missing, False, False)],
    ids=["valid", "valid-not-required", "missing-not-required"],
)
def test_check_confdir_accepts(tmp_path: Path, setup: Setup, required: bool, found: bool) -> None:
    confdir = tmp_path / "confdir"
    setup(confdir)
    result = ca_check.check_confdir(str(confdir), required)
    assert result == (confdir / ca_check.CA_FILE if found else None)


# --- at start: a CA that mitmproxy generated is refused, and nothing is deleted -------------------


def _age(confdir: Path, seconds: float) -> None:
    for path in confdir.iterdir():
        stamp = path.stat().st_mtime - seconds
        os.utime(path, (stamp, stamp))


def _mitmproxy_generated(d: Path) -> None:
    certs.CertStore.create_store(d, "mitmproxy", 2048)


def _mitmproxy_generated_earlier(d: Path) -> None:
    _mitmproxy_generated(d)
    _age(d, 10 * 24 * 3600)


def _copied_in_like_the_entrypoint(d: Path) -> None:
    # tls.key + tls.crt concatenated, and the certificate alone, written after the start.
    ca = generate.build_ca()
    _write(d, _pem(ca))
    (d / "mitmproxy-ca-cert.pem").write_bytes(ca.cert_pem())


def _copied_over_an_old_generated_ca(d: Path) -> None:
    _mitmproxy_generated_earlier(d)
    _copied_in_like_the_entrypoint(d)


def _generated_ca_pem_only(d: Path) -> None:
    _mitmproxy_generated(d)
    _age(d, 0)
    p12 = d / "mitmproxy-ca.p12"
    stamp = p12.stat().st_mtime - 10 * 24 * 3600
    os.utime(p12, (stamp, stamp))


@pytest.mark.parametrize(
    ("setup", "required"),
    [
        (_mitmproxy_generated_earlier, True),
        (_copied_in_like_the_entrypoint, True),
        (_copied_over_an_old_generated_ca, True),
        (_generated_ca_pem_only, True),
        (_mitmproxy_generated, False),
    ],
    ids=[
        "generated-before-the-start", "copied-in-after-the-start", "copied-over-an-old-one",
        "fresh-pem-old-p12", "generated-now-not-required",
    ],
)  # fmt: skip
def test_check_at_start_accepts(tmp_path: Path, setup: Setup, required: bool) -> None:
    confdir = tmp_path / "confdir"
    setup(confdir)
    before = _snapshot(confdir)
    ca_check.check_at_start(str(confdir), required)
    assert _snapshot(confdir) == before


def test_check_at_start_refuses_a_ca_generated_now_and_deletes_nothing(tmp_path: Path) -> None:
    confdir = tmp_path / "confdir"
    _mitmproxy_generated(confdir)
    (confdir / "operator-notes.txt").write_text("mine")
    before = _snapshot(confdir)
    with pytest.raises(exceptions.OptionsError) as raised:
        ca_check.check_at_start(str(confdir), True)
    message = str(raised.value)
    assert str(confdir / ca_check.CA_FILE) in message and "left in place" in message, message
    for name in ca_check.GENERATED:
        assert name in message
    assert _snapshot(confdir) == before, "ca_check must not delete or change any file"


def _snapshot(confdir: Path) -> dict[str, bytes | None]:
    if not confdir.exists():
        return {}
    return {p.name: (p.read_bytes() if p.is_file() else None) for p in sorted(confdir.iterdir())}


# --- the real proxies ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_a_proxy_with_no_ca_exits_and_deletes_nothing(
    testnet: LoopbackNet, tmp_path: Path, kind: str
) -> None:
    proxy = Proxy(
        kind, tmp_path, testnet.hosts_file, testnet.ca_pem,
        testnet.write_policy(tmp_path / "policy.yaml", "upstream.test"),
    )  # fmt: skip
    proxy.confdir.mkdir()
    (proxy.confdir / "operator-notes.txt").write_text("mine")
    try:
        proxy.start(wait_ready=False)
        assert proxy.process is not None
        proxy.process.proc.wait(30)
        assert proxy.process.proc.returncode != 0
        logs = proxy.logs()
    finally:
        proxy.stop()
    assert str(proxy.confdir / ca_check.CA_FILE) in logs, logs[-2000:]
    left = {p.name for p in proxy.confdir.iterdir()}
    if kind == "mitmdump":
        # mitmproxy generated its CA before the addon was loaded: refused, and left there.
        assert "left in place" in logs, logs[-2000:]
        assert {"operator-notes.txt", *ca_check.GENERATED} <= left  # + mitmproxy-dhparam.pem
    else:
        # auth-proxy checks the confdir before mitmproxy's TlsConfig: nothing was generated.
        assert left == {"operator-notes.txt"}


@pytest.mark.parametrize("kind", KINDS)
def test_a_ca_copied_in_by_an_entrypoint_before_exec_is_accepted(
    testnet: LoopbackNet, tmp_path: Path, kind: str
) -> None:
    source = generate.write_ca(generate.build_ca(), tmp_path / "secret")[0].parent
    # As images/sidecar/entrypoint.sh: this shell starts, writes the confdir, then execs the
    # proxy, which keeps the shell's start time. The copies are newer than that (by far more than
    # the clock's granularity, hence the pause); no `touch -r`.
    copy_then_exec = (
        'sleep 0.5 && mkdir -p "$1" && cat "$0/ca.key" "$0/ca.crt" > "$1/mitmproxy-ca.pem" '
        '&& cp "$0/ca.crt" "$1/mitmproxy-ca-cert.pem" && shift && exec "$@"'
    )
    proxy = Proxy(
        kind, tmp_path, testnet.hosts_file, testnet.ca_pem,
        testnet.write_policy(tmp_path / "policy.yaml", "upstream.test"),
    )  # fmt: skip
    proxy.base_command = [
        "sh", "-c", copy_then_exec, str(source), str(proxy.confdir), *PROXY_COMMANDS[kind]
    ]  # fmt: skip
    proxy.confdir.mkdir()  # so Proxy.start generates nothing itself
    try:
        proxy.start(wait_ready=False)
        wait_until(proxy.ready_or_dead, 30, f"{kind} /readyz")
        assert proxy.process is not None
        assert proxy.process.alive(), proxy.logs()[-2000:]
        started = ca_check.process_start_time(proxy.process.proc.pid)
        assert started is not None
        assert (proxy.confdir / ca_check.CA_FILE).stat().st_mtime > started + 0.25
    finally:
        proxy.stop()
    assert (proxy.confdir / ca_check.CA_FILE).read_bytes() == (
        (source / "ca.key").read_bytes() + (source / "ca.crt").read_bytes()
    )


def test_no_generated_file_name_is_written_by_ca_generate(tmp_path: Path) -> None:
    # The mark of a generated CA must never be among the files the project's own tools write.
    written = {p.name for p in generate.write_ca(generate.build_ca(), tmp_path / "out")}
    assert ca_check.GENERATED_MARK not in written
