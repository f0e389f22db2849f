"""Place every host event and GPU activity of a scenario on one integer-ns clock.

Each rank runs as a small program (a Python generator) that walks its steps the way
SGLang's non-overlap scheduler does: ``scheduler.recv_requests`` ->
``scheduler.get_next_batch_to_run`` -> ``scheduler.run_batch`` (the ``step[...]`` span,
eager launches or one ``cudaGraphLaunch``) -> ``scheduler.process_batch_result``
(blocking until the GPU is done). A kernel starts when its stream is free and its launch
has reached the GPU. Communication kernels pause the program until every participant has
reached the same ``CommSpec.key``; then all of them end together.

Nothing here reads names: categories come with the specs.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field

from .spec import CommSpec, KernelSpec, RankSpec, Scenario, StepSpec

#: Host clock origin of every synthetic trace (µs ~1.2e12 keeps ns exact in float64).
BASE_NS = 1_234_567_000_000_000
LAUNCH_LATENCY_NS = 3_000  # runtime call end -> kernel may start
GRAPH_LAUNCH_NS = 14_000  # host duration of one cudaGraphLaunch
SYNC_WAKE_NS = 2_000  # host returns this long after the GPU finished


@dataclass
class HostEvent:
    """A host-side span: user_annotation, cpu_op, cuda_runtime or python_function."""

    cat: str
    name: str
    start: int
    dur: int
    external_id: int = -1
    correlation: int = -1
    args: dict[str, object] = field(default_factory=dict)


@dataclass
class Placed:
    """A GPU activity with its final interval."""

    spec: KernelSpec
    start: int
    end: int
    correlation: int
    external_id: int
    step: int  # index into RankTimeline.steps
    wait_ns: int = 0  # communication: time inside the kernel beyond the transfer


@dataclass
class StepRecord:
    index: int
    spec: StepSpec
    stage: str | None
    annotation_ext: int = -1
    gpu_start: int = -1
    gpu_end: int = -1
    host_start: int = -1
    host_end: int = -1


@dataclass
class RankTimeline:
    """Everything one rank did, ready to be written and measured."""

    spec: RankSpec
    host: list[HostEvent] = field(default_factory=list)
    gpu: list[Placed] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)
    launches: dict[int, int] = field(default_factory=dict)  # correlation -> launch ts


class _Ids:
    def __init__(self, rank: int) -> None:
        self.corr = 100_000 + rank * 1_000_000
        self.ext = 10_000 + rank * 1_000_000
        self.py = 1

    def next_corr(self) -> int:
        self.corr += 1
        return self.corr

    def next_ext(self) -> int:
        self.ext += 1
        return self.ext

    def next_py(self) -> int:
        self.py += 1
        return self.py


Request = tuple[CommSpec, int, int]  # (comm, own start, rank)
Program = Generator[Request, tuple[int, int], None]


def simulate(scenario: Scenario) -> list[RankTimeline]:
    """Run every rank's program, resolving communication rendezvous; return timelines."""
    timelines = [RankTimeline(spec=rs) for rs in scenario.ranks]
    programs: dict[int, Program] = {
        tl.spec.rank: _rank_program(tl, scenario.stage_split) for tl in timelines
    }
    pending: dict[str, dict[int, int]] = {}  # key -> rank -> own start
    ready: list[tuple[int, tuple[int, int] | None]] = [(r, None) for r in programs]
    while ready:
        rank, reply = ready.pop(0)
        prog = programs[rank]
        try:
            req = prog.send(reply) if reply is not None else next(prog)
        except StopIteration:
            continue
        comm, own_start, _ = req
        arrived = pending.setdefault(comm.key, {})
        arrived[rank] = own_start
        if set(arrived) == set(comm.ranks):
            for r, times in _resolve(comm, arrived).items():
                ready.append((r, times))
            del pending[comm.key]
    if pending:
        key = next(iter(pending))
        raise RuntimeError(f"synthetic scenario deadlocked on {key!r}: {sorted(pending[key])}")
    return timelines


def _resolve(comm: CommSpec, arrived: dict[int, int]) -> dict[int, tuple[int, int]]:
    """Start/end of each participant's kernel for one rendezvous."""
    if comm.late_post and comm.peer is not None:
        # send/recv pair: ``peer`` is the sender; the receiver's kernel is only launched
        # once the sender has started, so its wait shows as GPU idle (a bubble)
        sender = arrived[comm.peer]
        starts = {r: (s if r == comm.peer else max(s, sender)) for r, s in arrived.items()}
        end = max(starts.values()) + comm.transfer_ns
        return {r: (starts[r], end) for r in arrived}
    end = max(arrived.values()) + comm.transfer_ns
    return {r: (s, end) for r, s in arrived.items()}


def _span(tl: RankTimeline, name: str, start: int, dur: int, ids: _Ids,
          cat: str = "user_annotation") -> HostEvent:
    ev = HostEvent(cat=cat, name=name, start=start, dur=dur, external_id=ids.next_ext())
    if cat == "python_function":
        ev.external_id = -1
        ev.args = {"Python id": ids.next_py()}
    tl.host.append(ev)
    return ev


_FRAME = "/sgl-workspace/sglang/python/sglang/srt/"
PY_FORWARD = {
    "EXTEND": _FRAME + "model_executor/model_runner.py(2127): forward_extend",
    "MIXED": _FRAME + "model_executor/model_runner.py(2127): forward_extend",
    "DECODE": _FRAME + "model_executor/model_runner.py(2093): forward_decode",
    "IDLE": _FRAME + "model_executor/model_runner.py(2163): forward_idle",
    "TARGET_VERIFY": _FRAME + "model_executor/model_runner.py(2127): forward_extend",
}
PY_REPLAY = _FRAME + "model_executor/cuda_graph_runner.py(812): replay"
PY_RUN_BATCH = _FRAME + "managers/scheduler.py(1905): run_batch"


def step_span_name(step: StepSpec) -> str:
    """SGLang's ``build_step_span_name`` (python/sglang/srt/utils/profile_utils.py)."""
    if step.phase == "EXTEND":
        return f"step[EXTEND bs={step.bs} toks={step.tokens}]"
    return f"step[{step.phase} bs={step.bs}]"


def execute_span_name(step: StepSpec) -> str:
    """The ``execute_<n>_context_<k>(sq..sk..sqsq..sqsk..)_generation_<m>(...)`` span.

    ``context`` sums the prefill requests (q new tokens over k = q + cached tokens),
    ``generation`` the decode requests (q = 1 each, k = their whole KV length).
    """
    if step.phase == "DECODE":
        bs, sk = step.bs, step.context_tokens
        gen = f"generation_{bs}(sq{bs}sk{sk}sqsq{bs}sqsk{sk})"
        return f"execute_{bs}_context_0(sq0sk0sqsq0sqsk0)_{gen}"
    q = list(step.extend_lens) or [step.tokens]
    p = list(step.prefix_lens) or [0] * len(q)
    k = [a + b for a, b in zip(q, p)]
    sq, sk = sum(q), sum(k)
    sqsq = sum(x * x for x in q)
    sqsk = sum(a * b for a, b in zip(q, k))
    ctx = f"context_{len(q)}(sq{sq}sk{sk}sqsq{sqsq}sqsk{sqsk})"
    return f"execute_{sq}_{ctx}_generation_0(sq0sk0sqsq0sqsk0)"


def _rank_program(tl: RankTimeline, stage_split: bool) -> Program:
    rs = tl.spec
    ids = _Ids(rs.rank)
    host = BASE_NS + rs.start_offset_ns
    cursor: dict[int, int] = {}
    for si, step in enumerate(rs.steps):
        stage = rs.stage_of_step[si] if rs.stage_of_step else None
        rec = StepRecord(index=si, spec=step, stage=stage, host_start=host)
        tl.steps.append(rec)
        host = _span(tl, "scheduler.recv_requests", host, step.recv_requests_ns, ids).start \
            + step.recv_requests_ns
        if step.process_input_ns:
            _span(tl, "scheduler.process_input_requests", host, step.process_input_ns, ids)
            host += step.process_input_ns
        _span(tl, "scheduler.get_next_batch_to_run", host, step.get_next_batch_ns, ids)
        host += step.get_next_batch_ns
        run_batch = _span(tl, "scheduler.run_batch", host, 0, ids)
        exe = None
        if step.execute_annotation:  # wraps the batch's python frames, inside run_batch
            exe = _span(tl, execute_span_name(step), host + 200, 0, ids)
        py_run = _span(tl, PY_RUN_BATCH, host + 500, 0, ids, cat="python_function")
        host += 2_000
        py_fwd = _span(tl, PY_FORWARD[step.phase], host, 0, ids, cat="python_function")
        host += 1_000
        ann = None
        if not stage_split:
            ann = _span(tl, step_span_name(step), host, 0, ids)
            rec.annotation_ext = ann.external_id
        host += 2_000
        graph_corr = -1
        graph_ready = 0
        graph_ext = -1
        first = len(tl.gpu)
        n = len(step.kernels)
        for ki, k in enumerate(step.kernels):
            in_graph = step.cuda_graph and step.graph_prefix <= ki < n - step.graph_suffix
            if in_graph and graph_corr < 0:
                py = _span(tl, PY_REPLAY, host, 0, ids, cat="python_function")
                _span(tl, "cuda_graph_runner.replay_prepare", host + 500, 6_000, ids)
                host += 7_000
                rep = _span(tl, "cuda_graph_runner.replay", host, GRAPH_LAUNCH_NS + 2_000, ids)
                graph_corr = ids.next_corr()
                graph_ext = rep.external_id
                tl.host.append(HostEvent("cuda_runtime", "cudaGraphLaunch", host + 1_000,
                                         GRAPH_LAUNCH_NS, graph_ext, graph_corr,
                                         {"cbid": 311}))
                tl.launches[graph_corr] = host + 1_000
                graph_ready = host + 1_000 + GRAPH_LAUNCH_NS + LAUNCH_LATENCY_NS
                host += GRAPH_LAUNCH_NS + 2_000
                py.dur = host - py.start
            if in_graph:
                corr, ext, ready = graph_corr, graph_ext, graph_ready
            else:
                corr, ext, ready, host = _eager_launch(tl, k, host, rs.host_launch_ns, ids)
            own = max(cursor.get(k.stream, 0), ready)
            wait = 0
            if k.comm is not None:
                start, end = yield (k.comm, own, rs.rank)
                wait = (end - start) - k.comm.transfer_ns
            else:
                start, end = own, own + k.dur_ns
            cursor[k.stream] = end
            tl.gpu.append(Placed(k, start, end, corr, ext, si, wait))
        placed = tl.gpu[first:]
        rec.gpu_start = min(p.start for p in placed)
        rec.gpu_end = max(p.end for p in placed)
        host += 2_000
        if ann is not None:
            ann.dur = host - ann.start
        host += 1_000
        py_fwd.dur = host - py_fwd.start
        host += 1_000
        run_batch.dur = host - run_batch.start
        py_run.dur = host - 500 - py_run.start
        if exe is not None:
            exe.dur = host - 200 - exe.start
        # process_batch_result: block on the copy of next token ids, then bookkeeping
        proc = _span(tl, "scheduler.process_batch_result", host, 0, ids)
        wake = host + 1_000
        if step.blocking_sync:
            wake = max(wake, rec.gpu_end + SYNC_WAKE_NS)
            tl.host.append(HostEvent("cuda_runtime", "cudaStreamSynchronize", host + 500,
                                     wake - host - 1_000, proc.external_id, ids.next_corr(),
                                     {"cbid": 131}))
        host = wake + step.process_result_ns
        proc.dur = host - proc.start
        rec.host_end = host


def _eager_launch(tl: RankTimeline, k: KernelSpec, host: int, launch_ns: int,
                  ids: _Ids) -> tuple[int, int, int, int]:
    """Emit cpu_op + runtime call for one eager launch; return corr, ext, ready, host."""
    corr = ids.next_corr()
    op_name = k.op or ("record_param_comms" if k.comm is not None else "aten::empty")
    op = HostEvent("cpu_op", op_name, host, launch_ns, ids.next_ext())
    if k.comm is not None and k.comm.with_args:
        op.args = comm_args(k.comm)
    tl.host.append(op)
    rt_name = {"kernel": "cudaLaunchKernel", "memcpy": "cudaMemcpyAsync",
               "memset": "cudaMemsetAsync"}[k.kind]
    cbid = {"kernel": 211, "memcpy": 41, "memset": 51}[k.kind]
    rt_start = host + launch_ns // 2
    rt_dur = launch_ns // 2 - 500
    tl.host.append(HostEvent("cuda_runtime", rt_name, rt_start, rt_dur, op.external_id,
                             corr, {"cbid": cbid}))
    tl.launches[corr] = rt_start
    return corr, op.external_id, rt_start + rt_dur + LAUNCH_LATENCY_NS, host + launch_ns


def comm_args(comm: CommSpec) -> dict[str, object]:
    """Kineto's NCCL metadata keys (torch/csrc/profiler/util.cpp saveNcclMeta)."""
    size = len(comm.ranks)
    out_nelems = comm.nelems * size if comm.collective == "allgather" else comm.nelems
    args: dict[str, object] = {
        "Collective name": comm.collective,
        "In msg nelems": comm.nelems,
        "Out msg nelems": out_nelems,
        "Group size": size,
        "dtype": comm.dtype,
        "In split size": "[]",
        "Out split size": "[]",
        "Global rank start": min(comm.ranks),
        "Global rank stride": 1,
        "Process Group Name": comm.pg_name,
        "Process Group Description": comm.pg_desc,
        "Process Group Ranks": "[" + ", ".join(str(r) for r in comm.ranks) + "]",
    }
    if comm.collective in ("send", "recv") and comm.peer is not None:
        other = [r for r in comm.ranks if r != comm.peer]
        if comm.collective == "send":
            args["Dst Rank"] = other[0]
        else:
            args["Src Rank"] = comm.peer
    return args
