"""dvclive records each epoch as it ends: what `dvc exp show` reads while a stage trains."""

import json
from pathlib import Path

from pipeline.training.live import EpochLog, plotted


def _row(epoch: int) -> dict[str, float]:
    return {
        "epoch": epoch,
        "lr": 0.1 / epoch,
        "train/loss": 1.0 / epoch,
        "train/student/ce": 0.5 / epoch,
        "val/top1": 0.5 + epoch / 10,
        "time/epoch_s": 3.0,
        "memory/peak_mb": 100.0,
    }


def test_each_epoch_is_on_disk_before_the_next_begins(tmp_path: Path) -> None:
    log = EpochLog(tmp_path / "live")
    for epoch in (1, 2, 3):
        log(_row(epoch))
        latest = json.loads((tmp_path / "live" / "metrics.json").read_text())
        assert latest["step"] == epoch and latest["val"]["top1"] == _row(epoch)["val/top1"]
        rows = (tmp_path / "live/plots/metrics/val/top1.tsv").read_text().splitlines()
        assert [r.split("\t")[0] for r in rows[1:]] == [str(e) for e in range(1, epoch + 1)]
    log.close()
    assert json.loads((tmp_path / "live" / "metrics.json").read_text())["step"] == 3
    assert not (tmp_path / "live/plots/metrics/time").exists()
    assert not (tmp_path / "live/plots/metrics/memory").exists()


def test_only_meaningful_columns_are_plotted() -> None:
    assert plotted("val/top1") and plotted("train/bridge/kl_teacher") and plotted("lr")
    assert not plotted("time/epoch_s") and not plotted("memory/peak_mb")
    assert not plotted("test/top1")  # benchmark extras stay in metrics.json only


def test_no_folder_means_no_record(tmp_path: Path) -> None:
    log = EpochLog(None)
    log(_row(1))
    log.close()
    assert not list(tmp_path.iterdir())
