"""The app's analysis in a child process under a memory ceiling.

One upload must not take the server down for everyone: the analysis of uploaded files runs
in a fresh (spawned) process whose address space is capped (``RLIMIT_AS``); running out of
it is one clear line in the page, and the server process never holds the trace tables.

    >>> doc = run_isolated(uploads, limits, options, on_progress)    # doctest: +SKIP

The ceiling is ``BASE_MB`` + ``PER_UPLOAD_BYTE`` x the uploaded bytes (a 10 MB upload: under
1 GiB), capped at ``MAX_MB``; ``ANALYZER_APP_MEMORY_MB`` sets it exactly, and
``ANALYZER_APP_ISOLATE=0`` runs the analysis in the server process (no ceiling). Where
``RLIMIT_AS`` does not exist (not Linux/macOS), the child runs without a ceiling.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
from collections.abc import Sequence
from typing import Any

from ..errors import BadInputError

BASE_MB = 768
PER_UPLOAD_BYTE = 16
MAX_MB = 16 * 1024
POLL_S = 0.2


def ceiling_bytes(upload_bytes: int) -> int:
    """The address-space ceiling of one analysis (module doc)."""
    env = os.environ.get("ANALYZER_APP_MEMORY_MB")
    if env:
        try:
            return max(64, int(env)) << 20
        except ValueError:
            raise BadInputError(f"ANALYZER_APP_MEMORY_MB must be a number of MiB, not {env!r}") from None
    return min((BASE_MB << 20) + PER_UPLOAD_BYTE * int(upload_bytes), MAX_MB << 20)


def isolation_enabled() -> bool:
    return os.environ.get("ANALYZER_APP_ISOLATE", "1").strip().lower() not in ("0", "false", "no", "off")


def _child(out: Any, limit: int, uploads: Sequence[Any], limits: Any, options: Any) -> None:
    """Runs in the spawned process: cap the address space, analyse, send back the report."""
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, ValueError, OSError):  # no RLIMIT_AS here: run without a ceiling
        pass
    try:
        from .session import run_uploads
        from .uploads import reader_limits

        def progress(frac: float, text: str) -> None:
            out.put(("progress", frac, text))

        import dataclasses

        if dataclasses.is_dataclass(options) and hasattr(options, "workers"):
            options = dataclasses.replace(options, workers=1)  # no Dask cluster under the ceiling
        with reader_limits(limits):
            doc = run_uploads(uploads, limits, options, progress)
        out.put(("done", doc))
    except MemoryError:
        out.put(("error", f"the analysis needed more than its memory ceiling of {limit >> 20} MiB "
                          "(ANALYZER_APP_MEMORY_MB raises it; large captures: use the CLI)"))
    except BadInputError as exc:
        out.put(("error", str(exc).splitlines()[0] if str(exc) else "bad input"))
    except BaseException as exc:  # noqa: BLE001 - reported as one line by the parent
        out.put(("internal", f"{type(exc).__name__}: {exc}".splitlines()[0][:300]))


def run_isolated(uploads: Sequence[Any], limits: Any, options: Any, on_progress: Any = None) -> dict[str, Any]:
    """``session.run_uploads`` in a child process under the memory ceiling (module doc).

    Raises ``BadInputError`` with one line for bad input, an exhausted ceiling or a child
    that died; an internal error of the analysis comes back as ``RuntimeError`` (one line)."""
    limit = ceiling_bytes(sum(getattr(u, "size", 0) for u in uploads))
    ctx = mp.get_context("spawn")  # the server has threads: never fork it
    out = ctx.Queue()
    proc = ctx.Process(target=_child, args=(out, limit, list(uploads), limits, options), daemon=True)
    proc.start()
    try:
        while True:
            try:
                msg = out.get(timeout=POLL_S)
            except queue.Empty:
                if not proc.is_alive():
                    raise BadInputError(
                        f"the analysis stopped before it finished (exit code {proc.exitcode}): most "
                        f"likely it exceeded its memory ceiling of {limit >> 20} MiB "
                        "(ANALYZER_APP_MEMORY_MB raises it)") from None
                continue
            kind = msg[0]
            if kind == "progress":
                if on_progress is not None:
                    on_progress(msg[1], msg[2])
            elif kind == "done":
                return msg[1]
            elif kind == "error":
                raise BadInputError(msg[1])
            else:
                raise RuntimeError(msg[1])
    finally:
        proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()
        out.close()


__all__ = ["ceiling_bytes", "isolation_enabled", "run_isolated"]
