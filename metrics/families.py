"""Importing this module registers every metric family."""

from . import boxes, coco, images, masks, pixel, retrieval, segmentation  # noqa: F401  # noqa: F401  (dataset metrics: coco_map, mean_iou, recall_at_k)
