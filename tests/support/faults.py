"""Loaded into a real proxy process to make decision code raise, to prove that it fails closed.

Hosts containing "boom" make the policy decision raise; requests carrying an "X-Boom" header make
the in-tunnel Host check raise.
"""

from addons import policy
from addons.core import decide as core_decide

_decide = policy.decide
_binding_holds = core_decide.binding_holds


def decide(current, host, port):
    if "boom" in host:
        raise RuntimeError("injected fault in decide")
    return _decide(current, host, port)


def binding_holds(fields, authority, host, port):
    if any(name.lower() == b"x-boom" for name, _ in fields):
        raise RuntimeError("injected fault in host binding")
    return _binding_holds(fields, authority, host, port)


policy.decide = decide
core_decide.binding_holds = binding_holds

addons: list = []
