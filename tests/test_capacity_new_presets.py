"""Presets of issue 17 (H800, gpt-oss, Qwen3 dense, Qwen3-Next, DeepSeek-V3.2) and the KV math
where they differ, checked against hand formulas on the Hugging Face config values read
from the preset files themselves (not from the planner's parsed model)."""

from __future__ import annotations

import math
import sys
from importlib import resources

import pytest

from analyzer.capacity import Parallelism, Workload, load_gpu, load_model, plan
from analyzer.capacity.kv import (
    kv_bytes_per_sequence_per_gpu,
    kv_bytes_per_token,
    sglang_cell_size,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def raw(name: str) -> dict:
    text = resources.files("analyzer.capacity").joinpath(f"presets/models/{name}.toml").read_text()
    return tomllib.loads(text)


def test_every_new_preset_cites_its_hugging_face_config() -> None:
    for name, repo in (("gpt-oss-20b", "openai/gpt-oss-20b"), ("gpt-oss-120b", "openai/gpt-oss-120b"),
                       ("qwen3-8b", "Qwen/Qwen3-8B"), ("qwen3-32b", "Qwen/Qwen3-32B"),
                       ("qwen3-next-80b-a3b", "Qwen/Qwen3-Next-80B-A3B-Instruct"),
                       ("deepseek-v3.2", "deepseek-ai/DeepSeek-V3.2-Exp")):
        assert raw(name)["source"] == f"https://huggingface.co/{repo}/blob/main/config.json"
        assert load_model(repo.lower()).name == name  # the HF repo id is an alias


def test_h800_is_an_h100_with_a_narrower_nvlink() -> None:
    h800, h100 = load_gpu("h800"), load_gpu("h100")
    for field in ("memory_gb", "hbm_gbps", "bf16_tflops", "fp8_tflops", "network_gbps"):
        assert getattr(h800, field) == getattr(h100, field), field
    assert h800.nvlink_gbps == 400 < h100.nvlink_gbps


@pytest.mark.parametrize("name", ["qwen3-8b", "qwen3-32b"])
def test_qwen3_dense_kv_by_hand(name: str) -> None:
    c = raw(name)["config"]
    m = load_model(name)
    assert m.attention_label == "GQA"
    per_token = c["num_hidden_layers"] * 2 * c["num_key_value_heads"] * c["head_dim"] * 2  # K+V, bf16
    assert kv_bytes_per_token(m) == per_token
    S, tp = 40_000, 8
    assert kv_bytes_per_sequence_per_gpu(m, Parallelism(tp=tp), S) == per_token // tp * S


@pytest.mark.parametrize("name", ["gpt-oss-20b", "gpt-oss-120b"])
def test_gpt_oss_only_full_attention_layers_grow_with_context(name: str) -> None:
    c = raw(name)["config"]
    m = load_model(name)
    full = sum(1 for t in c["layer_types"] if t == "full_attention")
    sliding = sum(1 for t in c["layer_types"] if t == "sliding_attention")
    assert full + sliding == c["num_hidden_layers"] and full == c["num_hidden_layers"] // 2
    S, tp = 40_000, 8
    heads_gpu = max(1, c["num_key_value_heads"] // tp)
    per_layer_token = heads_gpu * 2 * c["head_dim"] * 2
    want = per_layer_token * (full * S + sliding * min(S, c["sliding_window"]))
    assert kv_bytes_per_sequence_per_gpu(m, Parallelism(tp=tp), S) == want


def test_gpt_oss_120b_weights_with_mxfp4_experts_by_hand() -> None:
    c = raw("gpt-oss-120b")["config"]
    H, L, E, V = c["hidden_size"], c["num_hidden_layers"], c["num_local_experts"], c["vocab_size"]
    heads, kv, d = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
    experts = L * E * 3 * H * c["intermediate_size"]
    attention = L * (2 * H * heads * d + 2 * H * kv * d)
    rest = 2 * V * H + (2 * H * L + H) + attention + L * H * E  # embeddings, norms, attention, router
    tp = 8
    want = (experts * 4.25 / 8 + rest * 2) / tp  # MXFP4 experts (4.25 bits), the rest BF16
    p = plan(load_model("gpt-oss-120b"), load_gpu("h100"), Parallelism(tp=tp), Workload(context_tokens=8192))
    assert p.weights_bytes_per_gpu == pytest.approx(want, rel=1e-9)
    assert 60e9 < want * tp < 70e9  # the released checkpoint is about 65 GB


def qwen3_next_state_bytes(c: dict, tp: int) -> int:
    """SGLang's mamba state of one request in one layer (Mamba2StateShape.create for
    Qwen3NextConfig.mamba2_cache_params): conv (conv_dim / tp, kernel - 1) in bf16 and
    temporal (v_heads / tp, v_dim, k_dim) in float32."""
    conv_dim = c["linear_num_value_heads"] * c["linear_value_head_dim"] + \
        2 * c["linear_num_key_heads"] * c["linear_key_head_dim"]
    conv = conv_dim // tp * (c["linear_conv_kernel_dim"] - 1) * 2
    temporal = c["linear_num_value_heads"] // tp * c["linear_value_head_dim"] * c["linear_key_head_dim"] * 4
    return conv + temporal


def test_qwen3_next_only_full_attention_layers_hold_kv() -> None:
    c = raw("qwen3-next-80b-a3b")["config"]
    m = load_model("qwen3-next-80b-a3b")
    L, every = c["num_hidden_layers"], c["full_attention_interval"]
    full = [i for i in range(L) if (i + 1) % every == 0]
    assert full == list(range(3, 48, 4)) and len(full) == 12
    assert tuple(sorted(set(range(L)) - set(full))) == m.linear_attention_layer_ids
    per_layer = 2 * c["num_key_value_heads"] * c["head_dim"] * 2
    assert kv_bytes_per_token(m) == len(full) * per_layer == 24_576
    S, tp = 40_000, 4
    heads_gpu = max(1, c["num_key_value_heads"] // tp)
    want = len(full) * S * heads_gpu * 2 * c["head_dim"] * 2 + (L - len(full)) * qwen3_next_state_bytes(c, tp)
    assert kv_bytes_per_sequence_per_gpu(m, Parallelism(tp=tp), S) == want
    # SGLang's full-attention pool holds the 12 layers only
    assert sglang_cell_size(m, Parallelism(tp=tp)) == heads_gpu * 2 * c["head_dim"] * len(full) * 2
    # the state does not grow with the context: a short sequence still carries it
    short = kv_bytes_per_sequence_per_gpu(m, Parallelism(tp=tp), 1)
    assert short == len(full) * heads_gpu * 2 * c["head_dim"] * 2 + 36 * qwen3_next_state_bytes(c, tp)


def test_deepseek_v32_mla_latent_plus_indexer_cache() -> None:
    c = raw("deepseek-v3.2")["config"]
    m = load_model("deepseek-v3.2")
    assert m.attention_label == "MLA" and m.sparse_topk == c["index_topk"] == 2048
    indexer = c["index_head_dim"] + c["index_head_dim"] // 128 * 4  # FP8 key + FP32 scale
    latent = (c["kv_lora_rank"] + c["qk_rope_head_dim"]) * 2
    assert kv_bytes_per_token(m) == c["num_hidden_layers"] * (latent + indexer) == 61 * (1152 + 132)
    assert kv_bytes_per_token(m, "fp8") == 61 * (576 + 132)
    v3 = load_model("deepseek-v3")
    assert kv_bytes_per_token(v3) == 61 * 1152  # V3 has no indexer
    S = 40_000
    assert kv_bytes_per_sequence_per_gpu(m, Parallelism(tp=8), S) == 61 * S * (latent + indexer)
    # decode reads the indexer keys of every token but the latents of the top-k only
    p = plan(m, load_gpu("h200"), Parallelism(tp=8), Workload(context_tokens=S, output_tokens=512))
    ctx = S + 512 // 2
    assert p.decode.kv_bytes_per_sequence == pytest.approx(61 * (latent * 2048 + indexer * ctx))
    assert math.isclose(p.decode.attn_flops_per_token,
                        2 * c["num_attention_heads"] * (2 * c["kv_lora_rank"] + c["qk_rope_head_dim"])
                        * 61 * 2048 / 8)
