"""The one base of the errors a user can cause, and how an error is told in one line.

Every error evalkit raises for something the user can fix (a bad option, task file, dataset,
checkpoint or folder) is an :class:`EvalkitError`. Each also keeps the builtin base it always
had (``DataError`` is a ``ValueError``, ``ResultsFolderError`` a ``FileNotFoundError``), so
``except ValueError`` code goes on working. The runner (``evalkit.api``) and the command line
catch ``EvalkitError`` alone: told in one line, the run goes on. Anything else that escapes is a
bug in evalkit or a plugin: the task fails, its traceback is logged and the exit code is 1.

This module is at the bottom of the layers: every module may import it, it imports nothing of
evalkit.
"""

from __future__ import annotations


class EvalkitError(Exception):
    """Something the user can fix; the first line of the message says what, naming the file, key,
    option or sample at fault. Subclasses add the builtin base their callers catch."""


class OptionError(EvalkitError, ValueError):
    """A run option or setting that is not valid (a command-line flag, an API keyword, a value of
    a task's ``view:`` block); the message names it and what it accepts."""


class OutputError(EvalkitError, OSError):
    """A file or folder evalkit must write that it cannot (no permission, a full disk, a file
    where a folder should be); the message names the path and why."""


def one_line(e: BaseException, limit: int | None = None) -> str:
    """The first line of ``e``'s message (its type name when it has none), cut to ``limit``."""
    text = str(e).strip()
    line = text.splitlines()[0] if text else type(e).__name__
    return line[:limit] if limit else line


def bug_line(e: BaseException, traceback_at: str = "in the log") -> str:
    """How a failure that is not an :class:`EvalkitError` is told in one line: that it is a bug,
    where its traceback is, its type and its message's first line."""
    text = str(e).strip()
    first = text.splitlines()[0] if text else ""
    return (f"internal error (a bug in evalkit or a plugin; its traceback is {traceback_at}): "
            f"{type(e).__name__}" + (f": {first}" if first else ""))


def told(e: BaseException) -> str:
    """The one line a failure is reported in: an :class:`EvalkitError`'s first line; for anything
    else, :func:`bug_line`."""
    return one_line(e) if isinstance(e, EvalkitError) else bug_line(e)
