"""How the model's matmuls run: ``Linear`` and the per-model ``MatmulPlan`` that routes it.

Float32 on CPU picks its library by CPU vendor. On AMD EPYC, MKL's sgemm reached ~17 GB/s
for batch-1 GEMV and ~70 GFLOP/s at batch 32 where oneDNN reached ~23-32 GB/s and ~130-250
GFLOP/s (1-2 threads), so AMD (and any non-Intel CPU) goes through oneDNN. On Intel Xeon
(AVX-512, AMX) MKL is the faster one: a llama-20m layer's matmuls took 0.41 / 1.59 ms with
MKL against 0.54 / 1.86 ms with oneDNN at batch 1 / 32, one thread, so Intel keeps
``F.linear``. (Shape-dependent: on llama-100m the same Xeon decoded 22 / 110 / 275 tok/s at
batch 1 / 8 / 32 with oneDNN against 25 / 77 / 244 with MKL; a per-shape choice is left to do.) The choice is by vendor, not by a timing probe, so every process on a machine
computes the same numbers. ``TANDEM_ONEDNN=1``/``0`` forces either way; oneDNN is checked
once against ``F.linear`` and falls back to it.

``matmul_dtype="bfloat16"`` (opt-in; float32 stays the exact default) runs every linear layer
and the LM head in bfloat16 on CPUs with AMX: weights are converted and packed once for
oneDNN's AMX kernels, each matmul's input is rounded to bfloat16 and its output returned in
the model's float32; prefill attention (SDPA over a prompt chunk) runs in bfloat16 too. Norms,
RoPE, decode attention, the KV cache and the residual stream stay float32.
Measured on one core of an AMX Xeon, a 2048x384 weight: 62 vs 124 us at batch 1, 0.7 vs 5.1
ms at 512 rows. Without AMX it logs a warning and stays float32 (bf16 without AMX is slower).

One row (batch-1 decode, a prompt's LM-head row) goes to the native GEMV
(``engine.cpu_kernels.gemv``) where it was measured faster: on AMD EPYC (Zen 5, one core)
~32 GB/s through llama-100m's weights against ~24 GB/s for oneDNN. Intel keeps MKL's until
measured there; ``TANDEM_GEMV=1``/``0`` forces either way.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engine import cpu_kernels

logger = logging.getLogger(__name__)

ONEDNN_ENV = "TANDEM_ONEDNN"       # "1" / "0" forces the oneDNN float32 path on / off
GEMV_ENV = "TANDEM_GEMV"           # "1" / "0" forces the native one-row GEMV on / off
MATMUL_DTYPES = (None, "float32", "bfloat16")


def _cpuinfo_field(name: str) -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_vendor() -> str:
    """``vendor_id`` of /proc/cpuinfo (e.g. GenuineIntel, AuthenticAMD); "" if unknown."""
    return _cpuinfo_field("vendor_id")


def cpu_has_amx_bf16() -> bool:
    return "amx_bf16" in _cpuinfo_field("flags").split()


def _gemv_usable() -> bool:
    wanted = os.environ.get(GEMV_ENV)
    if wanted == "0" or (wanted != "1" and cpu_vendor() == "GenuineIntel"):
        return False
    return cpu_kernels.available()


def _onednn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def _onednn_fp32_usable() -> bool:
    wanted = os.environ.get(ONEDNN_ENV)
    if wanted == "0" or (wanted != "1" and cpu_vendor() == "GenuineIntel"):
        return False
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        gen = torch.Generator().manual_seed(0)
        x, w, b = (torch.randn(s, generator=gen) for s in ((3, 64), (48, 64), (48,)))
        return torch.allclose(_onednn(x, w, b), F.linear(x, w, b), atol=1e-5, rtol=1e-5)
    except (RuntimeError, AttributeError) as exc:   # op missing or primitive unsupported
        logger.info("oneDNN linear unavailable (%s); using F.linear", exc)
        return False


@dataclass(slots=True, frozen=True)
class MatmulPlan:
    mode: str          # "torch" (F.linear), "onednn" (float32), "bf16-amx"
    gemv: bool = False  # one float32 row through the native GEMV

    @classmethod
    def choose(cls, device: torch.device, dtype: torch.dtype, matmul_dtype: str | None) -> "MatmulPlan":
        if matmul_dtype not in MATMUL_DTYPES:
            raise ValueError(f"matmul_dtype must be one of {MATMUL_DTYPES}, got {matmul_dtype!r}")
        if device.type != "cpu" or dtype != torch.float32:
            if matmul_dtype == "bfloat16":
                logger.warning("matmul_dtype=bfloat16 applies to float32 models on CPU; ignored")
            return cls("torch")
        if matmul_dtype == "bfloat16":
            if cpu_has_amx_bf16() and torch.backends.mkldnn.is_available():
                return cls("bf16-amx")
            logger.warning("matmul_dtype=bfloat16 needs a CPU with AMX (amx_bf16); keeping float32")
        return cls("onednn" if _onednn_fp32_usable() else "torch", gemv=_gemv_usable())

    def pack(self, weight: torch.Tensor) -> torch.Tensor | None:
        """The weight as this plan's kernel wants it (None: use the parameter as it is)."""
        if self.mode != "bf16-amx":
            return None
        with torch.no_grad():
            return torch.ops.mkldnn._reorder_linear_weight(weight.detach().to(torch.bfloat16))


def linear_for(plan: MatmulPlan, x: torch.Tensor, weight: torch.Tensor, packed: torch.Tensor | None,
               bias: torch.Tensor | None) -> torch.Tensor:
    if packed is not None:
        out = _onednn(x.to(torch.bfloat16), packed, None).to(x.dtype)
        return out if bias is None else out + bias
    if plan.gemv and x.dim() == 2 and x.shape[0] == 1 and cpu_kernels.gemv_fits(x, weight):
        return cpu_kernels.gemv(x, weight, bias)
    if plan.mode == "onednn":
        return _onednn(x, weight, bias)
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    """``nn.Linear`` whose matmul follows the model's ``MatmulPlan``."""

    plan = MatmulPlan("torch")
    packed: torch.Tensor | None = None

    def apply_plan(self, plan: MatmulPlan) -> None:
        self.plan, self.packed = plan, plan.pack(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear_for(self.plan, x, self.weight, self.packed, self.bias)
