"""Float64 references: boxes (to be written)."""

from __future__ import annotations
