"""The package's loggers: ``logging.getLogger("flexassign")`` and one child per module.

flexassign logs what a caller cannot see in a result: which backend ``auto`` chose and
why, fallbacks (a planner round solved with soft bounds or greedy), compiles of
``flow-warm``'s kernels, time-limit overruns and planner dropouts. It configures no
handler: a program that sets up :mod:`logging` gets the records, and one that does not
sees only WARNING and above (Python's last-resort handler prints them to stderr).
The CLIs show more with ``-v`` (INFO) and ``-vv`` (DEBUG) through :func:`configure`.

Levels used:

* ``WARNING``: a one-time compile that stalls the call (seconds), a time-limit overrun;
* ``INFO``: the backend ``auto`` picked, fallbacks, dropouts, compile timings;
* ``DEBUG``: decisions that repeat every call (``auto`` declining the compiled kernels).

Examples
--------
>>> from flexassign._logging import get_logger
>>> get_logger("flexassign.solve").name
'flexassign.solve'
>>> get_logger("fl_harness.cli").name  # other packages' records go under it too
'flexassign.fl_harness.cli'
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

__all__ = ["LOGGER_NAME", "configure", "get_logger", "verbosity_level"]

#: The package's root logger; every module logs to a child of it.
LOGGER_NAME = "flexassign"

_FORMAT = "%(name)s: %(levelname)s: %(message)s"
#: The handler :func:`configure` installed (replaced on a second call).
_handler: logging.Handler | None = None


def get_logger(name: str) -> logging.Logger:
    """The logger of module ``name`` (``__name__``), a child of ``"flexassign"``.

    Parameters
    ----------
    name : str
        A dotted module name under ``flexassign`` (or ``fl_harness``, whose records
        then go to ``flexassign.fl_harness...``).

    Returns
    -------
    logging.Logger
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"`name` must be a non-empty module name; got {name!r}")
    if name == LOGGER_NAME or name.startswith(LOGGER_NAME + "."):
        return logging.getLogger(name)
    return logging.getLogger(f"{LOGGER_NAME}.{name}")


def verbosity_level(verbosity: int) -> int:
    """The logging level for a CLI's ``-v`` count: 0 WARNING, 1 INFO, 2 or more DEBUG.

    Examples
    --------
    >>> import logging
    >>> [logging.getLevelName(verbosity_level(v)) for v in (0, 1, 2, 5)]
    ['WARNING', 'INFO', 'DEBUG', 'DEBUG']
    """
    if isinstance(verbosity, bool) or not isinstance(verbosity, int) or verbosity < 0:
        raise ValueError(f"`verbosity` must be an int >= 0; got {verbosity!r}")
    return (logging.WARNING, logging.INFO)[verbosity] if verbosity < 2 else logging.DEBUG


def configure(verbosity: int = 0, *, stream: TextIO | None = None) -> logging.Logger:
    """Send the ``"flexassign"`` records at ``verbosity``'s level and above to ``stream``.

    What the CLIs call for ``-v``; a program that configures :mod:`logging` itself
    needs nothing from here. A second call replaces the first one's handler.

    Parameters
    ----------
    verbosity : int
        0: WARNING and above (the default), 1: INFO, 2 or more: DEBUG.
    stream : text stream, optional
        Where to write (default ``sys.stderr`` at the time of each record).

    Returns
    -------
    logging.Logger
        The ``"flexassign"`` logger.
    """
    global _handler
    level = verbosity_level(verbosity)
    logger = logging.getLogger(LOGGER_NAME)
    if _handler is not None:
        logger.removeHandler(_handler)
    handler: logging.Handler = (
        logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    )
    handler.setFormatter(logging.Formatter(_FORMAT))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False  # the records are printed once, by this handler
    _handler = handler
    return logger


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg,unused-ignore]
    """Writes to whatever ``sys.stderr`` is when a record comes (pytest's capture,
    a redirected stream), not to the stream of the moment it was made."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)
