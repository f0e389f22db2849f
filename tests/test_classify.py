"""Kernel taxonomy: rule engine, built-in rule tables, classify_trace, real traces.

Every name in CASES is a real kernel name (from the shared traces, or quoted from the
source / profiles of SGLang, vLLM, FlashInfer, FlashAttention, FlashMLA, NCCL/RCCL,
TRT-LLM, aiter/ck_tile, DeepEP, DeepGEMM, triton_kernels). Expected values are the
taxonomy's intent, written by hand, not copied from the engine's output.
"""

from __future__ import annotations

import gzip
import json
import re
import sqlite3
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analyzer.classify import (
    COLLECTIVE_VALUES,
    RuleSet,
    builtin_rule_files,
    classify_events,
    classify_names,
    classify_trace,
    describe_rule,
    load_rules,
)
from analyzer.classify.engine import required_literal
from analyzer.model import (
    CATEGORIES,
    COLLECTIVES,
    EVENT_COLUMNS,
    KINDS,
    BadInputError,
    RankInfo,
    Trace,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

AP, AD, KV, GEMM, MOE, COMM, EW, SAMP = (
    "attention_prefill",
    "attention_decode",
    "kv_cache",
    "gemm",
    "moe",
    "communication",
    "elementwise",
    "sampling",
)

# (family, real kernel name, category, collective)
# fmt: off
CASES: list[tuple[str, str, str, str]] = [
    # ---- FlashInfer
    ("flashinfer prefill paged", "void flashinfer::BatchPrefillWithPagedKVCacheKernel<(flashinfer::MaskMode)1, 128u, 128u, 1u, 4u, (flashinfer::PosEncodingMode)0, 2u, 1u, 8u, __nv_bfloat16, __nv_bfloat16, __nv_bfloat16, int, flashinfer::DefaultAttention<false, false, false, false> >(flashinfer::BatchPrefillPagedParams<__nv_bfloat16, __nv_bfloat16, __nv_bfloat16, int>)", AP, ""),
    ("flashinfer prefill ragged", "void flashinfer::BatchPrefillWithRaggedKVCacheKernel<(flashinfer::MaskMode)1, 128u, 128u, 1u, 4u, (flashinfer::PosEncodingMode)0, 2u, 1u, 8u, __nv_bfloat16, __nv_bfloat16, __nv_bfloat16, int>(flashinfer::BatchPrefillRaggedParams<__nv_bfloat16, __nv_bfloat16, __nv_bfloat16, int>)", AP, ""),
    ("flashinfer decode", "void flashinfer::BatchDecodeWithPagedKVCacheKernel<(flashinfer::PosEncodingMode)0, (unsigned int)2, (unsigned int)1, (unsigned int)8, (unsigned int)16, (unsigned int)2, (unsigned int)4, flashinfer::DefaultAttention<(bool)0, (bool)0, (bool)0, (bool)0>, flashinfer::BatchDecodeParams<__nv_bfloat16, __nv_bfloat16, __nv_bfloat16, int>>(T9)", AD, ""),
    ("flashinfer merge state", "void flashinfer::MergeStatesKernel<8u, 16u, 4u, 4u, __nv_bfloat16, __nv_bfloat16>(__nv_bfloat16*, float*, __nv_bfloat16*, float*, unsigned int, unsigned int)", AP, ""),
    ("flashinfer merge state in place", "void flashinfer::MergeStateInPlaceKernel<8u, 16u, 4u, 4u, __nv_bfloat16>(__nv_bfloat16*, float*, __nv_bfloat16 const*, float const*, unsigned int, unsigned char*, unsigned int)", AP, ""),
    ("vllm merge_attn_states", "void vllm::merge_attn_states_kernel<c10::BFloat16, 128u>(c10::BFloat16*, float*, c10::BFloat16 const*, float const*, c10::BFloat16 const*, float const*, unsigned int, unsigned int, unsigned int)", AP, ""),
    ("flashinfer trtllm-gen decode", "fmhaSm100fKernel_QkvE4m3OBfloat16H128PagedKvCausalP32VarSeqQ128Kv128PersistentSwapsAbForGen", AD, ""),
    # ---- FlashAttention 2 / 3, PyTorch flash
    ("FA2 fwd (nsys demangled)", "void flash::flash_fwd_kernel<Flash_fwd_kernel_traits<(int)128, (int)128, (int)64, (int)4, (bool)0, (bool)0, cutlass::bfloat16_t, Flash_kernel_traits<(int)128, (int)128, (int)64, (int)4, cutlass::bfloat16_t>>, (bool)0, (bool)1, (bool)0, (bool)0, (bool)1, (bool)1, (bool)0, (bool)0>(Flash_fwd_params)", AP, ""),
    ("FA2 nsys short name", "flash_fwd_kernel", AP, ""),
    ("FA2 splitkv", "void flash::flash_fwd_splitkv_kernel<Flash_fwd_kernel_traits<128, 64, 128, 4, false, false, cutlass::bfloat16_t, Flash_kernel_traits<128, 64, 128, 4, cutlass::bfloat16_t> >, false, true, false, false, true, true, false, false>(Flash_fwd_params)", AD, ""),
    ("FA2 splitkv combine", "void flash::flash_fwd_splitkv_combine_kernel<Flash_fwd_kernel_traits<128, 64, 128, 4, false, false, cutlass::bfloat16_t, Flash_kernel_traits<128, 64, 128, 4, cutlass::bfloat16_t> >, 4, 1, true>(Flash_fwd_params)", AD, ""),
    ("FA3 sm90", "void cutlass::device_kernel<flash::enable_sm90_or_later<flash::FlashAttnFwdSm90<flash::CollectiveMainloopFwdSm90<2, cute::tuple<cute::C<1>, cute::C<1>, cute::C<1> >, cute::tuple<cute::C<128>, cute::C<128>, cute::C<128> >, 128, cutlass::bfloat16_t, float, cutlass::arch::Sm90, true, false> > > >(flash::FlashAttnFwdSm90<> ::Params)", AP, ""),
    ("pytorch_flash (HF trace)", "void pytorch_flash::flash_fwd_kernel<pytorch_flash::Flash_fwd_kernel_traits<64, 128, 128, 4, false, false, cutlass::bfloat16_t, pytorch_flash::Flash_kernel_traits<64, 128, 128, 4, cutlass::bfloat16_t> >, false, true, false, false, true, true, false, false>(pytorch_flash::Flash_fwd_params)", AP, ""),
    ("PyTorch mem-efficient", "fmha_cutlassF_bf16_aligned_64x64_rf_sm80(PyTorchMemEffAttention::AttentionKernel<cutlass::bfloat16_t, cutlass::arch::Sm80, true, 64, 64, 64, true, true>::Params)", AP, ""),
    # ---- Triton attention backends (SGLang / vLLM)
    ("sglang triton extend", "_fwd_kernel", AP, ""),
    ("sglang triton decode stage1", "_fwd_kernel_stage1", AD, ""),
    ("sglang triton decode stage2", "_fwd_kernel_stage2", AD, ""),
    ("sglang triton grouped decode", "_fwd_grouped_kernel_stage1", AD, ""),
    ("aiter asm decode stage2", "_fwd_kernel_stage2_asm", AD, ""),
    ("vllm unified attention 2d", "kernel_unified_attention_2d", AP, ""),
    ("vllm unified attention 3d", "kernel_unified_attention_3d", AP, ""),
    ("vllm triton paged decode", "kernel_paged_attention_2d", AD, ""),
    # ---- FlashMLA
    ("FlashMLA decode", "void flash::flash_fwd_splitkv_mla_kernel<Flash_fwd_kernel_traits_mla<576, 64, 64, 8, cutlass::bfloat16_t, 512>, true, flash::SharedStorageMLA<Flash_fwd_kernel_traits_mla<576, 64, 64, 8, cutlass::bfloat16_t, 512> > >(Flash_fwd_mla_params)", AD, ""),
    ("FlashMLA combine", "void flash::flash_fwd_splitkv_mla_combine_kernel<cutlass::bfloat16_t, float, 512, 32>(Flash_fwd_mla_params)", AD, ""),
    # ---- vLLM paged attention / KV cache
    ("vllm paged v1", "void vllm::paged_attention_v1_kernel<unsigned short, unsigned short, 128, 16, 128, (vllm::Fp8KVCacheDataType)0, false>(unsigned short*, unsigned short const*, unsigned short const*, unsigned short const*, int, float, int const*, int const*, int, float const*, int, int, int, float const*, float const*)", AD, ""),
    ("vllm paged v2", "void vllm::paged_attention_v2_kernel<unsigned short, unsigned short, 128, 16, 128, (vllm::Fp8KVCacheDataType)0, false, 512>(float*, float*, unsigned short*, unsigned short const*, unsigned short const*, unsigned short const*, int, float, int const*, int const*, int, float const*, int, int, int, float const*, float const*)", AD, ""),
    ("vllm paged v2 reduce", "void vllm::paged_attention_v2_reduce_kernel<unsigned short, 128, 128, 512>(unsigned short*, float const*, float const*, unsigned short const*, int const*, int)", AD, ""),
    ("ROCm paged ll4mi", "void paged_attention_ll4mi_QKV_mfma16_kernel<__hip_bfloat16, __hip_bfloat16, (vllm::Fp8KVCacheDataType)0, 16, 128, 256, true, 4>(...)", AD, ""),
    ("vllm reshape_and_cache", "void vllm::reshape_and_cache_kernel<__nv_bfloat16, __nv_bfloat16, (vllm::Fp8KVCacheDataType)0>(__nv_bfloat16 const*, __nv_bfloat16 const*, __nv_bfloat16*, __nv_bfloat16*, long const*, int, int, int, int, int, int, float const*, float const*)", KV, ""),
    ("vllm reshape_and_cache_flash (vLLM MI300 trace)", "void vllm::reshape_and_cache_flash_kernel<__hip_bfloat16, __hip_bfloat16, (vllm::Fp8KVCacheDataType)0>(__hip_bfloat16 const*, __hip_bfloat16 const*, __hip_bfloat16*, __hip_bfloat16*, long const*, long, long, long, long, long, int, int, int, float const*, float const*)", KV, ""),
    ("vllm concat_and_cache_mla", "void vllm::concat_and_cache_mla_kernel<__nv_bfloat16, __nv_bfloat16, (vllm::Fp8KVCacheDataType)0>(__nv_bfloat16 const*, __nv_bfloat16 const*, __nv_bfloat16*, long const*, int, int, int, int, int, int, float const*)", KV, ""),
    ("sglang store_kvcache (SGLang MI300X trace)", "void (anonymous namespace)::store_kvcache<2048l, 4, false, long>((anonymous namespace)::StoreKVCacheParams)", KV, ""),
    ("sglang set_kv_buffer", "set_kv_buffer_kernel", KV, ""),
    ("sglang kv indices (SGLang MI300X trace)", "create_flashinfer_kv_indices_triton", KV, ""),
    ("aiter fused rope+cache", "fuse_qk_rope_concat_and_cache_mla_per_head", KV, ""),
    # ---- TRT-LLM
    ("TRT-LLM fmha_v2", "fmha_v2_flash_attention_fp16_64_32_S_qkv_128_causal_sm86_kernel_nl", AP, ""),
    ("TRT-LLM fmha_v2 tma", "fmha_v2_flash_attention_fp16_64_256_S_32_tma_ws_sm90_kernel", AP, ""),
    ("TRT-LLM XQA", "kernel_mha", AD, ""),
    ("TRT-LLM XQA sm90", "xqa_kernel_sm90", AD, ""),
    ("TRT-LLM mmha", "void tensorrt_llm::kernels::mmha::masked_multihead_attention_kernel<unsigned short, unsigned short, unsigned short, tensorrt_llm::kernels::KVBlockArray, 128, 256, 4, false, false>(tensorrt_llm::kernels::Multihead_attention_params<unsigned short, false>, tensorrt_llm::kernels::KVBlockArray)", AD, ""),
    # ---- ROCm ck_tile / aiter
    ("ck_tile batch prefill (SGLang MI300X trace)", "_ZN7ck_tile6kentryILi2ENS_38FmhaBatchPrefillWithPagedKVCacheKernelINS_40BlockFmhaBatchPrefillPipelineQRKSVSAsyncINS_36BlockFmhaBatchPrefillPipelineProblemIDF16bDF16bDF16bffDF16bhfDF16bfDF16bNS_13TileFmhaShapeINS_8sequenceIJLi128EL", AP, ""),
    ("ck_tile rmsnorm (vLLM MI300 trace)", "_ZN7ck_tile6kentryILi1ENS_12Rmsnorm2dFwdINS_27Rmsnorm2dFwdPipelineOnePassINS_27Rmsnorm2dFwdPipelineProblemIDF16bDF16bfDF16bDF16bDF16bffNS_19Generic2dBlockShapeINS_8sequenceIJLi1ELi3072EEEENS5_IJLi1ELi128EEEENS5_IJLi1ELi8EEEEEENS_1", EW, ""),
    ("aiter add_rmsnorm_quant (SGLang MI300X trace)", "_ZN5aiter24add_rmsnorm_quant_kernelIDF16bDF16bLi64ELi8ELb0ELb0ELb1ELi1EEEvPT0_PT_PfS4_S4_S4_diiiiiiib", EW, ""),
    ("aiter asm paged attention", "_ZN5aiter42pa_bf16_pertokenFp8_gqa10_1tg_4w_mtp3_msk1E", AD, ""),
    ("aiter asm mla decode", "_ZN5aiter36mla_a8w8_qh64_qseqlen1_gqaratio64_nmE", AD, ""),
    ("aiter mla reduce", "kn_mla_reduce_v1", AD, ""),
    ("aiter asm fmha fwd", "_ZN5aiter32fmha_fwd_hd192_hd128_bf16_causalE", AP, ""),
    ("ck_tile fmha splitkv", "_ZN7ck_tile6kentryILi1ENS_21FmhaFwdSplitKVKernelINS_34BlockFmhaFwdSplitKVPipelineQRKSVSIN", AD, ""),
    ("sgl_hip act_and_mul (SGLang MI300X trace)", "_ZN7sgl_hip10activation18act_and_mul_kernelI14__hip_bfloat16TnPFT_RKS3_EXadL_Z4siluIS2_ES3_S5_EEEEvPS3_PS4_i", EW, ""),
    ("aiter asm gemm", "_ZN5aiter36bf16gemm_bf16_tn_256x256_bpreshuffleE", GEMM, ""),
    ("aiter asm fmoe", "_ZN5aiter59fmoe_stage1_bf16_pertokenFp8_blockscale_g1u1_32x128_3tg_pf3E", MOE, ""),
    ("ck moe gemm", "_ZN2ck15kernel_moe_gemmINS_25GridwiseMoeGemmBlockScale", MOE, ""),
    ("aiter quant", "_ZN5aiter37dynamic_per_group_scaled_quant_kernelIDhDB8_Li32EEEvPT0_PfPKT_PKfiliibPKii", EW, ""),
    # ---- GEMM
    ("cuBLAS sm90 xmma (HF trace)", "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1_execute_segment_k_off_kernel__5x_cublas", GEMM, ""),
    ("cuBLAS ampere", "ampere_sgemm_32x32_sliced1x4_tn", GEMM, ""),
    ("cuBLAS ampere fp16", "ampere_fp16_s1688gemm_fp16_128x128_ldg8_f2f_stages_32x1_nn", GEMM, ""),
    ("cuBLAS volta (ResNet trace)", "volta_sgemm_64x64_nt", GEMM, ""),
    ("CUTLASS Kernel2 (HF trace)", "void cutlass::Kernel2<cutlass_80_simt_sgemm_128x32_8x5_nn_align1>(cutlass_80_simt_sgemm_128x32_8x5_nn_align1::Params)", GEMM, ""),
    ("CUTLASS tensorop (DDP trace)", "void cutlass::Kernel<cutlass_80_tensorop_s1688gemm_256x64_16x4_nn_align4>(cutlass_80_tensorop_s1688gemm_256x64_16x4_nn_align4::Params)", GEMM, ""),
    ("nvjet (nsys trace)", "nvjet_tst_192x192_64x4_2x1_v_bz_coopB_bias_TNN", GEMM, ""),
    ("cuBLASLt splitK reduce", "void cublasLt::splitKreduce_kernel<32, 16, int, float, float, float, float, true, false, false>(cublasLt::cublasSplitKParams<float>, float const*, float const*, float*, float const*, float const*, float const*, float const*, float*, void*, long, float*, int*)", GEMM, ""),
    ("hipBLASLt Tensile (SGLang MI300X trace)", "Cijk_Alik_Bljk_BBS_BH_Bias_HA_S_SAV_UserArgs_MT128x256x32_MI16x16x1_SN_LDSB1_AFC1_AFEM1_AFEM1_ASEM1_CLR1_CADS0_DTLA0_DTLB0_DTVA0_DTVB0_EPS0_FDSI0_GRPM1_GRVWA4_GRVWB4_GSUAMBSK_GLS0_ISA942_IU1_K1_LDSTI0", GEMM, ""),
    ("DeepGEMM", "void deep_gemm::sm90_fp8_gemm_1d2d_impl<(cute::UMMA::Major)0, 0u, 4096u, 1024u, 1u, 256u, 128u, 128u, 128u, 128u, 128u, 3u, 128u, 256u, 2u, true, 132u, (deep_gemm::GemmType)0, deep_gemm::epilogue::transform::EpilogueIdentity>(float*, int*, unsigned int, CUtensorMap_st, CUtensorMap_st, CUtensorMap_st, float*)", GEMM, ""),
    ("DeepGEMM grouped masked (MoE)", "void deep_gemm::fp8_gemm_kernel<4096u, 7168u, 128u, 128u, 128u, 4u, 8u, 8u, 128u, (deep_gemm::GemmType)2>(__nv_bfloat16*, float*, int*, unsigned int, CUtensorMap_st, CUtensorMap_st, CUtensorMap_st, CUtensorMap_st) GroupedMasked", MOE, ""),
    ("vLLM cutlass fp8", "void cutlass::device_kernel<vllm::cutlass_3x_gemm_sm90_fp8<cutlass::float_e4m3_t, cutlass::bfloat16_t, vllm::c3x::ScaledEpilogue, cute::tuple<cute::C<64>, cute::C<128>, cute::C<128> > > >(T1::Params)", GEMM, ""),
    ("vLLM cutlass fp8 blockwise", "void cutlass::device_kernel<vllm::cutlass_3x_gemm_fp8_blockwise<cutlass::bfloat16_t, (int)1, (int)128>>(T1)", GEMM, ""),
    ("triton w8a8 block fp8", "_w8a8_triton_block_scaled_mm", GEMM, ""),
    ("Inductor template mm", "triton_tem_fused_mm_0", GEMM, ""),
    # ---- MoE
    ("fused_moe triton", "fused_moe_kernel", MOE, ""),
    ("moe_align_block_size", "void vllm::moe::moe_align_block_size_kernel<int>(int const*, int*, int*, int*, int, int, int, int, unsigned long, int*)", MOE, ""),
    ("topk_softmax", "void vllm::moe::topkGatingSoftmax<8, 256, 4, 16, 32, int, __nv_bfloat16, (vllm::moe::ScoringFunc)0>(__nv_bfloat16 const*, bool const*, float*, int, int*, int*, int, int, int)", MOE, ""),
    ("topk_softmax kernel", "topk_softmax_kernel", MOE, ""),
    ("Marlin MoE", "void marlin_moe_wna16::Marlin<1125899906909960l, 562949953487106l, 1125899906909960l, 2814749767106568l, 128, 4, 8, 4, false, 4, 2, false>(int4 const*, int4 const*, int4*, int4*, int4 const*)", MOE, ""),
    ("triton_kernels matmul_ogs (vLLM MI300 trace)", "_matmul_ogs_NNT_bf16xbf16xmxfp4_128x128x128x1_swiglu", MOE, ""),
    ("triton_kernels routing (vLLM MI300 trace)", "_combined_routing_compute", MOE, ""),
    ("triton_kernels topk (vLLM MI300 trace)", "_topk_forward", MOE, ""),
    ("triton_kernels finalize (vLLM MI300 trace)", "_finalize_matmul_scatter_bf16", MOE, ""),
    ("gluon mxfp4 moe", "gluon_mxfp4_moe_stage1_kernel", MOE, ""),
    ("moe sort", "moe_count_and_sort_expert_token_kenrel", MOE, ""),
    ("noaux_tc routing", "group_idx_and_topk_idx_kernel", MOE, ""),
    # ---- DeepEP (expert-parallel all-to-all = communication)
    ("DeepEP intranode dispatch", "void deep_ep::intranode::dispatch<8, 768, 8192>(int4*, float*, int*, long*, float*, int*, int*, int4 const*, float const*, long const*, float const*, bool const*, int const*, int, int, int, int, int, int, int, int, void**, int, int)", COMM, "alltoall"),
    ("DeepEP intranode combine", "void deep_ep::intranode::combine<__nv_bfloat16, (int)8, (int)768, (int)4096>(T1 *, float *, const T1 *, const float *)", COMM, "alltoall"),
    ("DeepEP low-latency", "void deep_ep::internode_ll::dispatch<false, 3, 7168>(void*, float*, int*, long*, void*, int*, void*, int*, void*, void const*, long const*, int*, int*, int, int, int, int, int, int, int, int)", COMM, "alltoall"),
    # ---- NCCL / RCCL
    ("NCCL AllReduce (DDP trace)", "ncclKernel_AllReduce_RING_LL_Sum_float(ncclDevComm*, unsigned long, ncclWork*)", COMM, "allreduce"),
    ("NCCL AllReduce dev", "ncclDevKernel_AllReduce_Sum_bf16_RING_LL(ncclDevKernelArgsStorage<4096ul>)", COMM, "allreduce"),
    ("NCCL AllGather", "ncclDevKernel_AllGather_RING_LL(ncclDevKernelArgsStorage<4096ul>)", COMM, "allgather"),
    ("NCCL ReduceScatter", "ncclDevKernel_ReduceScatter_Sum_bf16_RING_LL(ncclDevKernelArgsStorage<4096ul>)", COMM, "reducescatter"),
    ("NCCL SendRecv old (recsys trace)", "ncclKernel_SendRecv_RING_SIMPLE_Sum_int8_t(ncclDevComm*, unsigned long, ncclWork*)", COMM, "sendrecv"),
    ("NCCL SendRecv dev (nsys trace)", "ncclDevKernel_SendRecv(ncclDevKernelArgsStorage<(unsigned long)4096>)", COMM, "sendrecv"),
    ("NCCL Broadcast (DDP trace)", "ncclKernel_Broadcast_RING_LL_Sum_int8_t(ncclDevComm*, unsigned long, ncclWork*)", COMM, "broadcast"),
    ("NCCL Reduce", "ncclKernel_Reduce_RING_LL_Sum_float(ncclDevComm*, unsigned long, ncclWork*)", COMM, "reduce"),
    ("RCCL AllToAll", "ncclDevKernel_AllToAllPivot_RING_SIMPLE_Sum_int8_t(ncclDevKernelArgsStorage<4096ul>)", COMM, "alltoall"),
    ("RCCL Generic (no args)", "ncclDevKernel_Generic_1(ncclDevKernelArgsStorage<4096ul>)", COMM, "other"),
    # ---- custom all-reduce
    ("vLLM custom AR 1stage", "void vllm::cross_device_reduce_1stage<c10::BFloat16, 8>(vllm::RankData*, vllm::RankSignals, vllm::Signal*, c10::BFloat16*, int, int)", COMM, "allreduce"),
    ("SGLang custom AR 2stage", "void sglang::cross_device_reduce_2stage<__nv_bfloat16, 8>(sglang::RankData*, sglang::RankSignals, sglang::Signal*, __nv_bfloat16*, int, int)", COMM, "allreduce"),
    ("TRT-LLM oneshot AR", "void tensorrt_llm::kernels::oneShotAllReduceKernel<__nv_bfloat16, 8, false>(tensorrt_llm::kernels::AllReduceParams)", COMM, "allreduce"),
    ("TRT-LLM twoshot AR", "void tensorrt_llm::kernels::twoShotAllReduceKernel<__nv_bfloat16, 8, false>(tensorrt_llm::kernels::AllReduceParams)", COMM, "allreduce"),
    ("FlashInfer trtllm AR fusion", "void flashinfer::trtllm_allreduce_fusion::allreduce_fusion_kernel_oneshot_lamport<(flashinfer::trtllm_allreduce_fusion::AllReduceFusionPattern)1, __nv_bfloat16, 8, false, false>(flashinfer::trtllm_allreduce_fusion::AllReduceFusionParams<__nv_bfloat16>)", COMM, "allreduce"),
    ("torch symm-mem multimem AR", "void (anonymous namespace)::multimem_all_reduce_kernel<c10::BFloat16, 16>(c10::BFloat16*, unsigned long, unsigned int**, unsigned long, unsigned long)", COMM, "allreduce"),
    ("aiter custom reduce-scatter", "_ZN5aiter33reduce_scatter_cross_device_storeIDF16bLi8EEEvPNS_8RankDataENS_11RankSignalsEiiii", COMM, "reducescatter"),
    ("mscclpp", "void mscclpp::allreduce_allpairs<__nv_bfloat16>(__nv_bfloat16*, __nv_bfloat16*, int)", COMM, "allreduce"),
    # ---- elementwise: norm / rope / activation / quant / misc
    ("vLLM rotary (vLLM MI300 trace)", "void vllm::rotary_embedding_kernel<c10::BFloat16, true>(long const*, c10::BFloat16*, c10::BFloat16*, c10::BFloat16 const*, int, long, long, long, int, int, int)", EW, ""),
    ("FlashInfer rope", "void flashinfer::BatchQKApplyRotaryPosIdsCosSinCacheHeadParallelismKernel<true, 128u, 8u, 16u, __nv_bfloat16, long>(__nv_bfloat16*, __nv_bfloat16*, __nv_bfloat16*, __nv_bfloat16*, float*, long*, unsigned int, unsigned int, unsigned int, unsigned int, unsigned long, unsigned long, unsigned long, unsigned long, unsigned long, unsigned long, unsigned long, unsigned long)", EW, ""),
    ("vLLM rms_norm", "void vllm::rms_norm_kernel<c10::BFloat16>(c10::BFloat16*, c10::BFloat16 const*, c10::BFloat16 const*, float, int, int)", EW, ""),
    ("vLLM fused_add_rms_norm", "std::enable_if<(8>0)&&vllm::_typeConvert<c10::BFloat16>::exists, void>::type vllm::fused_add_rms_norm_kernel<c10::BFloat16, 8>(c10::BFloat16*, c10::BFloat16*, c10::BFloat16 const*, float, int, int)", EW, ""),
    ("FlashInfer fused add rmsnorm", "void flashinfer::norm::FusedAddRMSNormKernel<8u, __nv_bfloat16>(__nv_bfloat16*, __nv_bfloat16*, __nv_bfloat16*, unsigned int, unsigned int, unsigned int, float, float)", EW, ""),
    ("LayerNorm (nsys short)", "vectorized_layer_norm_kernel", EW, ""),
    ("silu_and_mul", "void vllm::act_and_mul_kernel<c10::BFloat16, &(c10::BFloat16 vllm::silu_kernel<c10::BFloat16>(c10::BFloat16 const&)), true>(c10::BFloat16*, c10::BFloat16 const*, int)", EW, ""),
    ("sgl silu_and_mul", "void flashinfer::activation::act_and_mul_kernel<__nv_bfloat16, &silu>(__nv_bfloat16*, __nv_bfloat16 const*, int)", EW, ""),
    ("gelu (nsys)", "void at::native::vectorized_elementwise_kernel<(int)8, at::native::GeluCUDAKernelImpl(at::TensorIteratorBase &, at::native::GeluType)::[lambda() (instance 1)]::operator ()() const::[lambda() (instance 4)]::operator ()() const::[lambda(c10::BFloat16) (instance 1)], std::array<char *, (unsigned long)2>>(int, T2, T3)", EW, ""),
    ("fp8 quant", "void per_token_group_quant_8bit_kernel<c10::BFloat16, c10::Float8_e4m3fn, true, true, float>(c10::BFloat16 const*, void*, float*, int, int, int, float, float, float, bool)", EW, ""),
    ("at::native add (HF trace)", "void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<c10::BFloat16>, std::array<char*, 3ul> >(int, at::native::CUDAFunctor_add<c10::BFloat16>, std::array<char*, 3ul>)", EW, ""),
    ("at::native reduce mean (HF trace)", "void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float, at::native::MeanOps<float, float, float, float>, unsigned int, float, 4> >(at::native::ReduceOp<float, at::native::MeanOps<float, float, float, float>, unsigned int, float, 4>)", EW, ""),
    ("nsys short elementwise", "vectorized_elementwise_kernel", EW, ""),
    ("Inductor pointwise (vLLM trace)", "triton_poi_fused_constant_pad_nd_moe_forward_0", EW, ""),
    ("Inductor reduction", "triton_red_fused__to_copy_add_mean_mul_pow_rsqrt_0", EW, ""),
    ("Inductor persistent reduction", "triton_per_fused__to_copy_add_mean_mul_pow_rsqrt_1", EW, ""),
    ("cudnn batchnorm (DDP trace)", "void cudnn::bn_fw_tr_1C11_kernel_NCHW<float, float, int, 128, true, 1, true>(cudnnTensorStruct, float const*, cudnnTensorStruct, float*, float const*, float const*, float, float, float*, float*, float*, float*, float, float)", EW, ""),
    ("sglang bookkeeping (SGLang trace)", "compute_position_kernel", EW, ""),
    # ---- cuDNN convolution counts as GEMM
    ("cuDNN implicit gemm (DDP trace)", "sm80_xmma_fprop_implicit_gemm_indexed_tf32f32_tf32f32_f32_nhwckrsc_nchw_tilesize128x128x16_stage4_warpsize2x2x1_g1_tensor16x8x8_execute_kernel_cudnn_infer", GEMM, ""),
    ("cuDNN scudnn (ResNet trace)", "volta_scudnn_128x64_relu_interior_nn_v1", GEMM, ""),
    # ---- sampling
    ("FlashInfer top-k top-p", "void flashinfer::sampling::TopKTopPSamplingFromProbKernel<1024u, (cub::BlockScanAlgorithm)0, (cub::BlockReduceAlgorithm)2, 4u, true, float, int>(float*, int*, float*, int*, float*, unsigned int, int*, float, unsigned int, unsigned int, unsigned long, unsigned long)", SAMP, ""),
    ("FlashInfer top-p", "void flashinfer::sampling::TopPSamplingFromProbKernel<1024u, (cub::BlockScanAlgorithm)0, (cub::BlockReduceAlgorithm)2, 4u, true, float, int>(float*, int*, int*, float*, float, unsigned int, unsigned int, unsigned long, unsigned long)", SAMP, ""),
    ("FlashInfer top-k", "void flashinfer::sampling::TopKSamplingFromProbKernel<1024u, (cub::BlockScanAlgorithm)0, (cub::BlockReduceAlgorithm)2, 4u, true, float, int>(float*, int*, int*, float*, unsigned int, unsigned int, unsigned int, unsigned long, unsigned long)", SAMP, ""),
    ("greedy argmax (SGLang trace)", "void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float, at::native::ArgMaxOps<float>, unsigned int, long, 4, 4> >(at::native::ReduceOp<float, at::native::ArgMaxOps<float>, unsigned int, long, 4, 4>)", SAMP, ""),
    ("torch multinomial", "void at::native::(anonymous namespace)::sampleMultinomialOnce<float, float>(long*, long, int, float const*, float const*, int, int, int, int)", SAMP, ""),
    # ---- CUTLASS MLA, Mamba / linear attention, LoRA, TRT-LLM MoE helpers
    ("CUTLASS MLA decode (sgl-kernel)", "void cutlass::device_kernel<cutlass::fmha::kernel::Sm100FmhaMlaKernelTmaWarpspecialized<cute::tuple<cute::C<128>, cute::C<128>, cute::tuple<cute::C<512>, cute::C<64> > >, cutlass::bfloat16_t, float, cutlass::bfloat16_t, float, cutlass::fmha::kernel::Sm100MlaPersistentTileScheduler, false> >(T1::Params)", AD, ""),
    ("GDN recurrent decode (SGLang)", "fused_sigmoid_gating_delta_rule_update_kernel", AD, ""),
    ("FLA recurrent", "fused_recurrent_gated_delta_rule_fwd_kernel", AD, ""),
    ("FLA chunked prefill", "chunk_gated_delta_rule_fwd_kernel_h_blockdim64", AP, ""),
    ("Mamba2 chunk scan", "_chunk_scan_fwd_kernel", AP, ""),
    ("Mamba2 state update", "_selective_scan_update_kernel", AD, ""),
    ("causal conv1d fwd", "void causal_conv1d_fwd_kernel<Causal_conv1d_fwd_kernel_traits<128, 4, true, true, c10::BFloat16, c10::BFloat16> >(ConvParamsBase)", AP, ""),
    ("causal conv1d update (vLLM triton)", "_causal_conv1d_update_kernel", AD, ""),
    ("Punica SGMV", "_sgmv_expand_kernel", GEMM, ""),
    ("Punica BGMV", "_bgmv_shrink_kernel", GEMM, ""),
    ("TRT-LLM MoE activation", "void tensorrt_llm::kernels::cutlass_kernels::doActivationKernel<__nv_bfloat16, __nv_bfloat16, tensorrt_llm::kernels::cutlass_kernels::GLUAdaptor<cutlass::epilogue::thread::SiLu>, (tensorrt_llm::TmaWarpSpecializedGroupedGemmInput::EpilogueFusion)0>(__nv_bfloat16*, __nv_bfloat16 const*, long const*, __nv_bfloat16 const*, bool, long const*, int, long, float const*, bool, tensorrt_llm::kernels::cutlass_kernels::ActivationParams, int)", MOE, ""),
    # ---- unknown
    ("unknown", "my_custom_kernel_xyz", "other", ""),
]
# fmt: on


@pytest.fixture(scope="module")
def rules() -> RuleSet:
    return load_rules()


@pytest.mark.parametrize(
    ("family", "name", "category", "collective"), CASES, ids=[c[0] for c in CASES]
)
def test_family(rules: RuleSet, family: str, name: str, category: str, collective: str) -> None:
    assert rules.classify(name) == (category, collective), describe_rule(name, rules)


def test_classify_names_arrays(rules: RuleSet) -> None:
    names = [c[1] for c in CASES]
    cats, colls = classify_names(names, rules)
    assert cats.shape == colls.shape == (len(CASES),)
    assert list(cats) == [c[2] for c in CASES]
    assert list(colls) == [c[3] for c in CASES]


def test_classify_names_kinds_and_args(rules: RuleSet) -> None:
    names = [
        "Memcpy HtoD (Pinned -> Device)",
        "Memset (Device)",
        "ncclDevKernel_Generic_1(ncclDevKernelArgsStorage<4096ul>)",
        "ncclDevKernel_Generic_1(ncclDevKernelArgsStorage<4096ul>)",
        "ncclKernel_SendRecv_RING_SIMPLE_Sum_int8_t(ncclDevComm*, unsigned long, ncclWork*)",
        "some_new_comm_kernel",
        "record_param_comms",
        "aten::mm",
        "fused_moe_kernel",
    ]
    kinds = [
        "memcpy",
        "memset",
        "kernel",
        "kernel",
        "kernel",
        "kernel",
        "cpu_op",
        "cpu_op",
        "kernel",
    ]
    args = [
        "",
        "",
        "_allgather_base",
        "reduce_scatter_tensor_coalesced",
        "all_to_allv",
        "allreduce",
        "broadcast",
        "",
        "",
    ]
    cats, colls = classify_names(names, rules, kinds=kinds, collective_args=args)
    assert list(cats) == ["memcpy", "memset", COMM, COMM, COMM, COMM, "other", "other", MOE]
    assert list(colls) == [
        "",
        "",
        "allgather",
        "reducescatter",
        "alltoall",
        "allreduce",
        "broadcast",
        "",
        "",
    ]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("allreduce", "allreduce"),
        ("all_reduce", "allreduce"),
        ("allreduce_coalesced", "allreduce"),
        ("_allgather_base", "allgather"),
        ("all_gather_into_tensor_coalesced", "allgather"),
        ("allgather_into_tensor_coalesced", "allgather"),
        ("reduce_scatter_tensor_coalesced", "reducescatter"),
        ("_reduce_scatter_base", "reducescatter"),
        ("all_to_allv", "alltoall"),
        ("all_to_all", "alltoall"),
        ("alltoall_base", "alltoall"),
        ("send", "sendrecv"),
        ("recv", "sendrecv"),
        ("batch_isend_irecv", "sendrecv"),
        ("broadcast", "broadcast"),
        ("reduce", "reduce"),
        ("barrier", "barrier"),
        ("gather", "other"),
        ("scatter", "other"),
        ("", ""),
    ],
)
def test_normalize_collective(rules: RuleSet, raw: str, expected: str) -> None:
    assert rules.normalize_collective(raw) == expected


# --------------------------------------------------------------------------------------
# Rule files: precedence, user rules, bad files, vocabulary
# --------------------------------------------------------------------------------------


def _write(tmp_path: Path, text: str, name: str = "user.toml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_user_rules_override_builtins(tmp_path: Path) -> None:
    user = _write(
        tmp_path,
        """
[[rule]]
match = "regex"
pattern = "^fused_moe_kernel$"
category = "gemm"
note = "mine"

[[rule]]
match = "prefix"
pattern = "my_"
category = "sampling"

[[rule]]
match = "contains"
pattern = "ALLREDUCE"
ignore_case = true
category = "communication"
collective = "allreduce"
""",
    )
    rs = load_rules([user])
    assert rs.classify("fused_moe_kernel") == ("gemm", "")  # user regex beats built-in contains
    assert rs.classify("my_custom_kernel_xyz") == ("sampling", "")
    assert rs.classify("oneShotAllReduceKernel") == (COMM, "allreduce")
    assert rs.classify("my_allreduce_thing") == ("sampling", "")  # first rule of the layer wins
    assert rs.classify("fused_moe_kernel_v2") == (MOE, "")  # user regex does not match: built-in
    assert rs.match("fused_moe_kernel").note == "mine"
    assert "user.toml" in describe_rule("fused_moe_kernel", rs)
    # the built-in set is unchanged
    assert load_rules().classify("fused_moe_kernel") == (MOE, "")


def test_later_user_file_wins_and_user_exact_beats_builtin(tmp_path: Path) -> None:
    a = _write(tmp_path, '[[rule]]\nmatch = "exact"\npattern = "k1"\ncategory = "gemm"\n', "a.toml")
    b = _write(
        tmp_path, '[[rule]]\nmatch = "contains"\npattern = "k"\ncategory = "kv_cache"\n', "b.toml"
    )
    assert load_rules([a]).classify("k1") == ("gemm", "")
    assert load_rules([a, b]).classify("k1") == ("kv_cache", "")
    assert load_rules([b, a]).classify("k1") == ("gemm", "")
    c = _write(
        tmp_path,
        '[[rule]]\nmatch = "exact"\npattern = "_fwd_kernel_stage1"\ncategory = "attention_prefill"\n',
        "c.toml",
    )
    assert load_rules([c]).classify("_fwd_kernel_stage1") == (AP, "")


def test_exact_before_patterns_within_a_layer(tmp_path: Path) -> None:
    p = _write(
        tmp_path,
        '[[rule]]\nmatch = "contains"\npattern = "zz"\ncategory = "gemm"\n\n'
        '[[rule]]\nmatch = "exact"\npattern = "zz_exact"\ncategory = "sampling"\n',
    )
    rs = load_rules([p])
    assert rs.classify("zz_exact") == ("sampling", "")
    assert rs.classify("zz_other") == ("gemm", "")


def test_fallback_rules_lose_to_any_ordinary_rule(tmp_path: Path) -> None:
    p = _write(
        tmp_path,
        '[[rule]]\nmatch = "contains"\npattern = "fused_moe"\ncategory = "gemm"\nfallback = true\n\n'
        '[[rule]]\nmatch = "contains"\npattern = "qqq"\ncategory = "sampling"\nfallback = true\n',
    )
    rs = load_rules([p])
    assert rs.classify("fused_moe_kernel") == (MOE, "")  # built-in ordinary rule wins
    assert rs.classify("qqq") == ("sampling", "")


def test_user_collective_alias(tmp_path: Path) -> None:
    p = _write(
        tmp_path,
        '[[collective_alias]]\nmatch = "exact"\nkey = "gather"\ncollective = "allgather"\n',
    )
    assert load_rules([p]).normalize_collective("gather") == "allgather"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[[rule]\nmatch = 1", "TOML error"),
        ('[[rule]]\npattern = "x"\ncategory = "attention"\n', "unknown category"),
        ('[[rule]]\nmatch = "regex"\npattern = "foo("\ncategory = "gemm"\n', "bad regex"),
        ('[[rule]]\nmatch = "glob"\npattern = "x"\ncategory = "gemm"\n', "match="),
        (
            '[[rule]]\npattern = "x"\ncategory = "communication"\ncollective = "allreduse"\n',
            "unknown collective",
        ),
        (
            '[[rule]]\npattern = "x"\ncategory = "gemm"\ncollective = "allreduce"\n',
            "sets a collective",
        ),
        ('[[rule]]\npattern = "x"\ncategory = "gemm"\ncolour = "red"\n', "unknown key"),
        ('[[rule]]\ncategory = "gemm"\n', "needs pattern"),
        ('[[rule]]\npattern = ""\ncategory = "gemm"\n', "empty"),
        ('[[rules]]\npattern = "x"\ncategory = "gemm"\n', "top-level"),
        ('[[rule]]\npattern = "x"\ncategory = "gemm"\nignore_case = "yes"\n', "true or false"),
        ('[[collective_alias]]\nkey = "x"\ncollective = "nope"\n', "unknown collective"),
    ],
)
def test_bad_rule_files(tmp_path: Path, text: str, needle: str) -> None:
    p = _write(tmp_path, text)
    with pytest.raises(BadInputError) as ei:
        load_rules([p])
    msg = str(ei.value)
    assert needle in msg and "\n" not in msg and str(p) in msg


def test_missing_rule_file(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="cannot read rule file"):
        load_rules([tmp_path / "absent.toml"])


def test_builtin_vocabulary_is_the_models() -> None:
    """Every category / collective in the built-in TOML files (read independently) is valid."""
    files = builtin_rule_files()
    assert len(files) >= 5
    seen_cats: set[str] = set()
    for source, text in files:
        doc = tomllib.loads(text)
        for rule in doc.get("rule", []):
            assert rule["category"] in CATEGORIES, (source, rule)
            seen_cats.add(rule["category"])
            if "collective" in rule:
                assert rule["collective"] in COLLECTIVES, (source, rule)
        for alias in doc.get("collective_alias", []):
            assert alias["collective"] in COLLECTIVES
    # every name-derived category has at least one rule (memcpy/memset come from the kind)
    assert set(CATEGORIES) - seen_cats <= {"memcpy", "memset", "other"}


@pytest.mark.parametrize(
    ("pattern", "hint"),
    [
        ("nccl(?:Dev)?Kernel_AllReduce", "kernel_allreduce"),
        ("^_fwd_kernel_stage[12]", "_fwd_kernel_stage"),
        ("(?:^|::|\\d)mori(?:::|\\d)", "mori"),
        ("rms_?norm", "norm"),
        ("a|b", ""),
        ("abc?", "ab"),
        ("ab+c", "ab"),
        ("x{2}yz", "yz"),
        ("[abc]def", "def"),
        ("(?x) a b c", ""),
        ("\\(foo", "foo"),
    ],
)
def test_required_literal(pattern: str, hint: str) -> None:
    assert required_literal(pattern) == hint


def test_required_literal_is_necessary(rules: RuleSet) -> None:
    """For every built-in regex and every case name: a match implies the hint is present."""
    names = [c[1] for c in CASES] + ["ncclDevKernel_Reduce(", "Moe_", "x_moe"]
    n_regex = 0
    for r in rules.rules:
        if r.match != "regex":
            continue
        n_regex += 1
        rx = re.compile(r.pattern, re.IGNORECASE if r.ignore_case else 0)
        hint = required_literal(r.pattern)
        for name in names:
            if rx.search(name):
                assert hint in name.lower(), (r.pattern, hint, name)
    assert n_regex > 20


def test_user_regex_with_groups_still_matches_in_order(tmp_path: Path) -> None:
    p = _write(
        tmp_path,
        '[[rule]]\nmatch = "regex"\npattern = "(ab)+c"\ncategory = "gemm"\n\n'
        '[[rule]]\nmatch = "regex"\npattern = "(?P<x>ab)"\ncategory = "sampling"\n',
    )
    rs = load_rules([p])
    assert rs.classify("zzababc") == ("gemm", "")
    assert rs.classify("zzab") == ("sampling", "")


# --------------------------------------------------------------------------------------
# classify_trace on an event table
# --------------------------------------------------------------------------------------


def _events(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    """A tiny event table with the model's columns: rows of (kind, name, collective arg)."""
    n = len(rows)
    data = {
        "ts_ns": np.arange(n, dtype=np.int64) * 1000,
        "dur_ns": np.full(n, 500, dtype=np.int64),
        "kind": pd.Categorical([r[0] for r in rows], categories=KINDS),
        "name": pd.Categorical([r[1] for r in rows]),
        "pid": np.zeros(n, dtype=np.int64),
        "tid": np.zeros(n, dtype=np.int64),
        "device": np.zeros(n, dtype=np.int32),
        "stream": np.full(n, 7, dtype=np.int32),
        "correlation": np.arange(n, dtype=np.int64),
        "external_id": np.full(n, -1, dtype=np.int64),
        "collective": pd.Categorical([r[2] for r in rows]),
        "msg_bytes": np.full(n, -1, dtype=np.int64),
        "pg_name": pd.Categorical([""] * n),
        "pg_size": np.full(n, -1, dtype=np.int32),
        "seq": np.full(n, -1, dtype=np.int64),
    }
    df = pd.DataFrame(data)
    assert list(df.columns) == list(EVENT_COLUMNS)
    return df


TRACE_ROWS = [
    ("kernel", "ncclDevKernel_Generic_1(ncclDevKernelArgsStorage<4096ul>)", "_allgather_base"),
    ("kernel", "fused_moe_kernel", ""),
    ("kernel", "ncclDevKernel_Generic_1(ncclDevKernelArgsStorage<4096ul>)", "allreduce"),
    ("memcpy", "Memcpy DtoD (Device -> Device)", ""),
    ("memset", "Memset (Device)", ""),
    ("kernel", "fused_moe_kernel", ""),
    ("cpu_op", "fused_moe_kernel", ""),  # host row with a kernel-like name: other
    ("cpu_op", "record_param_comms", "all_to_allv"),
    (
        "kernel",
        "ncclKernel_AllReduce_RING_LL_Sum_float(ncclDevComm*, unsigned long, ncclWork*)",
        "",
    ),
    ("cuda_runtime", "cudaLaunchKernel", ""),
    ("kernel", "_fwd_kernel", ""),
    ("kernel", "unknown_kernel_abc", ""),
    ("kernel", "unknown_kernel_abc", "reduce_scatter_tensor_coalesced"),
]
TRACE_EXPECTED = [
    (COMM, "allgather"),
    (MOE, ""),
    (COMM, "allreduce"),
    ("memcpy", ""),
    ("memset", ""),
    (MOE, ""),
    ("other", ""),
    ("other", "alltoall"),
    (COMM, "allreduce"),
    ("other", ""),
    (AP, ""),
    ("other", ""),
    (COMM, "reducescatter"),
]


def test_classify_trace_columns_and_values() -> None:
    trace = Trace(rank=RankInfo(rank=0), events=_events(TRACE_ROWS), sources=())
    before = trace.events.copy()
    assert classify_trace(trace) is None
    ev = trace.events
    assert isinstance(ev["category"].dtype, pd.CategoricalDtype)
    assert tuple(ev["category"].cat.categories) == CATEGORIES
    assert isinstance(ev["collective"].dtype, pd.CategoricalDtype)
    assert tuple(ev["collective"].cat.categories) == COLLECTIVE_VALUES
    got = list(zip(ev["category"].astype(str), ev["collective"].astype(str)))
    assert got == TRACE_EXPECTED
    # the other columns are untouched
    for col in EVENT_COLUMNS:
        if col != "collective":
            pd.testing.assert_series_equal(ev[col], before[col])


def test_classify_events_returns_new_frame() -> None:
    df = _events(TRACE_ROWS)
    out = classify_events(df)
    assert "category" not in df.columns and "category" in out.columns
    assert len(out) == len(df)


def test_classify_trace_empty_and_missing_names() -> None:
    df = _events(TRACE_ROWS[:0])
    out = classify_events(df)
    assert len(out) == 0 and tuple(out["category"].cat.categories) == CATEGORIES
    df = _events(TRACE_ROWS[:2])
    df["name"] = df["name"].cat.add_categories(["x"])
    df.loc[1, "name"] = np.nan  # a kernel without a name: other
    out = classify_events(df)
    assert list(out["category"].astype(str)) == [COMM, "other"]


def test_unique_names_classified_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine runs once per unique name, however many events carry it."""
    calls: Counter[str] = Counter()
    real_match = RuleSet.match

    def counting(self: RuleSet, name: str):  # type: ignore[no-untyped-def]
        calls[name] += 1
        return real_match(self, name)

    monkeypatch.setattr(RuleSet, "match", counting)
    rows = TRACE_ROWS * 500
    rs = load_rules()  # fresh: no memo from other tests
    trace = Trace(rank=RankInfo(rank=0), events=_events(rows), sources=())
    classify_trace(trace, rs)
    # only names that appear on kernel rows go through the rules (host names never do)
    unique_kernel_names = {r[1] for r in TRACE_ROWS if r[0] == "kernel"}
    assert set(calls) == unique_kernel_names
    assert all(v == 1 for v in calls.values()), calls
    assert len(trace.events) == len(rows)
    # classify_names is also once per unique name
    calls.clear()
    rs2 = load_rules()
    classify_names([r[1] for r in rows], rs2)
    assert all(v == 1 for v in calls.values()) and set(calls) == {r[1] for r in TRACE_ROWS}


def test_classify_large_table_is_fast() -> None:
    import time

    names = [c[1] for c in CASES]
    rng = np.random.default_rng(0)
    n = 200_000
    df = _events([("kernel", names[0], "")])
    df = df.iloc[np.zeros(n, dtype=np.int64)].reset_index(drop=True)
    df["name"] = pd.Categorical.from_codes(rng.integers(0, len(names), n), categories=names)
    t0 = time.perf_counter()
    out = classify_events(df, load_rules())
    assert time.perf_counter() - t0 < 5.0
    expected = {c[1]: c[2] for c in CASES}
    sample = out.sample(200, random_state=1)
    for name, cat in zip(sample["name"].astype(str), sample["category"].astype(str)):
        assert cat == expected[name]


# --------------------------------------------------------------------------------------
# Real traces (../shared/traces): no "other" for the families known to be in them
# --------------------------------------------------------------------------------------


def _kineto_gpu(path: Path) -> dict[tuple[str, str], float]:
    """(kernel name, raw collective arg) -> total dur (us) of kernel events, read plainly."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        doc = json.load(f)
    out: dict[tuple[str, str], float] = {}
    for e in doc["traceEvents"] if isinstance(doc, dict) else doc:
        if str(e.get("cat", "")).lower() == "kernel" and e.get("ph") == "X":
            key = (e["name"], str((e.get("args") or {}).get("Collective name", "")))
            out[key] = out.get(key, 0.0) + float(e.get("dur", 0))
    return out


# trace -> (regex on the kernel name, expected category, expected collective or None)
EXPECTED_IN_TRACE: dict[str, list[tuple[str, str, str | None]]] = {
    "kineto/sglang_qwen3-8b_mi300x_prefill_decode.json.gz": [
        (r"FmhaBatchPrefill", AP, ""),
        (r"^Cijk_", GEMM, ""),
        (r"store_kvcache", KV, ""),
        (r"create_flashinfer_kv_indices", KV, ""),
        (r"rmsnorm", EW, ""),
        (r"rotary_embedding", EW, ""),
        (r"act_and_mul", EW, ""),
        (r"ArgMaxOps", SAMP, ""),
    ],
    "kineto/vllm_gptoss_mi300_prefill_decode_piecewise.json.gz": [
        (r"^kernel_unified_attention_2d$", AP, ""),
        (r"reshape_and_cache_flash_kernel", KV, ""),
        (r"^_matmul_ogs_", MOE, ""),
        (r"^_combined_routing", MOE, ""),
        (r"^_topk_forward$", MOE, ""),
        (r"^Cijk_", GEMM, ""),
        (r"Rmsnorm2dFwd", EW, ""),
        (r"^triton_poi_", EW, ""),
    ],
    "kineto/hf_qwen1.5-0.5b_h100_generate.json.gz": [
        (r"pytorch_flash::flash_fwd_kernel", AP, ""),
        (r"^sm90_xmma_gemm", GEMM, ""),
        (r"cutlass_80_simt_sgemm", GEMM, ""),
        (r"at::native::", EW, ""),
    ],
    "kineto/hta_ddp_a100_nccl_allreduce_rank0.json.gz": [
        (r"^ncclKernel_AllReduce", COMM, "allreduce"),
        (r"^ncclKernel_Broadcast", COMM, "broadcast"),
        (r"cutlass_80_tensorop", GEMM, ""),
    ],
    "kineto/hta_recsys_2ranks/sampled_rank-0.json.gz": [
        (r"^ncclKernel_SendRecv", COMM, "sendrecv")
    ],
    "kineto/hta_recsys_2ranks/sampled_rank-1.json.gz": [
        (r"^ncclKernel_SendRecv", COMM, "sendrecv")
    ],
    "kineto/hta_rocm_mi250_toy.json.gz": [(r"^Cijk_", GEMM, "")],
    "kineto/kineto2021_resnet50_v100.pt.trace.json.gz": [(r"^volta_sgemm", GEMM, "")],
}


def test_expected_shared_traces_listed(shared_traces: Path) -> None:
    present = {str(p.relative_to(shared_traces)) for p in shared_traces.glob("kineto/**/*.json.gz")}
    assert set(EXPECTED_IN_TRACE) <= present


@pytest.mark.parametrize("rel", sorted(EXPECTED_IN_TRACE))
def test_shared_kineto_trace_families(shared_traces: Path, rules: RuleSet, rel: str) -> None:
    path = shared_traces / rel
    if not path.exists():
        pytest.skip(f"{rel} absent")
    acts = _kineto_gpu(path)
    keys = list(acts)
    cats, colls = classify_names(
        [k[0] for k in keys],
        rules,
        kinds=["kernel"] * len(keys),
        collective_args=[k[1] for k in keys],
    )
    for pattern, cat, coll in EXPECTED_IN_TRACE[rel]:
        hits = [(k[0], c, cl) for k, c, cl in zip(keys, cats, colls) if re.search(pattern, k[0])]
        assert hits, f"{rel}: no kernel matches {pattern!r}"
        for name, c, cl in hits:
            assert c == cat, f"{rel}: {name[:100]} -> {c}, expected {cat}"
            if coll is not None:
                assert cl == coll, f"{rel}: {name[:100]} -> collective {cl}, expected {coll}"
    # the collective args of the trace agree with the names (allreduce kernels carry "allreduce")
    for (name, raw), c, cl in zip(keys, cats, colls):
        if raw:
            assert c == COMM and cl == re.sub(r"[^a-z]", "", raw.lower()), (name, raw, cl)
    # less than 1% of kernel time is left as "other"
    total = sum(acts.values())
    other = sum(v for k, v, c in zip(keys, acts.values(), cats) if c == "other")
    assert other <= 0.01 * total, f"{rel}: {100 * other / total:.2f}% of kernel time is 'other'"


def test_shared_nsys_trace(shared_traces: Path, rules: RuleSet) -> None:
    path = shared_traces / "nsys" / "nsys2026_torchrun_2gpu_flash_nccl.sqlite"
    if not path.exists():
        pytest.skip("nsys trace absent")
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        short = [
            r[0]
            for r in con.execute(
                "SELECT DISTINCT s.value FROM CUPTI_ACTIVITY_KIND_KERNEL k JOIN StringIds s ON s.id = k.shortName"
            )
        ]
        demangled = [
            r[0]
            for r in con.execute(
                "SELECT DISTINCT s.value FROM CUPTI_ACTIVITY_KIND_KERNEL k JOIN StringIds s ON s.id = k.demangledName"
            )
        ]
    finally:
        con.close()
    for names in (short, demangled):
        cats, colls = classify_names(names, rules)
        got = dict(zip(names, zip(cats, colls)))
        assert "other" not in set(cats), [n for n, c in zip(names, cats) if c == "other"]
        for n, (c, cl) in got.items():
            if "flash_fwd_kernel" in n:
                assert c == AP
            if n.startswith("nvjet_"):
                assert c == GEMM
            if "ncclDevKernel_SendRecv" in n:
                assert (c, cl) == (COMM, "sendrecv")


def test_coverage_tool_runs(shared_traces: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from analyzer.classify.__main__ import main

    path = shared_traces / "kineto" / "hta_rocm_mi250_toy.json.gz"
    if not path.exists():
        pytest.skip("trace absent")
    assert main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "other: 0.00% of GPU time" in out and "gemm=" in out


def test_docs_cover_vocabulary_and_format(repo_root: Path) -> None:
    """docs/taxonomy.md names every category, collective, rule field, match type and file."""
    from analyzer.classify.engine import ALIAS_KEYS, MATCH_TYPES, RULE_KEYS

    doc = (repo_root / "docs" / "taxonomy.md").read_text(encoding="utf-8")
    words = (
        [f"`{c}`" for c in CATEGORIES + COLLECTIVES]
        + [f"`{k}`" for k in sorted(RULE_KEYS | ALIAS_KEYS)]
        + [f"`{m}`" for m in MATCH_TYPES]
        + [f"`{src.split(':', 1)[1]}`" for src, _ in builtin_rule_files()]
        + ["--rules", "python -m analyzer.classify", "BadInputError", "fallback = true"]
    )
    missing = [w for w in words if w not in doc]
    assert not missing, missing


def test_collective_column_with_missing_values() -> None:
    """A collective Categorical without "" and with NaN: missing reads as no arg."""
    df = _events(
        [
            ("kernel", "ncclDevKernel_Generic_1(ncclDevKernelArgsStorage<4096ul>)", "allreduce"),
            ("kernel", "ncclDevKernel_Generic_1(ncclDevKernelArgsStorage<4096ul>)", "allreduce"),
            ("kernel", "fused_moe_kernel", "allreduce"),
        ]
    )
    df["collective"] = pd.Categorical(["allreduce", None, None], categories=["allreduce"])
    out = classify_events(df)
    got = list(zip(out["category"].astype(str), out["collective"].astype(str)))
    assert got == [(COMM, "allreduce"), (COMM, "other"), (MOE, "")]
    # a plain string column works too
    df["collective"] = pd.Series(["allreduce", "", ""], dtype="str")
    out = classify_events(df)
    assert list(out["collective"].astype(str)) == ["allreduce", "other", ""]
