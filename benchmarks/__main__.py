"""Entry point: ``python -m benchmarks [--quick] [--sizes 10x8,100x16] ...``."""

from __future__ import annotations

import sys

from .run import main

sys.exit(main())
