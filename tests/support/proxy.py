"""A real proxy process (mitmdump with the addon, or the auth-proxy runtime) on loopback, with
test names resolved from a private hosts file, and a TLS upstream it is told to trust."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.ipnetns import entered
from tests.support.processes import ManagedProcess, free_port, wait_until, with_hosts_file

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

# The same proxy, run two ways: the suite runs against both to prove they behave alike.
PROXY_COMMANDS = {
    "mitmdump": [str(BIN / "mitmdump"), "-s", str(REPO / "addons" / "allowlist.py")],
    "auth-proxy": [str(BIN / "auth-proxy")],
}


def with_faults(kind: str) -> list[str]:
    """The proxy command with tests/support/faults.py loaded into the same process."""
    if kind == "mitmdump":
        return [*PROXY_COMMANDS[kind], "-s", str(REPO / "tests" / "support" / "faults.py")]
    bootstrap = "import tests.support.faults; from addons.runtime import main; main()"
    return [sys.executable, "-c", bootstrap]


def generate_ca(out: Path) -> Path:
    subprocess.run(
        [sys.executable, str(REPO / "ca" / "generate.py"), "--out", str(out)],
        check=True,
        capture_output=True,
    )
    return out


@dataclass
class Proxy:
    kind: str
    workdir: Path
    hosts_file: Path
    upstream_ca: Path
    policy: Path | None = None
    extra_args: list[str] = field(default_factory=list)
    # Replaces PROXY_COMMANDS[kind], e.g. to load a fault-injection module first.
    base_command: list[str] | None = None
    port: int = field(default_factory=free_port)
    health_port: int = field(default_factory=free_port)
    process: ManagedProcess | None = None
    # A named network namespace (`ip netns`) the proxy and its health checks run in.
    ip_netns: str | None = None

    @property
    def confdir(self) -> Path:
        return self.workdir / "confdir"

    @property
    def ca_cert(self) -> Path:
        return self.confdir / "ca.crt"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        args = [
            *(self.base_command or PROXY_COMMANDS[self.kind]),
            "--listen-host",
            "127.0.0.1",
            "--listen-port",
            str(self.port),
            "--set",
            f"confdir={self.confdir}",
            "--set",
            f"health_port={self.health_port}",
            "--set",
            "health_host=127.0.0.1",
            "--set",
            f"ssl_verify_upstream_trusted_ca={self.upstream_ca}",
        ]
        if self.policy is not None:
            args += ["--set", f"allowlist={self.policy}"]
        command = with_hosts_file(self.hosts_file, [*args, *self.extra_args])
        # `ip netns exec` execs the command itself, so the PID stays the proxy's own.
        return ["ip", "netns", "exec", self.ip_netns, *command] if self.ip_netns else command

    def start(self, wait_ready: bool = True) -> Proxy:
        if not self.confdir.exists():
            generate_ca(self.confdir)
        self.process = ManagedProcess(self.command(), self.workdir, f"{self.kind}-{self.port}")
        if wait_ready:
            wait_until(self.ready_or_dead, 30, f"{self.kind} /readyz")
            if not self.process.alive():
                raise RuntimeError(f"{self.kind} exited early\n{self.process.describe()}")
        return self

    def ready_or_dead(self) -> bool:
        assert self.process is not None
        return not self.process.alive() or self.health("/readyz")[0] == 200

    def stop(self) -> int | None:
        return self.process.stop() if self.process else None

    def health(self, path: str) -> tuple[int, str]:
        inside = entered(self.ip_netns) if self.ip_netns else contextlib.nullcontext()
        try:
            with (
                inside,
                urllib.request.urlopen(
                    f"http://127.0.0.1:{self.health_port}{path}", timeout=2
                ) as response,
            ):
                return response.status, response.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError:
            return 0, ""

    def readyz(self) -> tuple[int, dict]:
        status, body = self.health("/readyz")
        return status, (json.loads(body) if body else {})

    def stdout_lines(self) -> list[str]:
        """The whole lines of the proxy's stdout (it may be writing the last one just now)."""
        assert self.process is not None
        complete, _, _ = self.process.stdout().rpartition("\n")
        return complete.splitlines()

    def events(self, event: str | None = None) -> list[dict]:
        assert self.process is not None
        records = []
        for line in self.stdout_lines():
            if line.startswith("{"):
                record = json.loads(line)
                if event is None or record.get("event") == event:
                    records.append(record)
        return records

    def logs(self) -> str:
        assert self.process is not None
        return self.process.stdout() + self.process.stderr()

    def curl(self, *args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
        """curl through the proxy, trusting only the proxy's CA."""
        return subprocess.run(
            [
                "curl",
                "--silent",
                "--show-error",
                "--max-time",
                str(timeout),
                "--proxy",
                self.url,
                "--cacert",
                str(self.ca_cert),
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=timeout + 5,
            env={"PATH": "/usr/bin:/bin"},
        )

    def status_and_headers(self, *args: str) -> tuple[int, dict[str, str], str]:
        """Status, lower-cased headers of the last response, and body, via curl."""
        result = self.curl("--include", *args)
        return parse_curl_include(result.stdout)


def parse_curl_include(output: str) -> tuple[int, dict[str, str], str]:
    # With a proxy, curl prints the CONNECT response first; the last header block is the one.
    blocks = output.replace("\r\n", "\n").split("\n\n")
    head_index = max(i for i, b in enumerate(blocks) if b.startswith("HTTP/"))
    lines = blocks[head_index].split("\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, "\n\n".join(blocks[head_index + 1 :])
