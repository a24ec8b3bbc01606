"""`python -m k8s`: what each subcommand renders, its errors, and schema validation of it all.

Every manifest the CLI renders is validated offline with kubernetes-validate --strict against
Kubernetes 1.29 to 1.37 (the native sidecar needs 1.29), and the manifests that need no native
sidecar also against 1.27 and 1.28.
"""

from __future__ import annotations

import base64
import copy
import functools
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from addons.policy import parse_policy
from ca import generate
from k8s import constants as c

PYTHON = sys.executable
REPO = Path(__file__).resolve().parents[2]
KUBERNETES_VALIDATE = Path(PYTHON).parent / "kubernetes-validate"

NATIVE_VERSIONS = [f"1.{minor}" for minor in range(29, 38)]
OLD_VERSIONS = ["1.27", "1.28"]


def k8s(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "k8s", *args], cwd=REPO, capture_output=True, text=True, timeout=60
    )


def render(*args: str) -> list[dict[str, Any]]:
    result = k8s(*args)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return list(yaml.safe_load_all(result.stdout))


def fails(*args: str, code: int = 1) -> str:
    result = k8s(*args)
    assert result.returncode == code, (result.stdout, result.stderr)
    assert result.stdout == "", "nothing may reach kubectl when the input is bad"
    return result.stderr


@pytest.fixture(scope="module")
def ca_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ca")
    generate.write_ca(generate.build_ca(), out, force=True)
    return out


@pytest.fixture(scope="module")
def policy_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("policy") / "policy.yaml"
    path.write_text(
        "# egress for the data-science sandboxes\n"
        "version: v1\n"
        "allowed_domains:\n"
        "  - pypi.org\n"
        '  - "*.pythonhosted.org"\n'
        "allowed_ports: [443]\n"
    )
    return path


# --- pod ---------------------------------------------------------------------------------------


def test_pod_renders_only_the_pod_without_allow() -> None:
    [pod] = render("pod", "--name", "demo")
    assert (pod["kind"], pod["metadata"]["name"]) == ("Pod", "demo")
    assert [x["name"] for x in pod["spec"]["initContainers"]] == [
        "egress-lock",
        "ca-trust",
        "auth-proxy",
    ]
    assert pod["metadata"]["labels"]["sandbox.dev/pool-status"] == "manual"
    assert pod["metadata"]["labels"]["sandbox.dev/egress"] == "enforced"


@pytest.mark.parametrize(
    ("args", "init", "main"),
    [
        pytest.param(
            ["pod", "--name", "d"], ["ca-trust", "auth-proxy"], ["workload"], id="pod"
        ),
        pytest.param(
            ["warm-pod", "--pool", "py"], ["ca-trust", "auth-proxy"], ["workload"], id="warm-pod"
        ),
        pytest.param(
            ["pod", "--name", "d", "--sidecar-mode", "container"], ["ca-trust"],
            ["auth-proxy", "workload"], id="pod-container-mode",
        ),
        pytest.param(
            ["warm-pod", "--pool", "py", "--sidecar-mode", "container"], ["ca-trust"],
            ["auth-proxy", "workload"], id="warm-pod-container-mode",
        ),
    ],
)  # fmt: skip
def test_no_egress_enforcement(args: list[str], init: list[str], main: list[str]) -> None:
    [enforced] = render(*args)
    [pod] = render(*args, "--no-egress-enforcement")
    assert [x["name"] for x in enforced["spec"]["initContainers"]] == ["egress-lock", *init]
    assert [x["name"] for x in pod["spec"].get("initContainers", [])] == init
    assert [x["name"] for x in pod["spec"]["containers"]] == main
    assert pod["metadata"]["labels"]["sandbox.dev/egress"] == "unenforced"
    assert pod["metadata"]["labels"]["sandbox.dev/auth-proxy"] == "enabled"
    sidecar = next(
        x for x in pod["spec"].get("initContainers", []) + pod["spec"]["containers"]
        if x["name"] == "auth-proxy"
    )  # fmt: skip
    assert [p["name"] for p in sidecar["ports"]] == ["proxy", "health"]
    assert "AUTH_PROXY_TRANSPARENT_PORT" not in {e["name"] for e in sidecar["env"]}


def test_no_egress_enforcement_with_no_auth_proxy() -> None:
    # Redundant but harmless: without the proxy there is nothing to enforce, and the label says so.
    [pod] = render("pod", "--name", "d", "--no-auth-proxy", "--no-egress-enforcement")
    assert "initContainers" not in pod["spec"]
    assert pod["metadata"]["labels"]["sandbox.dev/egress"] == "unenforced"


@pytest.mark.parametrize("command", [["pod"], ["warm-pod"]])
def test_help_explains_no_egress_enforcement(command: list[str]) -> None:
    text = " ".join(k8s(*command, "--help").stdout.split())
    assert "--no-egress-enforcement" in text
    for fragment in (
        "'egress-lock' init container",
        "HTTPS_PROXY",
        "sandbox.dev/egress=unenforced",
    ):
        assert fragment in text, text


def test_pod_with_allow_renders_the_policy_first() -> None:
    configmap, pod = render("pod", "--name", "demo", "--allow", "httpbin.org", "--allow", "*.x.io")
    assert configmap["kind"] == "ConfigMap"
    assert configmap["metadata"]["name"] == "sandbox-proxy-policy"
    policy = parse_policy(configmap["data"]["policy.yaml"], "rendered")
    assert (policy.exact, policy.wildcard_suffixes) == ({"httpbin.org"}, {"x.io"})
    assert pod["kind"] == "Pod"


def test_pod_env_and_image() -> None:
    [pod] = render(
        "pod", "--name", "demo", "--image", "python:3.12", "--env", "A=1", "--env", "B=x=y",
        "--env", "EMPTY=",
    )  # fmt: skip
    [workload] = pod["spec"]["containers"]
    assert workload["image"] == "python:3.12"
    env = {e["name"]: e["value"] for e in workload["env"]}
    assert (env["A"], env["B"], env["EMPTY"]) == ("1", "x=y", "")
    assert [e["name"] for e in workload["env"]][:3] == ["A", "B", "EMPTY"]
    assert env["HTTPS_PROXY"] == "http://127.0.0.1:8080"


def test_pod_container_mode_and_overrides() -> None:
    [pod] = render(
        "pod", "--name", "demo", "--sidecar-mode", "container",
        "--sidecar-image", "reg.example/auth-proxy:1", "--runtime-class", "",
    )  # fmt: skip
    lock, trust = pod["spec"]["initContainers"]
    assert [x["name"] for x in pod["spec"]["containers"]] == ["auth-proxy", "workload"]
    assert pod["spec"]["containers"][0]["image"] == "reg.example/auth-proxy:1"
    # The lock and the trust writer run from the sidecar's image, whichever that is.
    assert (lock["name"], lock["image"]) == ("egress-lock", "reg.example/auth-proxy:1")
    assert (trust["name"], trust["image"]) == ("ca-trust", "reg.example/auth-proxy:1")
    assert "runtimeClassName" not in pod["spec"]


def test_pod_without_auth_proxy() -> None:
    [pod] = render(
        "pod", "--name", "demo", "--no-auth-proxy", "--env", "HTTPS_PROXY=http://corp:3128"
    )
    [workload] = pod["spec"]["containers"]
    assert "initContainers" not in pod["spec"] and "volumes" not in pod["spec"]
    assert workload["env"] == [{"name": "HTTPS_PROXY", "value": "http://corp:3128"}]
    assert pod["metadata"]["labels"]["sandbox.dev/auth-proxy"] == "disabled"


# --- warm-pod ----------------------------------------------------------------------------------


def test_warm_pod_generates_its_name() -> None:
    [pod] = render("warm-pod", "--pool", "python")
    assert pod["metadata"]["generateName"] == "python-"
    assert "name" not in pod["metadata"]
    labels = pod["metadata"]["labels"]
    assert (labels["sandbox.dev/pool-status"], labels["sandbox.dev/pool"]) == ("warm", "python")


def test_warm_pod_named() -> None:
    [pod] = render("warm-pod", "--pool", "python", "--name", "python-1", "--image", "img:1")
    assert pod["metadata"]["name"] == "python-1"
    assert pod["spec"]["containers"][0]["image"] == "img:1"


# --- ca-secret ---------------------------------------------------------------------------------


def test_ca_secret_carries_the_ca(ca_dir: Path) -> None:
    [secret] = render("ca-secret", "--ca-dir", str(ca_dir))
    assert (secret["kind"], secret["type"]) == ("Secret", "kubernetes.io/tls")
    assert secret["metadata"]["name"] == "sandbox-proxy-ca"
    assert base64.b64decode(secret["data"]["tls.crt"]) == (ca_dir / "ca.crt").read_bytes()
    assert base64.b64decode(secret["data"]["tls.key"]) == (ca_dir / "ca.key").read_bytes()


def test_ca_secret_name(ca_dir: Path) -> None:
    [secret] = render("ca-secret", "--ca-dir", str(ca_dir), "--name", "my-ca")
    assert secret["metadata"]["name"] == "my-ca"


# --- policy ------------------------------------------------------------------------------------


def test_policy_from_allow() -> None:
    [configmap] = render("policy", "--allow", "httpbin.org")
    assert configmap["data"] == {"policy.yaml": "version: v1\nallowed_domains:\n- httpbin.org\n"}


def test_policy_from_file_is_verbatim(policy_file: Path) -> None:
    [configmap] = render("policy", "--from-file", str(policy_file), "--name", "ds-policy")
    assert configmap["metadata"]["name"] == "ds-policy"
    assert configmap["data"]["policy.yaml"] == policy_file.read_text()


def test_policy_from_file_plus_allow(policy_file: Path) -> None:
    [configmap] = render("policy", "--from-file", str(policy_file), "--allow", "httpbin.org")
    policy = parse_policy(configmap["data"]["policy.yaml"], "rendered")
    assert policy.exact == {"pypi.org", "httpbin.org"}
    assert policy.ports == {443}


def test_policy_renders_as_a_readable_block() -> None:
    result = k8s("policy", "--allow", "httpbin.org")
    assert "policy.yaml: |\n    version: v1\n" in result.stdout


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        pytest.param(["pod", "--name", "d", "--allow", "*"], ["--allow", "'*'"], id="pod-star"),
        pytest.param(
            ["pod", "--name", "d", "--allow", "ok.org", "--allow", "foo.*.com"],
            ["allowed_domains[1] 'foo.*.com'", "Fix:"],
            id="pod-inner-wildcard",
        ),
        pytest.param(["policy", "--allow", "bad host"], ["'bad host'"], id="policy-space"),
        pytest.param(["policy", "--allow", "*.com"], ["'*.com'", "too much"], id="wildcard-tld"),
        pytest.param(
            ["pod", "--name", "d", "--env", "HTTPS_PROXY=http://evil:1"],
            ["HTTPS_PROXY", "reserved"],
            id="reserved-env",
        ),
        pytest.param(
            ["pod", "--name", "d", "--env", "no_PROXY=*"], ["no_PROXY", "reserved"], id="any-case"
        ),
        pytest.param(
            ["pod", "--name", "d", "--env", "SSL_CERT_FILE=/x"], ["SSL_CERT_FILE"], id="ca-env"
        ),
        pytest.param(
            ["pod", "--name", "d", "--env", "A=1", "--env", "A=2"], ["--env A"], id="dup-env"
        ),
        pytest.param(["pod", "--name", "Bad_Name"], ["'Bad_Name'"], id="pod-name"),
        pytest.param(["warm-pod", "--pool", "Py"], ["pool name 'Py'"], id="pool-name"),
        pytest.param(
            ["pod", "--name", "d", "--no-auth-proxy", "--allow", "a.org"],
            ["--allow", "--no-auth-proxy"],
            id="allow-without-proxy",
        ),
        pytest.param(["policy"], ["--allow", "--from-file"], id="policy-nothing"),
        pytest.param(
            ["policy", "--from-file", "/nonexistent/policy.yaml"],
            ["/nonexistent/policy.yaml"],
            id="policy-file-missing",
        ),
        pytest.param(
            ["ca-secret", "--ca-dir", "/nonexistent/ca"],
            ["/nonexistent/ca/ca.crt", "ca/generate.py"],
            id="ca-missing",
        ),
    ],
)
def test_bad_input_exits_1_naming_it(args: list[str], fragments: list[str]) -> None:
    stderr = fails(*args)
    assert stderr.startswith("error: ")
    for fragment in fragments:
        assert fragment in stderr


def test_bad_policy_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("version: v1\nallowed_domains: [good.org, 'x.*.org']\n")
    stderr = fails("policy", "--from-file", str(path))
    assert f"{path}: allowed_domains[1] 'x.*.org'" in stderr


def test_ca_secret_missing_key_is_named(tmp_path: Path, ca_dir: Path) -> None:
    (tmp_path / "ca.crt").write_bytes((ca_dir / "ca.crt").read_bytes())
    assert str(tmp_path / "ca.key") in fails("ca-secret", "--ca-dir", str(tmp_path))


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        pytest.param(["pod", "--name", "d", "--env", "NOEQUALS"], "'NOEQUALS'", id="env-no-eq"),
        pytest.param(["pod", "--name", "d", "--env", "=v"], "'=v'", id="env-no-key"),
        pytest.param(["pod"], "--name", id="pod-no-name"),
        pytest.param(["warm-pod"], "--pool", id="warm-no-pool"),
        pytest.param(["ca-secret"], "--ca-dir", id="ca-no-dir"),
        pytest.param(["pod", "--name", "d", "--sidecar-mode", "x"], "--sidecar-mode", id="mode"),
        pytest.param([], "COMMAND", id="no-command"),
        pytest.param(["deploy"], "deploy", id="unknown-command"),
    ],
)
def test_malformed_command_line_exits_2_naming_it(args: list[str], fragment: str) -> None:
    assert fragment in fails(*args, code=2)


@pytest.mark.parametrize("command", [[], ["pod"], ["warm-pod"], ["ca-secret"], ["policy"]])
def test_help(command: list[str]) -> None:
    result = k8s(*command, "--help")
    assert result.returncode == 0
    assert "usage: python -m k8s" in result.stdout


def test_pod_help_explains_allow() -> None:
    assert "ConfigMap" in " ".join(k8s("pod", "--help").stdout.split())


# --- every rendered manifest is one a cluster accepts ------------------------------------------


# name -> (CLI arguments, needs a native sidecar). ca-secret's DIR is filled in by the fixture.
RENDERS: dict[str, tuple[list[str], bool]] = {
    "pod-native-allow": (["pod", "--name", "demo", "--allow", "httpbin.org", "--env", "A=1"], True),
    "pod-container": (["pod", "--name", "demo", "--sidecar-mode", "container"], False),
    "pod-unenforced": (["pod", "--name", "demo", "--no-egress-enforcement"], True),
    "pod-container-unenforced": (
        ["pod", "--name", "demo", "--sidecar-mode", "container", "--no-egress-enforcement"],
        False,
    ),
    "pod-no-proxy": (["pod", "--name", "demo", "--no-auth-proxy", "--env", "A=1"], False),
    "warm-native": (["warm-pod", "--pool", "python"], True),
    "warm-native-named": (["warm-pod", "--pool", "python", "--name", "python-1"], True),
    "warm-container": (["warm-pod", "--pool", "python", "--sidecar-mode", "container"], False),
    "warm-no-proxy": (["warm-pod", "--pool", "python", "--no-auth-proxy"], False),
    "warm-unenforced": (["warm-pod", "--pool", "python", "--no-egress-enforcement"], True),
    "ca-secret": (["ca-secret", "--ca-dir", "{ca_dir}"], False),
    "policy-allow": (["policy", "--allow", "httpbin.org", "--allow", "*.example.com"], False),
    "policy-file": (["policy", "--from-file", "{policy_file}", "--allow", "a.org"], False),
}
VALIDATIONS = [
    pytest.param(name, version, id=f"{name}-{version}")
    for name, (_, native) in RENDERS.items()
    for version in (NATIVE_VERSIONS if native else OLD_VERSIONS + NATIVE_VERSIONS)
]


@pytest.fixture(scope="module")
def rendered(ca_dir: Path, policy_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Render name -> (YAML file, its documents), once per module and lazily."""
    out = tmp_path_factory.mktemp("rendered")

    @functools.cache
    def get(name: str) -> tuple[Path, list[dict[str, Any]]]:
        args = [a.format(ca_dir=ca_dir, policy_file=policy_file) for a in RENDERS[name][0]]
        result = k8s(*args)
        assert result.returncode == 0, result.stderr
        path = out / f"{name}.yaml"
        path.write_text(result.stdout)
        return path, list(yaml.safe_load_all(result.stdout))

    return get


@pytest.mark.parametrize(("name", "version"), VALIDATIONS)
def test_rendered_manifest_passes_strict_validation(rendered: Any, name: str, version: str) -> None:
    _, docs = rendered(name)
    assert docs
    for doc in docs:
        # validate() returns the schema version it used: it must be the one asked for, not an
        # older fallback. It raises for a missing schema, unlike the CLI, which only warns.
        assert kubernetes_validate.validate(doc, f"{version}.0", strict=True) == version


@pytest.mark.parametrize("version", NATIVE_VERSIONS)
def test_kubernetes_validate_cli_accepts_everything(rendered: Any, version: str) -> None:
    files = [str(rendered(name)[0]) for name in RENDERS]
    result = subprocess.run(
        [str(KUBERNETES_VALIDATE), "--strict", "--quiet", "-k", f"{version}.0", *files],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    # --quiet leaves only warnings and failures; a WARN means a schema was not found.
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == "", result.stdout


@pytest.mark.parametrize("version", OLD_VERSIONS)
def test_kubernetes_validate_cli_accepts_container_mode_on_old_clusters(
    rendered: Any, version: str
) -> None:
    files = [str(rendered(name)[0]) for name, (_, native) in RENDERS.items() if not native]
    result = subprocess.run(
        [str(KUBERNETES_VALIDATE), "--strict", "--quiet", "-k", f"{version}.0", *files],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == "", result.stdout


def test_strict_validation_has_teeth(rendered: Any) -> None:
    """The native sidecar's restartPolicy is unknown to 1.27, and strict mode says so."""
    [pod] = rendered("warm-native")[1]
    with pytest.raises(kubernetes_validate.ValidationError, match="restartPolicy"):
        kubernetes_validate.validate(pod, "1.27.0", strict=True)
    pod["spec"]["containers"][0]["imagePullPolicy_typo"] = "x"
    with pytest.raises(kubernetes_validate.ValidationError, match="imagePullPolicy_typo"):
        kubernetes_validate.validate(pod, "1.33.0", strict=True)


def test_every_rendered_pod_keeps_the_key_from_the_workload(rendered: Any) -> None:
    from k8s.audit import key_exposures

    pods = [doc for name in RENDERS for doc in rendered(name)[1] if doc["kind"] == "Pod"]
    assert len(pods) == 10
    for pod in pods:
        assert key_exposures(pod) == [], pod["metadata"]


def test_the_rendered_pods_cover_every_egress_layout(rendered: Any) -> None:
    """Strict validation above sees the lock and ca-trust in both sidecar modes, and pods
    without the lock."""
    layouts = set()
    for name in RENDERS:
        for doc in rendered(name)[1]:
            if doc["kind"] != "Pod":
                continue
            spec = doc["spec"]
            init = tuple(x["name"] for x in spec.get("initContainers", []))
            main = tuple(x["name"] for x in spec["containers"])
            layouts.add((doc["metadata"]["labels"]["sandbox.dev/egress"], init, main))
    assert layouts == {
        ("enforced", ("egress-lock", "ca-trust", "auth-proxy"), ("workload",)),
        ("enforced", ("egress-lock", "ca-trust"), ("auth-proxy", "workload")),
        ("unenforced", ("ca-trust", "auth-proxy"), ("workload",)),
        ("unenforced", ("ca-trust",), ("auth-proxy", "workload")),
        ("unenforced", (), ("workload",)),
    }


def test_strict_validation_checks_the_lock(rendered: Any) -> None:
    """The lock's fields are in the schema: a typo in them is refused, on every version."""
    pod = copy.deepcopy(rendered("pod-container")[1][0])  # the cached one stays intact
    lock = pod["spec"]["initContainers"][0]
    assert lock["securityContext"]["capabilities"]["add"] == ["NET_ADMIN"]
    lock["securityContext"]["capabilities"]["addd"] = ["SYS_ADMIN"]
    for version in OLD_VERSIONS + NATIVE_VERSIONS:
        with pytest.raises(kubernetes_validate.ValidationError, match="addd"):
            kubernetes_validate.validate(pod, f"{version}.0", strict=True)


def test_one_document_per_object(rendered: Any) -> None:
    path, docs = rendered("pod-native-allow")
    text = path.read_text()
    assert text.count("---\n") == len(docs) == 2
    assert [d["kind"] for d in docs] == ["ConfigMap", "Pod"]
    assert c.POLICY_CONFIGMAP_NAME in text
