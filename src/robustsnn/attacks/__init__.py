"""Attacks in [0, 1] pixel space through any gradient path, and the worst-case evaluator."""

from robustsnn.attacks.apgd import apgd, apgd_t
from robustsnn.attacks.checkpoint import CheckpointEvaluation, evaluate_checkpoint
from robustsnn.attacks.core import (
    ce_loss,
    check_budget,
    dlr_loss,
    dlr_targeted_loss,
    eval_mode,
    input_gradient,
    margin_loss,
    perturbation_norm,
    predict,
    project,
)
from robustsnn.attacks.evaluator import (
    EpsResult,
    EvaluationResult,
    MemberReport,
    adaptive_order,
    eps_key,
    evaluate,
    screen_paths,
)
from robustsnn.attacks.members import ATTACKS, GRADIENT_ATTACKS, Member, run_member
from robustsnn.attacks.pgd import fgsm, pgd, random_start, rfgsm
from robustsnn.attacks.reference import (
    CrossCheckResult,
    autoattack_available,
    autoattack_cross_check,
)
from robustsnn.attacks.sapgd import sapgd
from robustsnn.attacks.seeding import SampleRandom, derive_seed
from robustsnn.attacks.square import square
from robustsnn.attacks.suite import (
    BUILTIN_SUITES,
    DIAGNOSTICS,
    Suite,
    get_suite,
    list_suites,
    load_suite,
)
from robustsnn.attacks.victim import Victim, correct_fraction, is_stochastic, true_logits
from robustsnn.attacks.worst_case import WorstCaseResult, worst_case_accuracy

__all__ = [
    "ATTACKS",
    "BUILTIN_SUITES",
    "CheckpointEvaluation",
    "CrossCheckResult",
    "DIAGNOSTICS",
    "EpsResult",
    "EvaluationResult",
    "MemberReport",
    "Suite",
    "adaptive_order",
    "eps_key",
    "evaluate",
    "evaluate_checkpoint",
    "get_suite",
    "list_suites",
    "load_suite",
    "screen_paths",
    "GRADIENT_ATTACKS",
    "Member",
    "SampleRandom",
    "Victim",
    "WorstCaseResult",
    "apgd",
    "apgd_t",
    "autoattack_available",
    "autoattack_cross_check",
    "ce_loss",
    "check_budget",
    "correct_fraction",
    "derive_seed",
    "dlr_loss",
    "dlr_targeted_loss",
    "eval_mode",
    "fgsm",
    "input_gradient",
    "is_stochastic",
    "margin_loss",
    "perturbation_norm",
    "pgd",
    "predict",
    "project",
    "random_start",
    "rfgsm",
    "run_member",
    "sapgd",
    "square",
    "true_logits",
    "worst_case_accuracy",
]
