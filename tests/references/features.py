"""Float64 references: features family (to be written)."""

from __future__ import annotations
