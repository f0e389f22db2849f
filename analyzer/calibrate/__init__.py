"""Calibrate the capacity planner on the user's own hardware (``trace-analyzer calibrate``).

The profile format and its validation (``profile.py``) need no torch; the benchmarks
(``bench.py``, ``distributed.py``, ``run.py``) import torch and are loaded only when run.
"""

from .profile import (
    SCHEMA,
    AttentionFit,
    fit_attention,
    load_hardware_profile,
    validate_hardware_profile,
)

__all__ = [
    "SCHEMA",
    "AttentionFit",
    "fit_attention",
    "load_hardware_profile",
    "validate_hardware_profile",
]
