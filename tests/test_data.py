import dataclasses
from pathlib import Path

import pytest
import torch

from pipeline.core.config import Params
from pipeline.core.errors import DataError
from pipeline.core.files import sha256_file
from pipeline.data.batches import GlobalBatchSampler, make_batches
from pipeline.data.datasets import (
    SPLITS,
    load_prepared,
    prepare,
    read_cifar10,
    read_cifar100,
    save_prepared,
)
from pipeline.data.datasets import _cifar as read_cifar_unchecked
from tests.conftest import CPU, with_changes
from tests.helpers import write_cifar, write_image_folder


def test_fashion_mnist_is_read_from_real_idx_files(fashion_raw: Path, tiny_params: Params) -> None:
    prepared = prepare(fashion_raw, tiny_params.prepare, seed=0)
    assert prepared["train"]["images"].shape == (300, 1, 28, 28)
    assert prepared["train"]["images"].dtype == torch.uint8
    assert len(prepared["val"]["labels"]) == 100 and len(prepared["test"]["labels"]) == 120
    assert prepared["classes"][0] == "T-shirt/top" and len(prepared["classes"]) == 10
    assert len(prepared["mean"]) == 1 and 0 < prepared["mean"][0] < 1


def test_validation_is_carved_from_train_with_the_seed(
    fashion_raw: Path, tiny_params: Params
) -> None:
    a = prepare(fashion_raw, tiny_params.prepare, seed=0)
    b = prepare(fashion_raw, tiny_params.prepare, seed=0)
    c = prepare(fashion_raw, tiny_params.prepare, seed=1)
    assert torch.equal(a["val"]["images"], b["val"]["images"])
    assert not torch.equal(a["val"]["images"], c["val"]["images"])
    assert torch.equal(a["test"]["images"], c["test"]["images"])  # the test set never moves


def test_train_and_test_subsets(fashion_raw: Path, tiny_params: Params) -> None:
    cfg = with_changes(tiny_params, "prepare", train_size=50, test_size=30).prepare
    prepared = prepare(fashion_raw, cfg, seed=0)
    assert len(prepared["train"]["labels"]) == 50 and len(prepared["test"]["labels"]) == 30


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path: Path, tiny_params: Params) -> None:
    with pytest.raises(DataError, match="dvc repro fetch"):
        prepare(tmp_path, tiny_params.prepare, seed=0)


def test_val_size_larger_than_the_dataset_is_refused(
    fashion_raw: Path, tiny_params: Params
) -> None:
    cfg = with_changes(tiny_params, "prepare", val_size=400).prepare
    with pytest.raises(DataError, match="leaves no training images"):
        prepare(fashion_raw, cfg, seed=0)


@pytest.mark.parametrize(("variant", "classes"), [("cifar10", 10), ("cifar100", 100)])
def test_cifar_pickle_layout_is_read_by_torchvision(
    tmp_path: Path, variant: str, classes: int
) -> None:
    raw = write_cifar(tmp_path, variant, n_train=50, n_test=20)
    data = read_cifar_unchecked(variant, raw, verify_checksums=False)
    assert data.train_images.shape == (50, 3, 32, 32) and data.test_images.shape == (20, 3, 32, 32)
    assert len(data.classes) == classes
    assert int(data.train_labels.max()) < classes


@pytest.mark.parametrize("reader", [read_cifar10, read_cifar100])
def test_real_cifar_path_checks_md5_and_rejects_other_files(
    tmp_path: Path, reader, tiny_params
) -> None:
    write_cifar(tmp_path, "cifar10", 20, 10)
    write_cifar(tmp_path, "cifar100", 20, 10)
    with pytest.raises(DataError, match="not found or corrupted"):
        reader(tmp_path, tiny_params.prepare)


def test_imagefolder_reads_pngs_and_resizes(tmp_path: Path, tiny_params: Params) -> None:
    write_image_folder(tmp_path / "train", ["cat", "dog", "eel"], per_class=8, size=20)
    write_image_folder(tmp_path / "val", ["cat", "dog", "eel"], per_class=2, size=20, seed=1)
    cfg = with_changes(
        tiny_params, "prepare", dataset="imagefolder", val_size=6, image_size=16
    ).prepare
    prepared = prepare(tmp_path, cfg, seed=0)
    assert prepared["classes"] == ["cat", "dog", "eel"]
    assert prepared["train"]["images"].shape == (18, 3, 16, 16)
    assert prepared["test"]["images"].shape == (6, 3, 16, 16)


@pytest.mark.parametrize("storage", ["memory", "files"])
def test_imagefolder_with_a_corrupt_image_names_the_file(
    tmp_path: Path, tiny_params: Params, storage: str
) -> None:
    write_image_folder(tmp_path / "train", ["a", "b"], per_class=3, size=8)
    write_image_folder(tmp_path / "val", ["a", "b"], per_class=1, size=8)
    (tmp_path / "train" / "a" / "1.png").write_bytes(b"not a png at all")
    cfg = with_changes(
        tiny_params, "prepare", dataset="imagefolder", val_size=2, storage=storage
    ).prepare
    with pytest.raises(DataError, match=r"cannot read image .*1\.png"):
        prepare(tmp_path, cfg, seed=0)


def _folder_artifacts(root: Path, params: Params) -> dict[str, Path]:
    """The same generated image folder prepared in memory and as files (20x20 PNGs, resized)."""
    write_image_folder(root / "train", ["cat", "dog", "eel"], per_class=10, size=20)
    write_image_folder(root / "val", ["cat", "dog", "eel"], per_class=3, size=20, seed=1)
    paths = {}
    for storage in ("memory", "files"):
        cfg = with_changes(
            params, "prepare", dataset="imagefolder", val_size=6, image_size=16, storage=storage
        ).prepare
        paths[storage] = root / f"{storage}.pt"
        save_prepared(paths[storage], prepare(root, cfg, seed=0))
    return paths


def test_file_backed_imagefolder_streams_the_images_the_memory_artifact_holds(
    tmp_path: Path, tiny_params: Params
) -> None:
    paths = _folder_artifacts(tmp_path, tiny_params)
    raw = torch.load(paths["files"], weights_only=True)
    assert raw["storage"] == "files" and "images" not in raw["train"]
    assert len(raw["train"]["files"]) == 24 and raw["shape"] == [3, 16, 16]
    in_memory = load_prepared(paths["memory"], SPLITS)
    on_disk = load_prepared(paths["files"], SPLITS)
    assert on_disk.image_shape == in_memory.image_shape == (3, 16, 16)
    assert on_disk.mean == pytest.approx(in_memory.mean) and on_disk.classes == in_memory.classes
    for split in SPLITS:  # evaluation order: the very same pixels, normalised alike
        a = list(make_batches(in_memory, split, 4, None, CPU, seed=0))
        b = list(make_batches(on_disk, split, 4, None, CPU, seed=0))
        assert len(a) == len(b) > 0
        for (xa, ya), (xb, yb) in zip(a, b, strict=True):
            torch.testing.assert_close(xa, xb, atol=1e-6, rtol=1e-6)
            assert torch.equal(ya, yb)
        # The stored images, as a file that resizes and crops itself reads them: equal too.
        pa = torch.cat(list(make_batches(in_memory, split, 4, None, CPU, seed=0).pixels()))
        pb = list(make_batches(on_disk, split, 4, None, CPU, seed=0).pixels())
        assert pa.dtype == torch.uint8 and all(len(p) <= 4 for p in pb)
        assert torch.equal(pa, torch.cat(pb)) and len(pa) == len(in_memory.splits[split].labels)
    aug = tiny_params.train_teacher.train.augment
    train = make_batches(on_disk, "train", 8, aug, dataclasses.replace(CPU, workers=2), seed=0)
    shapes = [tuple(x.shape) for x, _ in train]
    assert shapes == [(8, 3, 16, 16)] * 3 and train.num_images == 24


def test_a_file_damaged_after_prepare_is_one_clear_error_from_the_workers(
    tmp_path: Path, tiny_params: Params
) -> None:
    paths = _folder_artifacts(tmp_path, tiny_params)
    data = load_prepared(paths["files"], ("train",))
    damaged = data.splits["train"].files[5]
    Path(damaged).write_bytes(b"truncated")
    aug = tiny_params.train_teacher.train.augment
    batches = make_batches(data, "train", 8, aug, dataclasses.replace(CPU, workers=2), seed=0)
    with pytest.raises(DataError) as err:
        list(batches)
    assert str(err.value).startswith(f"cannot read image {damaged}: ")
    assert "\n" not in str(err.value) and "Traceback" not in str(err.value)


def test_file_storage_needs_an_image_folder(fashion_raw: Path, tiny_params: Params) -> None:
    cfg = with_changes(tiny_params, "prepare", storage="files").prepare
    with pytest.raises(DataError, match="storage: files works only with dataset imagefolder"):
        prepare(fashion_raw, cfg, seed=0)


def test_processes_together_see_the_batches_of_one_process() -> None:
    def batches(rank: int, size: int) -> list[list[int]]:
        gen = torch.Generator().manual_seed(3)
        return list(GlobalBatchSampler(50, 8, True, gen, rank, size))

    one = batches(0, 1)
    two = [a + b for a, b in zip(batches(0, 2), batches(1, 2), strict=True)]
    assert one == two and len(one) == 6 and all(len(b) == 8 for b in one)
    flat = [i for batch in one for i in batch]
    assert len(set(flat)) == 48 and flat != sorted(flat)  # shuffled; last partial batch dropped


def test_imagefolder_missing_val_folder(tmp_path: Path, tiny_params: Params) -> None:
    write_image_folder(tmp_path / "train", ["a", "b"], per_class=3, size=8)
    cfg = with_changes(tiny_params, "prepare", dataset="imagefolder", val_size=2).prepare
    with pytest.raises(DataError, match="val does not exist"):
        prepare(tmp_path, cfg, seed=0)


def test_fake_dataset_uses_the_sizes_from_params(tmp_path: Path, tiny_params: Params) -> None:
    cfg = with_changes(
        tiny_params,
        "prepare",
        dataset="fake",
        val_size=8,
        train_size=16,
        test_size=4,
        image_size=12,
    ).prepare
    prepared = prepare(tmp_path, cfg, seed=0)
    assert prepared["train"]["images"].shape == (16, 3, 12, 12)
    assert len(prepared["val"]["labels"]) == 8 and len(prepared["test"]["labels"]) == 4


def test_prepared_artifact_round_trip_and_split_selection(prepared_path: Path) -> None:
    data = load_prepared(prepared_path, ("train", "val"))
    assert set(data.splits) == {"train", "val"}
    assert data.image_shape == (1, 28, 28) and data.num_classes == 10


def test_damaged_prepared_artifact_is_one_clear_error(tmp_path: Path, prepared_path: Path) -> None:
    broken = tmp_path / "prepared.pt"
    broken.write_bytes(prepared_path.read_bytes()[:5000])
    with pytest.raises(DataError, match="cannot read prepared dataset"):
        load_prepared(broken, ("train",))
    with pytest.raises(DataError, match="not found"):
        load_prepared(tmp_path / "absent.pt", ("train",))


def test_training_batches_are_augmented_and_normalised(
    prepared_path: Path, tiny_params: Params
) -> None:
    data = load_prepared(prepared_path, ("train", "val"))
    aug = tiny_params.train_teacher.train.augment
    train = make_batches(data, "train", 32, aug, CPU, seed=0)
    val = make_batches(data, "val", 32, None, CPU, seed=0)
    images, labels = next(iter(train))
    assert images.shape == (32, 1, 28, 28) and images.dtype == torch.float32
    assert len(train) == 300 // 32 and train.num_images == 32 * (
        300 // 32
    )  # last partial batch dropped
    assert sum(len(y) for _, y in val) == 100  # evaluation sees every image, in order
    first_val = next(iter(val))[0]
    raw = data.splits["val"].images[:32].float() / 255
    torch.testing.assert_close(first_val, (raw - data.mean[0]) / data.std[0])
    # Two passes over training data shuffle differently.
    assert not torch.equal(next(iter(train))[1], labels)


def test_save_prepared_is_atomic(tmp_path: Path, fashion_raw: Path, tiny_params: Params) -> None:
    out = tmp_path / "prepared.pt"
    save_prepared(out, prepare(fashion_raw, tiny_params.prepare, seed=0))
    assert out.is_file() and not list(tmp_path.glob(".*.tmp"))


def test_preparing_the_same_data_twice_gives_the_same_bytes(
    tmp_path: Path, fashion_raw: Path, tiny_params: Params
) -> None:
    # Equal bytes, equal DVC hash: rerunning prepare does not invalidate the stages after it.
    first, again = tmp_path / "prepared.pt", tmp_path / "again" / "prepared.pt"
    for out in (first, again):
        save_prepared(out, prepare(fashion_raw, tiny_params.prepare, seed=0))
    assert sha256_file(first) == sha256_file(again)


def test_stream_loader_matches_the_device_loader_for_evaluation(prepared_path: Path) -> None:
    data = load_prepared(prepared_path, ("val",))
    stream = dataclasses.replace(CPU, loader="stream", workers=0)
    device_batches = list(make_batches(data, "val", 32, None, CPU, seed=0))
    stream_batches = list(make_batches(data, "val", 32, None, stream, seed=0))
    assert len(device_batches) == len(stream_batches) == 4
    for (a, ya), (b, yb) in zip(device_batches, stream_batches, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
        assert torch.equal(ya, yb)


def test_stream_loader_augments_in_worker_processes(
    prepared_path: Path, tiny_params: Params
) -> None:
    data = load_prepared(prepared_path, ("train",))
    stream = dataclasses.replace(CPU, loader="stream", workers=2)
    batches = make_batches(
        data, "train", 32, tiny_params.train_teacher.train.augment, stream, seed=0
    )
    first = [y for _, y in batches]
    second = [y for _, y in batches]
    assert len(first) == len(batches) == 300 // 32 and batches.num_images == 32 * (300 // 32)
    assert not torch.equal(torch.cat(first), torch.cat(second))  # reshuffled every pass
    again = make_batches(data, "train", 32, tiny_params.train_teacher.train.augment, stream, seed=0)
    torch.testing.assert_close(
        next(iter(again))[0],
        next(
            iter(
                make_batches(
                    data, "train", 32, tiny_params.train_teacher.train.augment, stream, seed=0
                )
            )
        )[0],
    )  # seeded
