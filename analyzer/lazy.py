"""Modules imported on first use, so the CLI starts without numpy (``--help`` in < 0.3 s).

    >>> from analyzer.lazy import numpy as np    # nothing imported yet
    >>> np.arange(3).sum()                       # numpy imported here
    np.int64(3)
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule:
    """Stands for a module until an attribute is read; then it is the module's attribute."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)


numpy: Any = LazyModule("numpy")

__all__ = ["LazyModule", "numpy"]
