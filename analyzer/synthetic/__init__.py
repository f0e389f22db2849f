"""Synthetic SGLang traces with exact ground truth (for tests, benchmarks and samples).

Usage::

    from analyzer.synthetic import SCENARIOS, write_scenario
    truth = write_scenario(SCENARIOS["tp8_straggler"](), "out/tp8_straggler")
    truth["straggler_rank"], truth["ranks"][0]["communication"]["wait_us"]

Every file written is labelled synthetic (top-level ``"synthetic": true`` and a
``"generator"`` note). ``ground_truth.json`` beside the traces holds the figures the
generator measured on exactly the intervals it placed (see ``analyzer.synthetic.truth``
for the accounting rules). Output is deterministic for a given seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .engine import simulate, step_span_name
from .scenarios import SCENARIOS, Plan, server_args
from .spec import H100, H200, CommSpec, GpuSpec, KernelSpec, ModelSpec, RankSpec, Scenario, StepSpec
from .writer import GENERATOR, trace_filename, write_scenario

__all__ = [
    "GENERATOR",
    "H100",
    "H200",
    "SCENARIOS",
    "CommSpec",
    "GpuSpec",
    "KernelSpec",
    "ModelSpec",
    "Plan",
    "RankSpec",
    "Scenario",
    "StepSpec",
    "generate_all",
    "server_args",
    "simulate",
    "step_span_name",
    "trace_filename",
    "write_scenario",
]


def generate_all(out_dir: Path | str, names: list[str] | None = None) -> dict[str, Any]:
    """Write every scenario (default seeds and sizes) into ``out_dir/<name>/``."""
    out = Path(out_dir)
    return {name: write_scenario(SCENARIOS[name](), out / name)
            for name in (names or list(SCENARIOS))}
