"""Float64 references: adversarial family (to be written)."""

from __future__ import annotations
