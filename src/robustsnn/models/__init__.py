"""Model zoo: every model is a SpikingNetwork that runs as an ANN (T = 0) and an SNN (T > 0)."""

from robustsnn.models import resnet, small, vgg, wrn  # noqa: F401  (registers their models)
from robustsnn.models.layers import ConvexCombination, Normalize
from robustsnn.models.registry import (
    count_parameters,
    create_model,
    list_models,
    model_description,
    register_model,
)

__all__ = [
    "ConvexCombination",
    "Normalize",
    "count_parameters",
    "create_model",
    "list_models",
    "model_description",
    "register_model",
]
