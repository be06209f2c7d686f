"""Exit codes and the bad-input error: the same for every kiln command.

Every command (``python -m automation rotate|rollback|guard|bake|replace|simulate``, the termination handler,
``python -m policies.offline``) exits with one of these codes; a wrong flag, key or file is :class:`BadInput`
(exit 2), raised before anything changes, with a message that names what to fix. Standard library only: the
termination handler's image copies this module.
"""

from __future__ import annotations

from typing import Optional

EXIT_OK = 0
# The command ran and did not succeed: a rollout that failed, blocked or rolled back, a rotation that failed,
# a guard that refused, a mandatory policy violated.
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2      # the command could not run on its input; nothing was changed


class BadInput(ValueError):
    """Input a command cannot run on (exit 2); nothing was changed.

    One or more ``problems``, each a line that names the flag, key or file; with ``flag``, each line is
    prefixed ``<flag>: ``. ``lines`` are the lines as printed, ``message`` the problems without the flag.
    A ``ValueError``, so a caller that catches ``ValueError`` around input handling catches it too.
    """

    def __init__(self, *problems: str, flag: Optional[str] = None):
        if not problems:
            raise TypeError("BadInput needs at least one problem")
        self.flag = flag
        self.message = "\n".join(problems)
        self.lines = [f"{flag}: {p}" if flag else p for p in problems]
        super().__init__("\n".join(self.lines))
