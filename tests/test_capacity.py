"""Capacity planner, KV memory: hand-computed bytes, the design-notes example, SGLang/vLLM.

Every expected number is written as the arithmetic that produces it (config values from the
Hugging Face config.json of each model), never copied from the planner's output.
"""

from __future__ import annotations

import json
import math

import pytest

from analyzer.capacity import (
    MemoryBudget,
    Parallelism,
    Workload,
    kv_bytes_per_sequence_per_gpu,
    kv_bytes_per_token,
    kv_bytes_per_token_per_layer,
    kv_bytes_per_token_per_layer_per_gpu,
    kv_heads_per_gpu,
    list_presets,
    load_gpu,
    load_model,
    max_concurrency_memory,
    model_from_dims,
    model_from_hf_config,
    plan,
    sglang_cell_size,
    sglang_max_total_num_tokens,
    simple_form_bound,
    simple_form_check,
    vllm_max_concurrency,
    vllm_num_gpu_blocks,
    vllm_page_size_bytes,
)
from analyzer.model import BadInputError

GB = 1e9

# ---------------------------------------------------------------------------------------
# Per-token KV bytes (all layers, bf16): the three values of the issue
# ---------------------------------------------------------------------------------------


def test_llama_3_1_70b_kv_per_token() -> None:
    # 2 (K,V) x 8 KV heads x 128 head_dim x 2 bytes x 80 layers
    assert kv_bytes_per_token(load_model("llama-3.1-70b")) == 2 * 8 * 128 * 2 * 80 == 327_680


def test_qwen3_235b_kv_per_token_uses_explicit_head_dim() -> None:
    m = load_model("qwen3-235b-a22b")
    # head_dim 128 from the config, although hidden / heads = 4096 / 64 = 64
    assert m.head_dim == 128 and m.hidden_size // m.num_heads == 64
    assert kv_bytes_per_token(m) == 2 * 4 * 128 * 2 * 94 == 192_512


def test_deepseek_v3_mla_kv_per_token() -> None:
    m = load_model("deepseek-v3")
    assert m.attention == "mla"
    # (kv_lora_rank 512 + qk_rope_head_dim 64) x 2 bytes x 61 layers
    assert kv_bytes_per_token(m) == (512 + 64) * 2 * 61 == 70_272
    assert kv_bytes_per_token_per_layer(m) == 576 * 2


def test_fp8_kv_halves_bytes() -> None:
    m = load_model("llama-3.1-70b")
    assert kv_bytes_per_token(m, "fp8") == 2 * 8 * 128 * 1 * 80


def test_all_other_presets_kv_per_token() -> None:
    expected = {
        "llama-3.1-8b": 2 * 8 * 128 * 2 * 32,
        "llama-3.1-405b": 2 * 8 * 128 * 2 * 126,
        "qwen2.5-72b": 2 * 8 * 128 * 2 * 80,
        "mixtral-8x7b": 2 * 8 * 128 * 2 * 32,
    }
    for name, value in expected.items():
        assert kv_bytes_per_token(load_model(name)) == value, name


# ---------------------------------------------------------------------------------------
# The design-notes example, as a special case
# ---------------------------------------------------------------------------------------


def test_design_notes_simple_form_numbers() -> None:
    # S=40,000, L=80, H=16,384, r=1/8, b=2, PP=8; ~40 GB of an 80 GB H100 free for KV
    b = simple_form_bound(40_000, 80, 16_384, 1 / 8, 2, 8, 40 * GB)
    assert b.kv_bytes_per_token_per_layer == 2 * 16_384 / 8 * 2 == 8_192
    assert b.kv_bytes_per_sequence_per_gpu == 40_000 * (80 / 8) * 8_192 == 3_276_800_000
    assert round(b.kv_bytes_per_sequence_per_gpu / GB, 1) == 3.3  # "~3.2 GB" (3.28 GB)
    assert b.max_concurrency == math.floor(40e9 / 3.2768e9) == 12


def test_design_notes_example_through_the_planner() -> None:
    # the same model as explicit dimensions: 128 heads of 128, 16 KV heads (r = 16/128)
    m = model_from_dims(layers=80, hidden_size=16_384, heads=128, kv_heads=16)
    assert m.head_dim == 16_384 // 128 == 128
    p = plan(
        m,
        load_gpu("h100"),
        Parallelism(pp=8),
        Workload(context_tokens=40_000),
        MemoryBudget(kv_budget_gb=40),
    )
    assert p.kv_bytes_per_token_per_layer == 8_192
    assert p.layers_per_gpu == 80 // 8
    assert p.kv_bytes_per_sequence_per_gpu == 40_000 * 10 * 8_192
    assert p.max_concurrency_memory == 12
    assert p.simple_form.verdict == "exact"
    assert p.simple_form_bound.max_concurrency == 12
    d = p.to_dict()
    assert d["kv_bytes_per_token_per_layer"] == 8_192
    assert d["kv_bytes_per_sequence_per_gpu"] == 3_276_800_000
    assert d["max_concurrency_memory"] == 12


def test_simple_form_overestimates_mla_about_25x() -> None:
    c = simple_form_check(load_model("deepseek-v3"))
    # 2 x 7168 x (128/128) x 2  vs  576 x 2
    assert c.simple_bytes == 2 * 7168 * 1 * 2
    assert c.ratio == pytest.approx((2 * 7168 * 2) / (576 * 2))
    assert round(c.ratio) == 25 and c.verdict == "overestimates"
    assert "MLA" in c.explanation


def test_simple_form_underestimates_qwen3_2x() -> None:
    c = simple_form_check(load_model("qwen3-235b-a22b"))
    # 2 x 4096 x (4/64) x 2 = 1,024  vs  2 x 4 x 128 x 2 = 2,048
    assert c.simple_bytes == 2 * 4096 * (4 / 64) * 2 == 1_024
    assert c.exact_bytes == 2_048
    assert c.ratio == 0.5 and c.verdict == "underestimates"


def test_simple_form_exact_for_llama() -> None:
    assert simple_form_check(load_model("llama-3.1-70b")).verdict == "exact"


def test_plan_explains_where_simple_form_is_wrong() -> None:
    p = plan(load_model("deepseek-r1"), load_gpu("h200"), Parallelism(tp=8))
    assert any("overestimates" in n for n in p.notes)
    q = plan(load_model("qwen3-235b-a22b"), load_gpu("h200"), Parallelism(tp=8))
    assert any("underestimates" in n for n in q.notes)


# ---------------------------------------------------------------------------------------
# Sharding: TP, replication when TP > kv heads, MLA not sharded, PP, DP attention
# ---------------------------------------------------------------------------------------


def test_tp_shards_kv_heads() -> None:
    m = load_model("llama-3.1-70b")
    assert kv_heads_per_gpu(m, Parallelism(tp=4)) == 8 // 4
    assert kv_bytes_per_token_per_layer_per_gpu(m, Parallelism(tp=4)) == 2 * 128 * 2 * 2


def test_tp_above_kv_heads_replicates_one_head_per_gpu() -> None:
    m = load_model("qwen3-235b-a22b")  # 4 KV heads
    assert kv_heads_per_gpu(m, Parallelism(tp=8)) == 1
    per_gpu = kv_bytes_per_token_per_layer_per_gpu(m, Parallelism(tp=8))
    assert per_gpu == 1 * 2 * 128 * 2 == 512
    # replicated: 8 GPUs x 512 B hold twice the model's 2,048 B per layer
    assert 8 * per_gpu == 2 * kv_bytes_per_token_per_layer(m)
    p = plan(m, load_gpu("h200"), Parallelism(tp=8))
    assert any("replicated 2x" in n for n in p.notes)


def test_mla_is_not_sharded_by_tp() -> None:
    m = load_model("deepseek-v3")
    for tp in (1, 8):
        assert kv_bytes_per_token_per_layer_per_gpu(m, Parallelism(tp=tp)) == 576 * 2


def test_layers_per_gpu_is_ceil_l_over_pp() -> None:
    m = load_model("deepseek-v3")  # 61 layers
    S = 1_000
    got = kv_bytes_per_sequence_per_gpu(m, Parallelism(pp=4), S)
    assert got == math.ceil(61 / 4) * 576 * 2 * S  # 16 layers on the fullest stage
    p = plan(m, load_gpu("h200"), Parallelism(tp=2, pp=4), Workload(context_tokens=S))
    assert p.layers_per_gpu == 16


def test_dp_attention_multiplies_sequences_not_bytes() -> None:
    m = load_model("deepseek-v3")
    per_seq = kv_bytes_per_sequence_per_gpu(m, Parallelism(tp=8, dp_attention=8), 10_000)
    assert per_seq == 576 * 2 * 61 * 10_000
    assert max_concurrency_memory(50 * GB, per_seq, Parallelism(tp=8, dp_attention=8)) == (
        int(50e9 // per_seq) * 8
    )


def test_memory_bound_per_replica_with_explicit_budget() -> None:
    m = load_model("llama-3.1-70b")
    p = plan(
        m,
        load_gpu("h100"),
        Parallelism(tp=8, replicas=3),
        Workload(context_tokens=32_768),
        MemoryBudget(kv_budget_gb=50),
    )
    per_seq = 1 * 256 * 2 * 80 * 32_768  # 1 KV head per GPU, K+V, bf16, 80 layers
    assert p.kv_bytes_per_sequence_per_gpu == per_seq
    assert p.max_concurrency_memory == int(50e9 // per_seq)
    assert p.to_dict()["max_concurrency_memory_total"] == 3 * int(50e9 // per_seq)


def test_mem_fraction_budget_is_fraction_of_hbm_minus_weights() -> None:
    m = load_model("llama-3.1-70b")
    V, H, L, I = 128_256, 8192, 80, 28_672
    params = 2 * V * H + L * (2 * H * H + 2 * H * 8 * 128 + 3 * H * I + 2 * H) + H
    weights_gpu = params * 2 / 8
    p = plan(m, load_gpu("h100"), Parallelism(tp=8), budget=MemoryBudget(mem_fraction=0.85))
    assert p.weights_bytes_per_gpu == pytest.approx(weights_gpu)
    assert p.kv_budget_bytes_per_gpu == pytest.approx(0.85 * 80e9 - weights_gpu)


# ---------------------------------------------------------------------------------------
# Sliding windows
# ---------------------------------------------------------------------------------------


def _gpt_oss_like() -> dict:
    # gpt-oss-20b shape: 24 layers alternating sliding(128)/full, 8 KV heads of 64
    return {
        "num_hidden_layers": 24,
        "hidden_size": 2880,
        "num_attention_heads": 64,
        "num_key_value_heads": 8,
        "head_dim": 64,
        "sliding_window": 128,
        "layer_types": ["sliding_attention", "full_attention"] * 12,
        "num_local_experts": 32,
        "num_experts_per_tok": 4,
        "intermediate_size": 2880,
        "vocab_size": 201_088,
    }


def test_sliding_window_layers_capped_layer_types() -> None:
    m = model_from_hf_config(_gpt_oss_like(), {"name": "gpt-oss-like"})
    assert m.sliding_window == 128 and len(m.swa_layer_ids) == 12
    S = 10_000
    per_layer = 2 * 8 * 64 * 2
    expected = 12 * S * per_layer + 12 * 128 * per_layer
    assert kv_bytes_per_sequence_per_gpu(m, Parallelism(), S) == expected
    # below the window nothing is capped
    assert kv_bytes_per_sequence_per_gpu(m, Parallelism(), 100) == 24 * 100 * per_layer


def test_sliding_window_mistral_style_all_layers() -> None:
    cfg = {
        "num_hidden_layers": 32,
        "hidden_size": 4096,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "sliding_window": 4096,
        "intermediate_size": 14336,
        "vocab_size": 32000,
    }
    m = model_from_hf_config(cfg, {"name": "mistral-7b-v0.1"})
    assert len(m.swa_layer_ids) == 32
    assert kv_bytes_per_sequence_per_gpu(m, Parallelism(), 32_000) == 32 * 4096 * 2 * 8 * 128 * 2


def test_sliding_window_qwen2_max_window_layers() -> None:
    base = {
        "num_hidden_layers": 28,
        "hidden_size": 3584,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "sliding_window": 4096,
        "max_window_layers": 20,
        "intermediate_size": 18944,
        "vocab_size": 152064,
    }
    off = model_from_hf_config(base | {"use_sliding_window": False})
    assert off.swa_layer_ids == () and off.sliding_window is None
    on = model_from_hf_config(base | {"use_sliding_window": True})
    assert on.swa_layer_ids == tuple(range(20, 28))
    per_layer = 2 * 4 * 128 * 2
    S = 50_000
    assert kv_bytes_per_sequence_per_gpu(on, Parallelism(), S) == per_layer * (20 * S + 8 * 4096)


def test_qwen2_5_preset_has_window_disabled() -> None:
    m = load_model("qwen2.5-72b")
    assert m.swa_layer_ids == ()


# ---------------------------------------------------------------------------------------
# SGLang max_total_num_tokens and vLLM page size, for the same presets
# ---------------------------------------------------------------------------------------

_SGLANG_CELL = {
    # get_num_kv_heads(tp) = max(1, kv // tp); cell = heads x (head_dim + v_head_dim) x L x 2
    ("llama-3.1-70b", 8): max(1, 8 // 8) * (128 + 128) * 80 * 2,
    ("llama-3.1-8b", 1): 8 * (128 + 128) * 32 * 2,
    ("qwen3-235b-a22b", 8): max(1, 4 // 8) * (128 + 128) * 94 * 2,
    ("qwen3-235b-a22b", 4): max(1, 4 // 4) * (128 + 128) * 94 * 2,
    ("qwen2.5-72b", 4): (8 // 4) * 256 * 80 * 2,
    ("mixtral-8x7b", 2): (8 // 2) * 256 * 32 * 2,
    ("llama-3.1-405b", 8): 1 * 256 * 126 * 2,
    # MLA: (kv_lora_rank + qk_rope_head_dim) x L x 2
    ("deepseek-v3", 8): (512 + 64) * 61 * 2,
}


@pytest.mark.parametrize(("name", "tp"), list(_SGLANG_CELL))
def test_sglang_cell_size_and_max_total_num_tokens(name: str, tp: int) -> None:
    m = load_model(name)
    cell = sglang_cell_size(m, Parallelism(tp=tp))
    assert cell == _SGLANG_CELL[(name, tp)]
    # rest_memory of 50 GiB, as SGLang computes it: int(rest * (1 << 30)) // cell_size
    rest_gib = 50.0
    assert (
        sglang_max_total_num_tokens(cell, rest_gib * (1 << 30))
        == int(rest_gib * (1 << 30)) // _SGLANG_CELL[(name, tp)]
    )


def test_sglang_in_plan_matches_budget() -> None:
    p = plan(
        load_model("llama-3.1-70b"),
        load_gpu("h100"),
        Parallelism(tp=8),
        Workload(context_tokens=40_000),
        MemoryBudget(kv_budget_gb=50),
    )
    assert p.sglang.cell_size_bytes == 1 * 256 * 80 * 2 == 40_960
    assert p.sglang.max_total_num_tokens == 50_000_000_000 // 40_960 == 1_220_703
    assert p.sglang.max_sequences_at_context == 1_220_703 // 40_000 == 30


_VLLM_PAGE = {
    # block_size x num_kv_heads x (head_size + head_size_v) x dtype_size, per layer
    ("llama-3.1-70b", 8): 16 * 1 * (128 + 128) * 2,
    ("qwen3-235b-a22b", 8): 16 * max(1, 4 // 8) * 256 * 2,
    ("qwen3-235b-a22b", 2): 16 * (4 // 2) * 256 * 2,
    ("llama-3.1-8b", 1): 16 * 8 * 256 * 2,
    ("mixtral-8x7b", 4): 16 * 2 * 256 * 2,
    # MLAAttentionSpec: block_size x 1 x (kv_lora_rank + qk_rope_head_dim) x dtype_size
    ("deepseek-v3", 8): 16 * 1 * 576 * 2,
}


@pytest.mark.parametrize(("name", "tp"), list(_VLLM_PAGE))
def test_vllm_page_size_bytes(name: str, tp: int) -> None:
    assert vllm_page_size_bytes(load_model(name), Parallelism(tp=tp)) == _VLLM_PAGE[(name, tp)]


def test_vllm_blocks_and_concurrency() -> None:
    page = 16 * 576 * 2  # DeepSeek-V3 MLA page
    blocks = vllm_num_gpu_blocks(page, 61, 40e9)
    assert blocks == int(40e9 // page // 61)
    assert vllm_max_concurrency(blocks, 32_768) == blocks / (32_768 // 16)
    p = plan(
        load_model("deepseek-v3"),
        load_gpu("h200"),
        Parallelism(tp=8),
        Workload(context_tokens=32_768),
        MemoryBudget(kv_budget_gb=40),
    )
    assert p.vllm.page_size_bytes == page
    assert p.vllm.num_gpu_blocks == blocks


# ---------------------------------------------------------------------------------------
# Presets and configs
# ---------------------------------------------------------------------------------------


def test_presets_listed_case_insensitive_with_aliases() -> None:
    presets = list_presets()
    models = {m["name"] for m in presets["models"]}
    assert models == {
        "llama-3.1-8b",
        "llama-3.1-70b",
        "llama-3.1-405b",
        "qwen2.5-72b",
        "qwen3-235b-a22b",
        "deepseek-v3",
        "deepseek-v3.2",
        "mixtral-8x7b",
        "gpt-oss-20b",
        "gpt-oss-120b",
        "qwen3-8b",
        "qwen3-32b",
        "qwen3-next-80b-a3b",
    }
    gpus = {g["name"] for g in presets["gpus"]}
    assert gpus == {"a100-80gb", "h100-sxm", "h200", "h800", "b200", "h20", "mi300x"}
    assert load_model("DeepSeek-R1").name == "deepseek-v3"
    assert load_model("LLAMA-3.1-70B").name == "llama-3.1-70b"
    assert load_gpu("H100").name == "h100-sxm"
    assert load_gpu("MI300X").memory_gb == 192
    for m in presets["models"]:
        assert m["source"].startswith("https://huggingface.co/")


def test_gpu_presets_datasheet_figures() -> None:
    h100 = load_gpu("h100-sxm")
    assert (h100.memory_gb, h100.hbm_gbps, h100.bf16_tflops, h100.fp8_tflops) == (
        80,
        3350,
        989,
        1979,
    )
    assert load_gpu("a100-80gb").fp8_tflops is None
    assert load_gpu("h200").memory_gb == 141
    assert load_gpu("h20").bf16_tflops == 148


@pytest.mark.parametrize(
    ("name", "total_b", "active_b"),
    [
        # published sizes (model cards); the config formula must land within 2%
        ("llama-3.1-8b", 8.03, 8.03),
        ("llama-3.1-70b", 70.6, 70.6),
        ("llama-3.1-405b", 405.9, 405.9),
        ("qwen2.5-72b", 72.7, 72.7),
        ("qwen3-235b-a22b", 235.0, 22.0),
        ("deepseek-v3", 671.0, 37.0),
        ("mixtral-8x7b", 46.7, 12.9),
    ],
)
def test_param_formula_matches_published_sizes(name: str, total_b: float, active_b: float) -> None:
    m = load_model(name)
    assert m.total_params / 1e9 == pytest.approx(total_b, rel=0.02)
    assert m.active_params / 1e9 == pytest.approx(active_b, rel=0.03)


def test_mixtral_active_params_by_hand() -> None:
    H, L, I, V, E, k = 4096, 32, 14336, 32000, 8, 2
    attn = 2 * H * H + 2 * H * 1024
    expert = 3 * H * I
    common = 2 * V * H + L * (attn + 2 * H) + H
    m = load_model("mixtral-8x7b")
    assert m.total_params == common + L * (E * expert + H * E)
    assert m.active_params == common + L * (k * expert + H * E)


def test_hf_config_json_file(tmp_path) -> None:
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "num_hidden_layers": 80,
        "hidden_size": 8192,
        "num_attention_heads": 64,
        "num_key_value_heads": 8,
        "intermediate_size": 28672,
        "vocab_size": 128256,
        "rope_scaling": {"factor": 8.0},
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    m = load_model(str(path))
    assert kv_bytes_per_token(m) == 327_680
    assert m.total_params == load_model("llama-3.1-70b").total_params
    nested = tmp_path / "mm" / "config.json"
    nested.parent.mkdir()
    nested.write_text(json.dumps({"model_type": "llava", "text_config": cfg}))
    assert kv_bytes_per_token(load_model(str(nested))) == 327_680


def test_explicit_dimensions_override_preset() -> None:
    m = load_model("llama-3.1-70b", overrides={"num_hidden_layers": 40, "num_key_value_heads": 16})
    assert m.num_layers == 40 and m.num_kv_heads == 16
    assert kv_bytes_per_token(m) == 2 * 16 * 128 * 2 * 40
    assert load_model("llama-3.1-70b").num_layers == 80  # the preset itself is unchanged


def test_bad_inputs_raise_bad_input_error(tmp_path) -> None:
    with pytest.raises(BadInputError, match="unknown model preset"):
        load_model("llama-9")
    with pytest.raises(BadInputError, match="unknown GPU preset"):
        load_gpu("tpu-v9")
    with pytest.raises(BadInputError, match="cannot read"):
        load_model(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(BadInputError, match="not valid JSON"):
        load_model(str(bad))
    empty = tmp_path / "empty.json"
    empty.write_text("{}")
    with pytest.raises(BadInputError, match="num_hidden_layers"):
        load_model(str(empty))
    with pytest.raises(BadInputError):
        load_model("llama-3.1-70b", overrides={"num_key_value_heads": 7})  # 64 % 7 != 0
    with pytest.raises(BadInputError):
        Parallelism(tp=0)
    with pytest.raises(BadInputError):
        Parallelism(tp=8, dp_attention=3)
    with pytest.raises(BadInputError):
        Workload(context_tokens=0)
    with pytest.raises(BadInputError):
        MemoryBudget(kv_budget_gb=10, mem_fraction=0.9)
    with pytest.raises(BadInputError, match="exceeds"):
        plan(load_model("llama-3.1-8b"), load_gpu("h100"), Parallelism(pp=64))


def test_public_api_for_the_app() -> None:
    from analyzer import capacity

    for name in capacity.__all__:
        assert hasattr(capacity, name), name
    for name in (
        "ModelSpec",
        "GPUSpec",
        "Parallelism",
        "Workload",
        "MemoryBudget",
        "Calibration",
        "load_model",
        "load_gpu",
        "list_presets",
        "plan",
        "CapacityPlan",
        "render_text",
        "render_markdown",
        "load_report_calibration",
        "load_hardware_profile",
        "kv_bytes_per_token_per_layer",
    ):
        assert name in capacity.__all__, name


def test_attention_label_of_every_preset_follows_its_config() -> None:
    """Issue 17: Llama-3.1-70B (64 heads, 8 KV heads) was labelled MHA. The label is read
    here from each preset's [config] table: MLA with kv_lora_rank, else MHA when every query
    head has its KV head, MQA with one KV head, GQA otherwise."""
    import tomllib
    from importlib import resources

    from analyzer.capacity import load_model
    from analyzer.capacity.presets import list_presets

    folder = resources.files("analyzer.capacity").joinpath("presets/models")
    seen = 0
    for f in folder.iterdir():
        if not f.name.endswith(".toml"):
            continue
        data = tomllib.loads(f.read_text())
        cfg = data["config"]
        cfg = cfg.get("text_config", cfg)
        heads = cfg["num_attention_heads"]
        kv = cfg.get("num_key_value_heads", heads)
        want = ("MLA" if cfg.get("kv_lora_rank") else "MHA" if kv == heads else "MQA" if kv == 1 else "GQA")
        assert load_model(data["name"]).attention_label == want, data["name"]
        seen += 1
    assert load_model("llama-3.1-70b").attention_label == "GQA"
    listed = {m["name"]: m["attention_label"] for m in list_presets()["models"]}
    assert listed["llama-3.1-70b"] == "GQA" and listed["deepseek-v3"] == "MLA"
    assert seen == len(listed)
