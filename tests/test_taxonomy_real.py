"""Category times on every real Kineto trace in ../shared/traces/kineto, recomputed here.

The reference is independent of the analyzer: plain gzip+json, categories looked up by
kernel name in the labelled corpus (tests/data/kernel_corpus.toml, which holds every kernel
name of the shared traces), memcpy/memset by the event's category, and a sort-and-merge
union per category (tests/reference.py). It is compared with ``analyzer.analyze(path)``:
``report["ranks"][i]["categories"]`` and ``report["serving"]["ranks"][i]["cat_<c>_us"]``.
Every trace must also leave less than OTHER_MAX of its kernel time as ``other``.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import pytest
from reference import merged_length

import analyzer
from analyzer.model import CATEGORIES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CORPUS = Path(__file__).resolve().parent / "data" / "kernel_corpus.toml"
KERNEL = {"kernel", "Kernel"}
BY_KIND = {"gpu_memcpy": "memcpy", "Memcpy": "memcpy", "gpu_memset": "memset", "Memset": "memset"}
OTHER_MAX = 0.02  # share of kernel time left as "other"
ATTENTION = ("attention_prefill", "attention_decode")


def corpus_table() -> dict[str, str]:
    doc = tomllib.loads(CORPUS.read_text(encoding="utf-8"))
    return {e["name"]: e["category"] for e in doc["kernel"]}


def to_ns(us) -> int:
    """Exact for integer microseconds (float math loses ns above 2**53)."""
    return int(us) * 1000 if isinstance(us, int) else round(float(us) * 1000)


def reference(
    path: Path, table: dict[str, str]
) -> tuple[dict[int, dict[str, float]], dict, list[str]]:
    """Per device: category -> union time (us); per device the kernel-time split used for the
    "other" check; and the kernel names that the corpus does not know."""
    with gzip.open(path) as f:
        data = json.load(f)
    events = data["traceEvents"] if isinstance(data, dict) else data
    per_dev: dict[int, dict[str, list[tuple[int, int]]]] = {}
    kernel_ns: dict[int, dict[str, int]] = {}
    unknown: set[str] = set()
    for ev in events:
        if ev.get("ph") != "X":
            continue
        cat = ev.get("cat")
        if cat in KERNEL:
            category = table.get(ev["name"])
            if category is None:
                unknown.add(ev["name"])
                continue
        elif cat in BY_KIND:
            category = BY_KIND[cat]
        else:
            continue
        dev = int(ev.get("args", {}).get("device", ev.get("pid")))
        s = to_ns(ev["ts"])
        e = s + to_ns(ev["dur"])
        per_dev.setdefault(dev, {}).setdefault(category, []).append((s, e))
        if cat in KERNEL:
            k = kernel_ns.setdefault(dev, {"all": 0, "other": 0})
            k["all"] += e - s
            k["other"] += (e - s) if category == "other" else 0
    times: dict[int, dict[str, float]] = {}
    for dev, cats in per_dev.items():
        times[dev] = {c: merged_length(iv) / 1000 for c, iv in cats.items()}
        attn = [x for c in ATTENTION for x in cats.get(c, [])]
        times[dev]["attention"] = merged_length(attn) / 1000
        times[dev]["attention_count"] = len(attn)
    return times, kernel_ns, sorted(unknown)


def kineto_files(root: Path) -> list[Path]:
    return sorted((root / "kineto").rglob("*.json.gz"))


@pytest.fixture(scope="module")
def table() -> dict[str, str]:
    return corpus_table()


@pytest.fixture(scope="module")
def real(shared_traces) -> dict[Path, dict]:
    files = kineto_files(shared_traces)
    assert files, "no kineto traces found in ../shared/traces/kineto"
    return {p: analyzer.analyze(p).to_dict() for p in files}


def _serving_ranks(doc: dict) -> dict[int, dict]:
    serving = doc.get("serving") or {}
    return {r["device"]: r for r in serving.get("ranks") or []}


def test_every_trace_kernel_is_in_the_corpus(real, table) -> None:
    missing = {p.name: reference(p, table)[2] for p in real}
    assert not any(missing.values()), f"kernel names missing from {CORPUS.name}: {missing}"


def test_category_times_match_the_reference(real, table) -> None:
    """Per device and category: union time, share of wall time, and the serving figure.

    Attention is compared as a whole (prefill + decode): with step annotations the phase
    analysis moves attention kernels between the two by the step they ran in (xDiT's
    sage_fwd lands in both), so only their sum is name-independent. The attention kernels of
    one device do not overlap each other in these traces, so the sum equals the union.
    """
    bad = []
    for path, doc in real.items():
        want, _, _ = reference(path, table)
        got = {r["device"]: r for r in doc["ranks"]}
        serving = _serving_ranks(doc)
        assert set(got) == set(want), path.name
        for dev, w in want.items():
            cats = got[dev]["categories"]
            wall = got[dev]["wall_us"]
            where = f"{path.name} device {dev}"
            named = {c for c in CATEGORIES if c in w and c not in ATTENTION}
            assert {c for c in cats if c not in ATTENTION} == named, (
                where,
                sorted(cats),
                sorted(w),
            )
            for c in CATEGORIES:
                if c in ATTENTION:
                    continue
                wt = w.get(c, 0.0)
                gt = cats.get(c, {}).get("time_us", 0.0)
                if gt != pytest.approx(wt, abs=0.002):
                    bad.append(f"{where} {c}: report {gt} us, reference {wt} us")
                if c in cats and cats[c]["share"] != pytest.approx(wt / wall, rel=1e-6):
                    bad.append(f"{where} {c}: share {cats[c]['share']}, reference {wt / wall}")
                if dev in serving and serving[dev][f"cat_{c}_us"] != pytest.approx(wt, abs=0.002):
                    bad.append(
                        f"{where} serving cat_{c}_us {serving[dev][f'cat_{c}_us']}, reference {wt}"
                    )
            attn = sum(cats.get(c, {}).get("time_us", 0.0) for c in ATTENTION)
            count = sum(cats.get(c, {}).get("count", 0) for c in ATTENTION)
            if attn != pytest.approx(w["attention"], abs=0.004) or count != w["attention_count"]:
                bad.append(
                    f"{where} attention: report {attn} us / {count}, reference "
                    f"{w['attention']} us / {w['attention_count']}"
                )
            if dev in serving:
                st = sum(serving[dev][f"cat_{c}_us"] for c in ATTENTION)
                if st != pytest.approx(w["attention"], abs=0.004):
                    bad.append(f"{where} serving attention {st}, reference {w['attention']}")
    assert not bad, "\n".join(bad)


def test_other_is_a_small_share_of_kernel_time(real, table) -> None:
    shares = {}
    for path in real:
        _, kernel_ns, _ = reference(path, table)
        for dev, k in kernel_ns.items():
            shares[f"{path.name} device {dev}"] = k["other"] / k["all"] if k["all"] else 0.0
    over = {k: v for k, v in shares.items() if v >= OTHER_MAX}
    assert not over, f"'other' share of kernel time >= {OTHER_MAX:.0%}: {over}"


def test_report_other_matches(real, table) -> None:
    """The analyzer's own `other` kernel time is below the same bound (its report view)."""
    for path, doc in real.items():
        for r in doc["ranks"]:
            other = r["categories"].get("other", {}).get("time_us", 0.0)
            kernels = sum(
                v["time_us"] for c, v in r["categories"].items() if c not in ("memcpy", "memset")
            )
            assert kernels == 0 or other / kernels < OTHER_MAX, (path.name, r["device"], other)
