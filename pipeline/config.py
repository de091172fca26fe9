"""params.yaml -> frozen dataclasses, strictly: bad keys fail with their dotted path.

Every hyperparameter is defined in params.yaml and nowhere else: these dataclasses have no
defaults.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from pipeline.errors import ConfigError


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


def _weights_non_negative(section: object, *names: str) -> None:
    for name in names:
        value = getattr(section, name)
        _require(value >= 0, name, f"loss weights must be >= 0, got {value}")


@dataclass(frozen=True)
class RuntimeConfig:
    """How to compute (never what): device, precision, memory layout."""

    device: str  # auto | cpu | cuda | cuda:N
    # auto: bf16 where the hardware runs it natively, else fp32; fp16 (loss-scaled) is CUDA-only
    amp: Literal["auto", "none", "bf16", "fp16"]
    channels_last: bool
    compile: bool  # torch.compile the trained networks (costs 15-30 s up front on a CPU)
    loader: Literal["device", "stream"]  # device: the split in memory, batch-wise augmentation
    workers: int  # DataLoader worker processes for loader=stream

    def __post_init__(self) -> None:
        ok = self.device in ("auto", "cpu", "cuda") or (
            self.device.startswith("cuda:") and self.device[5:].isdigit()
        )
        _require(ok, "device", f"expected auto, cpu, cuda or cuda:N, got {self.device!r}")
        _require(self.workers >= 0, "workers", f"must be >= 0, got {self.workers}")


@dataclass(frozen=True)
class PrepareConfig:
    dataset: str  # key into DATASETS
    val_size: int  # images carved from the training set for validation
    train_size: int  # training images kept after the carve; 0 keeps them all
    test_size: int  # test images kept; 0 keeps them all
    image_size: int  # imagefolder: side images are resized to (0 keeps them); fake: image side
    storage: Literal["memory", "files"]  # files: imagefolder images stay on disk, streamed

    def __post_init__(self) -> None:
        _require(self.val_size > 0, "val_size", f"must be > 0, got {self.val_size}")
        for key in ("train_size", "test_size", "image_size"):
            _require(getattr(self, key) >= 0, key, f"must be >= 0, got {getattr(self, key)}")


@dataclass(frozen=True)
class OptimConfig:
    lr: float
    momentum: float
    weight_decay: float
    nesterov: bool

    def __post_init__(self) -> None:
        _require(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        _require(0 <= self.momentum < 1, "momentum", f"must be in [0, 1), got {self.momentum}")
        _require(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")


@dataclass(frozen=True)
class ScheduleConfig:
    kind: Literal["cosine", "step"]
    milestones: tuple[int, ...]  # epochs at which `step` multiplies the lr by gamma
    gamma: float
    warmup_epochs: int  # linear warm-up from lr/10, in epochs

    def __post_init__(self) -> None:
        _require(0 < self.gamma <= 1, "gamma", f"must be in (0, 1], got {self.gamma}")
        _require(self.warmup_epochs >= 0, "warmup_epochs", "must be >= 0")
        _require(list(self.milestones) == sorted(self.milestones), "milestones", "must increase")


@dataclass(frozen=True)
class AugmentConfig:
    pad: (
        int  # reflect padding before the random crop back to the original size; 0 disables cropping
    )
    hflip: bool

    def __post_init__(self) -> None:
        _require(self.pad >= 0, "pad", f"must be >= 0, got {self.pad}")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    batch_size: int
    optim: OptimConfig
    schedule: ScheduleConfig
    augment: AugmentConfig

    def __post_init__(self) -> None:
        # 0 only makes sense for a teacher imported with --weights and used as it is.
        _require(self.epochs >= 0, "epochs", f"must be >= 0, got {self.epochs}")
        _require(self.batch_size > 1, "batch_size", f"must be > 1, got {self.batch_size}")


@dataclass(frozen=True)
class TeacherConfig:
    arch: str  # key into MODELS
    train: TrainConfig


@dataclass(frozen=True)
class VanillaConfig:
    """Cross-entropy only: no knobs beyond the shared training schedule."""


@dataclass(frozen=True)
class KdConfig:
    temperature: float
    ce_weight: float
    kd_weight: float

    def __post_init__(self) -> None:
        _require(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")
        _weights_non_negative(self, "ce_weight", "kd_weight")


@dataclass(frozen=True)
class SokdConfig:
    temperature: float
    student_ce: float  # λ1
    student_kl_bridge: float  # λ2
    bridge_ce: float  # α1
    bridge_kl_teacher: float  # α2
    bridge_kl_student: float  # α3
    bridge_init: Literal["random", "teacher"]
    teacher_bn: Literal["eval", "train"]
    # bridge lr = bridge_lr_mult x train.optim.lr (reference: 1.0 in its config, 0.5 in its code)
    bridge_lr_mult: float
    split: str  # name of the teacher's first head module; "" picks the architecture's default

    def __post_init__(self) -> None:
        _require(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")
        _require(
            self.bridge_lr_mult > 0, "bridge_lr_mult", f"must be > 0, got {self.bridge_lr_mult}"
        )
        _weights_non_negative(
            self,
            "student_ce",
            "student_kl_bridge",
            "bridge_ce",
            "bridge_kl_teacher",
            "bridge_kl_student",
        )


@dataclass(frozen=True)
class SokdAtConfig(SokdConfig):
    at_weight: float  # β of attention transfer (CIFAR KD zoo: 1000)

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.at_weight >= 0, "at_weight", f"must be >= 0, got {self.at_weight}")


@dataclass(frozen=True)
class SokdFitnetConfig(SokdConfig):
    hint_weight: float  # β of the FitNet hint loss (CIFAR KD zoo: 100)

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.hint_weight >= 0, "hint_weight", f"must be >= 0, got {self.hint_weight}")


@dataclass(frozen=True)
class DmlConfig:
    temperature: float  # 1 in the DML paper
    ce_weight: float
    kl_weight: float

    def __post_init__(self) -> None:
        _require(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")
        _weights_non_negative(self, "ce_weight", "kl_weight")


@dataclass(frozen=True)
class KdDmlConfig:
    temperature: float  # of the KD term; the mutual term runs at 1 as in DML
    ce_weight: float
    kd_weight: float
    dml_weight: float

    def __post_init__(self) -> None:
        _require(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")
        _weights_non_negative(self, "ce_weight", "kd_weight", "dml_weight")


@dataclass(frozen=True)
class AtConfig:
    ce_weight: float
    at_weight: float

    def __post_init__(self) -> None:
        _weights_non_negative(self, "ce_weight", "at_weight")


@dataclass(frozen=True)
class FitnetConfig:
    ce_weight: float
    hint_weight: float

    def __post_init__(self) -> None:
        _weights_non_negative(self, "ce_weight", "hint_weight")


@dataclass(frozen=True)
class DistillConfig:
    arch: str  # student architecture, key into MODELS
    train: TrainConfig
    vanilla: VanillaConfig
    kd: KdConfig
    dml: DmlConfig
    kd_dml: KdDmlConfig
    at: AtConfig
    fitnet: FitnetConfig
    sokd: SokdConfig
    sokd_at: SokdAtConfig
    sokd_fitnet: SokdFitnetConfig


@dataclass(frozen=True)
class EvaluateConfig:
    batch_size: int

    def __post_init__(self) -> None:
        _require(self.batch_size > 0, "batch_size", f"must be > 0, got {self.batch_size}")


@dataclass(frozen=True)
class ExportConfig:
    objective: str  # which distilled student to ship, key into OBJECTIVES
    exporter: Literal["dynamo", "torchscript"]
    opset: int

    def __post_init__(self) -> None:
        _require(13 <= self.opset <= 23, "opset", f"must be in [13, 23], got {self.opset}")


@dataclass(frozen=True)
class QuantizeConfig:
    calibration_images: int  # a fixed, seeded sample of training images
    calibration_batch: int
    per_channel: bool  # per-output-channel weight scales
    calibrate_method: Literal["minmax", "entropy", "percentile"]
    format: Literal[
        "qoperator", "qdq"
    ]  # integer operators (QLinearConv), or float ops wrapped in Q/DQ
    reduce_range: bool  # 7-bit weights: no int16 saturation in u8s8 kernels on CPUs without VNNI
    fp32_stem: bool  # keep the first convolution (it reads the raw image) in fp32

    def __post_init__(self) -> None:
        _require(self.calibration_images > 0, "calibration_images", "must be > 0")
        _require(self.calibration_batch > 0, "calibration_batch", "must be > 0")


@dataclass(frozen=True)
class VerifyConfig:
    batch_size: int
    threads: int  # onnxruntime intra-op threads; 0 lets onnxruntime decide
    min_top1: float  # ONNX top-1 on the test set must reach this (fraction, 0..1)
    max_top1_drop: float  # torch top-1 minus ONNX top-1 may be at most this
    min_agreement: float  # fraction of test images where ONNX and torch predict the same class
    max_abs_logit_diff: float
    int8_max_top1_drop: float  # torch fp32 top-1 minus INT8 top-1 may be at most this
    int8_min_agreement: float  # fraction of test images where INT8 and torch predict the same class
    latency_runs: int  # timed batch-1 calls per engine for the latency percentiles

    def __post_init__(self) -> None:
        _require(self.batch_size > 0, "batch_size", f"must be > 0, got {self.batch_size}")
        _require(self.threads >= 0, "threads", f"must be >= 0, got {self.threads}")
        _require(self.latency_runs > 0, "latency_runs", f"must be > 0, got {self.latency_runs}")
        for f in (
            "min_top1",
            "max_top1_drop",
            "min_agreement",
            "int8_max_top1_drop",
            "int8_min_agreement",
        ):
            _require(
                0 <= getattr(self, f) <= 1, f, f"is a fraction in [0, 1], got {getattr(self, f)}"
            )
        _require(self.max_abs_logit_diff > 0, "max_abs_logit_diff", "must be > 0")


@dataclass(frozen=True)
class Params:
    seed: int
    runtime: RuntimeConfig
    prepare: PrepareConfig
    train_teacher: TeacherConfig
    distill: DistillConfig
    evaluate: EvaluateConfig
    export: ExportConfig
    quantize: QuantizeConfig
    verify: VerifyConfig


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def from_mapping(tp: Any, value: Any, where: str) -> Any:
    """Build `tp` from plain YAML data, checking every key and scalar type; errors name `where`."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if value is None and not dataclasses.fields(tp):
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        hints = typing.get_type_hints(tp)
        names = [f.name for f in dataclasses.fields(tp)]
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise ConfigError(
                f"{where}.{unknown[0]}: unknown key; valid keys are {', '.join(names)}"
            )
        missing = [n for n in names if n not in value]
        if missing:
            raise ConfigError(
                f"{where}.{missing[0]}: missing key (every value is set in params.yaml)"
            )
        kwargs = {n: from_mapping(hints[n], value[n], f"{where}.{n}") for n in names}
        try:
            return tp(**kwargs)
        except ConfigError as err:
            raise ConfigError(f"{where}.{err}") from None
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(
                f"{where}: expected one of {', '.join(map(str, choices))}, got {value!r}"
            )
        return value
    if origin is tuple:
        item_type = typing.get_args(tp)[0]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(from_mapping(item_type, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"{where}: unions are not supported in params")
    ok = isinstance(value, tp) and not (tp is not bool and isinstance(value, bool))
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not ok:
        hint = (
            " (write floats with a dot: 5.0e-4, not 5e-4)"
            if tp is float and isinstance(value, str)
            else ""
        )
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}{hint}")
    return value


def _check_names(p: Params) -> None:
    # Imported here: the registries import the model and objective modules, which import config.
    from pipeline.data import DATASETS
    from pipeline.models import MODELS
    from pipeline.objectives import OBJECTIVES

    checks = [
        ("params.prepare.dataset", DATASETS, p.prepare.dataset),
        ("params.train_teacher.arch", MODELS, p.train_teacher.arch),
        ("params.distill.arch", MODELS, p.distill.arch),
        ("params.export.objective", OBJECTIVES, p.export.objective),
    ]
    for where, registry, name in checks:
        if name not in registry:
            raise ConfigError(
                f"{where}: unknown {registry.kind} {name!r}; "
                f"choose one of {', '.join(registry.names())}"
            )


def load_params(path: Path) -> Params:
    """Read params.yaml strictly into `Params`; raise ConfigError naming the dotted key."""
    if not path.is_file():
        raise ConfigError(f"params file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{at}: {getattr(err, 'problem', err)}") from None
    params = from_mapping(Params, raw, "params")
    _check_names(params)
    return params


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def as_dict(section: Any) -> dict[str, Any]:
    """Return a params section as plain data (tuples become lists) for checkpoints and reports."""
    return _plain(dataclasses.asdict(section))
