"""The command line answers at once: --help, argument errors and a bad run config are
handled by torch-free modules, and the stages are imported when a command runs.
What --help lists still comes from the registries' own descriptions."""

import re
import subprocess
import sys

import pytest

from qretrain.cli import teacher_cmd
from qretrain.cli.main import SUBCOMMANDS, build_parser
from qretrain.data.forms import DATASET_FORMS
from qretrain.models.forms import SPEC_FORMS

HEAVY = {"torch", "torchvision", "numpy", "h5py", "matplotlib", "PIL", "scipy", "onnx"}
COMMANDS = [c.__name__.rsplit(".", 1)[1].removesuffix("_cmd") for c in SUBCOMMANDS]


def run_fresh(argv: list[str], cwd=None) -> tuple[int, str, set[str]]:
    """(exit code, stderr, heavy top-level packages loaded) of main(argv) in a fresh
    interpreter."""
    code = ("import sys; from qretrain.cli.main import main; code = main(sys.argv[1:]); "
            "print('\\nLOADED', *sorted({m.split('.')[0] for m in sys.modules})); "
            "sys.exit(code)")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                          timeout=120, cwd=cwd, check=False)  # fmt: skip
    loaded = set(done.stdout.rsplit("LOADED", 1)[-1].split())
    return done.returncode, done.stderr, loaded & HEAVY


@pytest.mark.parametrize("argv", [["--help"], *([c, "--help"] for c in COMMANDS)],
                         ids=lambda argv: " ".join(argv))  # fmt: skip
def test_help_imports_no_torch(argv):
    code, _, heavy = run_fresh(argv)
    assert code == 0 and not heavy, heavy


@pytest.mark.parametrize("argv, message", [
    (["analyze", "m.pt"], "required: --data, -o/--output"),
    (["retrain", "s.h5", "--data", "d", "-o", "o.h5", "--epochs", "two"], "invalid int value"),
    (["compress", "m.pt", "--plan", "p.yaml", "--layout", "tight", "-o", "o.h5"], "invalid choice"),
    (["analyze", "m.pt", "--data", "d", "-o", "out", "--ks", "0,2"], "ks: must be ints in"),
    (["plan", "sweep", "--max-drop", "1", "--batch-size", "0", "-o", "p.yaml"], "batch_size"),
    (["retrain", "s.h5", "--data", "d", "-o", "o.h5", "--loss", "mse", "--labels",
      "--objective", "blocks"], "label-free"),
    (["compress", "m.pt", "--data", "d", "--target", "0.5x", "-o", "o.h5"], "a ratio must be"),
    (["evaluate", "m.pt", "--data", "d", "--batch-size", "0"], "batch_size"),
    (["run", "c.yaml", "--device", "tpu"], "device must be cpu, cuda or cuda:N"),
])  # fmt: skip
def test_argument_and_settings_errors_import_no_torch(argv, message):
    code, err, heavy = run_fresh(argv)
    assert code == 2 and message in err, err
    assert not heavy, heavy


@pytest.mark.parametrize("config", [
    "output: out\nmodel: efficientnet-lite0\nbogus_key: 1\ndata: {evaluate: d}\n",
    ("output: out\nmodel: m.pt\ndata: {analyze: d, retrain: d, evaluate: d}\n"
     "plan: {max_drop: 1}\nretrain: {epochs: 0}\n"),
    ("output: out\nmodel: m.pt\ndata: {unlabeled: d, evaluate: d}\nrecipe: {target: 7x}\n"
     "device: gpu\n"),
], ids=["unknown key", "bad value", "bad device"])  # fmt: skip
def test_a_bad_run_config_is_refused_without_torch(tmp_path, config):
    (tmp_path / "bad.yaml").write_text(config)
    code, err, heavy = run_fresh(["run", "bad.yaml"], cwd=tmp_path)
    assert code == 2 and "config bad.yaml" in err, err
    assert not heavy, heavy


def test_import_qretrain_imports_no_torch():
    code = "import sys, qretrain; print(*sorted({m.split('.')[0] for m in sys.modules}))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)  # fmt: skip
    assert not set(done.stdout.split()) & HEAVY


def test_the_light_form_lists_are_the_registries():
    from qretrain.data import known_datasets
    from qretrain.models import known_specs

    assert list(SPEC_FORMS) == known_specs()
    assert list(DATASET_FORMS) == known_datasets()


def test_help_lists_every_spec_and_dataset_form():
    def help_of(command: str) -> str:
        sub = next(a for a in build_parser()._actions if a.dest == "command")
        return "".join(sub.choices[command].format_help().split())  # wrapped anywhere

    forms = {"inspect": SPEC_FORMS, "analyze": SPEC_FORMS + DATASET_FORMS,
             "compress": SPEC_FORMS + DATASET_FORMS, "evaluate": SPEC_FORMS + DATASET_FORMS,
             "retrain": DATASET_FORMS}  # fmt: skip
    for command, listed in forms.items():
        text = help_of(command)
        missing = [f for f in listed if "".join(f.split()) not in text]
        assert not missing, (command, missing)


def test_the_teacher_command_offers_the_teachers():
    from qretrain.assets import teachers

    assert teacher_cmd.TEACHERS == tuple(sorted(teachers.TEACHERS))
    assert teacher_cmd.DEFAULT_EPOCHS == teachers.DEFAULT_EPOCHS


def test_the_help_text_has_no_stray_format():
    for command in COMMANDS:
        sub = next(a for a in build_parser()._actions if a.dest == "command")
        assert not re.search(r"%\(\w+\)", sub.choices[command].format_help()), command
