"""Loaded into a real proxy process to make decision code raise, to prove that it fails closed.

Hosts containing "boom" make the policy decision raise; requests carrying an "X-Boom" header make
the in-tunnel Host check raise.
"""

from addons import flows, policy

_decide = policy.decide
_host_binding_holds = flows.host_binding_holds


def decide(current, host, port):
    if "boom" in host:
        raise RuntimeError("injected fault in decide")
    return _decide(current, host, port)


def host_binding_holds(request, host, port):
    if "x-boom" in request.headers:
        raise RuntimeError("injected fault in host binding")
    return _host_binding_holds(request, host, port)


policy.decide = decide
flows.host_binding_holds = host_binding_holds

addons: list = []
