"""classify_events against a per-row reference: the documented row rules applied one row at
a time with the rule engine's own per-name answer (the vectorised path must agree)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analyzer.classify import classify_events, load_rules
from analyzer.model import KINDS

NAMES = ["ncclDevKernel_Generic_1(ncclDevKernelArgsStorage<4096ul>)", "fused_moe_kernel",
         "ncclKernel_AllReduce_RING_LL_Sum_float", "_fwd_kernel", "unknown_kernel_abc",
         "Memcpy DtoD (Device -> Device)", "aten::mm", "record_param_comms", "cudaLaunchKernel"]
ARGS = ["", "allreduce", "_allgather_base", "all_to_allv", "reduce_scatter_tensor_coalesced",
        "send", "something_else"]


def reference(rules, kind: str | None, name: str | None, arg: str | None, rated: str) -> tuple[str, str]:
    """One row, by the rules in classify_events' docstring."""
    arg = rules.normalize_collective(arg) if arg else ""
    if kind == rated:  # kernel rows (cpu_op rows in a trace without GPU activity)
        cat, rule_coll = rules.classify(name) if name is not None else ("other", "")
        if cat == "other" and arg:
            cat = "communication"
        if cat == "communication":
            return cat, arg if arg and arg != "other" else (rule_coll or arg or "other")
        return cat, ""
    cat = kind if kind in ("memcpy", "memset") else "other"
    return cat, arg


def test_vectorised_rows_match_the_per_row_reference() -> None:
    rng = np.random.default_rng(7)
    rules = load_rules()
    for trial, kinds in enumerate([list(KINDS), ["cpu_op", "cuda_runtime", "python_function"]]):
        n = 3000
        kind = [kinds[i] if i >= 0 else None for i in rng.integers(-1, len(kinds), n)]
        name = [NAMES[i] if i >= 0 else None for i in rng.integers(-1, len(NAMES), n)]
        arg = [ARGS[i] if i >= 0 else None for i in rng.integers(-1, len(ARGS), n)]
        df = pd.DataFrame({"kind": pd.Categorical(kind, categories=KINDS),
                           "name": pd.Categorical(name), "collective": pd.Categorical(arg)})
        out = classify_events(df, rules)
        present = {k for k in kind if k is not None}
        rated = "kernel" if present & {"kernel", "memcpy", "memset"} or "cpu_op" not in present else "cpu_op"
        want = [reference(rules, k, nm, a, rated) for k, nm, a in zip(kind, name, arg)]
        got = list(zip(out["category"].astype(str), out["collective"].astype(str)))
        assert got == want, trial
