"""``python -m flexassign`` is the ``flexassign`` command."""

import sys

from .cli import main

sys.exit(main())
