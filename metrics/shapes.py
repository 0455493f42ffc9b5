"""Input-name and axis checks of declared shapes, torch-free.

Shared by :meth:`registry.MetricSpec.check_inputs` (tensors, in-process) and the server's
admission plan (wire tensors, before any decoding), so both say the same thing about the
same mistake.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence


def input_name_mismatch(metric: str, expected: Sequence[str], got: Iterable[str]) -> str | None:
    """The message for missing or unexpected input names, or None when they match."""
    names = list(got)
    missing = [n for n in expected if n not in names]
    extra = sorted(n for n in names if n not in expected)
    if not missing and not extra:
        return None
    parts = []
    if missing:
        parts.append(f"missing {missing}")
    if extra:
        parts.append(f"unexpected {extra}")
    return f"Metric `{metric}` expects inputs {list(expected)}, got {sorted(names)}: " + "; ".join(
        parts
    )


def bind_axes(
    name: str,
    declared: Sequence[str | int],
    fixed: Sequence[str | int],
    shape: Sequence[int],
    sizes: dict[str, tuple[int, str]],
    min_sizes: Mapping[str, int],
) -> None:
    """Check the leading axes of input ``name`` (shape ``shape``) against ``fixed``.

    A fixed size must match, a symbolic axis must reach its minimum size and equal the
    same axis bound by an earlier input; newly bound axes are recorded in ``sizes`` (axis ->
    (size, input)). ``declared`` is the input's full declared shape, for the message.
    ValueError naming the input and showing expected vs received.
    """
    for axis, size in zip(fixed, shape, strict=False):
        if isinstance(axis, int):
            if size != axis:
                raise ValueError(
                    f"Expected `{name}` to have shape [{', '.join(map(str, declared))}], "
                    f"got {list(shape)}"
                )
            continue
        low = min_sizes.get(axis, 0)
        if size < low:
            raise ValueError(
                f"Expected axis {axis} of `{name}` to be at least {low}, "
                f"got {size} (shape {list(shape)})"
            )
        if axis in sizes and sizes[axis][0] != size:
            other_size, other = sizes[axis]
            raise ValueError(
                f"Expected axis {axis} of `{name}` to equal axis {axis} of "
                f"`{other}` ({other_size}), got {size}"
            )
        sizes.setdefault(axis, (size, name))
