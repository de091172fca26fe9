import pytest
import torch

from pipeline.core.errors import ConfigError
from pipeline.models import MODELS, create_model
from pipeline.models.staged import copy_head, count_macs, count_parameters, split

SMALL = [n for n in MODELS.names() if count_parameters(create_model(n, 10, 3)) < 30_000_000]


@pytest.mark.parametrize("name", SMALL)
def test_model_contract(name: str) -> None:
    # Grayscale 28x28 (Fashion-MNIST): logits only, finite, and every parameter gets a gradient.
    gray = create_model(name, num_classes=7, in_channels=1)
    logits = gray(torch.randn(2, 1, 28, 28))
    assert logits.shape == (2, 7)
    assert torch.isfinite(logits).all()
    logits.sum().backward()
    assert all(p.grad is not None for p in gray.parameters())
    # RGB 32x32 (CIFAR): the trunk then the head is the whole network, with no parameter lost.
    rgb = create_model(name, 10, 3).eval()
    trunk, head = split(rgb, "")
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(head(trunk(images)), rgb(images))
    assert count_parameters(trunk) + count_parameters(head) == count_parameters(rgb)


def test_copied_head_keeps_or_forgets_the_weights() -> None:
    model = create_model("resnet20", 10, 3).eval()
    trunk, head = split(model, "stage3")
    features = trunk(torch.randn(2, 3, 32, 32))
    torch.testing.assert_close(copy_head(head, reinitialise=False).eval()(features), head(features))
    assert not torch.allclose(copy_head(head, reinitialise=True).eval()(features), head(features))


def test_unknown_split_point_lists_the_choices() -> None:
    with pytest.raises(ConfigError, match="choose one of"):
        split(create_model("resnet8", 10, 3), "layer4")


def test_unknown_model_lists_the_registered_names() -> None:
    with pytest.raises(ConfigError, match=r"unknown model 'resnet9'; choose one of .*resnet8"):
        create_model("resnet9", 10, 3)


def test_reference_parameter_counts() -> None:
    # Sizes of the CIFAR-100 model zoo as published (in M, two decimals): the blocks are right.
    expected = {
        "resnet8": 0.08e6,
        "resnet20": 0.28e6,
        "resnet56": 0.86e6,
        "resnet8x4": 1.23e6,
        "resnet32x4": 7.43e6,
        "wrn_16_2": 0.70e6,
        "wrn_40_1": 0.57e6,
        "wrn_40_2": 2.26e6,
        "vgg8": 3.96e6,
        "vgg13": 9.46e6,
        "mobilenetv2_x0_5": 0.81e6,
        "shufflenetv2": 1.36e6,
    }
    for name, count in expected.items():
        assert count_parameters(create_model(name, 100, 3)) == pytest.approx(count, abs=0.005e6), (
            name
        )


def test_macs_of_a_known_layer_stack() -> None:
    model = create_model("resnet8", 10, 3)
    # stem conv 3->16 at 32x32: 32*32*16*3*9 MACs is part of the total; the total is positive and
    # scales with the input area (the convolutions dominate).
    small, large = count_macs(model, (3, 16, 16)), count_macs(model, (3, 32, 32))
    assert small > 32 * 32 * 16 * 3 * 9 / 4
    assert large / small == pytest.approx(4, rel=0.01)


@pytest.mark.parametrize("arch", ["tv_resnet18", "timm:resnet10t"])
def test_building_a_network_moves_the_global_generator_the_same_way_every_time(arch: str) -> None:
    # The timm adapter checks each architecture's chain once per process (cached); that check
    # must not reseed torch's generator, or the first timm run of a process would draw its
    # weights and batches differently from the next (and not from its seed).
    if arch.startswith("timm:"):
        pytest.importorskip("timm")
        from pipeline.models import timm_zoo

        timm_zoo._chain_matches.cache_clear()
    after = []
    for _ in range(2):  # the first build runs the (uncached) check, the second does not
        torch.manual_seed(3)
        weights = create_model(arch, 10, 3).state_dict()
        after.append((torch.rand(1).item(), next(iter(weights.values())).sum().item()))
    assert after[0] == after[1]
