"""Training: one loop for ANN and SNN, robust objectives, robust SNN finetuning."""

from robustsnn.train.finetune import robust_finetune
from robustsnn.train.loop import TrainResult, evaluate_accuracy, fit, learning_rate
from robustsnn.train.objectives import OBJECTIVES, Objective, make_objective, mart_loss

__all__ = [
    "OBJECTIVES",
    "Objective",
    "TrainResult",
    "evaluate_accuracy",
    "fit",
    "learning_rate",
    "make_objective",
    "mart_loss",
    "robust_finetune",
]
