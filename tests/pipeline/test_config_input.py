"""A run config from a stranger: whatever its bytes, one line and nothing written."""

import pytest

from qretrain.cli.main import main
from qretrain.testing.record_fuzz import BOMB


@pytest.mark.parametrize("text,message", [
    (BOMB + "output: out\nmodel: m.h5\n", "holds over 10,000 values or nests over 16 levels "
     "(YAML aliases expanded)"),
    ("[" * 100_000 + "]" * 100_000, "nests too deeply to be a run config"),
    ("output: \xff\xfe\n", "is not UTF-8 text"),
    ("output: out\nmodel: m.h5\nweights: [1]\n", "weights must be the path of a state dict "
     "(a string); got [1]"),
    ("output: out\nmodel: m.h5\nmodel_args: {1: 2}\n", "model_args: keys must be names; got 1"),
])  # fmt: skip
def test_a_hostile_config_is_one_line(tmp_path, capsys, text, message):
    path = tmp_path / "run.yaml"
    path.write_bytes(text.encode("latin-1"))
    assert main(["run", str(path), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert len(err) < 2000  # the bomb is never expanded into the message
    assert not (tmp_path / "out").exists()
