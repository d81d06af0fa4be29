"""ar2diff: autoregressive and SUNDAE-style text diffusion models, and AR2Diff between them.

The Python API (:mod:`ar2diff.api`) is reached from here: ``ar2diff.load``, ``ar2diff.adapt``,
``ar2diff.finetune`` and ``ar2diff.evaluate``. It is imported on first use, so that
``import ar2diff`` stays light and the package's low layers never import its high ones.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"
__all__ = ["Model", "adapt", "evaluate", "finetune", "load", "__version__"]
_API = {"Model", "adapt", "evaluate", "finetune", "load"}


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module("ar2diff.api"), name)
    raise AttributeError(f"module 'ar2diff' has no attribute {name!r}")
