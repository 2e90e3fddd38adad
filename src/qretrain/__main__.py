"""``python -m qretrain``: the command line, also as ``torchrun -m qretrain retrain ...``."""

import sys

from qretrain.cli.main import main

sys.exit(main())
