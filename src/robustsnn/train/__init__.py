"""Training: one loop for ANN and SNN, robust objectives, robust SNN finetuning, direct SNN
training and its defenses (end-to-end AT, HIRE-SNN, gradient-sparsity regularisation)."""

from robustsnn.train.direct import (
    DIRECT_METHODS,
    HireOptions,
    SparsityOptions,
    direct_objective,
    prepare_snn,
    train_direct,
)
from robustsnn.train.finetune import FINETUNE_LOSSES, robust_finetune
from robustsnn.train.hire import NOISE_GRADIENTS, HireObjective
from robustsnn.train.loop import (
    LOG_FILE,
    OPTIMIZERS,
    SCHEDULES,
    TrainCallbacks,
    TrainResult,
    evaluate_accuracy,
    fit,
    learning_rate,
)
from robustsnn.train.objectives import (
    DEFAULT_BETA,
    INNER_ATTACKS,
    OBJECTIVES,
    Objective,
    make_objective,
    mart_loss,
    rfgsm_kl,
    trades_kl,
)
from robustsnn.train.regularizers import (
    SparsityObjective,
    finite_difference_sensitivity,
    two_class_probability,
)
from robustsnn.train.state import load_training_state, read_progress, save_training_state

__all__ = [
    "DEFAULT_BETA",
    "DIRECT_METHODS",
    "HireObjective",
    "HireOptions",
    "NOISE_GRADIENTS",
    "SparsityObjective",
    "SparsityOptions",
    "direct_objective",
    "finite_difference_sensitivity",
    "prepare_snn",
    "train_direct",
    "two_class_probability",
    "FINETUNE_LOSSES",
    "INNER_ATTACKS",
    "LOG_FILE",
    "OBJECTIVES",
    "OPTIMIZERS",
    "SCHEDULES",
    "Objective",
    "TrainCallbacks",
    "TrainResult",
    "evaluate_accuracy",
    "fit",
    "learning_rate",
    "load_training_state",
    "make_objective",
    "mart_loss",
    "read_progress",
    "rfgsm_kl",
    "robust_finetune",
    "save_training_state",
    "trades_kl",
]
