"""Where and how tensors are computed: device, autocast precision, memory layout, seeds."""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.config import RuntimeConfig
from pipeline.errors import ConfigError


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None  # None: plain fp32
    channels_last: bool

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        """Autocast context for forward passes (a no-op in fp32)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def describe(self) -> str:
        precision = "fp32" if self.amp_dtype is None else str(self.amp_dtype).removeprefix("torch.")
        layout = "channels_last" if self.channels_last else "contiguous"
        return f"{self.device} {precision} {layout}"

    def fp32(self) -> Runtime:
        """The same device without autocast: final numbers are measured in full precision."""
        return Runtime(self.device, None, self.channels_last)


def cpu_has_native_bf16() -> bool:
    """True when the CPU runs bf16 matrix work natively (AVX512_BF16 or AMX), not emulated."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_runtime(cfg: RuntimeConfig) -> Runtime:
    """Turn the params' runtime section into a concrete device and precision."""
    if cfg.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(cfg.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(
                f"params.runtime.device is {cfg.device!r} but no CUDA device is visible; "
                f"use 'auto' or 'cpu'"
            )
    if cfg.amp == "auto":
        # Emulated bf16 on a CPU without native support runs about 10x slower than fp32.
        native = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_has_native_bf16()
        amp = torch.bfloat16 if native else None
    else:
        amp = torch.bfloat16 if cfg.amp == "bf16" else None
    return Runtime(device, amp, cfg.channels_last)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
