"""Aggregators: the host-side half of a dataset-level metric.

A dataset metric (COCO mAP, mean IoU, recall@k) is split in two, as in a distributed
all-reduce. The exported per-batch graph emits sufficient statistics with the batch axis
first; an aggregator folds them into a state that merges associatively,

    merge(a, merge(b, c)) == merge(merge(a, b), c)

so batches, streams and several servers combine exactly, and ``compute`` turns the state
into the final figures. States serialise to ``.npz`` bytes (never pickle), so a server can
ship its partial state to a client or to another server.

Usage, whatever the metric::

    agg = aggregators.create("mean_iou", num_classes=21)
    for batch in batches:
        agg.update(runtime.run(batch), batch)
    total = agg.merge(type(agg).from_bytes(other_server_state))
    figures = total.compute()          # dict[str, float]

The state format (:mod:`.state_format`), the host halves (:mod:`.states`, :mod:`.coco_eval`)
import numpy only, never torch: a state's header names its kind, and
:func:`.states.load_state` rebuilds the aggregator from the bytes alone, which is how
``cvscore.client`` merges the states of several servers without the metric definitions.
This module adds :func:`create`, which needs the registry.
"""

from __future__ import annotations

from typing import Any

from .state_format import (  # noqa: F401 - the state format, re-exported
    FORMAT_KEY,
    Aggregator,
    check_same_config,
    dump_npz,
    load_npz,
    state_kind,
)
from .states import (  # noqa: F401 - the host halves, re-exported
    RetrievalAggregator,
    SegmentationAggregator,
    check_ks,
    iou_from_confusion,
    load_state,
)


def create(metric: str, **params: Any) -> Aggregator:
    """An empty aggregator for a registered dataset metric, with the metric's parameters."""
    from . import registry

    spec = registry.get(metric)
    factory = spec.aggregator
    if factory is None:
        raise ValueError(f"Metric `{metric}` has no aggregator; reduce its scores directly")
    return factory(**spec.resolve_params(params))
