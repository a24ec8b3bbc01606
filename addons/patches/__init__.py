"""Every change this project makes to a dependency's internals (mitmproxy, h2, pyOpenSSL), and
the registry that applies them. See `registry` for the rules, docs/internals.md for each one."""
