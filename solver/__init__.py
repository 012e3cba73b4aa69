"""topo-solve: plan the PCI topology of libvirt guests.

The public surface is small: load a spec, solve it, render the plan; plan many
specs at once (``plan_many``); plan a domain XML, defined or not (``plan_document``); predict
what ``virsh define`` stores for one (``predict``).  Names are
imported lazily so that ``topo-solve --help`` does not pay for pydantic, lxml
or the solver.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = [
    "load_spec",
    "solve",
    "verify",
    "render_domain",
    "read_domain",
    "plan_many",
    "plan_document",
    "predict",
    "TopoSolveError",
    "SpecError",
    "InfeasibleError",
    "ProgrammingError",
    "__version__",
]

_LAZY = {
    "load_spec": "spec",
    "solve": "solve",
    "verify": "verify",
    "render_domain": "domain.write",
    "read_domain": "domain.read",
    "plan_many": "batch",
    "plan_document": "domain.plan",
    "predict": "domain.predict",
    "TopoSolveError": "errors",
    "SpecError": "errors",
    "InfeasibleError": "errors",
    "ProgrammingError": "errors",
}


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'topo_solve' has no attribute {name!r}")


def __dir__() -> list[str]:
    return list(__all__)
