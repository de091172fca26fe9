"""Where and how tensors are computed: device, autocast precision, memory layout, seeds."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.core.config import RuntimeConfig
from pipeline.core.errors import ConfigError


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None  # None: plain fp32
    channels_last: bool
    compile: bool = False  # torch.compile the trained networks
    loader: str = "device"  # device | stream (DataLoader with per-sample transforms)
    workers: int = 0  # DataLoader processes for loader=stream

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        """Autocast context for forward passes (a no-op in fp32)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Loss scaling, enabled only for fp16, whose small gradients would otherwise underflow."""
        return torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)

    def describe(self) -> str:
        precision = "fp32" if self.amp_dtype is None else str(self.amp_dtype).removeprefix("torch.")
        layout = "channels_last" if self.channels_last else "contiguous"
        extra = ", compiled" if self.compile else ""
        return f"{self.device} {precision} {layout}, {self.loader} loader{extra}"

    def fp32(self) -> Runtime:
        """The same device without autocast: final numbers are measured in full precision."""
        return dataclasses.replace(self, amp_dtype=None)


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
    if device.type == "cuda" and device.index is None:
        # Under torchrun each process drives the GPU of its local rank.
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if cfg.amp == "auto":
        # Emulated bf16 on a CPU without native support runs about 10x slower than fp32.
        native = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_has_native_bf16()
        amp = torch.bfloat16 if native else None
    elif cfg.amp == "fp16":
        if device.type != "cuda":
            raise ConfigError(
                "params.runtime.amp: fp16 needs a CUDA device; use auto, bf16 or none"
            )
        amp = torch.float16
    else:
        amp = torch.bfloat16 if cfg.amp == "bf16" else None
    return Runtime(device, amp, cfg.channels_last, cfg.compile, cfg.loader, cfg.workers)


def prepare_module(module: nn.Module, runtime: Runtime) -> nn.Module:
    """Move `module` to the runtime's device and memory layout (in place; returns it)."""
    module.to(runtime.device)
    return module.to(memory_format=torch.channels_last) if runtime.channels_last else module


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# The lscpu flags that decide these timings: vector width, native bf16, int8 dot products.
SPEED_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_bf16",
    "amx_bf16",
    "amx_int8",
    "avx512_vnni",
    "avx_vnni",
)


def cpu_info(field: str) -> str:
    """A field of /proc/cpuinfo ("model name", "flags"), or "unknown"."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    return next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith(field)), "unknown")


def machine() -> dict[str, object]:
    """What a timing or a bf16 result depends on: CPU model and its speed-relevant flags,
    threads, versions (recorded with every benchmark and in records/verify.json)."""
    flags = set(cpu_info("flags").split())
    return {
        "cpu": cpu_info("model name"),
        "cpu_flags": [f for f in SPEED_FLAGS if f in flags],
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": cpu_has_native_bf16(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
    }


def machine_metrics() -> dict[str, object]:
    """`machine()` as flat metric keys (`machine/cpu`, ...), lists joined, for a metrics JSON."""
    return {
        f"machine/{key}": ", ".join(value) if isinstance(value, list) else value
        for key, value in machine().items()
        if value is not None
    }
