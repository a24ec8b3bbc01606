"""Sandbox pods for Kubernetes: pure builders (`k8s.pods`), manifests (`k8s.manifests`) and the
`python -m k8s` command.

The two builders a caller needs are importable from here. Importing the package only defines
names: no API client, no kubeconfig, no logging set-up, no files.
"""

from k8s.pods import build_pod_spec, build_warm_pod_spec

__all__ = ["build_pod_spec", "build_warm_pod_spec"]
