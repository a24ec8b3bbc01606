"""Loading a policy file that cannot be trusted: only regular files, a size cap, strict YAML
(no aliases, no duplicate keys), error messages that quote at most a short escaped excerpt, and
reloads that run off the event loop within a deadline. Also `python -m k8s policy --from-file`,
which uses the same reader."""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from addons import policy, policy_file, reloader
from addons.policy import PolicyError
from addons.policy_file import MAX_POLICY_BYTES, excerpt, key_excerpt
from tests.support.hostile_files import alias_bomb

REPO = Path(__file__).resolve().parents[2]
GOOD = "version: v1\nallowed_domains: [api.test, '*.example.com']\n"
SECRET = "hunter2-s3cr3t-VALUE"
SHADOW = f"admin7:$6${SECRET}$abcdefghijklmnop:19000:0:99999:7:::\nsvc9:*:19001:0:99999:7:::\n"
# Generous: the error names the file, the problem and the fix, plus at most a short excerpt.
# Where the secret sits in a quoted value, PAD puts it past the excerpt's length.
PAD = "x" * 40
MESSAGE_BOUND = 400


def load_bounded(path: Path, seconds: float = 5.0) -> Callable[[], object]:
    """load_policy in a thread that must finish within `seconds` (a FIFO would block for good);
    returns the outcome: the policy, or the PolicyError raised."""
    box: list[object] = []

    def run() -> None:
        try:
            box.append(policy.load_policy(path))
        except PolicyError as e:
            box.append(e)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert box, f"loading {path} blocked for over {seconds} s"
    return lambda: box[0]


def load_error(path: Path) -> str:
    outcome = load_bounded(path)()
    assert isinstance(outcome, PolicyError), f"{path} loaded: {outcome}"
    return str(outcome)


def parse_error(text: str, source: str = "p.yaml") -> str:
    with pytest.raises(PolicyError) as error:
        policy.parse_policy(text, source)
    return str(error.value)


def assert_safe_message(message: str, *secrets: str) -> None:
    for secret in (SECRET, *secrets):
        assert secret.lower() not in message.lower(), message  # host names are lower-cased
    assert len(message) <= MESSAGE_BOUND, message
    assert message.isascii() and message.isprintable(), message


# -- what the path is ----------------------------------------------------------------------------


def _regular(tmp: Path) -> Path:
    (tmp / "p.yaml").write_text(GOOD)
    return tmp / "p.yaml"


def _symlink(tmp: Path) -> Path:
    (tmp / "real.yaml").write_text(GOOD)
    (tmp / "p.yaml").symlink_to(tmp / "real.yaml")
    return tmp / "p.yaml"


def _configmap(tmp: Path) -> Path:
    (tmp / "..2026_v1").mkdir()
    (tmp / "..2026_v1" / "policy.yaml").write_text(GOOD)
    (tmp / "..data").symlink_to("..2026_v1")
    (tmp / "policy.yaml").symlink_to("..data/policy.yaml")
    return tmp / "policy.yaml"


@pytest.mark.parametrize(
    "make",
    [_regular, _symlink, _configmap],
    ids=["regular-file", "symlink-to-file", "configmap-data-symlink"],
)
def test_regular_files_load(tmp_path: Path, make) -> None:
    loaded = load_bounded(make(tmp_path))()
    assert isinstance(loaded, policy.Policy) and loaded.entry_count == 2


def _fifo(tmp: Path) -> Path:
    os.mkfifo(tmp / "p.yaml")
    return tmp / "p.yaml"


def _fifo_via_symlink(tmp: Path) -> Path:
    os.mkfifo(tmp / "pipe")
    (tmp / "p.yaml").symlink_to(tmp / "pipe")
    return tmp / "p.yaml"


def _directory(tmp: Path) -> Path:
    (tmp / "p.yaml").mkdir()
    return tmp / "p.yaml"


def _char_device(tmp: Path) -> Path:
    (tmp / "p.yaml").symlink_to("/dev/zero")  # an endless read, if it were read
    return tmp / "p.yaml"


def _socket(tmp: Path) -> Path:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(tmp / "p.yaml"))
    server.listen()
    return tmp / "p.yaml"


def _missing(tmp: Path) -> Path:
    return tmp / "p.yaml"


def _dangling(tmp: Path) -> Path:
    (tmp / "p.yaml").symlink_to(tmp / "gone.yaml")
    return tmp / "p.yaml"


@pytest.mark.parametrize(
    ("make", "fragments"),
    [
        pytest.param(_fifo, ["FIFO", "not a regular file"], id="fifo"),
        pytest.param(_fifo_via_symlink, ["FIFO"], id="symlink-to-fifo"),
        pytest.param(_directory, ["a directory"], id="directory"),
        pytest.param(_char_device, ["character device"], id="dev-zero"),
        pytest.param(_socket, ["a socket"], id="unix-socket"),
        pytest.param(_missing, ["cannot read", "No such file"], id="missing"),
        pytest.param(_dangling, ["cannot read"], id="dangling-symlink"),
    ],
)
def test_anything_but_a_regular_file_is_refused_without_blocking(
    tmp_path: Path, make, fragments: list[str]
) -> None:
    path = make(tmp_path)
    message = load_error(path)
    assert message.startswith(f"{path}: ")
    assert "Fix:" in message
    for fragment in fragments:
        assert fragment in message


def test_fifo_with_a_writer_is_still_refused(tmp_path: Path) -> None:
    path = _fifo(tmp_path)
    writer = os.open(path, os.O_RDWR | os.O_NONBLOCK)  # a writer that never closes
    try:
        assert "FIFO" in load_error(path)
    finally:
        os.close(writer)


def test_oversized_file_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    with path.open("wb") as f:
        f.truncate(MAX_POLICY_BYTES + 1)  # sparse: no time spent writing it
    message = load_error(path)
    assert f"{MAX_POLICY_BYTES + 1} bytes" in message
    assert f"cap of {MAX_POLICY_BYTES}" in message and "Fix:" in message


def test_file_that_grows_after_fstat_is_caught(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("version: v1\n" + "#" * MAX_POLICY_BYTES + "\n")
    real_fstat = os.fstat

    def stale_fstat(fd: int) -> os.stat_result:
        st = real_fstat(fd)
        # The size as it was a moment ago, before the file grew.
        return os.stat_result((st.st_mode, *st[1:6], 100, *st[7:10]))

    monkeypatch.setattr(policy_file.os, "fstat", stale_fstat)
    message = load_error(path)
    assert f"more than {MAX_POLICY_BYTES} bytes" in message


def test_a_10k_entry_policy_fits_the_caps(tmp_path: Path) -> None:
    names = [f'  - "*.service-{i}.some-long-team-name.example.com"' for i in range(10_000)]
    path = tmp_path / "p.yaml"
    path.write_text("version: v1\nallowed_domains:\n" + "\n".join(names) + "\n")
    assert path.stat().st_size < MAX_POLICY_BYTES / 4
    loaded = load_bounded(path, 30)()
    assert isinstance(loaded, policy.Policy) and loaded.entry_count == 10_000


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        pytest.param(b"\xff\xfe" + b"x" * 100, "not UTF-8", id="binary"),
        pytest.param(b"version: v1\n\x00\x01\x02", "#x0000", id="nul-bytes"),
        pytest.param(b"\x7fELF\x02\x01\x01" + b"\x00" * 64, "#x007f", id="elf-header"),
    ],
)
def test_binary_files_are_refused_without_their_bytes(
    tmp_path: Path, data: bytes, fragment: str
) -> None:
    path = tmp_path / "p.yaml"
    path.write_bytes(data)
    message = load_error(path)
    assert fragment in message
    assert_safe_message(message, "ELF")


def test_symlink_to_a_secret_file_shows_none_of_it(tmp_path: Path) -> None:
    (tmp_path / "shadow").write_text(SHADOW)
    (tmp_path / "p.yaml").symlink_to(tmp_path / "shadow")
    message = load_error(tmp_path / "p.yaml")
    assert_safe_message(message, "admin7", "svc9", "$6$", "19000", "19001")
    assert "check that the path names the policy file" in message


# -- YAML that a policy may not use ----------------------------------------------------------------


BOMB = alias_bomb(7)  # 4.8 million strings once expanded


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        pytest.param(BOMB, ["line 3", "aliases", "write each entry out"], id="alias-bomb"),
        pytest.param(
            "version: v1\nx: &hosts [a.test]\nallowed_domains: *hosts\n",
            ["line 2", "not supported"],
            id="alias-reuse",
        ),
        pytest.param(
            "version: v1\nallowed_domains: &h\n  - a.test\n", ["line 2", "anchors"], id="anchor"
        ),
        pytest.param(
            "--- &doc\nversion: v1\n", ["line 1", "anchors"], id="anchor-on-document-root"
        ),
        pytest.param(
            "version: v1\nallowed_domains: [!!str &x a.test, *x]\n",
            ["anchors"],
            id="anchor-after-tag",
        ),
        pytest.param(
            "version: v1\n<<: {allowed_domains: [a.test]}\n", ["merge keys"], id="merge-key"
        ),
        pytest.param(
            "version: v1\nallowed_domains: [a.test]\nallowed_domains: [b.test]\n",
            ["line 3", "duplicate key 'allowed_domains' (first at line 2)"],
            id="duplicate-top-level",
        ),
        pytest.param(
            "version: v1\nversion: v1\n", ["duplicate key 'version'"], id="duplicate-same-value"
        ),
        pytest.param(
            'version: v1\n"allowed_domains": [a.test]\n? allowed_domains\n: [b.test]\n',
            ["duplicate key 'allowed_domains'"],
            id="duplicate-other-spellings",
        ),
        pytest.param(
            "version: v1\nallowed_domains:\n  - {x: 1, x: 2}\n",
            ["line 3", "duplicate key 'x'"],
            id="duplicate-in-list-item",
        ),
        pytest.param(
            "version: v1\nextra:\n  deeper:\n    k: 1\n    k: 2\n",
            ["line 5", "duplicate key 'k' (first at line 4)"],
            id="duplicate-deep",
        ),
        pytest.param(
            "version: v1\nallowed_ports: [443]\nallowed_ports: [1, 2]\n",
            ["duplicate key 'allowed_ports'"],
            id="duplicate-ports",
        ),
        pytest.param("[" * 200 + "]" * 200, ["nested deeper than"], id="deep-nesting"),
        pytest.param(
            "[" + ",".join(["a"] * (policy_file.MAX_POLICY_NODES + 1)) + "]",
            [f"more than {policy_file.MAX_POLICY_NODES} YAML values"],
            id="too-many-values",
        ),
    ],
)
def test_refused_yaml_is_a_policy_error(text: str, fragments: list[str]) -> None:
    message = parse_error(text)
    assert message.startswith("p.yaml")
    assert "Fix:" in message
    for fragment in fragments:
        assert fragment in message
    assert_safe_message(message)


def test_duplicate_keys_in_a_file_from_k8s_merge(tmp_path: Path) -> None:
    # k8s/manifests.merge_policy_text parses the same strict way.
    from k8s.manifests import merge_policy_text

    with pytest.raises(PolicyError, match="duplicate key 'version'"):
        merge_policy_text("version: v1\nversion: v1\n", ["a.test"], "p.yaml")


# -- what an error message may quote --------------------------------------------------------------

HOSTILE_TEXTS = {
    "unterminated-quote": f"version: v1\nallowed_domains: ['{SECRET}\n",
    "bad-indent": f"version: v1\n  allowed_domains: [{SECRET}]\n bad: x\n",
    "tab-indent": f"version: v1\nallowed_domains:\n\t- {SECRET}\n",
    "unknown-tag": f"version: v1\nallowed_domains: !{SECRET}-tag [a.test]\n",
    "tag-handle": f"version: v1\nallowed_domains: !{SECRET}!x [a.test]\n",
    "int-tag-on-text": f"version: v1\nallowed_ports: [!!int {SECRET}]\n",
    "float-tag-on-text": f"version: v1\nallowed_ports: [!!float {SECRET}]\n",
    "timestamp-tag-on-text": f"version: v1\nallowed_ports: [!!timestamp {SECRET}]\n",
    "binary-tag": f"version: v1\nallowed_ports: [!!binary '{SECRET}!']\n",
    "huge-int": "version: v1\nallowed_ports: [" + "9" * 5000 + "]\n",
    "unknown-key-secret": f"version: v1\n{SECRET}-{SECRET}: 1\n",
    "unknown-key-line": SHADOW,
    "duplicate-key-line": f"{SECRET}:{SECRET}: 1\n{SECRET}:{SECRET}: 2\n",
    "version-secret": f"version: {PAD}{SECRET}\n",
    "long-entry": f"version: v1\nallowed_domains: ['{PAD}{SECRET * 20}*']\n",
    "long-label": f"version: v1\nallowed_domains: ['{'a' * 30}{SECRET * 4}.com']\n",
    "bad-label-chars": f"version: v1\nallowed_domains: ['{PAD}{SECRET}!.com']\n",
    "entry-newlines": 'version: v1\nallowed_domains: ["a\\n\\r\\u001b[31m' + PAD + SECRET + '"]\n',
    "entry-bidi": 'version: v1\nallowed_domains: ["\\u202e' + "x" * 40 + SECRET + '"]\n',
    "long-port": f"version: v1\nallowed_ports: ['{PAD}{SECRET}']\n",
    "long-range": f"version: v1\nallow_ranges: ['{PAD}{SECRET}']\n",
    "list-entry": f"version: v1\nallowed_domains: [[{SECRET}, {SECRET}]]\n",
    "mapping-entry": f"version: v1\nallowed_domains: [{{{SECRET}: 1}}]\n",
    "bad-escape": f'version: v1\nallowed_domains: ["{SECRET}\\q"]\n',
    "control-char": f"version: v1\nallowed_domains: [{SECRET}\x07]\n",
    "entry-with-space": f"version: v1\nallowed_domains: ['{PAD} {SECRET}']\n",
}


@pytest.mark.parametrize("text", list(HOSTILE_TEXTS.values()), ids=list(HOSTILE_TEXTS))
def test_error_messages_quote_no_more_than_a_short_escaped_excerpt(text: str) -> None:
    message = parse_error(text, "/etc/auth-proxy/policy.yaml")
    assert message.startswith("/etc/auth-proxy/policy.yaml")
    assert "Fix:" in message
    assert_safe_message(message, "99999999999", "\x1b", "\u202e")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("api.test", "'api.test'", id="short"),
        pytest.param("", "''", id="empty"),
        pytest.param("x" * 40, "'" + "x" * 40 + "'", id="exactly-the-limit"),
        pytest.param("x" * 41, "'" + "x" * 40 + "'...(truncated, 41 chars)", id="one-over"),
        pytest.param("a'b\\c", "'a\\'b\\\\c'", id="quote-and-backslash"),
        pytest.param("a\nb\r\t", "'a\\nb\\r\\t'", id="line-breaks"),
        pytest.param("\x00\x1b[31m", "'\\x00\\x1b[31m'", id="control-chars"),
        pytest.param("bücher", "'b\\xfccher'", id="latin-1"),
        pytest.param("\u202eevil", "'\\u202eevil'", id="bidi-override"),
        pytest.param("\U0001f600", "'\\U0001f600'", id="astral"),
        pytest.param(
            "\U0001f600" * 10, "'" + "\\U0001f600" * 4 + "'...(truncated, 10 chars)", id="wide"
        ),
        pytest.param(443, "443", id="int"),
        pytest.param(True, "True", id="bool"),
        pytest.param(None, "None", id="none"),
        pytest.param(1.5, "1.5", id="float"),
        pytest.param(10**5000, "<an integer of 16610 bits>", id="huge-int"),
        pytest.param([SECRET], "<list>", id="list"),
        pytest.param({SECRET: 1}, "<dict>", id="dict"),
    ],
)
def test_excerpt(value: object, expected: str) -> None:
    assert excerpt(value) == expected


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        pytest.param("allowed_domain", "'allowed_domain'", id="name"),
        pytest.param("Version", "'Version'", id="capitalised"),
        pytest.param(f"root:$6${SECRET}", "<28 chars, not a name>", id="shadow-line"),
        pytest.param("x" * 41, "<41 chars, not a name>", id="long"),
        pytest.param("a b", "<3 chars, not a name>", id="space"),
        pytest.param(7, "7", id="int"),
    ],
)
def test_key_excerpt(key: object, expected: str) -> None:
    assert key_excerpt(key) == expected


def test_yaml_errors_give_line_and_column() -> None:
    message = parse_error("version: v1\nallowed_domains: [a.test\n")
    assert message.startswith("p.yaml: not valid YAML at line 3, column 1: ")


# -- reloads: off the event loop, within a deadline -----------------------------------------------


class Delivered:
    def __init__(self) -> None:
        self.outcomes: list[Callable[[], object]] = []

    def __call__(self, outcome: Callable[[], object]) -> None:
        self.outcomes.append(outcome)

    def last(self) -> object:
        try:
            return self.outcomes[-1]()
        except PolicyError as e:
            return e


async def ticks_during(work) -> tuple[object, float]:
    """Run `work` while a ticker measures the longest the event loop went without running it."""
    longest = 0.0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal longest
        last = time.monotonic()
        while not stop.is_set():
            await asyncio.sleep(0.01)
            now = time.monotonic()
            longest = max(longest, now - last)
            last = now

    task = asyncio.create_task(ticker())
    try:
        result = await work
    finally:
        stop.set()
        await task
    return result, longest


def touch(path: Path, text: str) -> None:
    path.write_text(text)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


async def test_watcher_loads_in_a_thread_and_delivers_on_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(GOOD)
    threads: list[int] = []

    def load() -> policy.Policy:
        threads.append(threading.get_ident())
        return policy.load_policy(path)

    delivered = Delivered()
    watcher = reloader.PolicyWatcher(str(path), load, delivered)
    assert await watcher.poll() is False, "nothing changed yet"
    touch(path, "version: v1\nallowed_domains: [a.test, b.test, c.test]\n")
    assert await watcher.poll() is True
    assert threads and threads[0] != threading.get_ident()
    loaded = delivered.last()
    assert isinstance(loaded, policy.Policy) and loaded.entry_count == 3


async def test_watcher_delivers_policy_errors(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(GOOD)
    delivered = Delivered()
    watcher = reloader.PolicyWatcher(str(path), lambda: policy.load_policy(path), delivered)
    path.unlink()
    os.mkfifo(path)
    assert await asyncio.wait_for(watcher.poll(), 5) is True
    error = delivered.last()
    assert isinstance(error, PolicyError) and "FIFO" in str(error)


async def test_slow_load_misses_its_deadline_without_stalling_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(GOOD)
    release = threading.Event()
    started: list[float] = []

    def stuck_load() -> str:
        started.append(time.monotonic())
        release.wait(10)  # a load that hangs (a stuck volume, a pathological parse)
        return "late"

    delivered = Delivered()
    watcher = reloader.PolicyWatcher(str(path), stuck_load, delivered, deadline=0.3)
    touch(path, GOOD + "# changed\n")
    start = time.monotonic()
    changed, longest_stall = await ticks_during(watcher.poll())
    assert changed is True
    assert 0.25 < time.monotonic() - start < 2.0
    assert longest_stall < 0.2, "the event loop stalled during the load"
    error = delivered.last()
    assert isinstance(error, PolicyError)
    assert str(path) in str(error) and "longer than 0.3 s" in str(error)

    # While the stuck load still runs, a new change starts no second one...
    touch(path, GOOD + "# changed again\n")
    assert await watcher.poll() is False
    assert len(started) == 1
    # ...and once it ends, the change is picked up.
    release.set()
    for _ in range(50):
        await asyncio.sleep(0.02)
        if await watcher.poll():
            break
    assert len(started) == 2 and delivered.last() == "late"


async def test_unexpected_load_errors_name_only_their_type(tmp_path: Path, caplog) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(GOOD)

    def buggy_load() -> None:
        raise RuntimeError(f"boom with file content {SECRET}")

    delivered = Delivered()
    watcher = reloader.PolicyWatcher(str(path), buggy_load, delivered)
    touch(path, GOOD + "# changed\n")
    assert await watcher.poll() is True
    error = delivered.last()
    assert isinstance(error, PolicyError) and "RuntimeError" in str(error)
    assert SECRET not in str(error) and SECRET not in caplog.text


async def test_large_policy_reload_does_not_stall_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(GOOD)
    delivered = Delivered()
    watcher = reloader.PolicyWatcher(str(path), lambda: policy.load_policy(path), delivered)
    names = "".join(f"  - host-{i}.example.com\n" for i in range(20_000))
    touch(path, "version: v1\nallowed_domains:\n" + names)
    # A full collection must walk every object alive, and in this process that is the whole
    # test session's heap, not a proxy's: set it aside, so the stall measured is the reload's.
    gc.collect()
    gc.freeze()
    try:
        changed, longest_stall = await ticks_during(watcher.poll())
    finally:
        gc.unfreeze()
    assert changed is True
    loaded = delivered.last()
    assert isinstance(loaded, policy.Policy) and loaded.entry_count == 20_000
    assert longest_stall < 0.2, f"the event loop stalled for {longest_stall:.2f} s"


# -- python -m k8s policy --from-file --------------------------------------------------------------


def k8s_policy(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "k8s", "policy", "--from-file", str(path), "--allow", "b.test"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,  # a FIFO would otherwise block it for good
    )


def _cli_alias(tmp: Path) -> Path:
    (tmp / "p.yaml").write_text(BOMB)
    return tmp / "p.yaml"


def _cli_duplicate(tmp: Path) -> Path:
    (tmp / "p.yaml").write_text("version: v1\nallowed_domains: [a.test]\nallowed_domains: []\n")
    return tmp / "p.yaml"


def _cli_oversized(tmp: Path) -> Path:
    with (tmp / "p.yaml").open("wb") as f:
        f.truncate(MAX_POLICY_BYTES + 10)
    return tmp / "p.yaml"


def _cli_secret(tmp: Path) -> Path:
    (tmp / "shadow").write_text(SHADOW)
    (tmp / "p.yaml").symlink_to(tmp / "shadow")
    return tmp / "p.yaml"


def _cli_yaml_snippet(tmp: Path) -> Path:
    (tmp / "p.yaml").write_text(HOSTILE_TEXTS["unterminated-quote"])
    return tmp / "p.yaml"


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        pytest.param(_fifo, "FIFO", id="fifo"),
        pytest.param(_char_device, "character device", id="dev-zero"),
        pytest.param(_directory, "a directory", id="directory"),
        pytest.param(_cli_oversized, f"cap of {MAX_POLICY_BYTES}", id="oversized"),
        pytest.param(_cli_alias, "aliases", id="alias-bomb"),
        pytest.param(_cli_duplicate, "duplicate key 'allowed_domains'", id="duplicate-key"),
        pytest.param(_cli_secret, "not a name", id="symlink-to-secret"),
        pytest.param(_cli_yaml_snippet, "not valid YAML at line", id="yaml-snippet"),
    ],
)
def test_k8s_policy_from_file_uses_the_safe_loader(tmp_path: Path, make, fragment: str) -> None:
    path = make(tmp_path)
    result = k8s_policy(path)
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    assert result.stderr.startswith(f"error: {path}")
    assert fragment in result.stderr
    assert_safe_message(result.stderr.strip(), "admin7", "$6$")


def test_k8s_policy_from_file_through_a_symlink(tmp_path: Path) -> None:
    path = _configmap(tmp_path)
    result = k8s_policy(path)
    assert result.returncode == 0, result.stderr
    assert "b.test" in result.stdout and "api.test" in result.stdout
