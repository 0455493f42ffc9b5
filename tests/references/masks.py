"""Float64 references: masks (to be written)."""

from __future__ import annotations
