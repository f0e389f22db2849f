"""Per-rank work on Dask: a local cluster of processes, or an existing cluster.

    >>> outs = map_units(task, units, workers=4)                       # doctest: +SKIP
    >>> outs = map_units(task, units, scheduler="tcp://10.0.0.5:8786")  # doctest: +SKIP

``map_units(fn, items)`` returns ``[fn(item) for item in items]``, in order:

- in this process, one after another, when ``workers <= 1`` or there is a single item and
  no scheduler (no cluster is started: the serial path), and when ``workers`` is None (the
  default: one per core) but Dask is not installed;
- else on Dask (``dask.distributed``): a ``LocalCluster`` of ``workers`` single-threaded
  worker processes (no more than there are items; on Linux forked from this process when it
  has a single thread, as the CLI has, so that they start with the analyzer imported: ~0.4 s
  to start two workers and stop them, against ~5 s with Dask's default ``spawn``; from a
  fork server when it has threads, as the app's server has; set
  ``distributed.worker.multiprocessing-method`` in the Dask config to choose), or the
  cluster at ``scheduler``. The
  workers open the paths they are given, so a remote cluster needs the traces on storage
  that every worker sees under the same path.

``fn`` must be a module-level function (it is pickled by reference) and its result small:
it travels back to this process. ``on_done(done, total, item)`` is called as items finish.
An exception raised by ``fn`` is raised here.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

OnDone = Callable[[int, int, Any], None]
CONNECT_TIMEOUT = "20s"  # to an existing scheduler (--scheduler)


def default_workers() -> int:
    """The machine's cores available to this process (the CLI's ``--workers`` default)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def in_process(n_items: int, workers: int | None, scheduler: str | None) -> bool:
    """Whether ``map_units`` runs the items here, one after another (no cluster)."""
    n = workers if workers is not None else default_workers()
    return scheduler is None and (n <= 1 or n_items <= 1)


def map_units(fn: Callable[[T], R], items: Sequence[T], *, workers: int | None = 1,
              scheduler: str | None = None, on_done: OnDone | None = None) -> list[R]:
    """``[fn(item) for item in items]``, on Dask when asked (module doc)."""
    if workers is None and scheduler is None and not _have_dask():
        workers = 1  # the default asked for no Dask in particular: one after another here
    if in_process(len(items), workers, scheduler):
        out = []
        for i, item in enumerate(items):
            out.append(fn(item))
            if on_done is not None:
                on_done(i + 1, len(items), item)
        return out
    return _on_dask(fn, items, workers if workers is not None else default_workers(), scheduler, on_done)


def _have_dask() -> bool:
    import importlib.util

    return importlib.util.find_spec("distributed") is not None


def _on_dask(fn: Callable[[T], R], items: Sequence[T], n: int, scheduler: str | None,
             on_done: OnDone | None) -> list[R]:
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        from analyzer.errors import BadInputError

        raise BadInputError("--workers > 1 and --scheduler need Dask: pip install 'dask[distributed]' "
                            "(or run with --workers 1)") from None
    import dask

    cluster = None
    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError, ValueError) as exc:
            from analyzer.errors import BadInputError

            raise BadInputError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
    else:
        method = dask.config.get("distributed.worker.multiprocessing-method", "spawn")
        if sys.platform == "linux" and method == "spawn":  # Dask's default: chosen here
            # fork only a single-threaded process (the CLI); a server with threads (the
            # app) forks from a clean fork server instead
            method = "fork" if threading.active_count() == 1 else "forkserver"
        with dask.config.set({"distributed.worker.multiprocessing-method": method}):
            cluster = LocalCluster(n_workers=min(n, len(items)), threads_per_worker=1, processes=True,
                                   dashboard_address=":0", scheduler_kwargs={"dashboard": False},
                                   silence_logs=logging.CRITICAL)
        client = Client(cluster)
    try:
        futures = client.map(fn, list(items), pure=False)
        index = {f.key: i for i, f in enumerate(futures)}
        out: list[Any] = [None] * len(items)
        for done, fut in enumerate(as_completed(futures), start=1):
            i = index[fut.key]
            out[i] = fut.result()  # raises the worker's exception here
            fut.release()  # the worker may drop its copy now
            if on_done is not None:
                on_done(done, len(items), items[i])
        return out
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


__all__ = ["default_workers", "in_process", "map_units"]
