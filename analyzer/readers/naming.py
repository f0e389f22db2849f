"""SGLang trace file names: ``<profile_id>-TP-<tp>[-DP-<dp>][-PP-<pp>][-EP-<ep>][-<STAGE>]``.

    >>> parse_sglang_name("1767240000.03-TP-1-PP-2-EXTEND.trace.json.gz")
    SglangName(profile_id='1767240000.03', tp=1, dp=None, pp=2, ep=None, stage='EXTEND')

SGLang's profiler writes one file per TP rank (and per stage when the profile is split by
forward mode); the parallel indices may come in any order after ``-TP-``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["SglangName", "parse_sglang_name", "strip_trace_suffix"]

_SUFFIXES = (".pt.trace.json.gz", ".trace.json.gz", ".pt.trace.json", ".trace.json",
             ".json.gz", ".json")  # fmt: skip
_INDEX = re.compile(r"-(TP|DP|PP|EP)-(\d+)")
_STAGES = {"EXTEND": "EXTEND", "PREFILL": "EXTEND", "DECODE": "DECODE"}


@dataclass(frozen=True)
class SglangName:
    profile_id: str
    tp: int
    dp: int | None = None
    pp: int | None = None
    ep: int | None = None
    stage: str | None = None  # "EXTEND" | "DECODE" (SGLang's prefill/decode split files)

    @property
    def rank_key(self) -> tuple[str, int, int, int, int]:
        """Files with the same key belong to one rank (they differ only by stage)."""
        return (self.profile_id, self.dp or 0, self.pp or 0, self.tp, self.ep or 0)


def strip_trace_suffix(name: str) -> str:
    """``x.trace.json.gz`` -> ``x``."""
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def parse_sglang_name(file_name: str) -> SglangName | None:
    """Parse an SGLang profiler file name; None when it does not follow the pattern."""
    stem = strip_trace_suffix(file_name)
    found = list(_INDEX.finditer(stem))
    if not found:
        return None
    # the indices must be contiguous: -TP-0-PP-1..., then an optional -STAGE
    pos = found[0].start()
    idx: dict[str, int] = {}
    for m in found:
        if m.start() != pos or m.group(1) in idx:
            return None
        idx[m.group(1)] = int(m.group(2))
        pos = m.end()
    if "TP" not in idx:
        return None
    rest = stem[pos:]
    stage: str | None = None
    if rest:
        if not rest.startswith("-") or rest[1:].upper() not in _STAGES:
            return None
        stage = _STAGES[rest[1:].upper()]
    profile = stem[: found[0].start()]
    if not profile:
        return None
    return SglangName(
        profile_id=profile,
        tp=idx["TP"],
        dp=idx.get("DP"),
        pp=idx.get("PP"),
        ep=idx.get("EP"),
        stage=stage,
    )
