"""The CLI tests share the client tests' small server."""

from ..client.conftest import address, events, small_repo, small_server  # noqa: F401
