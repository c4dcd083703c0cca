"""Attacks in [0, 1] pixel space through any gradient path, and the worst-case evaluator."""

from robustsnn.attacks.core import (
    ce_loss,
    check_budget,
    eval_mode,
    input_gradient,
    margin_loss,
    perturbation_norm,
    predict,
    project,
)
from robustsnn.attacks.pgd import fgsm, pgd, random_start, rfgsm
from robustsnn.attacks.worst_case import WorstCaseResult, worst_case_accuracy

__all__ = [
    "WorstCaseResult",
    "ce_loss",
    "check_budget",
    "eval_mode",
    "fgsm",
    "input_gradient",
    "margin_loss",
    "perturbation_norm",
    "pgd",
    "predict",
    "project",
    "random_start",
    "rfgsm",
    "worst_case_accuracy",
]
