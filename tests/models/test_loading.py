"""A qretrain file loads through ``load_model`` in a fresh interpreter: the module
that registers the ``.h5`` loader (``qretrain.storage.h5``) is imported on the first
such file, not only when something else happened to import storage first."""

import subprocess
import sys

import qretrain


def test_a_fresh_interpreter_loads_a_qretrain_file(tmp_path, tiny_vgg):
    path = tmp_path / "m.h5"
    qretrain.save(tiny_vgg, path)
    code = ("import sys, qretrain; m = qretrain.load_model(sys.argv[1]); "
            "print(type(m).__name__)")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == type(tiny_vgg).__name__
