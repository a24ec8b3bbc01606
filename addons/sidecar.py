"""The `auth-proxy` Master: mitmproxy with only the addons a sidecar needs.

Imported by `addons.runtime.main` after the lean imports have started; importing it loads
mitmproxy, and changes nothing.
"""

from __future__ import annotations

import argparse
import sys

from mitmproxy import master, options
from mitmproxy.addons import core, disable_h2c, errorcheck, next_layer, proxyserver, tlsconfig
from mitmproxy.addons.termlog import TermLog

from addons import allowlist
from addons.dispatch import CachedAddonManager
from addons.patches import inline_hooks


class SidecarMaster(master.Master):
    def __init__(self, opts: options.Options, event_loop=None) -> None:
        super().__init__(opts, event_loop=event_loop, with_termlog=False)
        self.addons = CachedAddonManager(self)
        inline_hooks.install(self.addons)
        # mitmproxy re-sends every log record, per-request ones included, as a deprecated
        # `add_log` event (format, a thread-safe loop wakeup, a hook dispatch); no addon loaded
        # here reads it. TermLog still prints the same lines.
        self._legacy_log_events.uninstall()
        # mitmproxy listens on every interface by default; a sidecar must not be an open proxy.
        # Set before the command line is read, so --listen-host still overrides it.
        opts.update(listen_host="127.0.0.1")
        # Errors and warnings go to stderr, so stdout carries only the JSON event lines.
        self.addons.add(TermLog(out=sys.stderr))
        # The order of mitmdump's defaults, where `-s` scripts run after Proxyserver and before
        # NextLayer and TlsConfig, so the addon sees every hook at the same point in both.
        self.addons.add(
            core.Core(),
            disable_h2c.DisableH2C(),
            proxyserver.Proxyserver(),
            *allowlist.make_addons(),
            next_layer.NextLayer(),
            tlsconfig.TlsConfig(),
            errorcheck.ErrorCheck(),
        )


def make_parser(opts: options.Options) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="auth-proxy",
        description="Fail-closed egress allowlist proxy (mitmproxy with the allowlist addon).",
        epilog="Example: auth-proxy --listen-host 127.0.0.1 --listen-port 8080 "
        "--set confdir=/tmp/auth-proxy --set allowlist=/etc/auth-proxy/policy.yaml",
    )
    parser.add_argument("--version", action="store_true", help="show versions and exit")
    parser.add_argument("--options", action="store_true", help="show all options and exit")
    parser.add_argument("--commands", action="store_true", help="show all commands and exit")
    parser.add_argument("-q", "--quiet", action="store_true", help="quiet")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    opts.make_parser(parser, "listen_host", metavar="HOST")
    opts.make_parser(parser, "listen_port", metavar="PORT", short="p")
    # Repeatable: `--mode regular --mode transparent@127.0.0.1:8082 --set dns_listen=127.0.0.1:8053`.
    opts.make_parser(parser, "mode", short="m")
    parser.add_argument(
        "--set",
        action="append",
        type=str,
        dest="setoptions",
        default=[],
        metavar="option[=value]",
        help="Set an option, as in mitmdump: --set allowlist=policy.yaml",
    )
    return parser
