"""What a synthetic scenario is made of: GPUs, models, kernels, steps, ranks.

A ``Scenario`` lists ranks; each ``RankSpec`` lists serving steps (``StepSpec``); each step
lists the kernels it launches (``KernelSpec``) in stream order. Every kernel carries its
ground-truth category, so the generator never has to guess a category from a name.
Communication kernels carry a ``CommSpec``: participants that share a ``key`` are
synchronised by the engine (all end together, see ``analyzer.synthetic.engine``).

All times are integer nanoseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Ground-truth categories: the analyzer's fixed vocabulary (a contract, not an implementation).
from analyzer.model import CATEGORIES as CATEGORIES  # noqa: E402  (re-exported)

#: Categories whose kernels take their phase (EXTEND/MIXED -> prefill, DECODE -> decode).
ATTENTION = "attention"
PHASES: tuple[str, ...] = ("EXTEND", "DECODE", "MIXED", "IDLE", "TARGET_VERIFY")


@dataclass(frozen=True)
class GpuSpec:
    """A GPU as Kineto's ``deviceProperties`` describes it, plus rough speeds for costs."""

    name: str
    total_mem_bytes: int
    num_sms: int
    compute_major: int
    compute_minor: int
    hbm_bytes_per_s: float  # peak HBM bandwidth
    tflops_bf16: float  # dense peak
    nvlink_bytes_per_s: float  # effective per-GPU NVLink bus bandwidth

    def device_properties(self, index: int) -> dict[str, Any]:
        return {
            "id": index,
            "name": self.name,
            "totalGlobalMem": self.total_mem_bytes,
            "computeMajor": self.compute_major,
            "computeMinor": self.compute_minor,
            "maxThreadsPerBlock": 1024,
            "maxThreadsPerMultiprocessor": 2048,
            "regsPerBlock": 65536,
            "warpSize": 32,
            "sharedMemPerBlock": 49152,
            "numSms": self.num_sms,
            "regsPerMultiprocessor": 65536,
            "sharedMemPerBlockOptin": 232448,
            "sharedMemPerMultiprocessor": 233472,
        }


H100 = GpuSpec("NVIDIA H100 80GB HBM3", 85018279936, 132, 9, 0, 3.35e12, 989e12, 360e9)
H200 = GpuSpec("NVIDIA H200", 150754820096, 132, 9, 0, 4.8e12, 989e12, 360e9)


@dataclass(frozen=True)
class ModelSpec:
    """The few model-config numbers the cost model and server_args need."""

    path: str
    num_layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        """K and V bytes of one token over all layers and all KV heads."""
        return 2 * self.kv_heads * self.head_dim * dtype_bytes * self.num_layers


LLAMA_8B = ModelSpec("meta-llama/Llama-3.1-8B-Instruct", 32, 4096, 32, 8, 128, 14336, 128256)
LLAMA_70B = ModelSpec("meta-llama/Llama-3.1-70B-Instruct", 80, 8192, 64, 8, 128, 28672, 128256)
LLAMA_1B = ModelSpec("meta-llama/Llama-3.2-1B-Instruct", 16, 2048, 32, 8, 64, 8192, 128256)
QWEN_7B = ModelSpec("Qwen/Qwen2.5-7B-Instruct", 28, 3584, 28, 4, 128, 18944, 152064)


@dataclass(frozen=True)
class CommSpec:
    """A collective or point-to-point transfer that synchronises several ranks.

    Participants with the same ``key`` meet: for a collective every participant starts
    when its own stream reaches it, and all end at ``max(starts) + transfer_ns`` (the
    early ones wait inside the kernel). With ``late_post`` (PP receives) the receiver's
    kernel only starts once the sender's has started, so the wait shows as GPU idle.
    """

    collective: str  # allreduce | allgather | send | recv
    key: str
    ranks: tuple[int, ...]
    transfer_ns: int
    nelems: int
    pg_name: str = "2"
    pg_desc: str = "undefined"
    dtype: str = "BFloat16"
    late_post: bool = False
    peer: int | None = None
    with_args: bool = True  # torch.distributed path (args) vs pynccl inside a graph (none)


@dataclass(frozen=True)
class KernelSpec:
    """One GPU activity in stream order (kernel, memcpy or memset)."""

    name: str
    category: str  # ground truth; "attention" means attention_<phase>
    dur_ns: int
    op: str = ""  # the cpu_op that launches it eagerly ("" -> no cpu_op)
    kind: str = "kernel"  # kernel | memcpy | memset
    stream: int = 7
    grid: tuple[int, int, int] = (132, 1, 1)
    block: tuple[int, int, int] = (128, 1, 1)
    nbytes: int = 0  # memcpy/memset bytes
    comm: CommSpec | None = None

    def scaled(self, factor_num: int, factor_den: int) -> KernelSpec:
        """A copy whose duration is multiplied by num/den (integer arithmetic)."""
        return _replace(self, dur_ns=self.dur_ns * factor_num // factor_den)


@dataclass
class StepSpec:
    """One scheduler iteration: host scheduler spans, then the forward pass of one batch.

    ``tokens`` are the new tokens computed (EXTEND: prompt tokens; DECODE: one per
    request); ``context_tokens`` the KV tokens attended in total.
    """

    phase: str
    bs: int
    tokens: int
    context_tokens: int
    kernels: list[KernelSpec]
    cuda_graph: bool = False  # kernels replayed by one cudaGraphLaunch
    graph_prefix: int = 0  # this many leading kernels launched eagerly before the graph
    graph_suffix: int = 0  # this many trailing kernels launched eagerly after the graph
    recv_requests_ns: int = 20_000
    process_input_ns: int = 0  # scheduler.process_input_requests (0 -> none emitted)
    get_next_batch_ns: int = 40_000
    process_result_ns: int = 60_000  # after the blocking D2H copy of next token ids
    blocking_sync: bool = True  # process_batch_result waits for the GPU (non-overlap loop)
    execute_annotation: bool = False  # also emit vLLM-style execute_<n>_context_... span
    extend_lens: tuple[int, ...] = ()  # per-request new tokens (execute annotation)
    prefix_lens: tuple[int, ...] = ()  # per-request cached tokens (execute annotation)
    label: str = ""


@dataclass
class RankSpec:
    """One GPU worker (one trace file, or two with stage split)."""

    rank: int
    device: int
    tp_rank: int
    pp_rank: int | None = None
    steps: list[StepSpec] = field(default_factory=list)
    host_launch_ns: int = 6_000  # host cost of one eager launch (cpu_op + runtime call)
    start_offset_ns: int = 0  # host clock offset of this rank's first event
    stage_of_step: list[str] | None = None  # stage-split: "EXTEND"/"DECODE" per step


@dataclass
class Scenario:
    """Everything needed to write one synthetic capture and its ground truth."""

    name: str
    description: str
    seed: int
    profile_id: str
    gpu: GpuSpec
    model: ModelSpec
    tp_size: int
    pp_size: int
    ranks: list[RankSpec]
    expected_top_finding: str
    server_args: dict[str, Any] | None = None
    straggler_rank: int | None = None
    stage_split: bool = False
    params: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _replace(obj: Any, **changes: Any) -> Any:
    import dataclasses

    return dataclasses.replace(obj, **changes)
