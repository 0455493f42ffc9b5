"""Float64 references: dataset (to be written)."""

from __future__ import annotations
