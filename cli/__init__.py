"""The ``cvscore`` command line: ``main`` and one module per command, thin over the packages.

Configuration is explicit: argv is parsed in :func:`cvscore.cli.main.main`, never at import
time, and every command imports what it needs only when it runs, so ``cvscore --help``
loads neither torch nor grpc.
"""
