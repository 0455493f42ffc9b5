"""Float64 references: embeddings family (to be written)."""

from __future__ import annotations
