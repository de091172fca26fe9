"""Starting weights for a teacher or a student: torchvision enums, timm tags, or local files.

`train_teacher.weights` / `distill.weights` name where a network starts:

- a torchvision weights enum for `tv_*` models (`IMAGENET1K_V1`, `DEFAULT`): taken from torch's
  hub cache, downloaded there when the machine is online;
- `pretrained` or a tag (`a1_in1k`) for `timm:<name>` models: from the Hugging Face cache, likewise;
- a local file: a state_dict (`.pt`, `.pth`, `.bin`, `.safetensors`) in torchvision's, timm's or
  this zoo's names, a checkpoint of this pipeline, or a RepDistiller/mdistiller `{"model": ...}`
  file of the same architecture under their module names (matched in definition order, every
  shape checked).

The classifier is rebuilt for the dataset's classes and a first convolution for another channel
count is adapted (RGB kernels summed for grey images); one log line says what was kept and what was
re-initialised, and the file's SHA-256 is returned. Weights that come with their preprocessing
(torchvision's transforms, timm's pretrained config, this pipeline's checkpoints) return it as an
`InputSpec`, which then feeds the network in every stage.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pipeline import models
from pipeline.core.errors import CheckpointError, ConfigError
from pipeline.core.files import load_tensors, sha256_file
from pipeline.core.inputs import IMAGENET_MEAN, IMAGENET_STD, InputSpec, scale_size
from pipeline.data.datasets import Prepared

log = logging.getLogger(__name__)
FILE_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


@dataclass(frozen=True)
class Imported:
    """What loading starting weights did."""

    origin: str  # e.g. "torchvision IMAGENET1K_V1", "timm resnet18.a1_in1k", a file path
    sha256: str
    spec: InputSpec | None  # the preprocessing the weights expect, when they say
    kept: int  # tensors taken from the weights
    notes: tuple[str, ...]  # re-initialised or adapted tensors, in words
    licence: str = ""  # the weights' terms as far as their source says (the model card's)


def _read_file(path: Path) -> tuple[dict[str, Tensor], InputSpec | None]:
    """A state_dict (and its preprocessing, for this pipeline's checkpoints) from a local file."""
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ConfigError(
                f"{path}: reading .safetensors needs `pip install safetensors`"
            ) from None
        try:
            return load_file(str(path)), None
        except Exception as err:  # the library raises its own error types for damaged files
            raise CheckpointError(f"cannot read weights {path}: {err}; replace the file") from None
    raw = load_tensors(path, CheckpointError, "weights", "save them with torch.save(state_dict)")
    if isinstance(raw, dict) and raw.get("format") == "sokd-checkpoint/1":
        from pipeline.models.checkpoint import load_checkpoint

        return raw["state_dict"], load_checkpoint(path).spec
    for key in ("state_dict", "model", "model_state_dict"):  # common wrappers
        if isinstance(raw, dict) and isinstance(raw.get(key), dict):
            raw = raw[key]
            break
    if not isinstance(raw, dict) or not all(isinstance(v, Tensor) for v in raw.values()):
        raise CheckpointError(
            f"{path} holds no state_dict; save one with torch.save(model.state_dict(), path)"
        )
    return {k.removeprefix("module."): v for k, v in raw.items()}, None  # DataParallel prefix


def _torchvision(arch: str, name: str) -> tuple[dict[str, Tensor], InputSpec, str]:
    from torchvision.models import get_model_weights

    builder = arch.removeprefix("tv_")
    enum = get_model_weights(builder)
    if name not in enum.__members__:
        raise ConfigError(
            f"{arch} has no torchvision weights {name!r}; choose one of "
            f"{', '.join(enum.__members__)} (or give a file)"
        )
    weights = enum[name]
    try:
        state = weights.get_state_dict(progress=False)
    except Exception as err:  # offline and not cached: urllib's errors, wrapped or not
        cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        raise CheckpointError(
            f"torchvision weights {builder} {name} are not in torch's hub cache ({cache}) and "
            f"could not be downloaded ({type(err).__name__}); download them on a machine with "
            f"internet, copy the file there, or give a local file"
        ) from None
    t = weights.transforms()
    size = int(t.crop_size[0])
    spec = InputSpec(
        tuple(t.mean), tuple(t.std), (size, size), int(t.resize_size[0]),
        t.interpolation.value, f"torchvision {name}",
    )  # fmt: skip
    cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    return state, spec, str(cache)


def _timm(arch: str, tag: str) -> tuple[dict[str, Tensor], InputSpec, str]:
    timm_zoo = models.timm_models()
    timm = timm_zoo.timm_module()
    name = arch.removeprefix(timm_zoo.PREFIX)
    full = name if tag == "pretrained" else f"{name}.{tag}"
    try:
        model = timm.create_model(full, pretrained=True)
    except RuntimeError as err:
        raise ConfigError(f"timm has no weights {full!r}: {str(err).splitlines()[0]}") from None
    except Exception as err:  # offline and not cached (huggingface_hub's own errors)
        raise CheckpointError(
            f"timm weights {full} are not in the Hugging Face cache and could not be downloaded "
            f"({type(err).__name__}); download them on a machine with internet (HF_HOME), "
            f"or give a local file"
        ) from None
    # the tag's own configuration (mean, std, size, crop, interpolation), not the name's default
    return model.state_dict(), _timm_spec(full, f"timm {full}"), f"huggingface:{full}"


def content_sha256(state: dict[str, Tensor]) -> str:
    """SHA-256 over a state_dict's names and bytes: weights from a hub cache have no one file."""
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().cpu().contiguous().flatten().view(torch.uint8).numpy())
    return digest.hexdigest()


def _timm_spec(name: str, source: str) -> InputSpec:
    cfg = models.timm_models().pretrained_config(name)
    resize = scale_size(cfg.input_size[0], cfg.crop_pct)
    return InputSpec(cfg.mean, cfg.std, cfg.input_size, resize, cfg.interpolation, source)


def _names_for(arch: str, num_classes: int) -> dict[str, str] | None:
    """The weights' key -> this zoo's key, for architectures wrapped from another library."""
    if arch.startswith("tv_"):  # the architecture's own module, imported as the model was
        from pipeline.models.torchvision_zoo import torchvision_key_map

        return torchvision_key_map(arch, num_classes)
    if arch.startswith("timm:"):
        return models.timm_models().key_map(arch, num_classes, 3)
    return None


def _by_position(state: dict[str, Tensor], own: dict[str, Tensor], where: str) -> dict[str, Tensor]:
    """The same architecture under other module names: tensors matched in definition order."""
    theirs, ours = list(state.items()), list(own.items())
    if len(theirs) != len(ours):
        raise CheckpointError(
            f"weights in {where} do not fit: {len(theirs)} tensors, the architecture has "
            f"{len(ours)}; choose the architecture they were trained as"
        )
    for (their_key, t), (our_key, o) in zip(theirs[:-2], ours[:-2], strict=True):
        if t.shape != o.shape:  # the classifier (the last two) may differ in classes
            raise CheckpointError(
                f"weights in {where} do not fit: {their_key} {tuple(t.shape)} against "
                f"{our_key} {tuple(o.shape)}; choose the architecture they were trained as"
            )
    log.info("%s: module names differ; matched %d tensors in definition order", where, len(ours))
    return {our: t for (_, t), (our, _) in zip(theirs, ours, strict=True)}


def _translate(
    state: dict[str, Tensor], model: nn.Module, arch: str, num_classes: int, where: str
) -> dict[str, Tensor]:
    own = model.state_dict()
    if set(state) <= set(own) and len(set(state) & set(own)) >= len(own) - 2:
        return state
    names = _names_for(arch, num_classes)
    if names is not None and set(state) <= set(names):
        return {names[k]: v for k, v in state.items()}
    return _by_position(state, own, where)


def _classifier_and_stem(model: nn.Module) -> tuple[set[str], str]:
    """State keys of the last linear layer, and of the first convolution's weight."""
    named = dict(model.named_modules())
    linear = [n for n, m in named.items() if isinstance(m, nn.Linear)][-1]
    conv = next(n for n, m in named.items() if isinstance(m, nn.Conv2d))
    return {f"{linear}.weight", f"{linear}.bias"}, f"{conv}.weight"


def _adapt_stem(weight: Tensor, channels: int) -> Tensor:
    """A first convolution's kernels for `channels` inputs: RGB summed to grey, grey spread."""
    if channels == 1:
        return weight.sum(1, keepdim=True)
    return weight.mean(1, keepdim=True).repeat(1, channels, 1, 1) * (weight.shape[1] / channels)


def _load(model: nn.Module, mapped: dict[str, Tensor], where: str) -> tuple[int, list[str]]:
    own = model.state_dict()
    classifier, stem = _classifier_and_stem(model)
    missing = [k for k in own if k not in mapped and k not in classifier]
    if missing:
        raise CheckpointError(
            f"weights in {where} do not fit: no {missing[0]!r} among them "
            f"({len(missing)} tensors missing); choose the architecture they were trained as"
        )
    merged, notes = dict(own), []
    for key, target in own.items():
        value = mapped.get(key)
        if value is None:
            continue
        if value.shape == target.shape:
            merged[key] = value.to(target.dtype)
        elif key == stem and value.shape[0] == target.shape[0]:
            merged[key] = _adapt_stem(value.to(target.dtype), target.shape[1])
            notes.append(
                f"first convolution adapted {value.shape[1]} -> {target.shape[1]} channels"
            )
        elif key in classifier:
            notes.append(f"{key} re-initialised ({value.shape[0]} -> {target.shape[0]} classes)")
        else:
            raise CheckpointError(
                f"weights in {where} do not fit: {key} is {tuple(value.shape)}, the "
                f"architecture has {tuple(target.shape)}; choose the architecture they fit"
            )
    model.load_state_dict(merged)
    return sum(1 for k in own if (k in mapped and k not in classifier) or k == stem), notes


def import_weights(model: nn.Module, arch: str, source: str, num_classes: int) -> Imported:
    """Load `source` (see the module docstring) into `model`; log and return what happened."""
    path = Path(source)
    if path.suffix in FILE_SUFFIXES or path.exists():
        if not path.is_file():
            raise CheckpointError(f"weights file not found: {path}")
        state, spec = _read_file(path)
        sha = sha256_file(path)
        origin = str(path)
        if spec is None and arch.startswith("tv_"):  # torchvision's own training statistics
            spec = InputSpec(IMAGENET_MEAN, IMAGENET_STD, (0, 0), 0, "bilinear", "ImageNet")
        elif spec is None and arch.startswith("timm:"):
            spec = _timm_spec(arch.removeprefix("timm:"), f"timm {arch.removeprefix('timm:')}")
    elif arch.startswith("tv_"):
        state, spec, origin = _torchvision(arch, source)
        sha = sha256_file(Path(origin)) if Path(origin).is_file() else ""
    elif arch.startswith("timm:"):
        state, spec, origin = _timm(arch, source)
        sha = content_sha256(state)
    else:
        raise ConfigError(
            f"weights {source!r} for {arch}: not a file; zoo models start from a state_dict file "
            f"(torchvision enums are for tv_* models, timm tags for timm:<name>)"
        )
    first_weight = next((v for v in state.values() if v.ndim == 2), None)
    file_classes = first_weight.shape[0] if first_weight is not None else num_classes
    mapped = _translate(state, model, arch, file_classes, origin)
    kept, notes = _load(model, mapped, origin)
    log.info(
        "%s: kept %d tensors from %s%s",
        arch,
        kept,
        origin,
        "; " + "; ".join(notes) if notes else "",
    )
    return Imported(origin, sha, spec, kept, tuple(notes), _licence(arch, source, path))


def _licence(arch: str, source: str, path: Path) -> str:
    """What the source says of the weights' terms, for the model card."""
    if path.suffix in FILE_SUFFIXES or path.exists():
        return f"unknown: a local file ({path.name}); the terms are its maker's"
    if arch.startswith("tv_"):
        return (
            f"torchvision {source}: torchvision's code is BSD-3-Clause and its weights name no "
            "licence of their own; they may carry the terms of the data they were trained on "
            "(ImageNet's for the IMAGENET1K weights: non-commercial research and education)"
        )
    name = arch.removeprefix("timm:")
    full = name if source == "pretrained" else f"{name}.{source}"
    licence = models.timm_models().pretrained_config(full).licence or "not recorded by timm"
    return f"timm {full}: {licence} (timm's pretrained_cfg)"


def start_network(
    arch: str, weights: str, data: Prepared, section: str
) -> tuple[nn.Module, Imported | None]:
    """A fresh network for the data, loaded from `weights` when given."""
    network = models.create_model(arch, data.num_classes, data.image_shape[0])
    if not weights:
        return network, None
    try:
        return network, import_weights(network, arch, weights, data.num_classes)
    except ConfigError as err:
        raise ConfigError(f"params.{section}.weights: {err}") from None


def imported_metrics(imported: Imported | None) -> dict[str, Any]:
    if imported is None:
        return {}
    return {
        "weights/origin": imported.origin,
        "weights/sha256": imported.sha256,
        "weights/tensors_kept": imported.kept,
        "weights/reinitialised": "; ".join(imported.notes),
        "weights/licence": imported.licence,
    }
