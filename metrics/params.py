"""A metric's frozen hyper-parameters: :class:`ParamSpec` (re-exported by ``registry``).

Torch-free: a parameter's name, default and doc, and how a command-line value parses into
its type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ParamSpec:
    """A hyper-parameter frozen into the artifact at construction."""

    name: str
    default: Any
    doc: str = ""

    @property
    def type_name(self) -> str:
        if isinstance(self.default, bool):
            return "bool"
        if isinstance(self.default, int):
            return "int"
        if isinstance(self.default, float):
            return "float"
        if isinstance(self.default, str):
            return "str"
        return "list[float] | None"

    def parse(self, text: str) -> Any:
        """Parse a command-line value (``--param ssim.data_range=255``) into this param's type."""
        kind = self.type_name
        try:
            if kind == "bool":
                low = text.strip().lower()
                if low not in {"true", "false", "1", "0"}:
                    raise ValueError(text)
                return low in {"true", "1"}
            if kind == "int":
                return int(text)
            if kind == "float":
                return float(text)
            if kind == "str":
                return text
            if text.strip().lower() in {"none", "null", ""}:
                return None
            return [float(v) for v in text.split(",")]
        except ValueError:
            raise ValueError(f"Expected `{self.name}` to be {kind}, got {text!r}") from None
