#!/usr/bin/env python3
"""Peer baselines and machine ceilings for the attention shapes attnjit benchmarks.

One run measures, on the current CUDA GPU:
  * ceilings: device-to-device copy bandwidth (bytes read + written) and the bf16
    N^3 matrix-product rate;
  * decode (1 query token per sequence, GQA) and prefill (causal, non-causal, the
    MiMo d_qk=192 / d_v=128 shape, and a non-causal block-sparse mask) through the peers:
    PyTorch SDPA restricted to one backend (cuDNN, flash, memory-efficient) and
    FlexAttention compiled with torch.compile (plus a paged FlexAttention variant for
    decode; FlexAttention alone takes the block mask).

Every peer output is checked against a float32 reference on a slice of the problem
(relative Frobenius error); a peer that fails the check is reported as WRONG, not as a
time. A peer that cannot run a shape is reported as "unsupported: <reason>" and the run
goes on. A compact table is printed last; --json PATH writes every number.

Only torch, triton (through torch.compile) and numpy are needed; torch is imported
lazily so that --help and --plan work on a machine without it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, field, asdict
from typing import Any, Callable, Optional

ALL_SHAPES = ("decode", "prefill-causal", "prefill-noncausal", "mimo-causal", "prefill-blocksparse")
ALL_PEERS = ("sdpa-cudnn", "sdpa-flash", "sdpa-efficient", "flex", "flex-paged")
L2_FALLBACK_BYTES = 50 * 1024 * 1024


def log(msg: str = "") -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------------------
# Pure-Python description of the problems (no torch needed)
# --------------------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    kind: str  # "decode" (bandwidth-bound) or "prefill" (compute-bound)
    batch: int
    q_heads: int
    kv_heads: int
    q_len: int
    kv_len: int
    d_qk: int
    d_v: int
    causal: bool
    page_size: int = 0  # only meaningful for paged peers
    dtype: str = "bf16"
    # Block sparse: each (q head, query block) attends to a random fraction of the KV blocks
    # (sparse_block square, the same for every sequence), as attnjit_gpu_bench's block-sparse shape.
    sparse_block: int = 0
    block_density: float = 0.0

    @property
    def elem_bytes(self) -> int:
        return 2  # bf16 / fp16

    @property
    def scale(self) -> float:
        return 1.0 / math.sqrt(self.d_qk)

    @property
    def group(self) -> int:
        return self.q_heads // self.kv_heads

    def kv_bytes(self) -> int:
        """K and V bytes read once (the decode traffic that counts)."""
        return self.batch * self.kv_heads * self.kv_len * (self.d_qk + self.d_v) * self.elem_bytes

    def listed_blocks(self) -> int:
        """KV blocks listed per query block (at least one, as attnjit_gpu_bench rounds)."""
        return max(1, int(math.floor(self.block_density * (self.kv_len // self.sparse_block) + 0.5)))

    def flops(self) -> float:
        """Matrix FLOPs of QK^T and PV; causal counts half of the square (q_len == kv_len); block
        sparse counts the listed blocks only."""
        if self.sparse_block:
            blocks = (self.q_len // self.sparse_block) * self.listed_blocks()
            return 2.0 * self.batch * self.q_heads * blocks * self.sparse_block ** 2 * (self.d_qk + self.d_v)
        f = 2.0 * self.batch * self.q_heads * self.q_len * self.kv_len * (self.d_qk + self.d_v)
        if self.causal:
            f /= 2.0
        return f

    def working_set_bytes(self) -> int:
        e = self.elem_bytes
        q = self.batch * self.q_heads * self.q_len * self.d_qk * e
        o = self.batch * self.q_heads * self.q_len * self.d_v * e
        return q + o + self.kv_bytes()

    def describe(self) -> str:
        s = (f"{self.name}: b{self.batch} hq{self.q_heads} hkv{self.kv_heads} "
             f"sq{self.q_len} skv{self.kv_len} dqk{self.d_qk} dv{self.d_v} "
             f"{'causal' if self.causal else 'non-causal'} {self.dtype}")
        if self.kind == "decode":
            s += f" page{self.page_size}"
        if self.sparse_block:
            s += f" block-sparse {self.listed_blocks()}/{self.kv_len // self.sparse_block} of {self.sparse_block}x{self.sparse_block} blocks"
        return s


def build_cases(args: argparse.Namespace) -> list[Case]:
    wanted = parse_list(args.shapes, ALL_SHAPES, "--shapes")
    cases: list[Case] = []
    if "decode" in wanted:
        cases.append(Case("decode", "decode", args.decode_batch, args.decode_q_heads,
                          args.decode_kv_heads, 1, args.kv_len, args.head_dim, args.head_dim,
                          causal=False, page_size=args.page_size, dtype=args.dtype))
    for name, causal, dqk, dv in (("prefill-causal", True, args.head_dim, args.head_dim),
                                  ("prefill-noncausal", False, args.head_dim, args.head_dim),
                                  ("mimo-causal", True, args.mimo_dqk, args.mimo_dv)):
        if name in wanted:
            cases.append(Case(name, "prefill", args.prefill_batch, args.prefill_heads,
                              args.prefill_kv_heads or args.prefill_heads, args.seq_len,
                              args.seq_len, dqk, dv, causal=causal, dtype=args.dtype))
    if "prefill-blocksparse" in wanted:
        cases.append(Case("prefill-blocksparse", "prefill", args.prefill_batch, args.prefill_heads,
                          args.prefill_kv_heads or args.prefill_heads, args.seq_len, args.seq_len,
                          args.head_dim, args.head_dim, causal=False, dtype=args.dtype,
                          sparse_block=args.sparse_block, block_density=args.block_density))
    for c in cases:
        if c.q_heads % c.kv_heads != 0:
            raise SystemExit(f"{c.name}: q heads ({c.q_heads}) must be a multiple of kv heads ({c.kv_heads})")
        if c.kind == "decode" and c.kv_len % c.page_size != 0:
            raise SystemExit(f"{c.name}: --kv-len ({c.kv_len}) must be a multiple of --page-size ({c.page_size})")
        if c.sparse_block and c.q_len % c.sparse_block != 0:
            raise SystemExit(f"{c.name}: --seq-len ({c.q_len}) must be a multiple of --sparse-block ({c.sparse_block})")
    return cases


def parse_list(text: str, allowed: tuple[str, ...], flag: str) -> list[str]:
    if text.strip() == "all":
        return list(allowed)
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in allowed]
    if bad:
        raise SystemExit(f"{flag}: unknown {bad}; allowed: {','.join(allowed)} or all")
    return items


def rotation_sets(working_set: int, l2_bytes: int, max_sets: int = 8) -> int:
    """How many input sets to rotate among so that repeated calls do not run out of L2."""
    target = 4 * l2_bytes
    if working_set >= target:
        return 1
    return max(2, min(max_sets, -(-target // max(working_set, 1))))


def fmt_ms(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.4f}"


def fmt_num(x: Optional[float], digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def fmt_err(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.1e}"


def render_table(report: dict) -> str:
    """The compact summary table, from the JSON report (pure Python)."""
    lines = []
    ceil = report.get("ceilings", {})
    cp = ceil.get("copy", {})
    mm = ceil.get("matmul", {})
    dev = report.get("env", {}).get("device", "?")
    lines.append(f"== peers on {dev} | torch {report.get('env', {}).get('torch', '?')} "
                 f"cuDNN {report.get('env', {}).get('cudnn', '?')} "
                 f"triton {report.get('env', {}).get('triton', '?')}")
    lines.append(f"ceilings: copy {fmt_num(cp.get('tbps'), 3)} TB/s (read+write, "
                 f"{fmt_ms(cp.get('ms'))} ms for {fmt_num(cp.get('gib'), 2)} GiB x2) | "
                 f"read-only {fmt_num(ceil.get('read', {}).get('tbps'), 3)} TB/s | "
                 f"bf16 matmul {fmt_num(mm.get('tflops'), 1)} TFLOP/s "
                 f"(n={mm.get('n', '?')}, {fmt_ms(mm.get('ms'))} ms)")
    hdr = f"{'shape':<18} {'peer':<15} {'status':<11} {'median ms':>10} {'rate':>15} {'%ceil':>6} {'rel err':>8}  notes"
    for case in report.get("cases", []):
        lines.append("")
        floor = case.get("floor_ms")
        unit = "TB/s" if case.get("kind") == "decode" else "TFLOP/s"
        basis = (f"{case.get('kv_bytes', 0) / 1e6:.1f} MB K+V" if case.get("kind") == "decode"
                 else f"{case.get('flops', 0) / 1e12:.3f} TFLOP")
        extra = (f" (copy rate; {fmt_ms(case.get('floor_read_ms'))} ms at the read-only rate)"
                 if case.get("kind") == "decode" else " (matmul rate)")
        lines.append(f"{case.get('desc', case.get('name'))} | {basis} | floor {fmt_ms(floor)} ms{extra}")
        lines.append(hdr)
        for r in case.get("results", []):
            status = r.get("status", "?")
            rate = r.get("rate")
            rate_s = "-" if rate is None else f"{rate:.2f} {unit}" if unit == "TB/s" else f"{rate:.1f} {unit}"
            pct = None
            if status == "WRONG":
                rate_s = "(wrong)"
            elif floor and r.get("ms"):
                pct = 100.0 * floor / r["ms"]
            notes = r.get("notes", "")
            if status in ("unsupported", "error") and r.get("reason"):
                notes = f"{status}: {r['reason']}" + (f" [{notes}]" if notes else "")
            lines.append(f"{case.get('name', ''):<18} {r.get('peer', ''):<15} {status:<11} "
                         f"{fmt_ms(r.get('ms')):>10} {rate_s:>15} {fmt_num(pct, 0):>6} "
                         f"{fmt_err(r.get('rel_err')):>8}  {shorten(notes, 150)}")
    return "\n".join(lines)


def shorten(s: str, n: int) -> str:
    s = " ".join(str(s).split())
    return s if len(s) <= n else s[: n - 3] + "..."


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Measure attention peers (PyTorch SDPA backends, FlexAttention) and the "
                    "GPU's copy/matmul ceilings for attnjit's benchmark shapes.")
    g = p.add_argument_group("decode shape")
    g.add_argument("--decode-batch", type=int, default=64)
    g.add_argument("--decode-q-heads", type=int, default=32)
    g.add_argument("--decode-kv-heads", type=int, default=8)
    g.add_argument("--kv-len", type=int, default=4096, help="KV length of every decode sequence")
    g.add_argument("--page-size", type=int, default=16, help="page size of the paged FlexAttention peer")
    g.add_argument("--flex-paged-fallback-page", type=int, default=128,
                   help="page size tried for flex-paged when --page-size fails (0: no fallback)")
    g = p.add_argument_group("prefill shapes")
    g.add_argument("--prefill-batch", type=int, default=4)
    g.add_argument("--prefill-heads", type=int, default=16)
    g.add_argument("--prefill-kv-heads", type=int, default=0, help="0: same as --prefill-heads")
    g.add_argument("--seq-len", type=int, default=4096, help="prefill length (q_len == kv_len)")
    g.add_argument("--mimo-dqk", type=int, default=192)
    g.add_argument("--mimo-dv", type=int, default=128)
    g.add_argument("--sparse-block", type=int, default=128, help="block size of the block-sparse shape (square)")
    g.add_argument("--block-density", type=float, default=0.3,
                   help="fraction of KV blocks each query block of the block-sparse shape lists")
    g = p.add_argument_group("common")
    g.add_argument("--head-dim", type=int, default=128, help="d_qk = d_v for decode and prefill")
    g.add_argument("--dtype", choices=("bf16", "fp16"), default="bf16")
    g.add_argument("--layout", choices=("bshd", "bhsd"), default="bshd",
                   help="storage of q/k/v: bshd = token-major [b, s, h, d] as an engine holds it "
                        "(peers get a [b, h, s, d] view, no copy); bhsd = contiguous [b, h, s, d]")
    g.add_argument("--shapes", default="all", help=f"comma list of {','.join(ALL_SHAPES)} or all")
    g.add_argument("--peers", default="all", help=f"comma list of {','.join(ALL_PEERS)} or all")
    g = p.add_argument_group("method")
    g.add_argument("--reps", type=int, default=0, help="timed repetitions per peer (0: auto, ~--target-ms)")
    g.add_argument("--target-ms", type=float, default=250.0, help="GPU time to spend timing one peer (auto reps)")
    g.add_argument("--min-reps", type=int, default=30)
    g.add_argument("--max-reps", type=int, default=300)
    g.add_argument("--warmup", type=int, default=5, help="untimed calls after the first (compiling) call")
    g.add_argument("--check-rows", type=int, default=256, help="query rows per checked head in prefill checks")
    g.add_argument("--rel-tol", type=float, default=2e-2, help="relative error above which a peer is WRONG")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--copy-mib", type=int, default=1024, help="size of each side of the copy ceiling")
    g.add_argument("--matmul-n", type=int, default=8192)
    g.add_argument("--matmul-reps", type=int, default=30, help="timed products for the matmul ceiling (a short burst)")
    g.add_argument("--spinup-s", type=float, default=0.0,
                   help="seconds of sustained matrix products before the matmul ceiling is timed "
                        "(0: burst rate at boost clock; >0 gives the power-capped sustained rate)")
    g.add_argument("--flex-mode", default="default",
                   help="torch.compile mode for FlexAttention (default, max-autotune-no-cudagraphs, ...)")
    g.add_argument("--json", metavar="PATH", help="write the full report as JSON")
    g.add_argument("--plan", action="store_true", help="print the cases, bytes and FLOPs, then exit (no GPU)")
    args = p.parse_args(argv)
    for name in ("decode_batch", "decode_q_heads", "decode_kv_heads", "kv_len", "page_size",
                 "prefill_batch", "prefill_heads", "seq_len", "mimo_dqk", "mimo_dv", "head_dim",
                 "copy_mib", "matmul_n", "matmul_reps", "min_reps", "max_reps", "sparse_block"):
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    if not 0.0 < args.block_density <= 1.0:
        p.error("--block-density must be in (0, 1]")
    parse_list(args.peers, ALL_PEERS, "--peers")
    return args


# --------------------------------------------------------------------------------------
# GPU part
# --------------------------------------------------------------------------------------


class Unsupported(Exception):
    pass


@dataclass
class InputSet:
    q: Any
    k: Any
    v: Any


@dataclass
class PeerRun:
    """What a peer's builder hands back: a callable over input-set indices, plus notes."""
    fn: Callable[[int], Any]
    notes: list[str] = field(default_factory=list)
    # Optional override of the tensors the check compares against (e.g. paged caches).
    keepalive: Any = None


def clean_warning(text: str) -> Optional[str]:
    """Keep the informative part of a PyTorch SDPA dispatch warning, or None."""
    t = re.sub(r"\(Triggered internally at [^)]*\)\.?", "", str(text))
    t = " ".join(t.split())
    if not t or t.endswith("because:") or "runtime disabled" in t:
        return None  # headers, and the backends that sdpa_kernel switched off on purpose
    return t


def error_reason(e: BaseException, caught: Optional[list] = None, limit: int = 400) -> str:
    msg = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    extra = []
    for w in caught or []:
        t = clean_warning(str(w.message))
        if t and t not in extra:
            extra.append(t)
    if extra:
        msg += " | " + " | ".join(extra)
    return shorten(msg, limit)


class Bench:
    def __init__(self, torch, args):
        self.torch = torch
        self.args = args
        self.has_sleep = hasattr(torch.cuda, "_sleep")

    def time(self, fn: Callable[[int], Any], n_sets: int, reps: int = 0) -> dict:
        """Median of per-call CUDA-event times. A spin kernel before each call keeps the GPU
        ahead of the host, so the events time the GPU work and not the Python launch cost;
        inputs rotate over n_sets so that L2 does not hold the previous call's data."""
        torch = self.torch
        a = self.args
        for i in range(a.warmup):
            fn(i % n_sets)
        torch.cuda.synchronize()
        # Host cost of one call (launch overhead) and a GPU-time estimate.
        t0 = time.perf_counter()
        for i in range(3):
            fn(i % n_sets)
        host_us = (time.perf_counter() - t0) / 3 * 1e6
        torch.cuda.synchronize()
        e0 = torch.cuda.Event(enable_timing=True)
        e1 = torch.cuda.Event(enable_timing=True)
        e0.record()
        for i in range(3):
            fn(i % n_sets)
        e1.record()
        torch.cuda.synchronize()
        est_ms = max(e0.elapsed_time(e1) / 3, 1e-3)
        if reps <= 0:
            reps = a.reps if a.reps > 0 else int(min(a.max_reps, max(a.min_reps, a.target_ms / est_ms)))
        # ~2 GHz clock: cycles = us * 2000; sleep twice the host cost plus a margin, at most 5 ms.
        sleep_cycles = int(min(5000.0, 2.0 * host_us + 30.0) * 2000) if self.has_sleep else 0
        before = gpu_state(torch)
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        for r in range(reps):
            if sleep_cycles:
                torch.cuda._sleep(sleep_cycles)
            starts[r].record()
            fn(r % n_sets)
            ends[r].record()
        torch.cuda.synchronize()
        ts = sorted(s.elapsed_time(e) for s, e in zip(starts, ends))
        n = len(ts)

        def q(p):
            return ts[min(n - 1, max(0, int(round(p * (n - 1)))))]

        after = gpu_state(torch)
        return {"ms": q(0.5), "p20_ms": q(0.2), "p80_ms": q(0.8), "min_ms": ts[0],
                "reps": n, "host_us": host_us, "rotation_sets": n_sets,
                "gpu_before": before, "gpu_after": after}


def gpu_state(torch) -> dict:
    """SM clock (MHz) and board power (W) through NVML, when torch can reach it."""
    st = {}
    try:
        st["sm_mhz"] = torch.cuda.clock_rate()
    except Exception:  # noqa: BLE001
        pass
    try:
        st["power_w"] = round(torch.cuda.power_draw() / 1000.0, 1)
    except Exception:  # noqa: BLE001
        pass
    return st


def torch_dtype(torch, name: str):
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[name]


def measure_ceilings(torch, bench: Bench, args) -> dict:
    out: dict = {}
    dt = torch.bfloat16
    try:
        log(f"[ceiling] copy {args.copy_mib} MiB -> {args.copy_mib} MiB ...")
        n = args.copy_mib * 1024 * 1024 // 2
        src = torch.randn(n, device="cuda", dtype=dt)
        dst = torch.empty_like(src)
        st = bench.time(lambda i: dst.copy_(src), 1, reps=max(50, args.min_reps))
        ok = bool(torch.equal(dst, src))
        bytes_moved = 2 * n * 2
        out["copy"] = {**st, "bytes": bytes_moved, "gib": n * 2 / 2**30,
                       "tbps": bytes_moved / (st["ms"] * 1e-3) / 1e12, "verified": ok}
        log(f"[ceiling] copy: {out['copy']['tbps']:.3f} TB/s (median {st['ms']:.4f} ms, verified={ok})")
        del dst
    except Exception as e:  # noqa: BLE001
        out["copy"] = {"error": error_reason(e)}
        log(f"[ceiling] copy failed: {out['copy']['error']}")
    try:
        # Read-only stream (a sum), for reference: decode kernels only read K/V.
        n = args.copy_mib * 1024 * 1024 // 2
        src = torch.randn(n, device="cuda", dtype=dt)
        st = bench.time(lambda i: src.sum(dtype=torch.float32), 1, reps=max(50, args.min_reps))
        out["read"] = {**st, "bytes": n * 2, "tbps": n * 2 / (st["ms"] * 1e-3) / 1e12,
                       "how": "torch.sum over a bf16 tensor of the copy's size"}
        log(f"[ceiling] read-only (sum): {out['read']['tbps']:.3f} TB/s (median {st['ms']:.4f} ms)")
        del src
    except Exception as e:  # noqa: BLE001
        out["read"] = {"error": error_reason(e)}
        log(f"[ceiling] read-only failed: {out['read']['error']}")
    torch.cuda.empty_cache()
    try:
        m = args.matmul_n
        log(f"[ceiling] bf16 matmul {m}^3 ...")
        a = torch.randn(m, m, device="cuda", dtype=dt)
        b = torch.randn(m, m, device="cuda", dtype=dt)
        c = torch.empty(m, m, device="cuda", dtype=dt)
        # Optional sustained load before timing. Off by default: under sustained bf16 products an
        # H100 reaches its power cap and its SM clock drops (1980 -> ~1400-1500 MHz, ~700 vs ~780
        # TFLOP/s); the default measures a short burst, the rate a floor should be computed from.
        t_end = time.time() + args.spinup_s
        k = 0
        while time.time() < t_end:
            torch.mm(a, b, out=c)
            k += 1
            if k % 16 == 0:
                torch.cuda.synchronize()
        torch.cuda.synchronize()
        st = bench.time(lambda i: torch.mm(a, b, out=c), 1, reps=args.matmul_reps)
        # spot check a few rows in fp32
        rows = torch.arange(0, m, max(1, m // 8), device="cuda")
        ref = a[rows].float() @ b.float()
        err = ((c[rows].float() - ref).norm() / ref.norm()).item()
        out["matmul"] = {**st, "n": m, "flops": 2.0 * m**3,
                         "tflops": 2.0 * m**3 / (st["ms"] * 1e-3) / 1e12, "rel_err": err}
        log(f"[ceiling] matmul: {out['matmul']['tflops']:.1f} TFLOP/s (median {st['ms']:.4f} ms, rel err {err:.1e}, "
            f"SM clock {st['gpu_before'].get('sm_mhz', '?')} -> {st['gpu_after'].get('sm_mhz', '?')} MHz)")
        del a, b, c
    except Exception as e:  # noqa: BLE001
        out["matmul"] = {"error": error_reason(e)}
        log(f"[ceiling] matmul failed: {out['matmul']['error']}")
    torch.cuda.empty_cache()
    return out


def make_sets(torch, case: Case, n_sets: int, layout: str, dtype) -> list[InputSet]:
    def mk(b, s, h, d):
        if layout == "bshd":
            return torch.randn(b, s, h, d, device="cuda", dtype=dtype).transpose(1, 2)
        return torch.randn(b, h, s, d, device="cuda", dtype=dtype)

    sets = []
    for _ in range(n_sets):
        sets.append(InputSet(q=mk(case.batch, case.q_len, case.q_heads, case.d_qk),
                             k=mk(case.batch, case.kv_len, case.kv_heads, case.d_qk),
                             v=mk(case.batch, case.kv_len, case.kv_heads, case.d_v)))
    return sets


def check_slice(torch, case: Case, args) -> tuple:
    """Batch, head and query-row indices that the float32 reference recomputes."""
    dev = "cuda"
    if case.kind == "decode":
        b = sorted({0, case.batch // 3, (2 * case.batch) // 3, case.batch - 1})
        h = list(range(case.q_heads))
        rows = [0]
    else:
        b = sorted({0, case.batch - 1})
        h = sorted({0, case.q_heads // 2, case.q_heads - 1})
        g = torch.Generator(device="cpu").manual_seed(args.seed + 1)
        n = min(case.q_len, max(2, args.check_rows))
        r = set(torch.randperm(case.q_len, generator=g)[: n - 2].tolist()) | {0, case.q_len - 1}
        rows = sorted(r)
    t = lambda x: torch.tensor(x, device=dev, dtype=torch.long)  # noqa: E731
    return t(b), t(h), t(rows)


_BLOCK_LISTS: dict = {}


def block_lists(torch, case: Case, seed: int):
    """The block-sparse shape's mask: allowed[h, qb, kb] (bool, on the GPU), kb listed for query
    block qb of head h. Random subsets of one size, from a fixed seed; the same for every peer and
    the reference."""
    key = (case.name, seed)
    if key not in _BLOCK_LISTS:
        qb, kb = case.q_len // case.sparse_block, case.kv_len // case.sparse_block
        g = torch.Generator(device="cpu").manual_seed(seed + 11)
        order = torch.argsort(torch.rand(case.q_heads, qb, kb, generator=g), dim=-1)[..., : case.listed_blocks()]
        allowed = torch.zeros(case.q_heads, qb, kb, dtype=torch.bool)
        allowed.scatter_(-1, order, True)
        _BLOCK_LISTS[key] = allowed.to("cuda")
    return _BLOCK_LISTS[key]


def reference(torch, case: Case, s: InputSet, idx, seed: int) -> Any:
    """float32 attention on the slice (bottom-right causal alignment; the block mask if any)."""
    bi, hi, rows = idx
    khi = torch.div(hi, case.group, rounding_mode="floor")
    q = s.q.index_select(0, bi).index_select(1, hi).index_select(2, rows).float()
    k = s.k.index_select(0, bi).index_select(1, khi).float()
    v = s.v.index_select(0, bi).index_select(1, khi).float()
    sc = torch.matmul(q, k.transpose(-1, -2)) * case.scale
    if case.causal:
        pos = rows + (case.kv_len - case.q_len)
        mask = torch.arange(case.kv_len, device=q.device)[None, :] > pos[:, None]
        sc = sc.masked_fill(mask, float("-inf"))
    if case.sparse_block:
        allowed = block_lists(torch, case, seed).index_select(0, hi)[:, torch.div(rows, case.sparse_block, rounding_mode="floor")]
        allowed = allowed.repeat_interleave(case.sparse_block, dim=-1)  # [heads, rows, kv_len]
        sc = sc.masked_fill(~allowed[None], float("-inf"))
    p = torch.softmax(sc, dim=-1)
    return torch.matmul(p, v)


def rel_error(torch, case: Case, out, ref, idx) -> float:
    bi, hi, rows = idx
    o = out.index_select(0, bi).index_select(1, hi).index_select(2, rows).float()
    if tuple(o.shape) != tuple(ref.shape):
        raise RuntimeError(f"output slice shape {tuple(o.shape)} != reference {tuple(ref.shape)}")
    if not bool(torch.isfinite(o).all()):
        return float("nan")
    return ((o - ref).norm() / ref.norm()).item()


# ---- peers ---------------------------------------------------------------------------


def build_sdpa(torch, case: Case, sets: list[InputSet], backend_name: str, args) -> PeerRun:
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if case.sparse_block:
        raise Unsupported("SDPA takes no block-sparse mask (a dense boolean mask would cost the full square)")
    backend = getattr(SDPBackend, backend_name, None)
    if backend is None:
        raise Unsupported(f"SDPBackend.{backend_name} does not exist in torch {torch.__version__}")
    if case.causal and case.q_len != case.kv_len:
        raise Unsupported("SDPA is_causal aligns top-left; only q_len == kv_len is measured")

    def call(q, k, v, gqa: bool):
        kw = {"enable_gqa": True} if gqa else {}
        with sdpa_kernel([backend]):
            return F.scaled_dot_product_attention(q, k, v, is_causal=case.causal, scale=case.scale, **kw)

    def first_call(q, k, v, gqa):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                out = call(q, k, v, gqa)
                torch.cuda.synchronize()
                return out, None
            except Exception as e:  # noqa: BLE001
                return None, error_reason(e, caught)

    s0 = sets[0]
    if case.group == 1:
        out, why = first_call(s0.q, s0.k, s0.v, False)
        if why:
            raise Unsupported(why)
        return PeerRun(fn=lambda i: call(sets[i].q, sets[i].k, sets[i].v, False))

    out, why = first_call(s0.q, s0.k, s0.v, True)
    if why is None:
        return PeerRun(fn=lambda i: call(sets[i].q, sets[i].k, sets[i].v, True), notes=["gqa=native (enable_gqa)"])
    # Fall back to K/V expanded to the q heads (materialized outside the timed region).
    log(f"    enable_gqa failed ({shorten(why, 200)}); trying K/V expanded to q heads")
    exp = [(s.k.repeat_interleave(case.group, dim=1), s.v.repeat_interleave(case.group, dim=1)) for s in sets]
    out, why2 = first_call(s0.q, exp[0][0], exp[0][1], False)
    if why2:
        raise Unsupported(f"enable_gqa: {why} ; expanded K/V: {why2}")
    return PeerRun(fn=lambda i: call(sets[i].q, exp[i][0], exp[i][1], False),
                   notes=[f"gqa=expanded K/V ({case.group}x K/V bytes read; enable_gqa unsupported: {shorten(why, 120)})"],
                   keepalive=exp)


_COMPILED_FLEX = {}


def compiled_flex(torch, args):
    key = args.flex_mode
    if key not in _COMPILED_FLEX:
        from torch.nn.attention.flex_attention import flex_attention
        kw = {"dynamic": False}
        if args.flex_mode != "default":
            kw["mode"] = args.flex_mode
        _COMPILED_FLEX[key] = torch.compile(flex_attention, **kw)
    return _COMPILED_FLEX[key]


def build_flex(torch, case: Case, sets: list[InputSet], args) -> PeerRun:
    from torch.nn.attention.flex_attention import create_block_mask

    flex = compiled_flex(torch, args)
    block_mask = None
    if case.causal:
        off = case.kv_len - case.q_len

        def causal(b, h, q_idx, kv_idx):
            return q_idx + off >= kv_idx

        block_mask = create_block_mask(causal, None, None, case.q_len, case.kv_len, device="cuda")
    if case.sparse_block:
        allowed = block_lists(torch, case, args.seed)
        bs = case.sparse_block

        def listed(b, h, q_idx, kv_idx):
            return allowed[h, q_idx // bs, kv_idx // bs]

        # Listed blocks come out as full blocks (no mask evaluated inside), the rest as skipped.
        block_mask = create_block_mask(listed, None, case.q_heads, case.q_len, case.kv_len, device="cuda",
                                       BLOCK_SIZE=bs)
    gqa = case.group > 1

    def fn(i):
        s = sets[i]
        return flex(s.q, s.k, s.v, block_mask=block_mask, scale=case.scale, enable_gqa=gqa)

    notes = ["non-paged" if case.kind == "decode" else "", "block_mask=causal" if case.causal else "",
             f"block_mask=listed {bs}x{bs} blocks" if case.sparse_block else ""]
    return PeerRun(fn=fn, notes=[n for n in notes if n], keepalive=block_mask)


def build_flex_paged_at(torch, case: Case, sets: list[InputSet], args, page: int) -> PeerRun:
    from torch.nn.attention.experimental._paged_attention import PagedAttention
    from torch.nn.attention.flex_attention import create_block_mask, noop_mask

    flex = compiled_flex(torch, args)
    if case.kv_len % page:
        raise Unsupported(f"kv_len {case.kv_len} is not a multiple of page {page}")
    b = case.batch
    pages_per_seq = case.kv_len // page
    n_pages = b * pages_per_seq
    pa = PagedAttention(n_pages, page, b, device="cuda")
    notes = [f"page={page}"]
    # Scatter the pages the way a long-running engine's allocator leaves them.
    if isinstance(getattr(pa, "empty_pages", None), list):
        g = torch.Generator(device="cpu").manual_seed(args.seed + 2)
        pa.empty_pages = torch.randperm(n_pages, generator=g).tolist()
        notes.append("pages shuffled")
    for i in range(b):
        pa.reserve(torch.tensor(i, device="cuda"), torch.tensor(case.kv_len, device="cuda"))
    dt = sets[0].k.dtype
    caches = []
    bidx = torch.arange(b, device="cuda", dtype=torch.int32)
    pos = torch.arange(case.kv_len, device="cuda", dtype=torch.int32).unsqueeze(0).expand(b, case.kv_len)
    for s in sets:
        kc = torch.empty(1, case.kv_heads, n_pages * page, case.d_qk, device="cuda", dtype=dt)
        vc = torch.empty(1, case.kv_heads, n_pages * page, case.d_v, device="cuda", dtype=dt)
        pa.assign(bidx, pos, s.k, s.v, kc, vc)
        caches.append((kc, vc))
    logical = create_block_mask(noop_mask, b, 1, case.q_len, case.kv_len, device="cuda", BLOCK_SIZE=page)
    paged_mask = pa.convert_logical_block_mask(logical)
    gqa = case.group > 1

    def fn(i):
        kc, vc = caches[i]
        return flex(sets[i].q, kc, vc, block_mask=paged_mask, scale=case.scale, enable_gqa=gqa)

    fn(0)
    torch.cuda.synchronize()
    notes.append("KV cache [1, hkv, pages*page, d] (HND)")
    return PeerRun(fn=fn, notes=notes, keepalive=(pa, caches, paged_mask))


def build_flex_paged(torch, case: Case, sets: list[InputSet], args) -> PeerRun:
    if case.kind != "decode":
        raise Unsupported("paged FlexAttention is measured for decode only")
    try:
        return build_flex_paged_at(torch, case, sets, args, case.page_size)
    except ImportError as e:
        raise Unsupported(f"no paged FlexAttention in this torch: {error_reason(e)}")
    except Exception as e:  # noqa: BLE001
        why = error_reason(e)
        fb = args.flex_paged_fallback_page
        if not fb or fb == case.page_size:
            raise Unsupported(f"page {case.page_size}: {why}")
        log(f"    page {case.page_size} failed ({shorten(why, 200)}); trying page {fb}")
        torch.cuda.empty_cache()
        run = build_flex_paged_at(torch, case, sets, args, fb)
        run.notes.append(f"page {case.page_size} failed: {shorten(why, 120)}")
        return run


PEER_BUILDERS = {
    "sdpa-cudnn": lambda torch, c, s, a: build_sdpa(torch, c, s, "CUDNN_ATTENTION", a),
    "sdpa-flash": lambda torch, c, s, a: build_sdpa(torch, c, s, "FLASH_ATTENTION", a),
    "sdpa-efficient": lambda torch, c, s, a: build_sdpa(torch, c, s, "EFFICIENT_ATTENTION", a),
    "flex": build_flex,
    "flex-paged": build_flex_paged,
}


def run_peer(torch, bench: Bench, case: Case, peer: str, sets, idx, refs, args) -> dict:
    res: dict = {"peer": peer, "status": "?", "ms": None, "rate": None, "rel_err": None, "notes": ""}
    t0 = time.time()
    log(f"  [{case.name}] {peer} ...")
    run = None
    try:
        try:
            run = PEER_BUILDERS[peer](torch, case, sets, args)
            out = run.fn(0)
            torch.cuda.synchronize()
        except Unsupported as e:
            res.update(status="unsupported", reason=shorten(str(e), 400))
            return res
        except Exception as e:  # noqa: BLE001
            res.update(status="unsupported", reason=error_reason(e))
            return res
        res["first_call_s"] = round(time.time() - t0, 2)
        res["notes"] = "; ".join(run.notes)
        errs = []
        for i in range(len(sets)) if len(sets) <= 2 else (0, len(sets) - 1):
            o = out if i == 0 else run.fn(i)
            errs.append(rel_error(torch, case, o, refs[i], idx))
        del out
        err = max(errs) if not any(math.isnan(e) for e in errs) else float("nan")
        res["rel_err"] = err
        st = bench.time(run.fn, len(sets))
        res.update(st)
        if case.kind == "decode":
            res["rate"] = case.kv_bytes() / (st["ms"] * 1e-3) / 1e12
        else:
            res["rate"] = case.flops() / (st["ms"] * 1e-3) / 1e12
        if math.isnan(err) or err > args.rel_tol:
            res["status"] = "WRONG"
            res["reason"] = f"rel err {err:.3e} > {args.rel_tol:g} against the float32 reference"
        else:
            res["status"] = "ok"
        unit = "TB/s" if case.kind == "decode" else "TFLOP/s"
        log(f"    {res['status']}: {st['ms']:.4f} ms, {res['rate']:.2f} {unit}, rel err {err:.2e} "
            f"({st['reps']} reps, host {st['host_us']:.0f} us/call, first call {res['first_call_s']} s, "
            f"SM {st['gpu_before'].get('sm_mhz', '?')}->{st['gpu_after'].get('sm_mhz', '?')} MHz, "
            f"{st['gpu_after'].get('power_w', '?')} W)")
        return res
    except Exception as e:  # noqa: BLE001
        res.update(status="error", reason=error_reason(e))
        log("    " + traceback.format_exc().strip().replace("\n", "\n    "))
        return res
    finally:
        if res["status"] in ("unsupported", "error"):
            log(f"    {res['status']}: {res.get('reason', '')}")
        res["wall_s"] = round(time.time() - t0, 2)
        del run
        torch.cuda.empty_cache()


def run_case(torch, bench: Bench, case: Case, peers: list[str], ceilings: dict, args) -> dict:
    dtype = torch_dtype(torch, args.dtype)
    l2 = getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 0) or L2_FALLBACK_BYTES
    n_sets = rotation_sets(case.working_set_bytes(), l2)
    entry = {"name": case.name, "kind": case.kind, "desc": case.describe(), "params": asdict(case),
             "kv_bytes": case.kv_bytes(), "flops": case.flops(), "working_set_bytes": case.working_set_bytes(),
             "rotation_sets": n_sets, "layout": args.layout, "results": []}
    copy_tbps = ceilings.get("copy", {}).get("tbps")
    mm_tflops = ceilings.get("matmul", {}).get("tflops")
    if case.kind == "decode":
        entry["floor_ms"] = case.kv_bytes() / (copy_tbps * 1e12) * 1e3 if copy_tbps else None
        read_tbps = ceilings.get("read", {}).get("tbps")
        entry["floor_read_ms"] = case.kv_bytes() / (read_tbps * 1e12) * 1e3 if read_tbps else None
    else:
        entry["floor_ms"] = case.flops() / (mm_tflops * 1e12) * 1e3 if mm_tflops else None
    log(f"[{case.name}] {case.describe()} | {n_sets} input set(s) | floor {fmt_ms(entry['floor_ms'])} ms")
    sets = None
    try:
        torch.manual_seed(args.seed)
        sets = make_sets(torch, case, n_sets, args.layout, dtype)
        idx = check_slice(torch, case, args)
        refs = [reference(torch, case, s, idx, args.seed) for s in sets]
        for peer in peers:
            if peer == "flex-paged" and case.kind != "decode":
                continue
            entry["results"].append(run_peer(torch, bench, case, peer, sets, idx, refs, args))
    except Exception as e:  # noqa: BLE001
        entry["error"] = error_reason(e)
        log(f"[{case.name}] case failed: {entry['error']}")
        log(traceback.format_exc())
    finally:
        del sets
        torch.cuda.empty_cache()
    return entry


def env_info(torch) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__,
            "cuda": getattr(torch.version, "cuda", None)}
    try:
        info["cudnn"] = torch.backends.cudnn.version()
    except Exception:  # noqa: BLE001
        info["cudnn"] = None
    try:
        import triton
        info["triton"] = triton.__version__
    except Exception:  # noqa: BLE001
        info["triton"] = None
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(device=p.name, sm_count=p.multi_processor_count,
                    capability=f"{p.major}.{p.minor}", memory_gib=round(p.total_memory / 2**30, 1),
                    l2_bytes=getattr(p, "L2_cache_size", None))
    return info


def write_json(path: Optional[str], report: dict) -> None:
    if not path:
        return
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(report, f, indent=2, default=str)
    os.replace(tmp, path)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    cases = build_cases(args)
    peers = parse_list(args.peers, ALL_PEERS, "--peers")
    if args.plan:
        for c in cases:
            log(f"{c.describe()} | K+V {c.kv_bytes() / 1e6:.1f} MB | {c.flops() / 1e12:.3f} TFLOP "
                f"| working set {c.working_set_bytes() / 1e6:.1f} MB "
                f"| rotation sets (50 MB L2) {rotation_sets(c.working_set_bytes(), L2_FALLBACK_BYTES)}")
        log(f"peers: {','.join(peers)}")
        return 0

    t_start = time.time()
    report: dict = {"args": vars(args), "env": {}, "ceilings": {}, "cases": [], "method": (
        "median of per-call CUDA-event times; a spin kernel before each call keeps the GPU ahead of "
        "the host; inputs rotate over several sets when the working set is under 4x L2; each peer's "
        "output is compared with a float32 reference on a slice (relative Frobenius error)")}
    try:
        import torch
    except Exception as e:  # noqa: BLE001
        log(f"cannot import torch: {e}")
        report["error"] = f"cannot import torch: {e}"
        write_json(args.json, report)
        return 2
    report["env"] = env_info(torch)
    log(f"env: {json.dumps(report['env'])}")
    if not torch.cuda.is_available():
        report["error"] = "no CUDA device"
        log("no CUDA device: nothing to measure")
        write_json(args.json, report)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        import torch._dynamo as dynamo
        for name, val in (("recompile_limit", 64), ("cache_size_limit", 64),
                          ("accumulated_recompile_limit", 512), ("accumulated_cache_size_limit", 512)):
            if hasattr(dynamo.config, name):
                setattr(dynamo.config, name, val)
    except Exception as e:  # noqa: BLE001
        log(f"note: could not raise dynamo recompile limits: {e}")

    bench = Bench(torch, args)
    if not bench.has_sleep:
        log("note: torch.cuda._sleep missing; times may include host launch gaps")
    try:
        try:
            report["ceilings"] = measure_ceilings(torch, bench, args)
        except Exception as e:  # noqa: BLE001
            report["ceilings"] = {"error": error_reason(e)}
            log(f"ceilings failed: {report['ceilings']['error']}")
        write_json(args.json, report)
        for c in cases:
            report["cases"].append(run_case(torch, bench, c, peers, report["ceilings"], args))
            write_json(args.json, report)
    finally:
        report["wall_s"] = round(time.time() - t_start, 1)
        write_json(args.json, report)
        log("")
        log(render_table(report))
        log(f"total wall time {report['wall_s']} s" + (f"; JSON: {args.json}" if args.json else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
