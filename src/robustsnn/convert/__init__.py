"""ANN → SNN conversion recipes and conversion of user models (torch.fx)."""

from robustsnn.convert.from_torch import GraphNetwork, convert_checkpoint, from_torch
from robustsnn.convert.low_latency import (
    PresimulatedNetwork,
    accuracy_vs_time,
    cos,
    latency_offset,
    max_norm,
    opi,
    percentile_norm,
    set_readout_delay,
    srp,
    tfc,
)
from robustsnn.convert.recipes import (
    batch_statistics_bn,
    convert,
    list_recipes,
    qcfs,
    recalibrate_bn,
    register_recipe,
    reset_bn_statistics,
    threshold_balancing,
)

__all__ = [
    "GraphNetwork",
    "PresimulatedNetwork",
    "accuracy_vs_time",
    "batch_statistics_bn",
    "convert",
    "convert_checkpoint",
    "cos",
    "from_torch",
    "latency_offset",
    "list_recipes",
    "max_norm",
    "opi",
    "percentile_norm",
    "qcfs",
    "recalibrate_bn",
    "register_recipe",
    "reset_bn_statistics",
    "set_readout_delay",
    "srp",
    "tfc",
    "threshold_balancing",
]
