"""Pruning python frames after reading, and the table helpers behind it.

The pruned table must give the same report as the full one (every figure), keep every
non-frame row as it was, and keep every frame a marker can read: checked here against
plain gzip + json and a test-local list of the frames the analyses use.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import analyzer
import analyzer.analyses.prune as prune_mod
from analyzer.analyses.prune import prune_python_frames
from analyzer.analyses.tables import kind_mask, strings_at, take_rows
from analyzer.classify import classify_trace
from analyzer.readers.kineto import read_kineto

SGLANG = "kineto/sglang_qwen3-8b_mi300x_prefill_decode.json.gz"
HF = "kineto/hf_qwen1.5-0.5b_h100_generate.json.gz"
VLLM = "kineto/vllm_gptoss_mi300_prefill_decode_piecewise.json.gz"
SYNTHETIC = Path(__file__).resolve().parent.parent / "sample_traces" / "synthetic"


def step_frame(name: str) -> bool:
    """Test-local: frames that mark steps (Hugging Face module forwards, SGLang model runner)."""
    return name.startswith("nn.Module: ") or (
        "model_runner.py(" in name and name.rsplit(": ", 1)[-1] in ("forward_extend", "forward_decode"))


def maybe_used(name: str) -> bool:
    """Test-local: every family of frames any analysis could read (a superset)."""
    return any(f in name for f in ("nn.Module: ", "model_runner.py(", "cuda_graph_runner.py(",
                                   "scheduler", "event_loop_"))


def raw_frames(path: Path) -> list[str]:
    with gzip.open(path, "rt") as fh:
        doc = json.load(fh)
    events = doc["traceEvents"] if isinstance(doc, dict) else doc
    return [e["name"] for e in events if e.get("ph") == "X" and e.get("cat") == "python_function"]


@pytest.mark.parametrize("rel", [SGLANG, HF])
def test_prune_keeps_other_rows_and_used_frames(shared_traces: Path, rel: str) -> None:
    path = shared_traces / rel
    tr = read_kineto(str(path))
    before = tr.events.copy()
    removed = prune_python_frames(tr)
    ev = tr.events
    frames = raw_frames(path)
    kept_names = ev.loc[ev["kind"] == "python_function", "name"].astype(str).tolist()
    assert removed == len(frames) - len(kept_names) > 0
    # every step frame is still there; nothing that no analysis could read
    kept = set(kept_names)
    assert all(n in kept for n in frames if step_frame(n))
    assert any(step_frame(n) for n in frames)
    assert all(maybe_used(n) for n in kept)
    # the other rows are untouched (same order, same values)
    other_before = before[before["kind"] != "python_function"].reset_index(drop=True)
    other_after = ev[ev["kind"] != "python_function"].reset_index(drop=True)
    for col in before.columns:
        a, b = other_before[col], other_after[col]
        if isinstance(a.dtype, pd.CategoricalDtype):
            a, b = a.astype(str), b.astype(str)
        pd.testing.assert_series_equal(a, b, check_names=True)
    # names no row uses any more are gone from the Categorical
    assert set(ev["name"].cat.categories) == set(ev["name"].astype(str))
    assert prune_python_frames(tr) == 0  # idempotent


def _report_without_prune(monkeypatch: pytest.MonkeyPatch, paths: list[Path]) -> dict:
    monkeypatch.setattr(prune_mod, "prune_python_frames", lambda trace: 0)
    try:
        return analyzer.analyze([str(p) for p in paths]).to_dict()
    finally:
        monkeypatch.undo()


@pytest.mark.parametrize("rel", [SGLANG, HF, VLLM])
def test_report_identical_with_and_without_prune(shared_traces: Path, rel: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    full = _report_without_prune(monkeypatch, [shared_traces / rel])
    pruned = analyzer.analyze([str(shared_traces / rel)]).to_dict()
    assert pruned == full


def test_report_identical_with_and_without_prune_scheduler_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    """Synthetic batching gaps: scheduler python frames carry the gap causes."""
    d = SYNTHETIC / "batching_gaps"
    full = _report_without_prune(monkeypatch, [d])
    pruned = analyzer.analyze([str(d)]).to_dict()
    assert pruned == full
    assert pruned["serving"]["gaps"]["summary"]["by_cause_us"]["scheduler"] > 0


def test_classify_trace_does_not_copy_the_table(shared_traces: Path) -> None:
    tr = read_kineto(str(shared_traces / SGLANG))
    ts = tr.events["ts_ns"].to_numpy()
    classify_trace(tr)
    assert np.shares_memory(ts, tr.events["ts_ns"].to_numpy())


def _frame() -> pd.DataFrame:
    n = 6
    return pd.DataFrame({
        "ts_ns": np.arange(n, dtype=np.int64) * 10,
        "dur_ns": np.arange(n, dtype=np.int64),
        "kind": pd.Categorical(["kernel", "cpu_op", None, "kernel", "memcpy", "cpu_op"]),
        "name": pd.Categorical(["a", "b", "c", None, "a", "d"]),
        "label": pd.array(["x", "y", "z", "u", "v", "w"], dtype="str"),
    }, copy=False)


def test_take_rows_matches_iloc() -> None:
    df = _frame()
    for rows in (np.array([4, 0, 3]), np.array([], dtype=np.int64), df["ts_ns"].to_numpy() > 15):
        want = df.iloc[rows].reset_index(drop=True)
        pd.testing.assert_frame_equal(take_rows(df, rows), want)
    got = take_rows(df, np.array([1, 2]), ["name", "missing", "ts_ns"])
    assert list(got.columns) == ["name", "ts_ns"]


def test_kind_mask_and_strings_at() -> None:
    df = _frame()
    assert kind_mask(df, ("kernel", "memcpy")).tolist() == [True, False, False, True, True, False]
    plain = df.assign(kind=df["kind"].astype(object))
    assert kind_mask(plain, ("cpu_op",)).tolist() == [False, True, False, False, False, True]
    rows = np.array([3, 0, 2])
    got = strings_at(df["name"], rows)
    assert got[1:].tolist() == df["name"].astype(str).to_numpy()[rows][1:].tolist() == ["a", "c"]
    assert pd.isna(got[0])  # missing stays missing, as with astype(str)
    assert strings_at(df["label"], rows).tolist() == ["u", "x", "z"]


def test_duration_groups_match_pandas_groupby() -> None:
    from analyzer.analyses.tables import duration_groups, used_codes

    rng = np.random.default_rng(0)
    n = 4000
    act = pd.DataFrame({
        "name": pd.Categorical.from_codes(rng.integers(-1, 40, n), categories=[f"k{i}" for i in range(40)]),
        "category": pd.Categorical.from_codes(rng.integers(-1, 4, n), categories=list("abcd")),
        "dur_ns": rng.integers(0, 10**12, n),
    })
    got = duration_groups(act, ("name", "category"))
    ref = (act.assign(name=act["name"].astype(str), category=act["category"].astype(str))
           .groupby(["name", "category"], sort=False)["dur_ns"].agg(["sum", "count", "max"])
           .reset_index())
    assert got["name"].tolist() == ref["name"].tolist()
    assert got["category"].tolist() == ref["category"].tolist()
    for c in ("sum", "count", "max"):
        assert got[c].tolist() == ref[c].tolist()
    assert duration_groups(act.iloc[:0], ("name",)).empty
    codes = np.array([3, -1, 3, 0, 7], dtype=np.int16)
    assert used_codes(codes, codes != 0, 8).tolist() == [3, 7]
