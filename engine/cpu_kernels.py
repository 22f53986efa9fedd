"""Native CPU kernels: C sources in ``engine/csrc``, compiled once per machine, loaded with ctypes.

Decode attention over the paged cache (``paged_attention.c``), prefill attention of one
sequence's chunk over its paged keys (``prefill_attention.c``: causal by position, no mask, no
gather; ~3x torch's CPU flash attention at 512 tokens), the decoder layer's elementwise
work, RMSNorm, SiLU-gate and RoPE, one pass each (``elementwise.c``), and the one-row matmul
of batch-1 decode (``gemv.c``: a prefetching stream over the weight, ~1.35x oneDNN's GEMV).

Why C and ctypes rather than a torch extension: the kernels need no torch headers, so it
compiles in about a second with the system's C compiler (``cc``/``gcc``; ``$CC`` wins),
where ``torch.utils.cpp_extension`` takes a minute. The shared object is cached under
``$TANDEM_KERNEL_CACHE`` (default ``~/.cache/tandem/kernels``), keyed by the source, the
flags, the compiler and the CPU (it is built with ``-march=native``), so every process on
the machine reuses one build and a home directory moved to another CPU rebuilds.

Every kernel is checked once per process against the torch computation it replaces; if
the compiler is missing, the build fails, or the check disagrees, the engine logs why and
keeps its torch path. ``TANDEM_CPU_KERNELS=0`` turns the kernels off (for comparisons).
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

ENV_SWITCH = "TANDEM_CPU_KERNELS"
_CSRC = Path(__file__).resolve().parent / "csrc"
_SOURCES = ("paged_attention.c", "prefill_attention.c", "elementwise.c", "gemv.c")
_FLAGS = ["-O3", "-march=native", "-shared", "-fPIC"]
_I64, _PTR = ctypes.c_int64, ctypes.c_void_p


def _cpu_identity() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    keep = [ln for ln in info.splitlines() if ln.startswith(("model name", "flags"))][:2]
    return platform.machine() + "\n" + "\n".join(keep)


def _cache_dir() -> Path:
    root = os.environ.get("TANDEM_KERNEL_CACHE") or \
        os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "tandem", "kernels")
    return Path(root)


def _build() -> Path:
    """Compile the sources into one shared object in the cache (atomically: concurrent
    workers may race) and return its path."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise RuntimeError("no C compiler found (set CC, or install gcc)")
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    texts = [(_CSRC / name).read_text() for name in (*_SOURCES, "vec8.h")]
    key = hashlib.sha256("\0".join([*texts, " ".join(_FLAGS), version, _cpu_identity()])
                         .encode()).hexdigest()[:20]
    out_dir = _cache_dir()
    target = out_dir / f"tandem-kernels-{key}.so"
    if target.exists():
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out_dir)
    os.close(fd)
    try:
        proc = subprocess.run([cc, *_FLAGS, "-I", str(_CSRC), "-o", tmp,
                               *(str(_CSRC / name) for name in _SOURCES), "-lm"],
                              capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"{cc} failed: {proc.stderr.strip()[-500:]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    logger.info("compiled %s -> %s", ", ".join(_SOURCES), target)
    return target


@functools.cache
def _library() -> ctypes.CDLL | None:
    if os.environ.get(ENV_SWITCH) == "0":
        return None
    try:
        lib = ctypes.CDLL(str(_build()))
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        logger.warning("CPU kernels unavailable (%s); using torch ops", exc)
        return None
    fn = lib.tandem_paged_decode_attention
    fn.argtypes = [_PTR] * 5 + [_I64] * 6 + [ctypes.c_float, _PTR, _PTR]
    fn.restype = ctypes.c_int
    lib.tandem_prefill_attention.argtypes = [_PTR, _I64, _PTR, _PTR, _PTR] + [_I64] * 7 + \
        [ctypes.c_float, _PTR, _PTR]
    lib.tandem_prefill_attention.restype = ctypes.c_int
    lib.tandem_rms_norm.argtypes = [_PTR, _I64, _PTR, _I64, _I64, ctypes.c_float, _PTR]
    lib.tandem_silu_mul.argtypes = [_PTR, _I64, _I64, _PTR]
    lib.tandem_rope.argtypes = [_PTR, _I64, _PTR, _PTR, _I64, _I64, _I64, _PTR]
    lib.tandem_gemv.argtypes = [_PTR, _PTR, _PTR, _I64, _I64, _PTR]
    for name in ("tandem_rms_norm", "tandem_silu_mul", "tandem_rope", "tandem_gemv"):
        getattr(lib, name).restype = None
    if not (_agrees_with_torch(fn) and _prefill_agrees_with_torch(lib)
            and _elementwise_agrees_with_torch(lib) and _gemv_agrees_with_torch(lib)):
        logger.warning("CPU kernels disagree with torch on this machine; using torch ops")
        return None
    return lib


def available() -> bool:
    """True when the native kernels are built, loaded and checked (all of them or none)."""
    return _library() is not None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """HF RMSNorm of float32 rows: x [rows, dim] (rows may be strided), weight [dim]."""
    return _rms_norm(_library(), x, weight, eps)


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up of a contiguous float32 [rows, 2 * inter] fused projection."""
    return _silu_mul(_library(), gate_up)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x * cos + rotate_half(x) * sin: x [n, heads, dim] (token rows may be strided),
    cos / sin [n, 1, dim] or [n, dim] contiguous. Returns a contiguous [n, heads, dim]."""
    return _rope(_library(), x, cos, sin)


def gemv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """F.linear of one float32 row: x [1, in] (or [in]), weight [out, in] contiguous with in a
    multiple of 16, bias [out] or None. Returns [1, out] (or [out])."""
    return _gemv(_library(), x, weight, bias)


def gemv_fits(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether ``gemv`` takes this call: one float32 row, a contiguous weight, in % 16 == 0."""
    return (x.dim() <= 2 and x.numel() == weight.shape[1] and weight.shape[1] % 16 == 0
            and x.dtype == weight.dtype == torch.float32 and weight.is_contiguous())


def _gemv(lib, x, weight, bias):
    if not gemv_fits(x, weight):
        raise ValueError("gemv takes one float32 row and a contiguous [out, in] weight, in % 16 == 0")
    xc = x.contiguous()
    out = torch.empty(*x.shape[:-1], weight.shape[0], dtype=torch.float32)
    lib.tandem_gemv(weight.data_ptr(), xc.data_ptr(), None if bias is None else bias.contiguous().data_ptr(),
                    weight.shape[0], weight.shape[1], out.data_ptr())
    return out


def _gemv_agrees_with_torch(lib) -> bool:
    """Row counts with and without a tail of fewer than 8 rows, with and without a bias."""
    gen = torch.Generator().manual_seed(3)
    for rows, cols in ((37, 48), (16, 32)):
        w, x, b = torch.randn(rows, cols, generator=gen), torch.randn(1, cols, generator=gen), torch.randn(rows, generator=gen)
        for bias in (b, None):
            if not torch.allclose(_gemv(lib, x, w, bias), F.linear(x, w, bias), atol=1e-5, rtol=1e-4):
                return False
    return True


def _rms_norm(lib, x, weight, eps):
    if x.dim() != 2 or x.stride(1) != 1:
        x = x.reshape(-1, x.shape[-1]).contiguous()
    out = torch.empty(x.shape, dtype=torch.float32)
    lib.tandem_rms_norm(x.data_ptr(), x.stride(0), weight.data_ptr(), x.shape[0], x.shape[1], eps,
                        out.data_ptr())
    return out


def _silu_mul(lib, gate_up):
    gate_up = gate_up.contiguous()
    rows, inter = gate_up.shape[0], gate_up.shape[1] // 2
    out = torch.empty(rows, inter, dtype=torch.float32)
    lib.tandem_silu_mul(gate_up.data_ptr(), rows, inter, out.data_ptr())
    return out


def _rope(lib, x, cos, sin):
    n, heads, dim = x.shape
    if x.stride(2) != 1 or x.stride(1) != dim:
        x = x.contiguous()
    cos, sin = cos.contiguous(), sin.contiguous()
    out = torch.empty(n, heads, dim, dtype=torch.float32)
    lib.tandem_rope(x.data_ptr(), x.stride(0), cos.data_ptr(), sin.data_ptr(), n, heads, dim,
                    out.data_ptr())
    return out


def paged_decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                           block_tables: torch.Tensor, seq_lens: torch.Tensor, max_len: int,
                           block_size: int, scale: float) -> torch.Tensor:
    """One query per sequence over its paged keys/values, read in place.

    q: [B, Hq, D] float32; caches: [slots, Hkv, D] float32 contiguous; block_tables: [B, M]
    int64; seq_lens: [B] int64 (keys per sequence, each <= M * block_size, max ``max_len``).
    Returns [B, Hq, D]."""
    lib = _library()
    if lib is None:
        raise RuntimeError("native paged attention is not available")
    return _call(lib.tandem_paged_decode_attention, q, k_cache, v_cache, block_tables, seq_lens,
                 max_len, block_size, scale)


def prefill_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                      block_table: torch.Tensor | None, slot_start: int, kv_len: int,
                      block_size: int, scale: float) -> torch.Tensor:
    """One sequence's chunk of queries over its keys, read in place: query i sits at position
    kv_len - n + i and sees keys 0..that position (a causal prompt, a later chunk, a prompt
    after a cached prefix alike).

    q: [n, Hq, D] float32 (token rows may be strided); caches: [slots, Hkv, D] float32
    contiguous; block_table: [blocks] int64 (key t in slot table[t // bs] * bs + t % bs) or
    None for keys in slots slot_start.. slot_start + kv_len. Returns [n, Hq, D]."""
    lib = _library()
    if lib is None:
        raise RuntimeError("native prefill attention is not available")
    return _prefill(lib, q, k_cache, v_cache, block_table, slot_start, kv_len, block_size, scale)


def _prefill(lib, q, k_cache, v_cache, block_table, slot_start, kv_len, block_size, scale):
    n, heads, head_dim = q.shape
    if q.stride(2) != 1 or q.stride(1) != head_dim:
        q = q.contiguous()
    kv_heads = k_cache.shape[1]
    if heads % kv_heads or head_dim % 8 or not (k_cache.is_contiguous() and v_cache.is_contiguous()):
        raise ValueError("prefill_attention needs contiguous caches, Hq divisible by Hkv "
                         "and head_dim divisible by 8")
    if not 1 <= n <= kv_len:
        raise ValueError(f"prefill_attention: {n} queries over {kv_len} keys")
    table = None
    if block_table is not None:
        table = block_table.contiguous()
        if table.dtype != torch.int64 or table.numel() * block_size < kv_len:
            raise ValueError("prefill_attention: block_table must be int64 and cover kv_len")
    kv_pad = -(-kv_len // 32) * 32
    scratch = torch.empty((head_dim + 6) * kv_pad + 4 * head_dim, dtype=torch.float32)
    out = torch.empty(n, heads, head_dim, dtype=torch.float32)
    lib.tandem_prefill_attention(q.data_ptr(), q.stride(0), k_cache.data_ptr(), v_cache.data_ptr(),
                                 table.data_ptr() if table is not None else None, slot_start, n,
                                 kv_len, heads, kv_heads, head_dim, block_size, scale,
                                 scratch.data_ptr(), out.data_ptr())
    return out


def _call(fn, q, k_cache, v_cache, block_tables, seq_lens, max_len, block_size, scale) -> torch.Tensor:
    q = q.contiguous()
    batch, heads, head_dim = q.shape
    kv_heads = k_cache.shape[1]
    if heads % kv_heads or head_dim % 8 or not (k_cache.is_contiguous() and v_cache.is_contiguous()):
        raise ValueError("paged_decode_attention needs contiguous caches, Hq divisible by Hkv "
                         "and head_dim divisible by 8")
    out = torch.empty_like(q)
    scratch = torch.empty(heads * (max_len + head_dim), dtype=torch.float32)
    fn(q.data_ptr(), k_cache.data_ptr(), v_cache.data_ptr(), block_tables.data_ptr(),
       seq_lens.data_ptr(), batch, heads, kv_heads, head_dim, block_tables.shape[1], block_size,
       scale, scratch.data_ptr(), out.data_ptr())
    return out


def _elementwise_agrees_with_torch(lib) -> bool:
    """Each elementwise kernel against the torch ops it replaces, on strided inputs."""
    gen = torch.Generator().manual_seed(1)
    wide = torch.randn(5, 3 * 24, generator=gen) * 4
    x, w = wide[:, :20], torch.randn(20, generator=gen)
    ref = w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5))
    ok = torch.allclose(_rms_norm(lib, x, w, 1e-5), ref, atol=1e-5, rtol=1e-4)
    gu = torch.randn(5, 2 * 13, generator=gen) * 6
    ok &= torch.allclose(_silu_mul(lib, gu), F.silu(gu[:, :13]) * gu[:, 13:], atol=1e-5, rtol=1e-4)
    qk = wide[:, :3 * 16].view(5, 3, 16)
    cos, sin = torch.randn(5, 1, 16, generator=gen), torch.randn(5, 1, 16, generator=gen)
    rot = torch.cat((-qk[..., 8:], qk[..., :8]), dim=-1)
    ok &= torch.allclose(_rope(lib, qk, cos, sin), qk * cos + rot * sin, atol=1e-5, rtol=1e-4)
    return bool(ok)


def _prefill_agrees_with_torch(lib) -> bool:
    """The prefill kernel against masked SDPA on gathered keys: a chunk after earlier keys
    (shuffled blocks, strided queries) and a whole causal prompt in consecutive slots."""
    gen = torch.Generator().manual_seed(2)
    bs, heads, kv_heads, dim = 4, 6, 2, 16
    k_cache, v_cache = (torch.randn(12 * bs, kv_heads, dim, generator=gen) for _ in range(2))
    table = torch.randperm(12, generator=gen)[:10]
    for n, kv_len, blocks, start in ((7, 37, table, 0), (37, 37, None, 4)):
        q = torch.randn(n, heads, 2 * dim, generator=gen)[..., :dim]
        got = _prefill(lib, q, k_cache, v_cache, blocks, start, kv_len, bs, dim ** -0.5)
        slots = ((blocks.repeat_interleave(bs) * bs + torch.arange(bs).repeat(len(blocks)))[:kv_len]
                 if blocks is not None else torch.arange(start, start + kv_len))
        k, v = k_cache[slots].transpose(0, 1), v_cache[slots].transpose(0, 1)
        mask = torch.arange(kv_len) <= torch.arange(kv_len - n, kv_len).unsqueeze(1)
        ref = F.scaled_dot_product_attention(q.transpose(0, 1), k.repeat_interleave(3, 0),
                                             v.repeat_interleave(3, 0), attn_mask=mask,
                                             scale=dim ** -0.5)
        if not torch.allclose(got, ref.transpose(0, 1), atol=1e-5, rtol=1e-4):
            return False
    return True


def _agrees_with_torch(fn) -> bool:
    """The kernel against SDPA on gathered keys, on a small shuffled paged layout."""
    gen = torch.Generator().manual_seed(0)
    bs, heads, kv_heads, dim, lens = 4, 6, 2, 16, [1, 7, 11]
    blocks = torch.randperm(12, generator=gen)[:9].view(3, 3)
    k_cache, v_cache = (torch.randn(12 * bs, kv_heads, dim, generator=gen) for _ in range(2))
    q = torch.randn(3, heads, dim, generator=gen)
    got = _call(fn, q, k_cache, v_cache, blocks, torch.tensor(lens), max(lens), bs, dim ** -0.5)
    for b, n in enumerate(lens):
        slots = (blocks[b].repeat_interleave(bs) * bs + torch.arange(bs).repeat(3))[:n]
        k, v = k_cache[slots].transpose(0, 1), v_cache[slots].transpose(0, 1)
        ref = F.scaled_dot_product_attention(q[b].unsqueeze(1), k.repeat_interleave(3, 0),
                                             v.repeat_interleave(3, 0), scale=dim ** -0.5)
        if not torch.allclose(got[b], ref.squeeze(1), atol=1e-5, rtol=1e-4):
            return False
    return True
