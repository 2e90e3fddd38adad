"""``python -m qretrain``: the command line, also as ``torchrun -m qretrain retrain ...``.

``python -m`` puts the working folder first on ``sys.path``, so a folder holding
``torch.py`` or ``onnx.py`` would have them imported in place of the real packages.
qretrain runs in folders of downloaded models, so that entry goes before anything
else is imported (``import qretrain`` itself imports only the standard library). A
``module:callable`` typed on the command line is still found there
(``qretrain.models.specs``), for that import only.
"""

import os
import sys

if not sys.flags.safe_path and sys.path and sys.path[0] in ("", os.getcwd()):
    del sys.path[0]

from qretrain.cli.main import entry  # noqa: E402  (after sys.path is made safe)

sys.exit(entry())
