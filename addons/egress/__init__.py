"""Enforced egress: the nftables ruleset that sends a pod's traffic through the sidecar.

`ruleset` renders the ruleset and checks nft's readback of it (pure); `lock` is the
`auth-proxy-lock-egress` command that the pod's first init container runs to install it.
Neither imports mitmproxy: the init container starts, locks the network and exits.
"""
