"""Mixed precision for the training loop (`train.precision`): which dtype autocast computes in, and whether the
loss is scaled. bf16 keeps fp32's exponent range, so it needs no loss scaling; fp16 does (a GradScaler, whose
state is checkpointed so that a resumed run continues exactly). Weights and optimizer states stay fp32.

`auto` picks bf16 on a CUDA device that supports it, fp16 on an older one; on a CPU, bf16 where the CPU computes
bf16 natively (AVX512_BF16 or AMX), fp32 elsewhere (emulated bf16 is no faster than fp32). The run's hardware
record says which CPU features it saw (repro.provenance.cpu_info). The cpu scale stays fp32 until Table 2's cells
are measured in both precisions on such a CPU."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch

PRECISIONS = ("fp32", "bf16", "fp16", "auto")  # train.precision
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    name: str  # fp32 | bf16 | fp16: what runs (never auto)
    device_type: str  # cuda | cpu | mps

    @property
    def mixed(self) -> bool:
        return self.name in DTYPES

    def autocast(self) -> AbstractContextManager:
        """Forward passes and the loss in the reduced dtype (matmuls; softmax and norms stay fp32 by torch's rules)."""
        return torch.autocast(self.device_type, dtype=DTYPES.get(self.name, torch.float32), enabled=self.mixed)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Loss scaling for fp16; a pass-through (scale 1, plain optimizer step) otherwise."""
        return torch.amp.GradScaler(self.device_type, enabled=self.name == "fp16")


def resolve_precision(setting: str, device: torch.device) -> Precision:
    """`train.precision` on `device`; raises ValueError on a name it does not know."""
    if setting not in PRECISIONS:
        raise ValueError(f"train.precision must be one of {', '.join(PRECISIONS)}, got {setting!r}")
    if setting == "auto":
        if device.type == "cuda":
            setting = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            setting = "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"
    return Precision(setting, device.type)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512_BF16 or AMX-BF16 in /proc/cpuinfo's flags)."""
    from repro.provenance import cpu_info

    return bool(cpu_info()["cpu_bf16"])


def use_fast_fp32_matmul(device: torch.device) -> None:
    """TF32 matmuls and convolutions on CUDA (Ampere and later; 10-bit mantissa inside fp32 matmuls, as HF Trainer's
    `tf32=True`). A process-wide torch setting: called once per run, a no-op off CUDA."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
