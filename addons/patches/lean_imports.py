"""Import mitmproxy without its default addon set, for the `auth-proxy` runtime.

`mitmproxy.master` imports `mitmproxy.addons.termlog`, and so the package `mitmproxy.addons`,
whose `__init__` imports all ~40 default addons and what they need (Flask, Jinja2, ldap3, ...):
about 0.6 s of start-up and a large share of the idle memory, for addons the sidecar never loads.

`install()` registers the package without running that `__init__`, so importing a submodule such
as `mitmproxy.addons.core` loads only that submodule. Anything that later asks the package for a
name of its own (`default_addons`) gets the real package, loaded on first use. Importing this
module after `mitmproxy.addons` is loaded does nothing.
"""

from __future__ import annotations

import gc
import importlib.util
import sys
from pathlib import Path

PACKAGE = "mitmproxy.addons"

# Start-up imports allocate hundreds of thousands of objects that live as long as the process;
# collecting while they are created is wasted work (about 5% of the import time). `start` turns
# collection off, `imports_done` turns it back on and moves them out of its way (gc.freeze).
_gc_was_enabled = True


def start() -> None:
    """Before the first mitmproxy import: no collection during imports, no default addons."""
    global _gc_was_enabled
    _gc_was_enabled = gc.isenabled()
    gc.disable()
    install()


def imports_done() -> None:
    gc.freeze()
    if _gc_was_enabled:
        gc.enable()


def install() -> None:
    if PACKAGE in sys.modules:
        return
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.loader is None or not spec.submodule_search_locations:
        return
    loader = spec.loader
    package = importlib.util.module_from_spec(spec)
    folders = [Path(p) for p in spec.submodule_search_locations]

    def is_submodule(name: str) -> bool:
        return any(
            (f / f"{name}.py").exists() or (f / name / "__init__.py").exists() for f in folders
        )

    def __getattr__(name: str):
        if name.startswith("__") or is_submodule(name):
            # Let the import system load the submodule (from-imports probe with hasattr first).
            raise AttributeError(name)
        del vars(package)["__getattr__"]
        loader.exec_module(package)  # the real __init__, once
        return getattr(package, name)

    vars(package)["__getattr__"] = __getattr__
    sys.modules[PACKAGE] = package
