"""Float64 references: landmarks family (to be written)."""

from __future__ import annotations
