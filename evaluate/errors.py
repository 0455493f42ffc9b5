"""The error of a dataset that cannot be read: the message names the file and the problem."""

from __future__ import annotations


class DataError(Exception):
    """Malformed or unreadable input data; the command line reports it in one line (exit 2)."""
