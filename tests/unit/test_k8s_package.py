"""`from k8s import build_pod_spec, build_warm_pod_spec`, and importing `k8s` does nothing else."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import k8s
from k8s import build_pod_spec, build_warm_pod_spec, pods

REPO = Path(__file__).resolve().parents[2]

# Run in a fresh interpreter, from an empty folder, so nothing imported earlier hides an effect.
_PROBE = """
import json, logging, os, sys, threading
env, cwd = dict(os.environ), os.listdir(".")
root = (list(logging.getLogger().handlers), logging.getLogger().level)
from k8s import build_pod_spec, build_warm_pod_spec
print(json.dumps({
    "env_same": dict(os.environ) == env,
    "files": sorted(set(os.listdir(".")) - set(cwd)),
    "logging_same": (list(logging.getLogger().handlers), logging.getLogger().level) == root,
    "threads": threading.active_count(),
    "modules": sorted(m for m in sys.modules if m == "k8s" or m.startswith("k8s.")),
    "api_default_untouched": (lambda c: c.get_default_copy().host == c().host)(
        sys.modules["kubernetes.client"].Configuration
    ),
    "pod": build_pod_spec("p1").metadata.name,
    "warm": build_warm_pod_spec("pool").metadata.generate_name,
}))
"""


def test_the_builders_are_the_ones_in_k8s_pods() -> None:
    assert build_pod_spec is pods.build_pod_spec
    assert build_warm_pod_spec is pods.build_warm_pod_spec
    assert set(k8s.__all__) == {"build_pod_spec", "build_warm_pod_spec"}


def test_importing_k8s_has_no_side_effects(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    got = json.loads(proc.stdout)
    assert got == {
        "env_same": True,
        "files": [],
        "logging_same": True,
        "threads": 1,
        # The builders' own modules only: not the CLI, not the manifests.
        "modules": ["k8s", "k8s.constants", "k8s.pods", "k8s.settings", "k8s.validation"],
        "api_default_untouched": True,  # no kubeconfig was loaded
        "pod": "p1",
        "warm": "pool-",
    }
