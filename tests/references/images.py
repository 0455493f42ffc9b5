"""Float64 references: images family (to be written)."""

from __future__ import annotations
