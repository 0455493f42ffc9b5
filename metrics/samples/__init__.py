"""Input samplers of the metric families, one module per family.

Every spec draws its inputs in three regimes (``registry.REGIMES``): ``typical`` (the spec's
``sample``), ``extreme`` and ``degenerate`` (its ``regimes``). The modules here draw them, the
inputs the registry-driven tests and benches use through ``MetricSpec.make_inputs``. They
use torch and the ``.._utils`` helpers only and never import a family module, so each family
imports its samplers for its ``register(...)`` calls without an import cycle. Every random
draw comes from the generator passed in, in a fixed order: one seed, the same tensors.
"""
