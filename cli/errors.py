"""The command line's one user-error type, and which errors count as the user's."""

from __future__ import annotations

EXIT_USAGE = 2


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def is_user_error(exc: BaseException) -> bool:
    """Errors that a user can fix (bad argument, file, gate, server): one line, exit 2.

    Everything else is a bug in cvscore and keeps its traceback (exit 1).
    """
    from ..client.results import CvscoreError  # a call a server refused or could not take
    from ..evaluate.backends import BackendError
    from ..evaluate.errors import DataError
    from ..gate.schema import ConfigError

    return isinstance(exc, CliError | DataError | ConfigError | BackendError | CvscoreError)
