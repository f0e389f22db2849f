"""Kernel names as they appear in SGLang traces on Hopper GPUs, and a simple cost model.

Names follow the real templates of FlashInfer (attention, norm, rope, activation,
sampling), SGLang's jit ``store_kvcache``, cuBLAS ``nvjet``/``sm90_xmma`` GEMMs and NCCL
``ncclDevKernel_*``. Durations come from a roofline-ish model (bytes / HBM bandwidth,
flops / tensor-core peak, ring all-reduce over NVLink) with a small seeded jitter, so
that scenarios look plausible; the ground truth never depends on the model, only on
the intervals actually placed.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from .spec import CommSpec, GpuSpec, KernelSpec, ModelSpec

BF16 = "__nv_bfloat16"
_FI_ATTN = "flashinfer::DefaultAttention<false, false, false, false>"
_PREFILL_PARAMS = f"flashinfer::BatchPrefillPagedParams<{BF16}, {BF16}, {BF16}, int>"
_RAGGED_PARAMS = f"flashinfer::BatchPrefillRaggedParams<{BF16}, {BF16}, {BF16}, int>"
_DECODE_PARAMS = f"flashinfer::BatchDecodeParams<{BF16}, {BF16}, {BF16}, int>"


def _traits(cta_q: int, warps_q: int, warps_kv: int, frags: int) -> str:
    return (f"flashinfer::KernelTraits<(flashinfer::MaskMode)1, {cta_q}u, {warps_q}u, "
            f"{warps_kv}u, {frags}u, {frags}u, 1u, (flashinfer::PosEncodingMode)0, {BF16}, "
            f"{BF16}, {BF16}, float, int, {_FI_ATTN}>")


PREFILL_RAGGED = (f"void flashinfer::BatchPrefillWithRaggedKVCacheKernel<{_traits(128, 4, 1, 8)}, "
                  f"{_RAGGED_PARAMS}>({_RAGGED_PARAMS})")
PREFILL_PAGED = (f"void flashinfer::BatchPrefillWithPagedKVCacheKernel<{_traits(64, 4, 1, 8)}, "
                 f"{_PREFILL_PARAMS}>({_PREFILL_PARAMS})")
PREFILL_PAGED_DECODE = (f"void flashinfer::BatchPrefillWithPagedKVCacheKernel<"
                        f"{_traits(16, 1, 4, 8)}, {_PREFILL_PARAMS}>({_PREFILL_PARAMS})")
DECODE_PAGED = (f"void flashinfer::BatchDecodeWithPagedKVCacheKernel<(flashinfer::PosEncodingMode)0, "
                f"2u, 4u, 8u, 16u, 1u, 8u, {_DECODE_PARAMS}, {_FI_ATTN}>({_DECODE_PARAMS})")
MERGE_STATE = (f"void flashinfer::MergeStateKernel<8u, 16u, 8u, 4u, {BF16}, {BF16}>({BF16}*, "
               f"float*, {BF16}*, float*, {BF16}*, float*, unsigned int, unsigned int)")
RMSNORM = (f"void flashinfer::norm::RMSNormKernel<8u, {BF16}>({BF16}*, {BF16}*, {BF16}*, "
           "unsigned int, unsigned int, unsigned int, float, float)")
FUSED_ADD_RMSNORM = (f"void flashinfer::norm::FusedAddRMSNormKernel<8u, {BF16}>({BF16}*, "
                     f"{BF16}*, {BF16}*, unsigned int, unsigned int, unsigned int, float, float)")
ROPE = (f"void flashinfer::BatchQKApplyRotaryPosIdsCosSinCacheKernel<true, 128u, 8u, 16u, {BF16}, "
        f"long>({BF16}*, {BF16}*, {BF16}*, {BF16}*, float*, long*, unsigned int, unsigned int, "
        "unsigned int, unsigned int, unsigned long, unsigned long, unsigned long, unsigned long, "
        "unsigned long, unsigned long, unsigned long, unsigned long)")
SILU_AND_MUL = (f"void flashinfer::activation::act_and_mul_kernel<{BF16}, &silu<float> >("
                f"{BF16}*, {BF16} const*, int)")
STORE_KVCACHE = ("void (anonymous namespace)::store_kvcache<2048l, 4, false, long>("
                 "(anonymous namespace)::StoreKVCacheParams)")
KV_INDICES = "create_flashinfer_kv_indices_triton"
POSITIONS = "compute_position_kernel"
EMBEDDING = ("void at::native::(anonymous namespace)::indexSelectLargeIndex<c10::BFloat16, long, "
             "unsigned int, 2, 2, -2, true>(at::cuda::detail::TensorInfo<c10::BFloat16, unsigned "
             "int>, at::cuda::detail::TensorInfo<c10::BFloat16 const, unsigned int>, "
             "at::cuda::detail::TensorInfo<long const, unsigned int>, int, int, unsigned int, "
             "unsigned int, long)")
TEMPERATURE = ("void at::native::vectorized_elementwise_kernel<4, at::native::BinaryFunctor<float, "
               "float, float, at::native::binary_internal::DivFunctor<float> >, std::array<char*, "
               "3ul> >(int, at::native::BinaryFunctor<float, float, float, "
               "at::native::binary_internal::DivFunctor<float> >, std::array<char*, 3ul>)")
SAMPLING = ("void flashinfer::sampling::TopKTopPSamplingFromProbKernel<1024u, "
            "(cub::CUB_200800_900_NS::BlockScanAlgorithm)2, "
            "(cub::CUB_200800_900_NS::BlockReduceAlgorithm)2, 4u, false, float, int>(float*, "
            "int*, int*, float*, int*, float*, int*, unsigned int, unsigned long, unsigned long)")
GEMM_LARGE = "nvjet_tst_256x128_64x4_2x1_v_bz_coopA_TNT"
GEMM_MEDIUM = "nvjet_tst_128x256_64x4_1x2_h_bz_coopB_TNT"
GEMM_SMALL = ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize64x64x64_warpgroupsize1x1x1_"
              "execute_segment_k_off_kernel__5x_cublas")
GEMM_SKINNY = "nvjet_tst_64x8_64x16_4x1_v_bz_splitK_TNT"
NCCL_ALLREDUCE = "ncclDevKernel_AllReduce_Sum_bf16_RING_LL(ncclDevKernelArgsStorage<4096ul>)"
NCCL_ALLGATHER = "ncclDevKernel_AllGather_RING_LL(ncclDevKernelArgsStorage<4096ul>)"
NCCL_SENDRECV = "ncclDevKernel_SendRecv(ncclDevKernelArgsStorage<4096ul>)"
MEMCPY_D2H = "Memcpy DtoH (Device -> Pinned)"
MEMCPY_H2D = "Memcpy HtoD (Pinned -> Device)"
MEMSET = "Memset (Device)"

#: Every kernel name the generator can emit -> its category ("attention" takes the phase).
CATALOG: dict[str, str] = {
    PREFILL_RAGGED: "attention", PREFILL_PAGED: "attention", PREFILL_PAGED_DECODE: "attention",
    DECODE_PAGED: "attention", MERGE_STATE: "attention", RMSNORM: "elementwise",
    FUSED_ADD_RMSNORM: "elementwise", ROPE: "elementwise", SILU_AND_MUL: "elementwise",
    TEMPERATURE: "elementwise", STORE_KVCACHE: "kv_cache", KV_INDICES: "kv_cache",
    POSITIONS: "other", EMBEDDING: "other", SAMPLING: "sampling", GEMM_LARGE: "gemm",
    GEMM_MEDIUM: "gemm", GEMM_SMALL: "gemm", GEMM_SKINNY: "gemm",
    NCCL_ALLREDUCE: "communication", NCCL_ALLGATHER: "communication",
    NCCL_SENDRECV: "communication", MEMCPY_D2H: "memcpy", MEMCPY_H2D: "memcpy",
    MEMSET: "memset",
}


class Costs:
    """Builds ``KernelSpec`` lists for one rank with durations from a simple model."""

    def __init__(self, gpu: GpuSpec, model: ModelSpec, tp: int, seed: int,
                 tensor_core_decode: bool = False, attn_tflops: float = 330e12) -> None:
        self.gpu, self.model, self.tp = gpu, model, tp
        self.rng = random.Random(seed)
        self.tensor_core_decode = tensor_core_decode
        self.attn_flops_per_s = attn_tflops
        self.gemm_flops_per_s = gpu.tflops_bf16 * 0.62
        self.hbm = gpu.hbm_bytes_per_s * 0.82
        self.slow_num, self.slow_den = 1, 1  # straggler: non-communication kernels slower
        m = model
        self.heads = m.heads // tp
        self.kv_heads = max(1, m.kv_heads // tp)
        self.kv_bytes_layer = 2 * self.kv_heads * m.head_dim * 2  # per token, this rank

    # -- basic pieces ------------------------------------------------------------------
    def _ns(self, seconds: float, floor_ns: int = 2_000) -> int:
        base = max(floor_ns, int(seconds * 1e9))
        jitter = self.rng.randint(-20, 20)  # +-2 %
        return base * (1000 + jitter) * self.slow_num // (1000 * self.slow_den)

    def k(self, name: str, seconds: float, op: str, floor_ns: int = 2_000,
          grid: tuple[int, int, int] = (132, 1, 1)) -> KernelSpec:
        return KernelSpec(name, CATALOG[name], self._ns(seconds, floor_ns), op=op, grid=grid)

    def gemm(self, m: int, n: int, k: int) -> KernelSpec:
        flops = 2.0 * m * n * k
        nbytes = 2.0 * (m * k + k * n + m * n)
        t = max(flops / self.gemm_flops_per_s, nbytes / self.hbm)
        name = GEMM_SKINNY if m <= 16 else GEMM_SMALL if m <= 128 else (
            GEMM_MEDIUM if m <= 4096 else GEMM_LARGE)
        grid = (max(1, min(132 * 4, (m // 128 + 1) * (n // 128 + 1))), 1, 1)
        return self.k(name, t, "aten::mm", 3_000, grid)

    def elementwise(self, name: str, tokens: int, width: int, passes: int = 3) -> KernelSpec:
        return self.k(name, tokens * width * 2.0 * passes / self.hbm, _OPS[name])

    def comm(self, collective: str, key: str, ranks: Sequence[int], nelems: int,
             pg: str = "2", with_args: bool = True) -> KernelSpec:
        nbytes = nelems * 2
        n = len(ranks)
        bw = self.gpu.nvlink_bytes_per_s
        if collective == "allreduce":
            t = 2.0 * (n - 1) / n * nbytes / bw + 9e-6
            name = NCCL_ALLREDUCE
        elif collective == "allgather":
            t = (n - 1) * nbytes / bw + 7e-6
            name = NCCL_ALLGATHER
        else:
            t = nbytes / bw + 6e-6
            name = NCCL_SENDRECV
        spec = CommSpec(collective, key, tuple(ranks), int(t * 1e9), nelems, pg_name=pg,
                        with_args=with_args)
        return KernelSpec(name, "communication", 0, op="record_param_comms",
                          grid=(min(32, 2 * n), 1, 1), block=(640, 1, 1), comm=spec)

    # -- a whole forward pass ----------------------------------------------------------
    def forward(self, phase: str, tokens: int, context_tokens: int, *, key: str,
                tp_ranks: Sequence[int], extend_lens: Sequence[int] = (),
                prefix_lens: Sequence[int] = (), layers: range | None = None,
                first_stage: bool = True, last_stage: bool = True, bs: int = 1,
                pg: str = "2", comm_args: bool = True) -> list[KernelSpec]:
        """Kernels of one forward (embedding, layers, final norm, lm_head) on this rank."""
        m = self.model
        hd = m.head_dim
        qkv_n = (self.heads + 2 * self.kv_heads) * hd
        out: list[KernelSpec] = []
        if first_stage:
            out.append(self.elementwise(EMBEDDING, tokens, m.hidden, 2))
        tp = len(tp_ranks)
        for layer in layers if layers is not None else range(m.num_layers):
            norm = RMSNORM if (layer == 0 and first_stage) else FUSED_ADD_RMSNORM
            out.append(self.elementwise(norm, tokens, m.hidden))
            out.append(self.gemm(tokens, qkv_n, m.hidden))
            out.append(self.elementwise(ROPE, tokens, qkv_n, 2))
            out.append(self.k(STORE_KVCACHE, tokens * self.kv_bytes_layer * 2.0 / self.hbm,
                              "sgl_kernel::store_kvcache"))
            out.extend(self.attention(phase, tokens, context_tokens, extend_lens, prefix_lens))
            out.append(self.gemm(tokens, m.hidden, self.heads * hd))
            if tp > 1:
                out.append(self.comm("allreduce", f"{key}/L{layer}/attn", tp_ranks,
                                     tokens * m.hidden, pg, comm_args))
            out.append(self.elementwise(FUSED_ADD_RMSNORM, tokens, m.hidden))
            out.append(self.gemm(tokens, 2 * m.intermediate // tp, m.hidden))
            out.append(self.elementwise(SILU_AND_MUL, tokens, 2 * m.intermediate // tp))
            out.append(self.gemm(tokens, m.hidden, m.intermediate // tp))
            if tp > 1:
                out.append(self.comm("allreduce", f"{key}/L{layer}/mlp", tp_ranks,
                                     tokens * m.hidden, pg, comm_args))
        if last_stage:
            rows = bs  # logits only for the last token of each request
            out.append(self.elementwise(RMSNORM, rows, m.hidden))
            out.append(self.gemm(rows, m.vocab // tp, m.hidden))
            if tp > 1:
                out.append(self.comm("allgather", f"{key}/logits", tp_ranks,
                                     rows * (m.vocab // tp), pg, comm_args))
        return out

    def attention(self, phase: str, tokens: int, context_tokens: int,
                  extend_lens: Sequence[int], prefix_lens: Sequence[int]) -> list[KernelSpec]:
        hd = self.model.head_dim
        if phase == "DECODE":
            t = context_tokens * self.kv_bytes_layer / self.hbm + 3e-6
            name = PREFILL_PAGED_DECODE if self.tensor_core_decode else DECODE_PAGED
            return [self.k(name, t, "flashinfer::decode_run" if name == DECODE_PAGED
                           else "flashinfer::paged_run")]
        q = list(extend_lens) or [tokens]
        p = list(prefix_lens) or [0] * len(q)
        # causal attention over the new tokens, full attention over the cached prefix
        new = sum(4.0 * self.heads * hd * (x * x / 2.0) for x in q)
        cached = sum(4.0 * self.heads * hd * x * y for x, y in zip(q, p))
        out = [self.k(PREFILL_RAGGED, new / self.attn_flops_per_s + 4e-6,
                      "flashinfer::ragged_run")]
        if any(p):
            out.append(self.k(PREFILL_PAGED, cached / self.attn_flops_per_s + 4e-6,
                              "flashinfer::paged_run"))
            out.append(self.k(MERGE_STATE, sum(q) * self.heads * hd * 8.0 / self.hbm,
                              "sgl_kernel::merge_state"))
        return out

    # -- around the forward ------------------------------------------------------------
    def prepare(self, phase: str, tokens: int, bs: int) -> list[KernelSpec]:
        """Eager kernels before the forward (input copies, positions, KV indices)."""
        h2d = KernelSpec(MEMCPY_H2D, "memcpy", self._ns(tokens * 8 / 25e9, 1_500),
                         op="aten::copy_", kind="memcpy", nbytes=tokens * 8)
        out = [h2d]
        if phase == "EXTEND":
            out.append(self.k(POSITIONS, bs * 1e-9, "sgl_kernel::compute_position", 2_500))
            out.append(KernelSpec(MEMSET, "memset", self._ns(0, 1_200), op="aten::zero_",
                                  kind="memset", nbytes=4 * (bs + 1)))
        out.append(self.k(KV_INDICES, bs * 2e-9, "triton::create_flashinfer_kv_indices",
                          2_500))
        return out

    def sample(self, bs: int) -> list[KernelSpec]:
        """Eager kernels after the forward: temperature, top-k/top-p, copy of next ids."""
        vocab = self.model.vocab
        d2h = KernelSpec(MEMCPY_D2H, "memcpy", self._ns(bs * 8 / 20e9, 1_800),
                         op="aten::_to_copy", kind="memcpy", nbytes=bs * 8)
        return [self.elementwise(TEMPERATURE, bs, vocab, 2),
                self.k(SAMPLING, bs * vocab * 4.0 * 3 / self.hbm + 8e-6,
                       "sgl_kernel::top_k_top_p_sampling_from_probs"),
                d2h]


_OPS = {
    EMBEDDING: "aten::embedding", RMSNORM: "sgl_kernel::rmsnorm",
    FUSED_ADD_RMSNORM: "sgl_kernel::fused_add_rmsnorm",
    ROPE: "sgl_kernel::apply_rope_pos_ids_cos_sin_cache", SILU_AND_MUL: "sgl_kernel::silu_and_mul",
    TEMPERATURE: "aten::div_",
}
