"""``python -m fl_harness`` runs the ``fl-harness`` command line."""

import sys

from .cli import main

sys.exit(main())
