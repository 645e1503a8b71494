"""Plumbing shared by the ``flexassign`` and ``fl-harness`` command lines.

- :class:`ArgumentParser` reports a usage mistake on one line (``prog: error: ...
  (see --help)``) and exits 2, and shows every option's default in ``--help``.
- :func:`run_cli` runs a command so that no traceback reaches the user: bad input
  (:class:`UsageError`, any :class:`~flexassign.errors.FlexAssignError`, an
  ``OSError`` such as a missing file) prints one line and exits 2; an unexpected
  exception prints one line and exits 3 (set ``FLEXASSIGN_TRACEBACK=1`` to see the
  traceback instead); a closed output pipe (``... | head -1``) ends the command
  quietly with exit 141, as ``SIGPIPE`` would.
- :func:`progress` is a progress bar that draws with ``tqdm`` only when stderr is a
  terminal and prints plain, rate-limited lines otherwise (logs, CI, pipes).

Exit codes of both commands: 0 success, 1 no valid result (``flexassign``: no valid
assignment), 2 bad input, 3 internal error, 141 output pipe closed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Any, NoReturn

from .errors import FlexAssignError

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_INTERNAL",
    "EXIT_PIPE",
    "ArgumentParser",
    "Progress",
    "UsageError",
    "json_object",
    "progress",
    "read_text_file",
    "run_cli",
]

EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3
EXIT_PIPE = 141  # 128 + SIGPIPE, what a shell reports for `yes | head -1`'s writer

#: Environment variable that makes :func:`run_cli` re-raise unexpected exceptions.
TRACEBACK_ENV = "FLEXASSIGN_TRACEBACK"


class UsageError(FlexAssignError, ValueError):
    """A command-line value is invalid; the message names the flag."""


def json_object(text: str) -> dict[str, Any]:
    """An argparse ``type=``: ``text`` parsed as a JSON object.

    >>> json_object('{"a": 1}')
    {'a': 1}
    >>> json_object("[1]")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: must be a JSON object
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise argparse.ArgumentTypeError("not usable JSON (nested too deeply)") from None
    except ValueError as exc:  # e.g. an integer of more than 4,300 digits
        raise argparse.ArgumentTypeError(f"not usable JSON ({one_line(exc)})") from None
    if not isinstance(data, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return data


def read_text_file(path: str, flag: str) -> str:
    """The UTF-8 text of ``path``, given to ``flag`` as ``@FILE``; a :class:`UsageError`
    naming the flag and the file when it is not UTF-8 text (``OSError`` as usual)."""
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"`{flag}`: {path!r} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at "
            f"offset {exc.start})"
        ) from None


def one_line(text: object) -> str:
    """``text`` as one line (newlines and runs of whitespace become single spaces)."""
    return " ".join(str(text).split())


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in ``--help`` (omitted when the default is ``None`` or ``False``);
    descriptions keep their line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """An :class:`argparse.ArgumentParser` whose errors are one line and exit 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {one_line(message)} (see --help)\n")


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # pragma: no cover - exotic stdout
        pass


def run_cli(prog: str, command: Callable[[], int]) -> int:
    """Run ``command()`` and turn every exception into an exit code and one line.

    Parameters
    ----------
    prog : str
        Program name for messages (``"flexassign"``).
    command : callable
        Does the work and returns the exit code.

    Returns
    -------
    int
        ``command()``'s code, 2 for bad input, 3 for an internal error, 141 when the
        output pipe was closed.
    """
    try:
        code = int(command())
        sys.stdout.flush()  # a closed pipe shows up here when the output was small
        return code
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_PIPE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except (FlexAssignError, OSError) as exc:
        _error(prog, describe(exc))
        return EXIT_BAD_INPUT
    except Exception as exc:
        if os.environ.get(TRACEBACK_ENV):
            raise
        _error(
            prog,
            f"internal error: {type(exc).__name__}: {exc} "
            f"(set {TRACEBACK_ENV}=1 for the traceback)",
        )
        return EXIT_INTERNAL


def describe(exc: BaseException) -> str:
    """A one-line description of ``exc`` (an ``OSError`` as ``reason: file``)."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.strerror}: {exc.filename!s}"
    return str(exc) or type(exc).__name__


def _error(prog: str, message: str) -> None:
    try:
        print(f"{prog}: error: {one_line(message)}", file=sys.stderr)
    except (OSError, ValueError):  # pragma: no cover - stderr itself is gone
        pass


# ---------------------------------------------------------------------------- progress
class Progress:
    """A progress counter; see :func:`progress`. Use as a context manager."""

    def __init__(
        self,
        total: int,
        desc: str,
        *,
        enabled: bool = True,
        leave: bool = True,
        interval: float = 10.0,
        stream: IO[str] | None = None,
        tty: bool | None = None,
    ) -> None:
        self.total = int(total)
        self.desc = desc
        self.n = 0
        self._leave = leave
        self._interval = float(interval)
        self._stream = stream if stream is not None else sys.stderr
        self._bar: Any = None
        self._enabled = enabled
        self._closed = False
        self._postfix = ""
        self._t0 = self._last = time.monotonic()
        if not enabled:
            return
        if tty is None:
            isatty = getattr(self._stream, "isatty", None)
            tty = bool(isatty()) if callable(isatty) else False
        if tty:
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(total=self.total, desc=desc, leave=leave, file=self._stream)

    def update(self, n: int = 1) -> None:
        """Count ``n`` more steps done."""
        self.n += n
        if not self._enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if now - self._last >= self._interval and self.n < self.total:
            self._last = now
            self._line()

    def set_postfix(self, **values: object) -> None:
        """Show ``key=value`` pairs after the count (as ``tqdm.set_postfix``)."""
        if self._bar is not None:
            self._bar.set_postfix(**values)
        self._postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def _line(self) -> None:
        elapsed = time.monotonic() - self._t0
        extra = f" {self._postfix}" if self._postfix else ""
        print(
            f"{self.desc}: {self.n}/{self.total} ({elapsed:.1f}s){extra}",
            file=self._stream,
            flush=True,
        )

    def close(self) -> None:
        """Finish the bar (plain mode: one last line if ``leave``)."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self._enabled and self._leave:
            self._line()

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def progress(
    total: int, desc: str, *, enabled: bool = True, leave: bool = True, interval: float = 10.0
) -> Progress:
    """A progress bar over ``total`` steps that degrades cleanly when not on a terminal.

    On a terminal (stderr is a TTY) with ``tqdm`` installed it is a ``tqdm`` bar.
    Otherwise it prints plain lines to stderr, ``"desc: n/total (elapsed)"``, at
    most one every ``interval`` seconds, and a last line on :meth:`Progress.close`
    when ``leave`` is true; so nested bars in a log file add a few lines, not
    escape codes. ``enabled=False`` makes it silent.

    Examples
    --------
    >>> with progress(3, "rounds", enabled=False) as bar:
    ...     for _ in range(3):
    ...         bar.update()
    >>> bar.n
    3
    """
    return Progress(total, desc, enabled=enabled, leave=leave, interval=interval)
