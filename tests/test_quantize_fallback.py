"""Accuracy-controlled INT8: layers that cost validation accuracy stay fp32, within a cap."""

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper, shape_inference

from pipeline.core.config import GateConfig, Params
from pipeline.core.errors import GateError
from pipeline.data.batches import make_batches
from pipeline.data.datasets import Split, load_prepared
from pipeline.shipping.engines import open_engine
from pipeline.shipping.gate import Margins, failures, paired_drop_se
from pipeline.shipping.int8 import CPU, quantize_int8
from tests.conftest import with_changes
from tests.test_export import exported, student_ckpt  # noqa: F401  (module fixtures)

HOSTILE = ("hostile_add", "hostile_subtract")


def make_hostile(fp32: Path, out: Path) -> None:
    """Two 1x1 convolutions after the first ReLU that cancel in fp32: +1000 on channel 0, then
    -1000. Between them the tensor spans [0, 1000+], so 8-bit activations (step ~4) wipe out
    every other channel, while each layer kept fp32 alone still leaves the other's input or
    output quantized: both must stay fp32."""
    model = shape_inference.infer_shapes(onnx.load(str(fp32)))
    graph = model.graph
    relu = next(n for n in graph.node if n.op_type == "Relu")
    tensor = relu.output[0]
    info = next(v for v in graph.value_info if v.name == tensor)
    channels = info.type.tensor_type.shape.dim[1].dim_value
    eye = np.eye(channels, dtype=np.float32).reshape(channels, channels, 1, 1)
    shift = np.zeros(channels, np.float32)
    shift[0] = 1000.0
    graph.initializer.extend(
        [
            numpy_helper.from_array(eye, "hostile_eye"),
            numpy_helper.from_array(shift, "hostile_plus"),
            numpy_helper.from_array(-shift, "hostile_minus"),
        ]
    )
    for node in graph.node:  # every reader of the ReLU now reads the pair's output
        node.input[:] = ["hostile_out" if name == tensor else name for name in node.input]
    pair = [
        helper.make_node(
            "Conv", [tensor, "hostile_eye", "hostile_plus"], ["hostile_mid"], name=HOSTILE[0]
        ),
        helper.make_node(
            "Conv",
            ["hostile_mid", "hostile_eye", "hostile_minus"],
            ["hostile_out"],
            name=HOSTILE[1],
        ),
    ]
    at = list(graph.node).index(relu) + 1
    for offset, node in enumerate(pair):
        graph.node.insert(at + offset, node)
    onnx.checker.check_model(model)
    onnx.save(model, str(out))


@pytest.fixture(scope="module")
def hostile(exported: Path) -> Path:  # noqa: F811
    out = exported.with_name("hostile.onnx")
    make_hostile(exported, out)
    return out


def _cfg(tiny_params: Params, **changes: object) -> object:
    # The fallback's mechanics at the gate itself: no standard errors to spare unless asked.
    exact = {"agreement_margin_se": 0.0, "drop_margin_se": 0.0}
    return with_changes(tiny_params, "quantize", **{**exact, **changes}).quantize


def _gate(max_top1_drop: float = 0.02, min_agreement: float = 0.0) -> GateConfig:
    return GateConfig(max_top1_drop=max_top1_drop, min_agreement=min_agreement)


def test_the_hostile_pair_changes_nothing_in_fp32(hostile: Path, exported: Path) -> None:  # noqa: F811
    x = np.random.default_rng(0).standard_normal((4, 1, 28, 28), dtype=np.float32)
    a, b = (open_engine(p, 1).logits(x) for p in (exported, hostile))
    np.testing.assert_allclose(a, b, atol=1e-3)


def test_fallback_keeps_the_harmful_layers_fp32_until_the_drop_holds(
    hostile: Path, prepared_path: Path, tiny_params: Params, tmp_path: Path
) -> None:
    # Only train and val are loaded: the test split cannot take part in any choice.
    data = load_prepared(prepared_path, ("train", "val"))
    out = tmp_path / "int8.onnx"
    report = quantize_int8(hostile, out, data, _cfg(tiny_params), _gate(), 0)
    assert report["int8/val_top1_drop_plain"] > 0.1  # plain INT8 misses the budget by far
    assert report["int8/val_top1_drop"] <= 0.02
    kept = report["int8/fp32_layers"].split("; ")
    assert set(HOSTILE) <= set(kept) and report["int8/fallback_layers"] >= 2
    assert report["int8/fp32_layer_count"] == len(kept)
    assert report["int8/fallback_size_cost"] > 0 and report["int8/fallback_speed_cost"] > 0
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert "fp32 fallback" in meta["quantization"] and HOSTILE[0] in meta["quantization"]
    # Deterministic for a seed: the same choice again.
    again = quantize_int8(hostile, tmp_path / "again.onnx", data, _cfg(tiny_params), _gate(), 0)
    assert again["int8/fp32_layers"] == report["int8/fp32_layers"]


def test_agreement_alone_also_keeps_layers_fp32(
    hostile: Path, prepared_path: Path, tiny_params: Params, tmp_path: Path
) -> None:
    # Any top-1 drop allowed, but INT8 must predict what fp32 predicts on 97 % of validation:
    # the file is accepted only once it does (the verify gate's agreement, met on validation).
    data = load_prepared(prepared_path, ("train", "val"))
    gate = _gate(max_top1_drop=1.0, min_agreement=0.97)
    report = quantize_int8(hostile, tmp_path / "int8.onnx", data, _cfg(tiny_params), gate, 0)
    assert report["int8/val_agreement_plain"] < 0.97 <= report["int8/val_agreement"]
    assert report["int8/fallback_layers"] >= 1


def test_validation_must_meet_the_gate_with_its_standard_error_to_spare(
    hostile: Path, prepared_path: Path, tiny_params: Params, tmp_path: Path
) -> None:
    # A gate set exactly at what plain INT8 reaches on validation: met with nothing to spare,
    # missed once one standard error must be spared (verify on test could fall either side).
    data = load_prepared(prepared_path, ("train", "val"))
    plain = quantize_int8(hostile, tmp_path / "a.onnx", data, _cfg(tiny_params), _gate(1.0), 0)
    gate = _gate(max_top1_drop=1.0, min_agreement=plain["int8/val_agreement_plain"])
    exact = quantize_int8(hostile, tmp_path / "b.onnx", data, _cfg(tiny_params), gate, 0)
    assert exact["int8/fallback_layers"] == 0
    spared = quantize_int8(
        hostile, tmp_path / "c.onnx", data, _cfg(tiny_params, agreement_margin_se=1.0), gate, 0
    )
    assert spared["int8/fallback_layers"] >= 1 and spared["int8/agreement_margin_se"] == 1.0
    assert spared["int8/val_agreement"] > plain["int8/val_agreement_plain"]


def test_the_drop_margin_holds_the_top1_drop_apart(
    hostile: Path, prepared_path: Path, tiny_params: Params, tmp_path: Path
) -> None:
    # The same with the top-1 drop: a gate at plain INT8's validation drop is met at the
    # default drop margin (0) and missed with one standard error to spare.
    data = load_prepared(prepared_path, ("train", "val"))
    plain = quantize_int8(hostile, tmp_path / "a.onnx", data, _cfg(tiny_params), _gate(1.0), 0)
    assert plain["int8/val_top1_drop_plain"] > 0  # the hostile pair loses images
    gate = _gate(max_top1_drop=plain["int8/val_top1_drop_plain"])
    exact = quantize_int8(hostile, tmp_path / "b.onnx", data, _cfg(tiny_params), gate, 0)
    assert exact["int8/fallback_layers"] == 0
    cfg = _cfg(tiny_params, drop_margin_se=1.0)
    spared = quantize_int8(hostile, tmp_path / "c.onnx", data, cfg, gate, 0)
    assert spared["int8/fallback_layers"] >= 1 and spared["int8/drop_margin_se"] == 1.0
    assert spared["int8/val_top1_drop"] < plain["int8/val_top1_drop_plain"]


def test_the_margins_count_the_test_measurement_verify_will_make(
    prepared_path: Path, tiny_params: Params
) -> None:
    # quantize reads train and val only, yet knows the test split's size from the artifact.
    data = load_prepared(prepared_path, ("train", "val"))
    full = load_prepared(prepared_path, ("train", "val", "test"))
    assert data.sizes == {s: len(full.splits[s].labels) for s in ("train", "val", "test")}
    cfg = tiny_params.quantize
    assert Margins.of(cfg, 1000, 1000).scale == pytest.approx(2**0.5)
    assert Margins.of(cfg, 1000, 4000).scale == pytest.approx(1.25**0.5)
    assert Margins.of(cfg, 1000, None).scale == pytest.approx(2**0.5)  # unknown: as validation


def test_the_cap_fails_in_one_line_and_writes_nothing(
    hostile: Path, prepared_path: Path, tiny_params: Params, tmp_path: Path
) -> None:
    data = load_prepared(prepared_path, ("train", "val"))
    out = tmp_path / "int8.onnx"
    with pytest.raises(GateError, match=r"max_fp32_layers 1\): INT8 on validation.*: top-1") as err:
        quantize_int8(hostile, out, data, _cfg(tiny_params, max_fp32_layers=1), _gate(), seed=0)
    assert "\n" not in str(err.value)
    assert not out.exists() and not list(tmp_path.glob(".quantize-*"))


def test_the_validation_split_drives_the_choice(
    hostile: Path, prepared_path: Path, tiny_params: Params, tmp_path: Path
) -> None:
    # Relabel validation with what the plain INT8 model predicts: on that split INT8 is never
    # worse than fp32, so no layer may stay fp32, whatever the test split would say.

    data = load_prepared(prepared_path, ("train", "val"))
    plain = tmp_path / "plain.onnx"
    quantize_int8(hostile, plain, data, _cfg(tiny_params), _gate(max_top1_drop=1.0), seed=0)
    val = data.splits["val"]
    batches = make_batches(data, "val", 64, None, CPU, 0)  # in split order, as quantize reads it
    predicted = open_engine(plain, 1).batch_logits(batches).argmax(1)
    relabelled = Split(val.images, torch.from_numpy(predicted))
    data = dataclasses.replace(data, splits={**data.splits, "val": relabelled})
    report = quantize_int8(hostile, tmp_path / "int8.onnx", data, _cfg(tiny_params), _gate(), 0)
    assert report["int8/val_top1_drop_plain"] <= 0 and report["int8/fallback_layers"] == 0


def _float_ops(path: Path) -> dict[str, str]:
    """Node name -> op type of the convolutions and matrix products left in float."""
    graph = onnx.load(str(path)).graph
    return {n.name: n.op_type for n in graph.node if n.op_type in ("Conv", "Gemm", "MatMul")}


@pytest.mark.parametrize("head", [True, False])
def test_the_classifier_stays_fp32_unless_asked(
    exported: Path,  # noqa: F811
    prepared_path: Path,
    tiny_params: Params,
    tmp_path: Path,
    head: bool,
) -> None:
    data = load_prepared(prepared_path, ("train", "val"))
    out = tmp_path / "int8.onnx"
    cfg = _cfg(tiny_params, fp32_head=head)
    report = quantize_int8(exported, out, data, cfg, _gate(max_top1_drop=1.0), 0)
    graph = onnx.load(str(exported)).graph
    last = [n for n in graph.node if n.op_type in ("Conv", "Gemm", "MatMul")][-1]
    assert last.op_type == "Gemm"  # resnet8's classifier
    kept = report["int8/fp32_layers"].split("; ")
    assert (len(kept) == 2) is head and report["int8/fallback_layers"] == 0
    floats = _float_ops(out)
    assert (list(floats.values()).count("Gemm") == 1) is head  # else a quantized QGemm
    assert list(floats.values()).count("Conv") == 1  # the stem, in both
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert ("last layer in fp32" in meta["quantization"]) is head


def test_the_drop_standard_error_counts_only_images_whose_correctness_changed() -> None:
    # Nothing changed sides: no sampling error, however many wrong-to-wrong flips.
    assert paired_drop_se(0, 0, 500) == 0.0
    # Five lost, five gained: a net drop of zero known to +-sqrt(10)/500.
    assert paired_drop_se(5, 5, 500) == pytest.approx(np.sqrt(10) / 500)
    assert paired_drop_se(7, 3, 500) == paired_drop_se(3, 7, 500)
    # Against the simulated spread of the difference of two top-1s over 500 paired images.
    rng = np.random.default_rng(0)
    change = rng.choice([-1, 0, 1], p=[0.01, 0.97, 0.02], size=(20000, 500))
    simulated = (change.sum(1) / 500).std()
    assert paired_drop_se(10, 5, 500) == pytest.approx(simulated, rel=0.05)


def test_a_figure_exactly_at_its_gate_threshold_meets_it() -> None:
    gate = GateConfig(max_top1_drop=0.005, min_agreement=0.98)
    five_in_a_thousand = 0.694 - 0.689  # 0.0050000000000000044 in floating point
    assert five_in_a_thousand > 0.005
    assert failures(gate, "verify.int8", "test", five_in_a_thousand, 980 / 1000) == []
    missed = failures(gate, "verify.int8", "test", 0.006, 0.979)
    assert len(missed) == 2 and "max_top1_drop" in missed[0] and "min_agreement" in missed[1]
