"""A sweep record is checked whole before `qretrain plan` (or a resumed sweep) uses it."""

import copy
import json

import numpy as np
import pytest
import torch

import qretrain
from qretrain.analysis import AnalyzeSettings, Sweep
from qretrain.cli.main import main
from qretrain.data.sets import tensor_set


@pytest.fixture(scope="module")
def sound_record(tmp_path_factory):
    """A real sweep.json of a tiny model (two ks, weights only)."""
    folder = tmp_path_factory.mktemp("sweep")
    torch.manual_seed(0)
    model = qretrain.build_model("qretrain.zoo:vgg_small", width=4, hidden=16).eval()
    images = np.random.default_rng(0).integers(0, 256, (16, 28, 28), dtype=np.uint8)
    qretrain.analyze(
        model,
        tensor_set("d", images, None),
        folder,
        AnalyzeSettings(ks=(2, 8), kinds=("weight",)),
        progress=False,
        plots=False,
    )
    return json.loads((folder / "sweep.json").read_text())


def _deep(record):
    return "[" * 100_000 + "]" * 100_000


def _set(path, value):
    def change(record):
        at = record
        for key in path[:-1]:
            at = at[key]
        at[path[-1]] = value
        return record

    return change


CASES = {
    "nested 100,000 deep": (_deep, "is not a readable sweep record (RecursionError"),
    "settings []": (_set(["settings"], []), "settings must be a mapping; got list"),
    "NaN in a cell": (_set(["cells", 0, "agreement"], float("nan")),
                      "cell 1: agreement is nan; expected float in [0, 1]"),
    "k 1000": (_set(["cells", 0, "k"], 1000), "cell 1: k is 1000; expected int in [1, 256]"),
    "a huge layer range": (_set(["cells", 0, "layers"], "1-999999999"),
                           "cell 1: layers '1-999999999' are not layers of the census"),
    "a bool for an int": (_set(["baseline", "file_bytes"], True),
                          "baseline: file_bytes must be an int in [1, inf]"),
    "an unknown key": (_set(["cells", 0, "extra"], 1), "cell 1: it has unknown key(s) 'extra'"),
    "bad analyze settings": (_set(["settings", "ks"], [0]), "settings: ks: must be ints in"),
    "a list": (lambda record: [record], "the record is a list, not a mapping"),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_plan_on_a_malformed_sweep_record_is_one_line(sound_record, tmp_path, capsys, case):
    change, message = CASES[case]
    folder = tmp_path / "sweep"
    folder.mkdir()
    changed = change(copy.deepcopy(sound_record))
    (folder / "sweep.json").write_text(changed if isinstance(changed, str) else json.dumps(changed))
    out = tmp_path / "plan.yaml"
    code = main(["plan", str(folder), "--max-drop", "5", "--metric", "agreement", "--no-verify",
                 "-o", str(out)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not out.exists()


def test_a_sound_record_loads_and_plans(sound_record, tmp_path, capsys):
    folder = tmp_path / "sweep"
    folder.mkdir()
    (folder / "sweep.json").write_text(json.dumps(sound_record))
    assert len(Sweep.load(folder).cells) == len(sound_record["cells"])
    assert main(["plan", str(folder), "--max-drop", "5", "--metric", "agreement", "--no-verify",
                 "-o", str(tmp_path / "plan.yaml")]) == 0  # fmt: skip
