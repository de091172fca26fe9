"""One metric-key style: every key a stage writes is `group/name` (nested groups allowed)."""

import json
import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

KEY = re.compile(r"^[a-z0-9_]+(/[a-z0-9_.]+)+$")


@pytest.mark.parametrize("path", sorted((ROOT / "metrics").rglob("*.json")), ids=lambda p: p.name)
def test_committed_metric_keys_share_one_style(path: Path) -> None:
    keys = list(json.loads(path.read_text()))
    bad = [k for k in keys if not KEY.match(k)]
    assert not bad, f"{path.relative_to(ROOT)}: {bad}"
