"""Typed parameter sections with documented defaults; a params file is an overlay onto them.

Every hyperparameter has exactly one default: on its field below, or, for an objective's own knobs,
on the config class beside that objective (`pipeline/objectives/`). A params file (params.yaml, a
preset, a benchmark or test profile) states only what differs. Reading is strict: a duplicate key is
an error, `5e-4` is the float it looks like, unknown keys and wrong types fail with their dotted
path, and every value is validated after the file is merged onto the defaults.

This module is a leaf: it imports no registry. Names (datasets, models, objectives) and objective
sections are checked where the registries are known, in `pipeline/core/params.py`.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from pipeline.core.errors import ConfigError


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


def weights_non_negative(section: object, *names: str) -> None:
    """Fail naming the first loss weight of `section` that is negative."""
    for name in names:
        value = getattr(section, name)
        _require(value >= 0, name, f"loss weights must be >= 0, got {value}")


def positive_temperature(section: object) -> None:
    _require(section.temperature > 0, "temperature", f"must be > 0, got {section.temperature}")


@dataclass(frozen=True)
class RuntimeConfig:
    """How to compute (never what): device, precision, memory layout."""

    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # auto: bf16 where the hardware runs it natively (CUDA, AVX512_BF16/AMX CPUs), else fp32;
    # fp16 (loss-scaled) is CUDA-only
    amp: Literal["auto", "none", "bf16", "fp16"] = "auto"  # auto | none | bf16 | fp16
    channels_last: bool = True  # NHWC memory layout for convolutions (faster on CPU and GPU)
    # torch.compile the trained networks: no gain measured (CPU -11..+19 %, H100 0.80-1.09x)
    compile: bool = False  # torch.compile the trained networks
    # device: the split in memory, augmented batch-wise | stream: DataLoader with workers
    loader: Literal["device", "stream"] = "device"  # device: in memory | stream: DataLoader
    workers: int = 2  # DataLoader worker processes for loader=stream

    def __post_init__(self) -> None:
        ok = self.device in ("auto", "cpu", "cuda") or (
            self.device.startswith("cuda:") and self.device[5:].isdigit()
        )
        _require(ok, "device", f"expected auto, cpu, cuda or cuda:N, got {self.device!r}")
        _require(self.workers >= 0, "workers", f"must be >= 0, got {self.workers}")


@dataclass(frozen=True)
class PrepareConfig:
    dataset: str = "fashion_mnist"  # fashion_mnist | cifar10 | cifar100 | imagefolder | fake
    # The fetch stage mirrors the folder into data/raw/imagefolder (hard links); DVC never sees it.
    folder: str = "images"  # imagefolder: your photos, <folder>/{train,val}/<class>/*
    val_size: int = 5000  # carved from the training images with `seed`; test stays untouched
    train_size: int = 0  # training images kept after the carve; 0 keeps them all
    test_size: int = 0  # test images kept; 0 keeps them all
    image_size: int = 0  # imagefolder: side images are resized to (0 keeps them); fake: side
    storage: Literal["memory", "files"] = "memory"  # files: imagefolder stays on disk, streamed
    # imagefolder with image_size: squash to a square, or keep the aspect ratio (shorter side to
    # image_size, then the centre square)
    resize: Literal["squash", "shorter_side"] = "squash"  # squash | shorter_side (aspect kept)

    def __post_init__(self) -> None:
        _require(self.val_size > 0, "val_size", f"must be > 0, got {self.val_size}")
        for key in ("train_size", "test_size", "image_size"):
            _require(getattr(self, key) >= 0, key, f"must be >= 0, got {getattr(self, key)}")


@dataclass(frozen=True)
class OptimConfig:
    """SGD with momentum: the optimiser of the CIFAR KD literature."""

    lr: float = 0.1  # base learning rate (of every parameter group unless an objective scales it)
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 5.0e-4  # L2 penalty on every weight
    nesterov: bool = True  # Nesterov momentum

    def __post_init__(self) -> None:
        _require(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        _require(0 <= self.momentum < 1, "momentum", f"must be in [0, 1), got {self.momentum}")
        _require(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")


@dataclass(frozen=True)
class ScheduleConfig:
    kind: Literal["cosine", "step"] = "cosine"  # cosine decay to 0 | step: x gamma at milestones
    milestones: tuple[int, ...] = ()  # epochs at which `step` multiplies the lr by gamma
    gamma: float = 0.1  # step: the lr factor at each milestone
    warmup_epochs: float = 0.0  # linear warm-up from lr/10, in epochs (fractions allowed)

    def __post_init__(self) -> None:
        _require(0 < self.gamma <= 1, "gamma", f"must be in (0, 1], got {self.gamma}")
        _require(self.warmup_epochs >= 0, "warmup_epochs", "must be >= 0")
        _require(list(self.milestones) == sorted(self.milestones), "milestones", "must increase")


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation, batch-wise on the device (or per sample when streaming).

    pad_crop (CIFAR style, for small images): reflect padding, then a random crop back to the
    size. random_resized_crop (natural images): a random box of `scale` x the area and aspect
    ratio in `ratio`, resized to the network's input size. Evaluation always resizes the shorter
    side and takes a centre crop instead (see `TrainConfig.crop_pct`).
    """

    kind: Literal["pad_crop", "random_resized_crop"] = "pad_crop"  # small images | natural images
    pad: int = 2  # pad_crop: reflect padding before the random crop; 0: no cropping
    hflip: bool = True  # mirror half of the training images left-right
    scale: tuple[float, ...] = (0.25, 1.0)  # random_resized_crop: area fraction range
    ratio: tuple[float, ...] = (0.75, 1.3333)  # random_resized_crop: aspect ratio range

    def __post_init__(self) -> None:
        _require(self.pad >= 0, "pad", f"must be >= 0, got {self.pad}")
        for key in ("scale", "ratio"):
            low_high = getattr(self, key)
            ok = len(low_high) == 2 and 0 < low_high[0] <= low_high[1]
            _require(ok, key, f"must be [low, high] with 0 < low <= high, got {list(low_high)}")
        _require(self.scale[1] <= 1, "scale", f"is a fraction of the area, got {list(self.scale)}")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 1  # passes over the training split (the default: the pipeline on a laptop CPU)
    batch_size: int = 128  # the global batch: under torchrun each process takes its share
    # The share of the training split an epoch visits (a fresh shuffle each epoch): below 1 it
    # stops early and the lr schedule spans the shortened epochs; for splits so large that a
    # full pass is too long between validations and checkpoints.
    epoch_fraction: float = 1.0  # share of the training split an epoch visits (large splits)
    optim: OptimConfig = field(default_factory=OptimConfig)  # SGD with momentum
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)  # the lr over the run
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # training augmentation
    # The network's input side: 0 takes the pretrained weights' (timm, torchvision) or else the
    # prepared images' size. Evaluation resizes the shorter side to input / crop_pct and
    # centre-crops the input size when the weights come with a crop_pct or augment.kind is
    # random_resized_crop; pad_crop networks read their images as they are.
    input_size: int = 0  # the network's input side; 0: the weights' or the images' size
    crop_pct: float = 0.875  # evaluation: centre crop of input_size from input_size / crop_pct
    interpolation: Literal["bilinear", "bicubic"] = "bilinear"  # of every resize of an image
    # BatchNorm: re-estimate the running statistics of the trained networks on this many seeded
    # training images before they are saved (0: off); statistics that lag behind the weights
    # are what sends an eval-mode network to chance.
    bn_recalibration_images: int = 2048  # BatchNorm re-estimation images after training; 0 off

    def __post_init__(self) -> None:
        # 0 only makes sense for a teacher imported with weights and used as it is.
        _require(self.epochs >= 0, "epochs", f"must be >= 0, got {self.epochs}")
        _require(self.batch_size > 1, "batch_size", f"must be > 1, got {self.batch_size}")
        _require(0 < self.epoch_fraction <= 1, "epoch_fraction", "must be in (0, 1]")
        _require(self.input_size >= 0, "input_size", f"must be >= 0, got {self.input_size}")
        _require(0 < self.crop_pct <= 1, "crop_pct", f"must be in (0, 1], got {self.crop_pct}")
        _require(self.bn_recalibration_images >= 0, "bn_recalibration_images", "must be >= 0")


@dataclass(frozen=True)
class TeacherConfig:
    arch: str = "resnet20"  # key into MODELS, or timm:<name>
    # Start from: "" random; a torchvision weights enum (IMAGENET1K_V1, DEFAULT) for tv_*;
    # "pretrained" or a tag for timm:<name>; or a file (state_dict .pt/.pth/.safetensors, a
    # checkpoint of this pipeline, or a RepDistiller/mdistiller {"model": ...} file).
    weights: str = ""  # "" random | torchvision enum | pretrained or a timm tag | a file
    train: TrainConfig = field(default_factory=TrainConfig)  # the teacher's schedule
    # Initialisation and data order of the teacher's training. Its own key, so a seed study of
    # the students (`distill.seed`) reuses one teacher; the top-level `seed` draws the data split.
    seed: int = 0  # the teacher's initialisation and data order


@dataclass(frozen=True)
class DistillConfig:
    """The student, its schedule (shared by every objective: like for like), and the objectives.

    Keys other than the fields are objective sections (`distill.<objective>: {...}`), kept raw
    here and validated against the objective registry by `pipeline.core.params`, which also fills
    `settings` with every objective's config object (its defaults where no section is given).
    """

    extra_keys_field: typing.ClassVar[str] = "settings"

    arch: str = "resnet8"  # student architecture, key into MODELS, or timm:<name>
    weights: str = ""  # the student's starting weights, as train_teacher.weights
    train: TrainConfig = field(default_factory=TrainConfig)  # shared by every objective
    # The student's initialisation and data order (and its side networks'): one seed means the
    # same starting weights and the same batches whatever the objective, so runs pair up.
    seed: int = 0  # the students' initialisation and data order, the same for every objective
    # The one list of objectives: each is trained by `distill`, evaluated, plotted and carded.
    objectives: tuple[str, ...] = ("vanilla", "sokd")  # each trains a student (distill@<name>)
    # The architectures `profile` times against `budget` before any training; empty: arch alone.
    candidates: tuple[str, ...] = ()  # student architectures to weigh against the budget
    # Papers quote the best epoch on test; this measures test top-1 after every epoch so that a
    # benchmark can report it beside the last, while validation alone still chooses everything.
    test_curve: bool = False  # also record test top-1 per epoch (best and last; never chooses)
    settings: Mapping[str, Any] = field(default_factory=dict)

    def objective(self, name: str) -> Any:
        """The config object of objective `name` (after `pipeline.core.params` resolved them)."""
        if name not in self.settings:
            raise ConfigError(f"params.distill: no settings for objective {name!r}")
        return self.settings[name]


@dataclass(frozen=True)
class BudgetConfig:
    """What the shipped file may cost where it runs (stage `profile` weighs the candidates).

    0 leaves a limit unchecked; with every limit 0 nothing is held to a budget.
    """

    latency_ms: float = 0.0  # 90th-percentile batch-1 latency on onnxruntime's CPU provider
    threads: int = 1  # onnxruntime intra-op threads the latency is measured with
    max_bytes: int = 0  # the shipped file's size in bytes
    max_macs: int = 0  # multiply-accumulates per image
    # Latencies measured on the deployment machine (`sokd profile --export DIR`, then
    # `python DIR/time_candidates.py DIR` there) instead of here; "": measure here.
    latencies_from: str = ""  # a latencies.json written on the machine the student runs on

    def __post_init__(self) -> None:
        for key in ("latency_ms", "max_bytes", "max_macs"):
            value = getattr(self, key)
            _require(value >= 0, key, f"must be >= 0 (0: unchecked), got {value}")
        _require(self.threads >= 1, "threads", f"must be >= 1, got {self.threads}")

    @property
    def limited(self) -> bool:
        return bool(self.latency_ms or self.max_bytes or self.max_macs)

    def misses(self, latency_ms: float, size: int, macs: int, tolerance: float = 1.0) -> list[str]:
        """Each limit the figures exceed, in words; empty: within budget. `tolerance` scales the
        latency limit (the gate's allowance for a noisy measurement)."""
        checks = [
            ("latency_ms", latency_ms / tolerance, f"p90 {latency_ms:.3g} ms"),
            ("max_bytes", size, f"{size:,} bytes"),
            ("max_macs", macs, f"{macs:,} MACs"),
        ]
        return [
            f"{shown} > budget.{key} {getattr(self, key):,}"
            + (f" (x {tolerance} allowed)" if key == "latency_ms" and tolerance != 1 else "")
            for key, value, shown in checks
            if getattr(self, key) and value > getattr(self, key)
        ]


# Inference batches of 128, not 500: activations that stay in cache run 1.2-1.5x faster through
# these small networks on the 2-core CPUs measured (torch and onnxruntime alike).
INFERENCE_BATCH = 128


@dataclass(frozen=True)
class EvaluateConfig:
    batch_size: int = INFERENCE_BATCH  # images per inference batch

    def __post_init__(self) -> None:
        _require(self.batch_size > 0, "batch_size", f"must be > 0, got {self.batch_size}")


SHIP_BEST = "best"  # export.objective: the student with the highest validation top-1


ANY_SIZE = "uint8_any_size"  # export.input: raw images of any size, fitted in the graph
InputKind = Literal["uint8", "uint8_any_size", "float"]


@dataclass(frozen=True)
class ExportConfig:
    # Which student ships: best = the objective of distill.objectives with the highest validation
    # top-1 (ties: the first listed), or one objective by name.
    objective: str = SHIP_BEST  # best (on validation) | an objective of distill.objectives
    # Diagnosis: a teacher less than this far above the vanilla student on validation top-1 is
    # reported as too weak to teach. 3 points: the smallest teacher-student gap of the standard
    # CIFAR-100 pairs where distillation pays off is 3.3 (resnet56 -> resnet20), and on a
    # 500-image validation split a gap below ~2-3 points is inside the noise.
    teacher_margin: float = 0.03  # warn when the teacher leads vanilla by less on validation
    exporter: Literal["dynamo", "torchscript"] = "dynamo"  # torch.onnx.export's exporter
    opset: int = 18  # ONNX opset, 13 to 23
    # What the shipped files read. uint8: images as a decoder gives them, (N, H, W, C) RGB (or
    # grey) at the input size, normalised inside the graph, so a deployment needs no mean or std;
    # uint8_any_size: the same images at any size, resized and centre-cropped inside the graph as
    # evaluation does (opset 18 or later: antialiased Resize).
    input: InputKind = "uint8"  # uint8: NHWC pixels | uint8_any_size: any H, W | float: NCHW

    def __post_init__(self) -> None:
        _require(13 <= self.opset <= 23, "opset", f"must be in [13, 23], got {self.opset}")
        _require(
            self.input != ANY_SIZE or self.opset >= 18,
            "opset",
            f"must be 18 or later for input {ANY_SIZE} (antialiased Resize), got {self.opset}",
        )
        _require(0 <= self.teacher_margin <= 1, "teacher_margin", "is a fraction in [0, 1]")


@dataclass(frozen=True)
class QuantizeConfig:
    calibration_images: int = 512  # a fixed, seeded sample of training images (never test)
    calibration_batch: int = 64  # images per calibration batch
    per_channel: bool = True  # per-output-channel weight scales
    # No `entropy`: onnxruntime's quantize_static runs it with 128 histogram bins searched over 128
    # quantized bins, one candidate, the full range: minmax under another name (docs/int8.md).
    calibrate_method: Literal["minmax", "percentile"] = "minmax"  # activation ranges
    # qoperator: integer operators (QLinearConv, smaller) | qdq: float ops wrapped in Q/DQ
    format: Literal["qoperator", "qdq"] = "qoperator"
    reduce_range: bool = True  # 7-bit weights: no int16 saturation in u8s8 kernels without VNNI
    fp32_stem: bool = True  # the first convolution (it reads the raw image) stays fp32
    fp32_head: bool = True  # the last layer (the classifier: it writes the logits) stays fp32
    # Accuracy-controlled INT8: while INT8 misses the gate (verify.int8) on the *validation*
    # split, the layers whose quantization harms it most stay fp32, one more at a time, up to
    # max_fp32_layers (beyond the fp32 stem and classifier); past the cap `quantize` fails.
    max_fp32_layers: int = 8  # at most this many layers kept fp32 to meet the gate
    # The order the fallback tries layers in (one build per layer either way): error, each layer
    # quantized alone, by its logit error; agreement, each kept fp32 alone, by what it restores.
    rank: Literal["error", "agreement"] = "error"  # error: by logit error | agreement: by agreement
    # Validation estimates what verify will measure on test, and both are samples: the margins
    # are in standard errors of the difference between the two measurements (validation's and
    # the test split's combined). Agreement is held with a margin: weakly trained students sit
    # near the 98 % threshold, and with none a file at 98.4 % on validation failed verify at
    # 97.2 % on test. The top-1 drop is held at its estimate: INT8 flips wrong-to-right about as
    # often as right-to-wrong, no accepted file has failed verify on the drop in the user-path
    # benchmark, and a margin there refused files that pass on test (docs/int8.md).
    agreement_margin_se: float = 1.0  # standard errors by which agreement must clear the gate
    drop_margin_se: float = 0.0  # standard errors by which the top-1 drop must clear the gate

    def __post_init__(self) -> None:
        _require(self.calibration_images > 0, "calibration_images", "must be > 0")
        _require(self.calibration_batch > 0, "calibration_batch", "must be > 0")
        _require(self.max_fp32_layers >= 0, "max_fp32_layers", "must be >= 0")
        for key in ("agreement_margin_se", "drop_margin_se"):
            value = getattr(self, key)
            _require(value >= 0, key, f"must be >= 0, got {value}")


@dataclass(frozen=True)
class GateConfig:
    """What one deployable file must meet against the torch fp32 student on the test split
    (`verify.<target>`); `quantize` holds its INT8 file to `verify.int8` on validation first."""

    max_top1_drop: float  # torch top-1 minus the file's top-1 may be at most this
    min_agreement: float  # fraction of images on which the file predicts torch's class
    max_abs_logit_diff: float = 0.0  # largest |file logit - torch logit| allowed; 0: unchecked

    def __post_init__(self) -> None:
        for key in ("max_top1_drop", "min_agreement"):
            value = getattr(self, key)
            _require(0 <= value <= 1, key, f"is a fraction in [0, 1], got {value}")
        _require(self.max_abs_logit_diff >= 0, "max_abs_logit_diff", "must be >= 0")


@dataclass(frozen=True)
class Int8GateConfig(GateConfig):
    """The INT8 file's gate, and whether the run must ship one."""

    # When no INT8 file within quantize.max_fp32_layers meets the gate: false, quantize records
    # the refusal and the run ships the checkpoint and the fp32 ONNX file (exit 0, a warning).
    required: bool = False  # false: INT8 declined when it misses the gate (a warning); true: exit 1


def _onnx_gate() -> GateConfig:
    # The same network in another runtime: predictions and logits must match to float error.
    return GateConfig(max_top1_drop=0.002, min_agreement=0.999, max_abs_logit_diff=1.0e-4)


def _int8_gate() -> Int8GateConfig:
    # 98 % agreement also for weak students: INT8 noise flips images whose top two logits are
    # close, and a weak student has more of them, but the fp32 fallback restores agreement within
    # a few layers (benchmarks/user_path); a looser default would let through files that disagree
    # with the model they claim to be.
    return Int8GateConfig(max_top1_drop=0.005, min_agreement=0.98)


@dataclass(frozen=True)
class VerifyConfig:
    batch_size: int = INFERENCE_BATCH  # images per inference batch
    threads: int = 2  # onnxruntime intra-op threads; 0 lets onnxruntime decide
    min_top1: float = 0.0  # every shipped file's top-1 on the test set must reach this
    onnx: GateConfig = field(default_factory=_onnx_gate)  # the fp32 ONNX file against torch
    int8: Int8GateConfig = field(default_factory=_int8_gate)  # the INT8 file; quantize meets it too
    latency_runs: int = 200  # timed batch-1 calls per engine for the latency percentiles

    def __post_init__(self) -> None:
        _require(self.batch_size > 0, "batch_size", f"must be > 0, got {self.batch_size}")
        _require(self.threads >= 0, "threads", f"must be >= 0, got {self.threads}")
        _require(self.latency_runs > 0, "latency_runs", f"must be > 0, got {self.latency_runs}")
        _require(
            0 <= self.min_top1 <= 1, "min_top1", f"is a fraction in [0, 1], got {self.min_top1}"
        )

    def gate(self, target: str) -> GateConfig:
        """The thresholds of `target`'s file (verify.<target>)."""
        return getattr(self, target)


@dataclass(frozen=True)
class Params:
    seed: int = 0  # the validation split carved from train, and the calibration sample
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    train_teacher: TeacherConfig = field(default_factory=TeacherConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)


# --- reading YAML strictly ------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (merge keys `<<` allowed) and reads `5e-4` as a float
    (as YAML 1.2 does)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor`: keys written beside it override the merged ones
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def read_yaml(path: Path) -> Any:
    """Parse a params file strictly; any problem is one ConfigError naming the file and line."""
    if path.is_dir():
        raise ConfigError(f"{path} is a directory; give the params file (params.yaml)")
    if not path.is_file():
        raise ConfigError(f"params file not found: {path}")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}: byte 0x{raw[err.start]:02x} at line {line} is not UTF-8; save the file "
            f"as UTF-8 text"
        ) from None
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{at}: {getattr(err, 'problem', err)}") from None


# --- plain data -> dataclasses ----------------------------------------------------------------


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise TypeError(f"field {f.name} has no default")  # every params field has one


def _from_dataclass(tp: Any, value: Any, where: str, base: Any = None) -> Any:
    """`tp` from a mapping; keys it lacks take `base`'s values (a field's own default instance,
    e.g. verify.int8's thresholds), else the class defaults."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
    hints = typing.get_type_hints(tp)
    extra_field = getattr(tp, "extra_keys_field", None)
    fields = [f for f in dataclasses.fields(tp) if f.name != extra_field]
    names = [f.name for f in fields]
    unknown = {k: v for k, v in value.items() if k not in names}
    if unknown and extra_field is None:
        key = sorted(unknown, key=str)[0]
        raise ConfigError(f"{where}.{key}: unknown key; valid keys are {', '.join(names)}")
    defaults = {f.name: getattr(base, f.name) if base is not None else _default(f) for f in fields}
    kwargs = {
        f.name: from_mapping(hints[f.name], value[f.name], f"{where}.{f.name}", defaults[f.name])
        if f.name in value
        else defaults[f.name]
        for f in fields
    }
    if extra_field is not None:
        kwargs[extra_field] = unknown
    try:
        return tp(**kwargs)
    except ConfigError as err:
        raise ConfigError(f"{where}.{err}") from None


def from_mapping(tp: Any, value: Any, where: str, base: Any = None) -> Any:
    """Build `tp` from plain YAML data onto its defaults (`base`, for a nested section, is the
    default instance it overlays), checking every key and scalar type."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _from_dataclass(tp, value, where, base)
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
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, tp) or (tp is not bool and isinstance(value, bool)):
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    return value


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def as_dict(section: Any) -> dict[str, Any]:
    """A params section as plain data (tuples become lists) for checkpoints and reports."""
    return _plain(section)
