"""Dataset evaluation: file readers, dataset drivers, and in-process or remote backends.

Used by both ``cvscore evaluate`` and ``cvscore gate``, so the two give the same figures
from the same files. Modules import lazily; nothing here parses argv.
"""
