"""Re-export of :mod:`flexassign.integrations.layout` for Flower users.

The layout is framework-neutral (numpy and flexassign only); it lives in
:mod:`flexassign.integrations.layout`, and this module keeps the Flower package's
import path working.
"""

from __future__ import annotations

from ..layout import (
    DEFAULT_EXPERT_PATTERN,
    DEFAULT_LOCAL_PATTERN,
    ExpertLayout,
    LayoutError,
    block_name,
    nbytes,
)

__all__ = [
    "DEFAULT_EXPERT_PATTERN",
    "DEFAULT_LOCAL_PATTERN",
    "ExpertLayout",
    "LayoutError",
    "block_name",
    "nbytes",
]
