"""Importing this module registers every metric family."""

# dataset metrics: coco_map (coco), mean_iou (segmentation), recall_at_k (retrieval)
from . import (  # noqa: F401
    adversarial,
    boxes,
    coco,
    detection,
    distance,
    embeddings,
    features,
    images,
    landmarks,
    masks,
    pixel,
    retrieval,
    segmentation,
)

# The order the registry lists the families in (``registry.specs``).
ORDER = (
    "adversarial", "boxes", "coco", "detection", "distance", "embeddings", "features",
    "images", "landmarks", "masks", "pixel", "retrieval", "segmentation",
)  # fmt: skip
