"""ANN → SNN conversion recipes (threshold balancing, QCFS)."""

from robustsnn.convert.recipes import (
    batch_statistics_bn,
    convert,
    list_recipes,
    qcfs,
    recalibrate_bn,
    reset_bn_statistics,
    threshold_balancing,
)

__all__ = [
    "batch_statistics_bn",
    "convert",
    "list_recipes",
    "qcfs",
    "recalibrate_bn",
    "reset_bn_statistics",
    "threshold_balancing",
]
