"""Phases and step attribution on real traces (SGLang, vLLM, Hugging Face), checked against
an independent computation with plain gzip + json and a test-local kernel name map."""

from __future__ import annotations

import gzip
import json
import re
from functools import cache

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import merged_length

from analyzer import intervals as iv
from analyzer.analyses.phases import attribute_steps, grouped_union_ns, outermost, phase_summary
from analyzer.classify import classify_trace
from analyzer.readers.kineto import read_kineto

SGLANG = "kineto/sglang_qwen3-8b_mi300x_prefill_decode.json.gz"
VLLM = "kineto/vllm_gptoss_mi300_prefill_decode_piecewise.json.gz"
HF = "kineto/hf_qwen1.5-0.5b_h100_generate.json.gz"


@cache
def raw(path: str) -> list[dict]:
    with gzip.open(path, "rt") as fh:
        d = json.load(fh)
    return d["traceEvents"] if isinstance(d, dict) else d


@cache
def analysed(path: str):
    tr = read_kineto(path)
    classify_trace(tr)
    return tr, attribute_steps(tr)


def family(name: str) -> str:
    """Test-local name map: attention vs GEMM (independent of the classify rules)."""
    low = name.lower()
    if "fmha" in low or "attention" in low or "flash_fwd" in low:
        return "attention"
    if name.startswith("Cijk_") or "gemm" in low or "nvjet" in low:
        return "gemm"
    return "other"


def test_sglang_extend_step(shared_traces):
    path = str(shared_traces / SGLANG)
    _tr, attr = analysed(path)
    assert attr.source == "sglang_step"
    steps = attr.steps
    assert len(steps) == 1
    s = steps.iloc[0]
    assert (s["mode"], s["phase"], s["bs"], s["tokens"]) == ("EXTEND", "prefill", 15, 15360)
    # independent: kernels whose launch (runtime event, same correlation) lies in the step span
    ev = raw(path)
    span = next(e for e in ev if e.get("cat") == "user_annotation" and e["name"].startswith("step["))
    m = re.match(r"step\[EXTEND bs=(\d+) toks=(\d+)\]", span["name"])
    assert m and (int(m.group(1)), int(m.group(2))) == (15, 15360)
    t0, t1 = span["ts"], span["ts"] + span["dur"]
    corr = {e["args"]["correlation"] for e in ev
            if e.get("cat") == "cuda_runtime" and t0 <= e["ts"] < t1 and "correlation" in e.get("args", {})}
    kernels = [e for e in ev if e.get("cat") == "kernel" and e["args"].get("correlation") in corr]
    fam: dict[str, list] = {"attention": [], "gemm": [], "other": []}
    for k in kernels:
        fam[family(k["name"])].append((k["ts"], k["ts"] + k["dur"]))
    assert int(s["kernels"]) == len(kernels) + sum(
        1 for e in ev if e.get("cat") == "gpu_memcpy" and e["args"].get("correlation") in corr)
    assert s["attention_prefill_us"] == pytest.approx(merged_length(fam["attention"]), rel=1e-6)
    assert s["gemm_us"] == pytest.approx(merged_length(fam["gemm"]), rel=1e-6)
    assert s["attention_decode_us"] == 0
    assert len(fam["attention"]) == 36  # one prefill attention kernel per layer (Qwen3-8B: 36)
    # the execute_ annotation enriches the step with request counts
    assert (s["ctx_reqs"], s["gen_reqs"]) == (15, 0)


def test_vllm_execute_annotation(shared_traces):
    path = str(shared_traces / VLLM)
    _, attr = analysed(path)
    assert attr.source == "execute"
    name = next(e["name"] for e in raw(path) if e.get("cat") == "user_annotation"
                and e["name"].startswith("execute_"))
    m = re.match(r"execute_(\d+)_context_(\d+)\(sq\d+sk(\d+)sqsq\d+sqsk(\d+)\)_generation_(\d+)\(sq\d+sk(\d+)", name)
    tokens, ctx, ctx_sk, ctx_sqsk, gen, gen_sk = map(int, m.groups())
    s = attr.steps.iloc[0]
    assert (s["tokens"], s["ctx_reqs"], s["gen_reqs"], s["bs"]) == (tokens, ctx, gen, ctx + gen)
    assert (ctx, gen) == (9, 37)
    assert s["phase"] == "mixed" and s["kv_tokens"] == ctx_sk + gen_sk and s["ctx_sqsk"] == ctx_sqsk
    # every kernel of the capture is attributed (graph replays share the launch correlation)
    assert int((attr.act["step"] < 0).sum()) == 0


def test_hf_generate_forwards(shared_traces):
    path = str(shared_traces / HF)
    _, attr = analysed(path)
    ev = raw(path)
    mods = sorted((e["ts"], e["ts"] + e["dur"]) for e in ev
                  if e.get("cat") == "python_function" and e["name"].startswith("nn.Module: "))
    top, end = 0, -1.0
    for s, e in mods:
        if s >= end:
            top += 1
            end = e
        else:
            end = max(end, e)
    ph = phase_summary(attr)["phases"]
    assert attr.source == "hf_module"
    assert ph["prefill"]["steps"] == 1  # first forward = prefill
    assert ph.get("decode", {"steps": 0})["steps"] == top - 1


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 200), st.integers(0, 60)), max_size=40))
def test_grouped_union_matches_brute_force(rows):
    g = np.array([r[0] for r in rows], np.int64)
    s = np.array([r[1] for r in rows], np.int64)
    e = s + np.array([r[2] for r in rows], np.int64)
    got = grouped_union_ns(g, s, e, 4)
    for k in range(4):
        covered = set()
        for gi, si, ei in zip(g, s, e):
            if gi == k:
                covered.update(range(si, ei))
        assert got[k] == len(covered)


def test_outermost():
    s = np.array([0, 1, 10, 12, 20])
    e = np.array([5, 3, 15, 13, 21])
    assert outermost(s, e).tolist() == [True, False, True, False, True]
    assert iv.union_length(s[outermost(s, e)], e[outermost(s, e)]) == iv.union_length(s, e)
