"""Render sandbox manifests as YAML for `kubectl apply -f -`, one document per object.

    python -m k8s pod --name NAME [--image IMAGE] [--allow DOMAIN]... [--env KEY=VALUE]...
                      [--no-auth-proxy] [--no-egress-enforcement]
    python -m k8s warm-pod --pool POOL [--name NAME] [--image IMAGE] [--no-egress-enforcement]
    python -m k8s ca-secret --ca-dir DIR [--name sandbox-proxy-ca]
    python -m k8s policy [--allow DOMAIN]... [--from-file policy.yaml] [--name sandbox-proxy-policy]

Exit status: 0 on success, 2 for a malformed command line, 1 for input that cannot become a
manifest (an invalid domain, a missing CA file, a reserved env var); the message names it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from kubernetes.client import ApiClient

from addons.policy import PolicyError
from addons.policy_file import read_policy_text
from addons.policy_tool import check_text
from k8s import constants as c
from k8s.manifests import (
    ManifestError,
    build_policy_configmap,
    load_ca_secret,
    merge_policy_text,
    policy_text_from_domains,
)
from k8s.pods import build_pod_spec, build_warm_pod_spec
from k8s.settings import DEFAULT_SETTINGS, ProxySettings


class _BlockStyleDumper(yaml.SafeDumper):
    """Multi-line strings (the policy file) as readable `|` blocks instead of quoted escapes."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockStyleDumper.add_representer(str, _represent_str)


def to_yaml(objects: Sequence[Any]) -> str:
    """YAML documents for V1 objects, as `kubectl apply -f -` reads them."""
    api = ApiClient()
    docs = [api.sanitize_for_serialization(obj) for obj in objects]
    return yaml.dump_all(docs, Dumper=_BlockStyleDumper, sort_keys=False, explicit_start=True)


# --- argument types ----------------------------------------------------------------------------


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"malformed {text!r}: expected KEY=VALUE")
    return key, value


def _env_mapping(pairs: Sequence[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for key, value in pairs:
        if key in env:
            raise ManifestError(f"--env {key} is given more than once")
        env[key] = value
    return env


# --- subcommands -------------------------------------------------------------------------------


def _settings(args: argparse.Namespace) -> ProxySettings:
    changes: dict[str, object] = {}
    if getattr(args, "no_auth_proxy", False):
        changes["enable_auth_proxy"] = False
    if getattr(args, "no_egress_enforcement", False):
        changes["egress_enforcement"] = False
    if getattr(args, "sidecar_mode", None):
        changes["sidecar_mode"] = args.sidecar_mode
    if getattr(args, "sidecar_image", None):
        changes["sidecar_image"] = args.sidecar_image
    if getattr(args, "runtime_class", None) is not None:
        changes["runtime_class_name"] = args.runtime_class or None
    return DEFAULT_SETTINGS.replace(**changes)


def _policy_from_allow(domains: Sequence[str], settings: ProxySettings) -> Any:
    return build_policy_configmap(
        policy_text_from_domains(domains), settings.policy_configmap_name, source="--allow"
    )


def cmd_pod(args: argparse.Namespace) -> list[Any]:
    settings = _settings(args)
    objects: list[Any] = []
    if args.allow:
        if not settings.enable_auth_proxy:
            raise ManifestError("--allow needs the auth proxy: drop --no-auth-proxy or --allow")
        objects.append(_policy_from_allow(args.allow, settings))
    pod = build_pod_spec(args.name, image=args.image, env=_env_mapping(args.env), settings=settings)
    objects.append(pod)
    return objects


def cmd_warm_pod(args: argparse.Namespace) -> list[Any]:
    settings = _settings(args)
    return [build_warm_pod_spec(args.pool, name=args.name, image=args.image, settings=settings)]


def cmd_ca_secret(args: argparse.Namespace) -> list[Any]:
    return [load_ca_secret(args.ca_dir, args.name)]


def cmd_policy(args: argparse.Namespace) -> list[Any]:
    if args.from_file is None and not args.allow:
        raise ManifestError(
            "nothing to allow: give --allow DOMAIN or --from-file FILE "
            "(for a deny-all policy, write 'version: v1' with no entries into a file)"
        )
    if args.from_file is None:
        text, source = policy_text_from_domains(args.allow), "--allow"
    else:
        path = Path(args.from_file)
        # The proxy's own reader: a regular file within the size cap, never a FIFO or device.
        text = read_policy_text(path)
        source = str(path)
        if args.allow:
            text = merge_policy_text(text, args.allow, source)
            source = f"{path} with --allow"
    # `auth-proxy-policy check`: the proxy's loader; its warnings go to stderr, not the YAML.
    for warning in check_text(text, source).warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return [build_policy_configmap(text, args.name, source)]


# --- the parser --------------------------------------------------------------------------------


def _add_pod_options(parser: argparse.ArgumentParser, *, no_auth_proxy: bool = True) -> None:
    parser.add_argument(
        "--image",
        help=f"workload image (default: {DEFAULT_SETTINGS.executor_image}); "
        "its own entrypoint and command run",
    )
    parser.add_argument(
        "--sidecar-mode",
        choices=c.SIDECAR_MODES,
        help="native: an init container with restartPolicy Always, Kubernetes 1.29+ (default); "
        "container: a regular container, for older clusters",
    )
    parser.add_argument(
        "--sidecar-image", help=f"auth-proxy image (default: {DEFAULT_SETTINGS.sidecar_image})"
    )
    parser.add_argument(
        "--runtime-class",
        metavar="NAME",
        help=f"runtimeClassName (default: {DEFAULT_SETTINGS.runtime_class_name}); "
        "'' for the cluster's default runtime",
    )
    parser.add_argument(
        "--no-egress-enforcement",
        action="store_true",
        help=f"skip the {c.EGRESS_INIT_CONTAINER!r} init container, the nftables lock that "
        "sends all of the workload's traffic through the sidecar (for a node kernel or Pod "
        "Security level that cannot run it). Then only clients that honour HTTPS_PROXY are held "
        "to the policy; anything else reaches the network directly. The pod is labelled "
        f"{c.LABEL_EGRESS}={c.EGRESS_UNENFORCED}",
    )
    if no_auth_proxy:
        parser.add_argument(
            "--no-auth-proxy",
            action="store_true",
            help="no sidecar, no CA, no proxy env: the workload reaches the network directly",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m k8s",
        description="Render sandbox manifests as YAML for `kubectl apply -f -`.",
        epilog="Exit status: 0 ok, 1 bad input (named in the message), 2 bad command line.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    pod = sub.add_parser(
        "pod",
        help="an on-demand sandbox pod",
        description="An on-demand sandbox pod (pool status 'manual'). With --allow, the policy "
        f"ConfigMap {c.POLICY_CONFIGMAP_NAME!r} allowing those domains is rendered too, before "
        "the pod; without it, only the pod (the ConfigMap must already exist).",
    )
    pod.add_argument("--name", required=True, help="pod name (a DNS-1123 subdomain)")
    pod.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="DOMAIN",
        help="also render the policy ConfigMap allowing DOMAIN (repeatable; '*.example.com' "
        "for any subdomain). It replaces the namespace's policy for every sandbox pod",
    )
    pod.add_argument(
        "--env",
        action="append",
        default=[],
        type=_key_value,
        metavar="KEY=VALUE",
        help="workload env var (repeatable). The proxy and CA variables are reserved",
    )
    _add_pod_options(pod)
    pod.set_defaults(func=cmd_pod)

    warm = sub.add_parser(
        "warm-pod",
        help="a warm pool pod",
        description="An idle pool pod (pool status 'warm', labelled with its pool). Without "
        "--name it gets generateName '<pool>-': create it with `kubectl create -f -`, as "
        "`kubectl apply` needs a name.",
    )
    warm.add_argument("--pool", required=True, help="pool name (a DNS-1123 label)")
    warm.add_argument("--name", help="pod name (default: generated from the pool name)")
    _add_pod_options(warm)
    warm.set_defaults(func=cmd_warm_pod)

    ca = sub.add_parser(
        "ca-secret",
        help="the CA Secret",
        description="The kubernetes.io/tls Secret (tls.crt, tls.key) from the ca.crt and ca.key "
        "that ca/generate.py wrote. It holds the private key: pipe it to kubectl, don't save it.",
    )
    ca.add_argument("--ca-dir", required=True, metavar="DIR", help="directory with ca.crt/ca.key")
    ca.add_argument(
        "--name", default=c.CA_SECRET_NAME, help=f"Secret name (default: {c.CA_SECRET_NAME})"
    )
    ca.set_defaults(func=cmd_ca_secret)

    policy = sub.add_parser(
        "policy",
        help="the policy ConfigMap",
        description=f"The policy ConfigMap (key {c.POLICY_KEY}), validated with the proxy's own "
        "policy loader. --allow entries are added to those of --from-file.",
    )
    policy.add_argument(
        "--allow", action="append", default=[], metavar="DOMAIN", help="allowed domain (repeatable)"
    )
    policy.add_argument("--from-file", metavar="FILE", help="a policy file (version: v1)")
    policy.add_argument(
        "--name",
        default=c.POLICY_CONFIGMAP_NAME,
        help=f"ConfigMap name (default: {c.POLICY_CONFIGMAP_NAME})",
    )
    policy.set_defaults(func=cmd_policy)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        objects = args.func(args)
    except (ManifestError, PolicyError, ValueError) as e:
        # PolicyError and ManifestError are ValueErrors too; all name the bad input.
        print(f"error: {e}", file=sys.stderr)
        return 1
    sys.stdout.write(to_yaml(objects))
    return 0


if __name__ == "__main__":
    sys.exit(main())
