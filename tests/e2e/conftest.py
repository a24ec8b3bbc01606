"""The sandbox pod, end to end: the real CA tool, pod builder, manifests and images, run with
Docker the way a kubelet would (tests/support/podrunner.py), against httpbin served as
httpbin.org from a private network namespace (tests/e2e/upstream.py).

Run with ``make test-e2e`` (``pytest -s tests/e2e``) to see every step printed.

``E2E_EGRESS=unenforced`` builds the pod without the egress lock (``egress_enforcement=False``):
for proving that tests/e2e/test_enforced_egress.py's assertions fail when nothing enforces them
(its first test then fails on the pod's label, on purpose). Never set in `make test`.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from k8s import constants as c
from k8s.manifests import build_policy_configmap, load_ca_secret, policy_text_from_domains
from k8s.pods import build_pod_spec
from k8s.settings import DEFAULT_SETTINGS
from tests.e2e.upstream import (
    DECOY_ADDR,
    DECOY_ADDR6,
    DENIED6_NAME,
    DENIED_NAME,
    UPSTREAM_ADDR,
    UPSTREAM_NAME,
    Upstream,
)
from tests.support.docker_fixtures import Docker, wait_for
from tests.support.podrunner import ContainerExtras, PodRunner

ROOT = Path(__file__).resolve().parents[2]
POD_NAME = "e2e-sandbox"
# What a workload unsets to ignore the proxy (the transparent path): every spelling tools read.
PROXY_VARIABLES = (
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
)
UPSTREAM_CA_MOUNT = "/etc/e2e-upstream-ca"
GRACE_CAP = 5
EGRESS = os.environ.get("E2E_EGRESS", c.EGRESS_ENFORCED)
# Resolvable in the pod (its /etc/hosts) to the upstream, for policies that allow a wildcard over
# them (tests/e2e/test_policy_features.py): only such a policy's deny list can stop the second.
WILDCARD_NAME = "api.example.test"
DENYLISTED_NAME = "uploads.example.test"
# The sidecar polls its policy file once a second; a reload takes well under a second.
POLICY_RELOAD_TIMEOUT = 20.0


def step(message: str) -> None:
    print(f"\n==> {message}", flush=True)


def info(message: str) -> None:
    print(f"    {message}", flush=True)


def host_network_state() -> dict[str, str]:
    """What the test must leave as it found it: ip_forward, iptables rules, links, netns."""

    def out(*cmd: str) -> str:
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
        except FileNotFoundError:
            return f"({cmd[0]} not installed)"
        return proc.stdout

    def rules(text: str) -> str:
        # Counters and the dump's timestamp comments change on their own.
        lines = [re.sub(r"\[\d+:\d+\]", "", ln) for ln in text.splitlines()]
        return "\n".join(ln for ln in lines if not ln.startswith("#"))

    return {
        "ip_forward": Path("/proc/sys/net/ipv4/ip_forward").read_text().strip(),
        "iptables": rules(out("iptables-save")),
        "ip6tables": rules(out("ip6tables-save")),
        "links": " ".join(sorted(re.findall(r"^\d+: ([^:@]+)", out("ip", "-o", "link"), re.M))),
        "netns": out("ip", "netns", "list"),
    }


@dataclass
class Sandbox:
    docker: Docker
    runner: PodRunner
    upstream: Upstream
    pod: dict
    ca_dir: Path
    workload: str  # docker names
    sidecar: str

    def exec(self, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """``kubectl exec workload -- CMD``: the container's own user and env (the spec's)."""
        proc = self.docker.exec(self.workload, *cmd, timeout=timeout)
        shown = " ".join(shlex.quote(a) for a in cmd).replace("\n", "\\n")
        shown = shown if len(shown) < 170 else shown[:167] + "..."
        info(f"$ kubectl exec {POD_NAME} -c workload -- {shown}  -> exit {proc.returncode}")
        return proc

    def sidecar_events(self) -> list[dict]:
        events = []
        for line in self.docker.logs(self.sidecar).splitlines():
            if line.startswith("{"):
                try:
                    events.append(json.loads(line))
                except ValueError:
                    continue
        return events

    def policy_reloads(self) -> list[dict]:
        return [e for e in self.sidecar_events() if e.get("event") == "policy-reload"]

    def policy_text(self) -> str:
        """The policy.yaml the sidecar reads now (its ConfigMap volume on the node)."""
        return (self.runner.volume_dirs[c.POLICY_VOLUME] / c.POLICY_KEY).read_text()

    def swap_policy(self, text: str) -> dict:
        """Update the policy ConfigMap as the kubelet does (a new payload folder, then an atomic
        swap of the ``..data`` symlink) and wait for the sidecar's policy-reload line saying it
        took effect; that line is returned."""
        before = len(self.policy_reloads())
        swap_projection(self.runner.volume_dirs[c.POLICY_VOLUME], {c.POLICY_KEY: text.encode()})
        new = wait_for(
            lambda: self.policy_reloads()[before:],
            POLICY_RELOAD_TIMEOUT,
            0.2,
            "the sidecar's policy-reload line",
        )
        assert new[-1].get("ok") is True, f"the sidecar refused the new policy: {new[-1]}"
        info(
            f"policy swapped (..data): reload ok, mode {new[-1].get('mode')}, "
            f"{new[-1].get('entries')} entries"
        )
        return new[-1]

    @contextlib.contextmanager
    def policy(self, text: str) -> Iterator[dict]:
        """``with sandbox.policy(TEXT):`` the sidecar runs TEXT, and the policy it ran before
        is back afterwards, whatever happened inside."""
        previous = self.policy_text()
        try:
            # Inside the try: a policy the sidecar refused is taken off the volume too.
            yield self.swap_policy(text)
        finally:
            self.swap_policy(previous)


def swap_projection(target: Path, data: dict[str, bytes]) -> None:
    """The kubelet's atomic writer updating a ConfigMap volume laid out by the pod runner: the
    files go into a new ``..<timestamp>`` folder (modes and owners as before), ``..data_tmp``
    points at it and is renamed over ``..data`` (one atomic step for readers), and the old
    payload is removed. The top-level symlinks (``policy.yaml -> ..data/policy.yaml``) stay."""
    data_link = target / "..data"
    old = target / os.readlink(data_link)
    stamp = datetime.datetime.now(datetime.UTC).strftime("..%Y_%m_%d_%H_%M_%S.%f")
    payload = target / stamp
    payload.mkdir()
    st = old.stat()
    os.chown(payload, st.st_uid, st.st_gid)
    payload.chmod(st.st_mode & 0o7777)
    for name, content in data.items():
        was = (old / name).stat()
        (payload / name).write_bytes(content)
        os.chown(payload / name, was.st_uid, was.st_gid)
        (payload / name).chmod(was.st_mode & 0o7777)
    tmp = target / "..data_tmp"
    tmp.symlink_to(stamp)
    os.rename(tmp, data_link)
    shutil.rmtree(old)


@pytest.fixture(scope="module")
def workload_image() -> str | None:
    """The workload container's image; None: the executor's. A module overrides this fixture
    to run its own pod with another image (tests/e2e/test_toolchains.py)."""
    return None


@pytest.fixture(scope="module")
def sandbox(
    docker: Docker,
    images: dict[str, str],
    workload_image: str | None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Sandbox]:
    started = time.monotonic()
    work = tmp_path_factory.mktemp("e2e")
    tag = f"{docker.session}{uuid.uuid4().hex[:4]}"
    before = host_network_state()
    step(
        f"host network before: ip_forward={before['ip_forward']}, "
        f"{len(before['iptables'].splitlines())} iptables lines, links: {before['links']}"
    )

    step("CA: python ca/generate.py")
    ca_dir = work / "ca"
    subprocess.run(
        [sys.executable, str(ROOT / "ca" / "generate.py"), "--out", str(ca_dir),
         "--common-name", "e2e sandbox internal CA"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    ca_subject = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes()).subject
    info(f"{ca_dir}: {', '.join(sorted(p.name for p in ca_dir.iterdir()))}")
    info(f"subject: {ca_subject.rfc4514_string()}")

    step("upstream: test CA, certificate for httpbin.org, git repository")
    upstream = Upstream(work / "upstream", netns=f"apt-e2e-{tag}", log=info).prepare()

    step("manifests with the k8s package: CA Secret, policy ConfigMap, pod")
    secret = load_ca_secret(ca_dir)
    policy = yaml.safe_load(policy_text_from_domains([UPSTREAM_NAME]))
    # The upstream is a private test address, which the proxy refuses unless a range admits it:
    # exactly that address, and HTTPS only.
    policy |= {"allowed_ports": [443], "allow_ranges": [f"{UPSTREAM_ADDR}/32"]}
    policy_text = yaml.safe_dump(policy, sort_keys=False)
    configmap = build_policy_configmap(policy_text)
    if EGRESS not in (c.EGRESS_ENFORCED, c.EGRESS_UNENFORCED):
        raise ValueError(f"E2E_EGRESS={EGRESS!r}: use {c.EGRESS_ENFORCED} or {c.EGRESS_UNENFORCED}")
    settings = DEFAULT_SETTINGS.replace(
        sidecar_image=images["sidecar"],
        executor_image=images["executor"],
        egress_enforcement=EGRESS == c.EGRESS_ENFORCED,
    )
    if EGRESS != c.EGRESS_ENFORCED:
        print(f"\n    *** E2E_EGRESS={EGRESS}: the pod is built WITHOUT the egress lock ***")
    pod_obj = build_pod_spec(
        POD_NAME, image=workload_image, env={"SANDBOX_REQUEST_ID": "e2e"}, settings=settings
    )
    from kubernetes.client import ApiClient

    pod = ApiClient().sanitize_for_serialization(pod_obj)
    info(f"Secret {secret.metadata.name} ({secret.type}): {', '.join(sorted(secret.data))}")
    info(f"ConfigMap {configmap.metadata.name} policy.yaml:")
    for line in policy_text.strip().splitlines():
        info(f"    {line}")
    spec = pod["spec"]
    info(
        f"Pod {POD_NAME}: runtimeClassName {spec.get('runtimeClassName')}, initContainers "
        f"{[x['name'] for x in spec.get('initContainers', [])]}, containers "
        f"{[x['name'] for x in spec['containers']]}, volumes "
        f"{[v['name'] for v in spec.get('volumes', [])]}"
    )
    (work / "manifests.yaml").write_text(
        yaml.safe_dump_all(
            [ApiClient().sanitize_for_serialization(o) for o in (secret, configmap, pod_obj)]
        )
    )

    step("run the pod with Docker like a kubelet")
    runner = PodRunner(
        docker.engine.docker,
        work / "pod",
        name_prefix=f"apt-{tag}-{POD_NAME}",
        labels=[docker.label],
        secrets=[secret],
        config_maps=[configmap],
        pause_image=images["executor"],
        log=info,
        # The executor's PID 1 (`sleep infinity`) ignores SIGTERM, so it always takes the full
        # grace period (30 s by default) to stop: capped for the test, and printed.
        grace_cap=GRACE_CAP,
        # Probes come from the node's side of the pod's veth, as a kubelet's do.
        node_netns=upstream.netns,
    )
    info(f"probes go like a kubelet's: from netns {upstream.netns} (the node side) to the pod IP")
    extras = {
        c.SIDECAR_CONTAINER: ContainerExtras(
            mounts=[(upstream.ca_dir, UPSTREAM_CA_MOUNT)],
            args=["--set", f"ssl_verify_upstream_trusted_ca={UPSTREAM_CA_MOUNT}/ca.crt"],
            why="the sidecar trusts the test upstream's CA, as it trusts public CAs in production",
        )
    }
    box = Sandbox(
        docker,
        runner,
        upstream,
        pod,
        ca_dir,
        workload=runner.docker_name(c.WORKLOAD_CONTAINER),
        sidecar=runner.docker_name(c.SIDECAR_CONTAINER),
    )
    try:
        try:
            runner.start(
                pod,
                network=upstream.network,
                extras=extras,
                infra_hosts={
                    UPSTREAM_NAME: UPSTREAM_ADDR,
                    DENIED_NAME: DECOY_ADDR,
                    DENIED6_NAME: DECOY_ADDR6,
                    WILDCARD_NAME: UPSTREAM_ADDR,
                    DENYLISTED_NAME: UPSTREAM_ADDR,
                },
            )
        except Exception:
            print(f"--- sidecar logs ---\n{docker.logs(box.sidecar)[-6000:]}")
            print(f"--- upstream logs ---\n{upstream.logs()}")
            raise
        info(f"pod up in {time.monotonic() - started:.1f} s")
        yield box
    finally:
        step("teardown: stop the pod, the upstream, remove everything")
        try:
            runner.stop()
        finally:
            upstream.stop()
            shutil.rmtree(work, ignore_errors=True)
            info(f"removed {work}")
        leftovers = docker(
            "ps", "-aq", "--filter", f"label=io.kubernetes.pod.name={POD_NAME}",
            "--filter", f"label={docker.label}", check=False,
        ).stdout.split()  # fmt: skip
        after = host_network_state()
        changed = [k for k in before if before[k] != after[k]]
        info(f"containers left: {leftovers or 'none'}; host network changed: {changed or 'no'}")
        info(
            f"host network after: ip_forward={after['ip_forward']}, "
            f"{len(after['iptables'].splitlines())} iptables lines, links: {after['links']}"
        )
        info(f"e2e pod session took {time.monotonic() - started:.1f} s")
        assert not leftovers, f"containers left behind: {leftovers}"
        assert not changed, f"the host's network changed: {changed}\n{before}\n{after}"
