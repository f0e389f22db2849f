"""Clock alignment: planted per-rank offsets (0-5 ms) and drifts are recovered within 5 us.

Ground truth is planted here: every instance of a collective ends at one true instant; each
rank sees it on its own clock ``true + o_r + d_r (true - T0)`` plus end jitter (and a few
outliers). The test checks the fitted offsets against that clock model, independently of
how the analyzer fits them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analyzer.analyses.clock import fit_alignment

T0 = 1_700_000_000_000_000_000  # epoch ns


def _plant(rng: np.random.Generator, groups: list[list[int]], n_inst: int, span_ns: int,
           offsets: dict[int, int], drifts: dict[int, float], jitter_ns: int = 2_000,
           outliers: float = 0.0) -> pd.DataFrame:
    """Ends of ``n_inst`` instances per group on each member's clock."""
    rows = []
    code = 0
    for g in groups:
        true = T0 + np.sort(rng.integers(0, span_ns, n_inst))
        for r in g:
            j = rng.integers(-jitter_ns, jitter_ns + 1, n_inst)
            if outliers:
                j = j + np.where(rng.random(n_inst) < outliers, rng.integers(50_000, 500_000, n_inst), 0)
            local = true + offsets[r] + np.rint(drifts[r] * 1e-6 * (true - T0)).astype(np.int64) + j
            rows.append(pd.DataFrame({"rank": r, "instance": code + np.arange(n_inst), "end_ns": local}))
        code += n_inst
    return pd.concat(rows, ignore_index=True)


def _local(r: int, true: np.ndarray, offsets: dict[int, int], drifts: dict[int, float]) -> np.ndarray:
    return true + offsets[r] + np.rint(drifts[r] * 1e-6 * (true - T0)).astype(np.int64)


def _check(al, ranks, offsets, drifts, span_ns, tol_ns=5_000):
    # the reference (rank 0) clock at a few true instants, and each rank's correction of them
    true = T0 + np.linspace(0, span_ns, 9).astype(np.int64)
    ref = _local(0, true, offsets, drifts)
    errs = {}
    for r in ranks:
        got = al.correct(r, _local(r, true, offsets, drifts))
        errs[r] = int(np.abs(got - ref).max())
        # the offset at the anchor (the reference clock's time anchor_ns)
        t_a = T0 + (al.anchor_ns - T0 - offsets[0]) / (1 + drifts[0] * 1e-6)
        want = float(_local(r, np.array([int(t_a)]), offsets, drifts)[0]
                     - _local(0, np.array([int(t_a)]), offsets, drifts)[0])
        assert abs(al.ranks[r].offset_ns - want) <= tol_ns, (r, al.ranks[r], want)
    assert max(errs.values()) <= tol_ns, errs
    return errs


LAYOUTS = {
    "tp8": [list(range(8))],
    "tp2x4_linked_by_dp": [[0, 1], [2, 3], [4, 5], [6, 7], [0, 2, 4, 6]],
    "chain": [[0, 1], [1, 2], [2, 3], [3, 4]],
    "tp4x2_world": [[0, 1, 2, 3], [4, 5, 6, 7], list(range(8))],
}


@pytest.mark.parametrize("case", range(40))
def test_planted_offsets_recovered(case: int) -> None:
    rng = np.random.default_rng(1000 + case)
    name = list(LAYOUTS)[case % len(LAYOUTS)]
    groups = LAYOUTS[name]
    ranks = sorted({r for g in groups for r in g})
    offsets = {r: int(rng.integers(0, 5_000_000)) for r in ranks}
    drifts = {r: 0.0 for r in ranks}
    span = int(rng.integers(5_000_000, 40_000_000))  # short capture: no drift fitted
    ends = _plant(rng, groups, int(rng.integers(30, 300)), span, offsets, drifts,
                  outliers=0.05 if case % 3 == 0 else 0.0)
    al = fit_alignment(ends, ranks)
    assert al.enabled and al.reference_rank == 0
    assert all(al.ranks[r].source in ("reference", "collectives") for r in ranks)
    assert al.ranks[0].source == "reference"
    _check(al, ranks, offsets, drifts, span)
    assert all(al.ranks[r].residual_us is not None and al.ranks[r].residual_us < 5 for r in ranks)


@pytest.mark.parametrize("case", range(16))
def test_planted_drift_recovered(case: int) -> None:
    rng = np.random.default_rng(2000 + case)
    groups = LAYOUTS[list(LAYOUTS)[case % len(LAYOUTS)]]
    ranks = sorted({r for g in groups for r in g})
    offsets = {r: int(rng.integers(0, 5_000_000)) for r in ranks}
    drifts = {r: float(rng.uniform(-40, 40)) for r in ranks}  # ppm: up to 80 us per 2 s
    span = int(rng.integers(1_000_000_000, 5_000_000_000))
    ends = _plant(rng, groups, 400, span, offsets, drifts, outliers=0.03)
    al = fit_alignment(ends, ranks)
    _check(al, ranks, offsets, drifts, span)
    for r in ranks:  # relative drift against rank 0, to first order
        want = (1 + drifts[r] * 1e-6) / (1 + drifts[0] * 1e-6) - 1
        assert abs(al.ranks[r].drift_ppm - want * 1e6) < 1.0, (r, al.ranks[r].drift_ppm, want * 1e6)


def test_unlinked_and_lonely_ranks() -> None:
    rng = np.random.default_rng(7)
    offsets = {0: 0, 1: 1_000_000, 2: 2_000_000, 3: 3_500_000, 4: 9}
    drifts = {r: 0.0 for r in offsets}
    ends = _plant(rng, [[0, 1], [2, 3]], 50, 10_000_000, offsets, drifts)
    al = fit_alignment(ends, [0, 1, 2, 3, 4])
    assert abs(al.ranks[1].offset_ns - 1_000_000) <= 5_000
    # 2 and 3 share no collective with 0: aligned among themselves to rank 2
    assert al.ranks[2].source == "reference" and al.ranks[2].reference_rank == 2
    assert al.ranks[3].reference_rank == 2 and abs(al.ranks[3].offset_ns - 1_500_000) <= 5_000
    assert "rank 0" in (al.ranks[3].reason or "")
    assert al.ranks[4].source == "not aligned" and al.ranks[4].offset_ns == 0 and al.ranks[4].reason


def test_no_collective_turns_alignment_off() -> None:
    ends = pd.DataFrame({"rank": [0], "instance": [0], "end_ns": [5]})
    al = fit_alignment(ends, [0, 1])
    assert not al.enabled and al.reason
    assert all(r.source == "not aligned" and r.offset_ns == 0 for r in al.ranks.values())
    t = np.array([10, 20], np.int64)
    assert (al.correct(1, t) == t).all()


# ------------------------------------------------------------------ end to end


def _straggler_run(offsets: dict[int, int] | None):
    from test_diagnosis_common import SYNTHETIC, load_dir

    from analyzer.analyses.serving import analyze_serving

    d = SYNTHETIC / "tp8_straggler"
    if not d.is_dir():
        pytest.skip("sample_traces/synthetic absent")
    traces, sa = load_dir(d)
    for t in traces:  # every event of a rank on its own, shifted clock (host and GPU alike)
        if offsets:
            t.events["ts_ns"] = t.events["ts_ns"] + offsets[t.rank.rank]
    return analyze_serving(traces, {}, server_args=sa)


@pytest.mark.parametrize("seed", range(3))
def test_skew_and_straggler_survive_planted_clock_offsets(seed: int) -> None:
    """tp8_straggler with each rank's clock shifted by 0-5 ms: after alignment, skew, wait
    and the straggler are those of the unshifted capture (one clock)."""
    rng = np.random.default_rng(seed)
    offsets = {r: int(rng.integers(0, 5_000_000)) for r in range(8)}
    base = _straggler_run(None)
    got = _straggler_run(offsets)
    al = got.sections["skew"]["alignment"]
    for r in range(8):
        assert abs(al["ranks"][r]["offset_ns"] - (offsets[r] - offsets[0])) <= 5_000
    b, g = base.sections["skew"], got.sections["skew"]
    assert g["straggler_rank"] == b["straggler_rank"] is not None
    assert abs(g["skew_us"]["p50"] - b["skew_us"]["p50"]) <= 5
    for r in range(8):
        assert abs(g["ranks"][r]["wait_us"] - b["ranks"][r]["wait_us"]) <= 5 * g["ranks"][r]["collectives"] / 100 + 5
    assert got.findings[0].id == base.findings[0].id == "cross_rank_skew"


def test_text_report_shows_large_offsets(tmp_path) -> None:
    from pp_builder import Plan, build

    from analyzer import analyze
    from analyzer.render.text import render_text

    pl = Plan(pp=2, tp=2, m=1, rounds=4, compute_ns=[200_000] * 2, recv="host",
              offsets={0: 0, 1: 2_000_000, 2: 0, 3: 0})
    doc = analyze([str(build(pl, tmp_path))]).to_dict()
    al = doc["serving"]["skew"]["alignment"]
    assert al["notable"] and al["max_abs_offset_us"] == pytest.approx(2_000, abs=5)
    line = next(ln for ln in render_text(doc).splitlines() if ln.startswith("clocks:"))
    assert "4 of 4 ranks aligned to rank 0" in line and "2.0 ms" in line
    from analyzer.render.markdown import render_markdown

    assert "> **Clocks:** 4 of 4 ranks aligned to rank 0" in render_markdown(doc)
    from analyzer.render.html import render_html

    assert '<p class="clocks">clocks: 4 of 4 ranks aligned to rank 0' in render_html(doc)
    # offsets small: no line
    pl.offsets = {}
    doc = analyze([str(build(pl, tmp_path / "same"))]).to_dict()
    assert not doc["serving"]["skew"]["alignment"]["notable"]
    assert not any(ln.startswith("clocks:") for ln in render_text(doc).splitlines())


def test_collective_ends_keep_tp_groups_that_reuse_a_name_apart() -> None:
    """Two TP groups both call their group "2" (torch names are per-process counters in
    our synthetic writer); pg_config members keep them apart, a foreign distributedInfo
    (not listing the rank) falls back to the (PP, DP) indices."""
    from types import SimpleNamespace

    from analyzer.analyses.clock import collective_ends

    def act(n: int) -> pd.DataFrame:
        return pd.DataFrame({
            "category": pd.Categorical(["communication"] * n + ["gemm"]),
            "collective": pd.Categorical(["allreduce"] * n + [""]),
            "pg_name": pd.Categorical(["2"] * (n + 1)),
            "ts_ns": np.arange(n + 1, dtype=np.int64) * 100,
            "end_ns": np.arange(n + 1, dtype=np.int64) * 100 + 50,
            "seq": np.full(n + 1, -1, np.int64)})

    def trace(rank: int, pp: int, members: list[int]) -> SimpleNamespace:
        cfg = [{"pg_name": "2", "ranks": members}]
        return SimpleNamespace(rank=SimpleNamespace(rank=rank, pp_rank=pp, dp_rank=None),
                               distributed_info={"rank": 0, "pg_config": cfg})

    def groups(traces: list[SimpleNamespace]) -> pd.Series:
        ends = collective_ends(traces, [act(5)] * len(traces))
        assert len(ends) == 5 * len(traces)
        return ends.groupby("rank")["instance"].apply(frozenset)

    # members listed: {0, 1} and {2, 3} are two groups although both are named "2"
    inst = groups([trace(0, 0, [0, 1]), trace(1, 0, [0, 1]), trace(2, 1, [2, 3]), trace(3, 1, [2, 3])])
    assert inst[0] == inst[1] and inst[2] == inst[3] and not (inst[0] & inst[2])
    # stage 1 carries stage 0's pg_config (ranks 2, 3 not in it): keyed by (PP, DP) instead
    inst = groups([trace(0, 0, [0, 1]), trace(1, 0, [0, 1]), trace(2, 1, [0, 1]), trace(3, 1, [0, 1])])
    assert inst[0] == inst[1] and inst[2] == inst[3] and not (inst[0] & inst[2])
