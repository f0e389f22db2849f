"""One job at a time: refuse inputs that cannot be ranks of one distributed job.

    >>> check_one_job([])           # nothing to compare
    >>> # check_one_job(traces) raises BadInputError("a.json.gz and b.json.gz cannot be ...")

Ranks of one job run on GPUs of one type, agree on the world size and on the default
(world) process group that ``distributedInfo`` describes, and start their captures at
about the same wall-clock time. Two traces that break one of these are two jobs; merging
them as ranks gives nonsense (a "skew" of days between an A100 and a V100 run), so the
reader stops with one line naming the two files and the reason (CLI exit 2).

What is compared, each only when both traces carry it:

- the GPU name of the main device (``deviceProperties``; Nsight's device table);
- ``distributedInfo.world_size``;
- the default process group (``pg_config`` entry named ``"0"`` or described ``default_pg``):
  its size and ranks. Sub-groups (TP, PP) differ from rank to rank by design and are not
  compared;
- the capture's wall-clock start: the first timestamp when it is an epoch time (after
  2001), else Kineto's ``baseTimeNanoseconds`` (the wall clock at profiler start when the
  timestamps are on a monotonic clock). Farther apart than ``MAX_CAPTURE_APART_NS`` -> two
  jobs (or two captures of one job, which cannot be ranks of one timeline either).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from analyzer.model import BadInputError, Trace

__all__ = ["MAX_CAPTURE_APART_NS", "capture_wall_ns", "check_one_job", "job_conflict"]

#: Captures whose wall-clock starts are farther apart than this are not ranks of one job.
MAX_CAPTURE_APART_NS = 24 * 3600 * 10**9
#: Timestamps at or above this (2001-09-09 in ns since the epoch) are wall-clock times.
EPOCH_NS_MIN = 10**18


def capture_wall_ns(trace: Trace) -> int | None:
    """Wall-clock start of the capture in ns since the epoch, or None when unknown."""
    ts = trace.events["ts_ns"]
    first = int(ts.min()) if len(ts) else None
    if first is not None and first >= EPOCH_NS_MIN:
        return first
    base = trace.metadata.get("baseTimeNanoseconds")
    if isinstance(base, int) and not isinstance(base, bool) and base >= EPOCH_NS_MIN:
        return base
    return None


def _default_pg(info: Any) -> tuple[int | None, tuple[int, ...] | None] | None:
    if not isinstance(info, dict) or not isinstance(info.get("pg_config"), list):
        return None
    for pg in info["pg_config"]:
        if isinstance(pg, dict) and (str(pg.get("pg_name")) == "0" or pg.get("pg_desc") == "default_pg"):
            size = pg.get("pg_size")
            ranks = pg.get("ranks")
            return (int(size) if isinstance(size, int) else None,
                    tuple(int(r) for r in ranks) if isinstance(ranks, list)
                    and all(isinstance(r, int) for r in ranks) else None)
    return None


def _world(info: Any) -> int | None:
    w = info.get("world_size") if isinstance(info, dict) else None
    return w if isinstance(w, int) and not isinstance(w, bool) and w > 0 else None


def _fmt_ranks(r: tuple[int, ...]) -> str:
    return f"[{r[0]}..{r[-1]}] ({len(r)} ranks)" if len(r) > 4 else str(list(r))


def job_conflict(a: Trace, b: Trace) -> str | None:
    """Why ``a`` and ``b`` cannot be ranks of one job (None when they can)."""
    why: list[str] = []
    ga, gb = a.gpu, b.gpu
    if ga is not None and gb is not None and ga.name and gb.name and ga.name != gb.name:
        why.append(f"different GPUs ({ga.name} vs {gb.name})")
    wa, wb = _world(a.distributed_info), _world(b.distributed_info)
    if wa is not None and wb is not None and wa != wb:
        why.append(f"different world sizes in distributedInfo ({wa} vs {wb})")
    pa, pb = _default_pg(a.distributed_info), _default_pg(b.distributed_info)
    if pa is not None and pb is not None:
        if pa[0] is not None and pb[0] is not None and pa[0] != pb[0]:
            why.append(f"different default process groups (size {pa[0]} vs {pb[0]})")
        elif pa[1] is not None and pb[1] is not None and pa[1] != pb[1]:
            why.append(f"different default process groups (ranks {_fmt_ranks(pa[1])} vs {_fmt_ranks(pb[1])})")
    ca, cb = capture_wall_ns(a), capture_wall_ns(b)
    if ca is not None and cb is not None and abs(ca - cb) > MAX_CAPTURE_APART_NS:
        days = abs(ca - cb) / (24 * 3600 * 1e9)
        why.append(f"captures started {days:.1f} days apart")
    return "; ".join(why) or None


def _label(t: Trace) -> str:
    return t.sources[0].path if t.sources else f"rank {t.rank.rank}"


def check_one_job(traces: Sequence[Trace]) -> None:
    """Raise ``BadInputError`` (one line) when two of ``traces`` cannot be ranks of one job.

    Each trace is compared with the first one, so the message names the first trace and
    the first that disagrees with it.
    """
    if len(traces) < 2:
        return
    ref = traces[0]
    for t in traces[1:]:
        why = job_conflict(ref, t)
        if why:
            raise BadInputError(
                f"{_label(ref)} and {_label(t)} cannot be ranks of one job: {why}; "
                "analyse them separately"
            )
