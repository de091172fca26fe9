"""Shared fixtures: the tiny params profile, generated datasets, small trained networks."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from pipeline.core.config import Params
from pipeline.core.params import load_params
from pipeline.core.runtime import Runtime
from pipeline.data.datasets import prepare, save_prepared
from tests.helpers import write_fashion_mnist

ROOT = Path(__file__).resolve().parents[1]
TINY_PARAMS = ROOT / "tests" / "tiny_params.yaml"
CPU = Runtime(torch.device("cpu"), amp_dtype=None, channels_last=False)


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_params() -> Params:
    return load_params(TINY_PARAMS)


@pytest.fixture(scope="session")
def fashion_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated Fashion-MNIST in torchvision's raw layout: 400 train, 120 test images."""
    return write_fashion_mnist(tmp_path_factory.mktemp("raw"), n_train=400, n_test=120)


@pytest.fixture(scope="session")
def prepared_path(
    fashion_raw: Path, tiny_params: Params, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    path = tmp_path_factory.mktemp("prepared") / "prepared.pt"
    save_prepared(path, prepare(fashion_raw, tiny_params.prepare, tiny_params.seed))
    return path


def with_changes(params: Params, section: str, **changes: object) -> Params:
    """A copy of `params` with fields of one section replaced."""
    return dataclasses.replace(
        params, **{section: dataclasses.replace(getattr(params, section), **changes)}
    )
