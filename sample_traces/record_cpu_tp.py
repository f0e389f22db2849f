#!/usr/bin/env python3
"""Record REAL PyTorch-profiler traces of a tiny tensor-parallel transformer on the CPU.

    python sample_traces/record_cpu_tp.py [OUT_DIR]      # default: sample_traces/cpu_tp2

Two processes (``torch.multiprocessing.spawn``, ``torch.distributed`` with gloo) run a
small Llama-like model with Megatron-style tensor parallelism: QKV and gate/up are
column-parallel, O and down are row-parallel followed by ``all_reduce``, the LM head is
vocab-parallel followed by ``all_gather``. A toy serving loop drives it the way SGLang's
non-overlap scheduler does, with the same annotations SGLang emits:
``scheduler.recv_requests`` (requests broadcast from rank 0 over gloo),
``scheduler.get_next_batch_to_run``, ``scheduler.run_batch`` around
``step[EXTEND bs=.. toks=..]`` / ``step[DECODE bs=..]``, and
``scheduler.process_batch_result``. Each rank writes
``<profile_id>-TP-<rank>.trace.json.gz`` (SGLang's naming) and rank 0 writes a
``server_args.json``-like file. The traces contain host events only (cpu_op,
user_annotation, python_function, gloo collectives): there is no GPU here. Their
top-level metadata says so (``"recorded_on": "cpu"``).
"""

from __future__ import annotations

import gzip
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function

HERE = Path(__file__).resolve().parent
SCRIPT = "sample_traces/record_cpu_tp.py"

CONFIG = {"vocab": 2048, "hidden": 256, "heads": 8, "kv_heads": 4, "head_dim": 32,
          "layers": 4, "intermediate": 768, "max_tokens": 4096}
# (arrival step, prompt length, output tokens)
REQUESTS = [(0, 96, 8), (0, 64, 8), (0, 128, 8), (0, 80, 8), (6, 160, 5)]


class ColumnParallel(nn.Module):
    """y = x W^T with W split by output rows across ranks (no communication)."""

    def __init__(self, d_in: int, d_out: int, tp: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(d_out // tp, d_in) / math.sqrt(d_in))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)


class RowParallel(nn.Module):
    """y = all_reduce(x_shard W_shard^T) with W split by input columns."""

    def __init__(self, d_in: int, d_out: int, tp: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(d_out, d_in // tp) / math.sqrt(d_in))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight)
        dist.all_reduce(y)
        return y


class RMSNorm(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight


def rope(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    d = x.shape[-1] // 2
    freq = 1.0 / (10000 ** (torch.arange(d, dtype=torch.float32) / d))
    ang = pos[:, None].float() * freq[None, :]
    cos, sin = ang.cos()[:, None, :], ang.sin()[:, None, :]
    a, b = x[..., :d], x[..., d:]
    return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)


class Layer(nn.Module):
    def __init__(self, c: dict, tp: int) -> None:
        super().__init__()
        self.tp = tp
        self.h, self.kvh, self.hd = c["heads"] // tp, c["kv_heads"] // tp, c["head_dim"]
        self.norm1, self.norm2 = RMSNorm(c["hidden"]), RMSNorm(c["hidden"])
        self.qkv = ColumnParallel(c["hidden"], (c["heads"] + 2 * c["kv_heads"]) * self.hd, tp)
        self.o = RowParallel(c["heads"] * self.hd, c["hidden"], tp)
        self.gate_up = ColumnParallel(c["hidden"], 2 * c["intermediate"], tp)
        self.down = RowParallel(c["intermediate"], c["hidden"], tp)
        self.k_cache = torch.zeros(c["max_tokens"], self.kvh, self.hd)
        self.v_cache = torch.zeros(c["max_tokens"], self.kvh, self.hd)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, slots: torch.Tensor,
                seqs: list[tuple[int, int, list[int]]]) -> torch.Tensor:
        """``seqs``: per request (start row in x, new tokens, KV slots incl. cached ones)."""
        qkv = self.qkv(self.norm1(x))
        q, k, v = qkv.split([self.h * self.hd, self.kvh * self.hd, self.kvh * self.hd], -1)
        q = rope(q.view(-1, self.h, self.hd), pos)
        k = rope(k.view(-1, self.kvh, self.hd), pos)
        with record_function("set_kv_buffer"):
            self.k_cache[slots] = k
            self.v_cache[slots] = v.view(-1, self.kvh, self.hd)
        outs = []
        for start, n, kv_slots in seqs:
            idx = torch.tensor(kv_slots)
            kk = self.k_cache[idx].repeat_interleave(self.h // self.kvh, 1).transpose(0, 1)
            vv = self.v_cache[idx].repeat_interleave(self.h // self.kvh, 1).transpose(0, 1)
            qq = q[start:start + n].transpose(0, 1)
            causal = n > 1
            outs.append(F.scaled_dot_product_attention(qq, kk, vv, is_causal=causal)
                        .transpose(0, 1).reshape(n, -1))
        x = x + self.o(torch.cat(outs))
        gu = self.gate_up(self.norm2(x))
        g, u = gu.chunk(2, -1)
        return x + self.down(F.silu(g) * u)


class TinyLM(nn.Module):
    def __init__(self, c: dict, tp: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(c["vocab"], c["hidden"])
        self.layers = nn.ModuleList(Layer(c, tp) for _ in range(c["layers"]))
        self.norm = RMSNorm(c["hidden"])
        self.lm_head = ColumnParallel(c["hidden"], c["vocab"], tp)
        self.tp = tp

    def forward(self, ids: torch.Tensor, pos: torch.Tensor, slots: torch.Tensor,
                seqs: list[tuple[int, int, list[int]]]) -> torch.Tensor:
        x = self.embed(ids)
        for layer in self.layers:
            x = layer(x, pos, slots, seqs)
        last = torch.tensor([s + n - 1 for s, n, _ in seqs])
        logits = self.lm_head(self.norm(x[last]))
        parts = [torch.empty_like(logits) for _ in range(self.tp)]
        dist.all_gather(parts, logits)
        return torch.cat(parts, -1)


def worker(rank: int, world: int, port: int, out_dir: str, profile_id: str) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(1234 + rank)
    c = CONFIG
    model = TinyLM(c, world).eval()
    gen = torch.Generator().manual_seed(7)
    running: list[dict] = []
    waiting: list[dict] = []
    next_slot = 0
    step = 0
    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU],
                                         with_stack=True, record_shapes=False) as prof:
        while step == 0 or running or waiting or any(a >= step for a, _, _ in REQUESTS):
            with record_function("scheduler.recv_requests"):
                new = [[a, p, o] for a, p, o in REQUESTS if a == step] if rank == 0 else None
                box = [new]
                dist.broadcast_object_list(box, src=0)
                for _, plen, out in box[0] or []:
                    waiting.append({"prompt": torch.randint(0, c["vocab"], (plen,),
                                                            generator=gen).tolist(),
                                    "out": out, "slots": [], "done": 0})
            with record_function("scheduler.get_next_batch_to_run"):
                if waiting:
                    batch, mode = waiting, "EXTEND"
                    waiting = []
                else:
                    batch, mode = running, "DECODE"
                ids, pos, slots, seqs = [], [], [], []
                for r in batch:
                    toks = r["prompt"] if mode == "EXTEND" else [r["last"]]
                    start = len(r["slots"])
                    new_slots = list(range(next_slot, next_slot + len(toks)))
                    next_slot += len(toks)
                    r["slots"] += new_slots
                    seqs.append((len(ids), len(toks), list(r["slots"])))
                    ids += toks
                    pos += list(range(start, start + len(toks)))
                    slots += new_slots
            if not batch:
                step += 1
                continue
            with record_function("scheduler.run_batch"):
                name = (f"step[EXTEND bs={len(batch)} toks={len(ids)}]" if mode == "EXTEND"
                        else f"step[DECODE bs={len(batch)}]")
                with record_function(name):
                    logits = model(torch.tensor(ids), torch.tensor(pos), torch.tensor(slots),
                                   seqs)
                    next_ids = torch.argmax(torch.softmax(logits.float(), -1), -1)
            with record_function("scheduler.process_batch_result"):
                for r, t in zip(batch, next_ids.tolist()):
                    r["last"] = t
                    r["done"] += 1
                if mode == "EXTEND":
                    running += batch
                running = [r for r in running if r["done"] < r["out"]]
            step += 1
    path = Path(out_dir) / f"{profile_id}-TP-{rank}.trace.json.gz"
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(raw))
        doc = json.loads(raw.read_text())
    doc.update({"recorded_on": "cpu", "recorder": SCRIPT, "torch_version": torch.__version__,
                "synthetic": False,
                "note": "real torch.profiler trace of a tiny TP=2 model on CPU (gloo); "
                        "no GPU events"})
    with gzip.open(path, "wt") as f:
        json.dump(doc, f)
    if rank == 0:
        args = {"model_path": "tiny-llama-random (4 layers, hidden 256; random weights)",
                "tp_size": world, "pp_size": 1, "dp_size": 1, "device": "cpu",
                "attention_backend": "torch_native", "page_size": 1, "kv_cache_dtype": "auto",
                "chunked_prefill_size": -1, "disable_cuda_graph": True,
                "disable_overlap_schedule": True, "model_config": CONFIG,
                "_recorded_by": SCRIPT, "_torch_version": torch.__version__}
        (Path(out_dir) / "server_args.json").write_text(json.dumps(args, indent=2) + "\n")
    dist.barrier()
    dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0]) if argv else HERE / "cpu_tp2"
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.trace.json.gz"):
        old.unlink()
    profile_id = str(time.time())
    port = 29500 + os.getpid() % 1000
    mp.spawn(worker, args=(2, port, str(out), profile_id), nprocs=2, join=True)
    for p in sorted(out.iterdir()):
        print(f"{p.name}: {p.stat().st_size / 1e6:.2f} MB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
