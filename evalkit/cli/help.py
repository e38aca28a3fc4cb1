"""The help formatter every evalkit command uses (``evalkit``, its subcommands and plugged ones)."""

from __future__ import annotations

import argparse

#: what every command returns: done, failed (a task, a check), a usage error
EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2

TASK_DIR_HELP = ("extra folder of task YAML files, added to the built-in tasks (repeatable); a task there "
                 "replaces a built-in task of the same name")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's line breaks and appends an option's default to its help, unless
    the help already says what the default is (or there is no default worth saying)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("default" in text.lower() or default in (None, False, argparse.SUPPRESS)
                or action.option_strings == [] or isinstance(action, argparse._HelpAction)):
            return text
        return f"{text} (default: %(default)s)"
