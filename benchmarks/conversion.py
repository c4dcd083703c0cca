"""Accuracy vs T of every conversion recipe on mnist5k, for a small CNN and a residual network.

Trains three ANNs per architecture briefly on CPU (``small_cnn`` from the zoo; ``resnet_mini``,
a torchvision-style residual CNN in plain torch with reused ReLU modules, via ``from_torch``,
with global average pooling before its classifier; ``resnet_mini_flat``, the same residual
body with a linear classifier over the whole last feature map): QCFS with L levels for
qcfs/cos/srp, a trainable clip for opi, ReLU for tfc, max-norm, percentile and
threshold-balancing. It converts each with its recipes and reads out the accuracy after
T = 1, 2, 4, 8, 16, 32 from one run at T = 32 (cumulative readout). COS and SRP spend
ρ = τ extra steps first: their latency is ρ + T. The first of ``--seeds`` gives the full
table; every further seed retrains the QCFS ANNs and reruns qcfs, cos and srp, whose
low-T accuracy depends on the trained network; their targets are checked for every seed
and on the mean over seeds.
Trained ANNs are cached in ``--runs``; the results go to JSON and a Markdown table.

    .venv/bin/python benchmarks/conversion.py [--epochs 4] [--levels 4] [--seeds 0 1 2]

The robust part (``--robust-eps``, 0 skips it) trains PGD-AT small CNNs (QCFS and ReLU) and
reports clean and worst-case PGD accuracy after qcfs and threshold-balancing at T = 4, 8.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustsnn.attacks import worst_case_accuracy
from robustsnn.convert import accuracy_vs_time, convert, from_torch, latency_offset
from robustsnn.data import load_dataset
from robustsnn.io import atomic_write_json, atomic_write_text, load_checkpoint, save_checkpoint
from robustsnn.models import create_model
from robustsnn.train import evaluate_accuracy, fit, make_objective

ROOT = Path(__file__).resolve().parent
TIME_STEPS = (1, 2, 4, 8, 16, 32)
ARCHITECTURES = {
    "small_cnn": {"name": "small_cnn", "kwargs": {}, "qcfs_lambda": 2.0, "clip_lambda": 2.0},
    "resnet_mini": {
        "name": "plain torch (from_torch)",
        "kwargs": {"head": "avgpool"},
        "qcfs_lambda": 2.0,
        "clip_lambda": 2.0,
    },
    "resnet_mini_flat": {
        "name": "plain torch (from_torch)",
        "kwargs": {"head": "flatten"},
        "qcfs_lambda": 2.0,
        "clip_lambda": 2.0,
    },
}
SEEDED_RECIPES = ("qcfs", "cos", "srp")
# Initial QCFS/clip λ = 2 for both networks (their currents are BN-normalised, O(1)). The
# papers' 8.0 (QCFS) and 4.0 (clip) suit 300 training epochs; in 4 epochs λ stays near 8, the
# mean activation is 2-3 % of λ, almost every activation lies in QCFS's lowest bin and the ANN
# learns to rely on the quantisation. An IF neuron with v0 = θ/2 tends to clip(z, 0, θ) as T
# grows, not to the staircase, so such an SNN is exact at T = L and degrades beyond: measured
# (small CNN, λ ≈ 7.7) 98.3 at T = 4, 98.1 at T = 8; (residual net, λ ≈ 7.5) 93.5 at T = 4,
# 55 at T = 8, its clip counterpart 63 % (see NOTES).
NOTES = {
    "lambda_init": (
        "QCFS accuracy falling for T > L with the papers' λ init 8 was traced to the ANN, not "
        "the conversion: per layer, SNN rate·θ at T = 64 matches clip(mean input, 0, θ) to "
        "≤ 0.005 θ while the QCFS ANN's activations sit in its lowest bin (mean 2-3 % of λ); "
        "the residual net at T = 256 reads 61 % against 63 % for its clip ANN and 92 % for "
        "its QCFS ANN. The time-folded SNN equals a plain step-by-step IF simulation exactly "
        "(tests/test_conversion_recipes.py). λ init is therefore 2 for both networks."
    ),
    "residual_low_T": (
        "Plain QCFS on the residual net stays far from its ANN at T = 4-8. Diagnosed neuron "
        "by neuron (tests/test_conversion_recipes.py::"
        "test_residual_qcfs_error_at_t_equals_l_is_only_the_residual_potential_error): the "
        "conversion is exact up to QCFS's own offset-spike (unevenness) error; thresholds, "
        "v0 = θ/2, spike amplitude, shortcut and merge are right. The error comes from the "
        "first time step: starting at θ/2 the stem fires at half its rate at t = 1, the "
        "constant BN-shift currents downstream are not yet balanced by spike currents, and "
        "neurons fire spikes they cannot take back (13 % of the last merge neuron's units "
        "one spike too many at T = 4). Single-step accuracy of the SNN is 20 / 62 / 85 / 95 % "
        "at t = 1..4, and the readout averages step 1 in (mean over t = 2..4: 91.6 %). MNIST's "
        "uniform background makes the error the same at every position, so global pooling "
        "does not average it out. COS / SRP, which calibrate exactly these offset spikes, are "
        "within about 1 point from T = 2 (latency 4 + T); ResNets are the weak case at low "
        "T in the QCFS paper too (ResNet-20 CIFAR-10: 83.8 % at T = 4 vs 91.8 % ANN)."
    ),
    "global_average_pooling": (
        "The residual net's weak point is its classifier head, not the residual blocks. At "
        "t = 1 an IF neuron with v0 = θ/2 fires iff its input is >= θ/2, so the SNN's first "
        "step is the QCFS ANN evaluated with L = 1; the stem's background activations (MNIST's "
        "uniform background, after normalisation) in [θ/8, θ/2) are 1-2 levels at L = 4 but "
        "silent at t = 1, which unbalances the BN-shift currents downstream. Global average "
        "pooling then averages this error, the same at every background position, into every "
        "feature: with L = 1 in the stem alone, a pooled QCFS ANN at 96.4 % drops to 29.7 % "
        "(λ init 1, 8 epochs, seed 2; L = 1 in any later neuron: 89-97 %). A linear "
        "classifier over the whole 7x7 map (resnet_mini_flat, same residual body) learns "
        "to weight the digit, not the background: its QCFS SNN is within 0.2 points of its ANN "
        "at T = 4 and T = 8 for every seed. Longer training or λ init 1 for the pooled net "
        "helps only some seeds (16 epochs, λ init 1: 0.9 / 1.1 / 2.8 points below the ANN at "
        "T = 4 for seeds 0 / 1 / 2)."
    ),
}


class BasicBlock(nn.Module):
    """torchvision-style block in plain torch: one ReLU module used twice."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class MiniResNet(nn.Module):
    """A user's residual CNN for 28x28 digits: stem, two basic blocks, pooling, linear.

    ``head="avgpool"`` pools the 32x7x7 map globally (torchvision); ``"flatten"`` feeds the
    whole map to the linear classifier.
    """

    def __init__(self, num_classes: int = 10, head: str = "avgpool") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AvgPool2d(2)
        self.layer1 = BasicBlock(16, 16)
        self.layer2 = BasicBlock(16, 32, stride=2)
        if head not in ("avgpool", "flatten"):
            raise ValueError(f"head must be 'avgpool' or 'flatten', got {head!r}")
        self.avgpool = nn.AdaptiveAvgPool2d(1) if head == "avgpool" else nn.Identity()
        self.fc = nn.Linear(32 if head == "avgpool" else 32 * 7 * 7, num_classes)

    def forward(self, x):
        x = self.pool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# recipe -> (ANN activation, recipe options)
RECIPES: dict[str, tuple[str, dict[str, Any]]] = {
    "qcfs": ("qcfs", {}),
    "cos": ("qcfs", {"presim_steps": 4}),
    "srp": ("qcfs", {"presim_steps": 4}),
    "opi": ("clip", {}),
    "tfc": ("relu", {"batches": 256}),
    "max-norm": ("relu", {"batches": 4}),
    "percentile": ("relu", {"batches": 4, "percentile": 99.9}),
    "threshold-balancing": (
        "relu",
        {
            "time_steps_calibration": 32,
            "batches": 2,
            "trainable": False,
            "bn_recalibration_batches": 8,
        },
    ),
}


def recipe_options(recipe: str, args) -> dict[str, Any]:
    """The recipe's options, with COS ρ / SRP τ from ``--presim-steps``."""
    options = dict(RECIPES[recipe][1])
    if "presim_steps" in options:
        options["presim_steps"] = args.presim_steps
    return options


def neuron_settings(activation: str, levels: int, arch: str) -> dict[str, Any]:
    spec = ARCHITECTURES[arch]
    if activation == "qcfs":
        return {"activation": "qcfs", "levels": levels, "clip_value": spec["qcfs_lambda"]}
    if activation == "clip":
        return {"activation": "clip", "clip_value": spec["clip_lambda"]}
    return {"activation": "relu"}


def trained_ann(
    arch: str,
    activation: str,
    args,
    train,
    test,
    robust_eps: float = 0.0,
    seed: int | None = None,
) -> tuple[Any, float]:
    """Train (or load from the cache) one ANN (PGD-AT if ``robust_eps``); return it and its
    test accuracy. ``seed`` defaults to the first of ``--seeds``."""
    seed = args.seeds[0] if seed is None else seed
    tag = f"_pgdat{robust_eps:g}" if robust_eps else ""
    spec = ARCHITECTURES[arch]
    if activation == "qcfs" and spec["qcfs_lambda"] != 8.0:
        tag += f"_lambda{spec['qcfs_lambda']:g}"
    if activation == "clip" and spec["clip_lambda"] != 4.0:
        tag += f"_lambda{spec['clip_lambda']:g}"
    if seed:
        tag += f"_seed{seed}"
    stem = args.runs / f"{arch}_{activation}_L{args.levels}_e{args.epochs}{tag}"
    if stem.with_suffix(".json").exists() and not args.force:
        model, meta = load_checkpoint(stem)
        return model, meta["metrics"]["test_accuracy"]
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    if arch.startswith("resnet_mini"):
        model = from_torch(
            MiniResNet(train.info.num_classes, **spec["kwargs"]),
            train.info.input_shape,
            neuron=neuron_settings(activation, args.levels, arch),
            fold_bn=False,
            mean=list(train.info.mean),
            std=list(train.info.std),
        )
    else:
        model = create_model(
            spec["name"],
            input_shape=list(train.info.input_shape),
            num_classes=train.info.num_classes,
            mean=list(train.info.mean),
            std=list(train.info.std),
            neuron=neuron_settings(activation, args.levels, arch),
            **spec["kwargs"],
        )
    fit(
        model,
        train,
        objective=make_objective("pgd_at", eps=robust_eps, steps=5)
        if robust_eps
        else make_objective("ce"),
        epochs=args.epochs,
        batch_size=64,
        lr=args.lr,
        seed=seed,
    )
    accuracy = evaluate_accuracy(model, test)
    save_checkpoint(model, stem, {"dataset": "mnist5k", "metrics": {"test_accuracy": accuracy}})
    print(f"{stem.name}: {100 * accuracy:.2f} ({time.perf_counter() - t0:.0f}s)", flush=True)
    return model, accuracy


def markdown(results: dict[str, Any]) -> str:
    lines = []
    header = "| model | recipe | ANN | latency | " + " | ".join(f"T={t}" for t in TIME_STEPS) + " |"
    lines += [header, "|" + "---|" * (4 + len(TIME_STEPS))]
    for arch, block in results["models"].items():
        for recipe, row in block["recipes"].items():
            offset = row["latency_offset"]
            latency = f"{offset}+T" if offset else "T"
            cells = " | ".join(f"{100 * row['accuracy'][str(t)]:.2f}" for t in TIME_STEPS)
            ann = 100 * block["ann_accuracy"][row["ann"]]
            lines.append(f"| {arch} | {recipe} | {ann:.2f} | {latency} | {cells} |")
    return "\n".join(lines)


def robust_markdown(robust: dict[str, Any]) -> str:
    lines = [
        f"PGD-AT small CNN, ε = {robust['eps']:g}, worst case over {robust['paths']} "
        f"({robust['samples']} test images attacked)",
        "",
        "| recipe | ANN clean | ANN PGD | T=4 clean | T=4 PGD | T=8 clean | T=8 PGD |",
        "|---|---|---|---|---|---|---|",
    ]
    for recipe, row in robust["results"].items():
        cells = [row["ann_clean_accuracy"], row["ann_pgd_accuracy"]]
        for steps in (4, 8):
            cells += [
                row[f"T={steps}"]["clean_accuracy"],
                row[f"T={steps}"]["worst_case_pgd_accuracy"],
            ]
        lines.append(f"| {recipe} | " + " | ".join(f"{100 * c:.2f}" for c in cells) + " |")
    return "\n".join(lines)


def write_markdown(path: Path, results: dict[str, Any]) -> None:
    """The accuracy-vs-T table (and the robust table, when present) as a Markdown file."""
    text = markdown(results)
    if results.get("seeds"):
        text += "\n\n" + seeds_markdown(results["seeds"])
    if "robust" in results:
        text += "\n\n" + robust_markdown(results["robust"])
    atomic_write_text(path, text + "\n")


def qcfs_family_targets(ann_qcfs: float, recipes: dict[str, Any]) -> dict[str, bool]:
    """The targets on qcfs, cos and srp rows (accuracies as fractions, keys str(T))."""
    q = recipes["qcfs"]["accuracy"]
    calibrated = [
        max(recipes["cos"]["accuracy"][str(t)], recipes["srp"]["accuracy"][str(t)]) > q[str(t)]
        for t in (1, 2)
    ]
    return {
        "qcfs_within_1_point_at_T4": ann_qcfs - q["4"] <= 0.01,
        "qcfs_within_0.3_point_at_T8": ann_qcfs - q["8"] <= 0.003,
        "cos_or_srp_beat_qcfs_at_T1_and_T2": all(calibrated),
    }


def seed_mean(by_seed: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    """The mean ANN accuracy and mean qcfs / cos / srp accuracies over seeds."""
    rows = list(by_seed.values())

    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    recipes = {
        recipe: {
            "accuracy": {
                str(t): mean([r["recipes"][recipe]["accuracy"][str(t)] for r in rows])
                for t in TIME_STEPS
            }
        }
        for recipe in SEEDED_RECIPES
    }
    return mean([r["ann_accuracy"] for r in rows]), recipes


def targets(results: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets, checked per architecture (first seed; the qcfs-family targets
    also for every seed of ``results["seeds"]`` and on their mean)."""
    checks = {}
    for arch, block in results["models"].items():
        rec = block["recipes"]
        ann_r = block["ann_accuracy"]["relu"]
        checks[arch] = qcfs_family_targets(block["ann_accuracy"]["qcfs"], rec)
        checks[arch]["tfc_within_1_point_at_T32"] = ann_r - rec["tfc"]["accuracy"]["32"] <= 0.01
        seeds = results.get("seeds", {}).get(arch, {})
        if len(seeds) > 1:
            per_seed = {
                seed: qcfs_family_targets(row["ann_accuracy"], row["recipes"])
                for seed, row in seeds.items()
            }
            checks[arch]["every_seed"] = {
                name: all(c[name] for c in per_seed.values())
                for name in next(iter(per_seed.values()))
            }
            checks[arch]["seed_mean"] = qcfs_family_targets(*seed_mean(seeds))
            checks[arch]["per_seed"] = per_seed
    return checks


def seeds_markdown(seeds: dict[str, Any]) -> str:
    """qcfs / cos / srp over seeds: mean and range of the accuracy at each T."""
    lines = [
        "Seeds: qcfs, cos and srp with the QCFS ANN retrained per seed (mean, [min, max])",
        "",
        "| model | recipe | seeds | ANN | " + " | ".join(f"T={t}" for t in TIME_STEPS) + " |",
        "|" + "---|" * (4 + len(TIME_STEPS)),
    ]

    def cell(values: list[float]) -> str:
        values = [100 * v for v in values]
        return f"{sum(values) / len(values):.2f} [{min(values):.1f}, {max(values):.1f}]"

    for arch, by_seed in seeds.items():
        rows = list(by_seed.values())
        ann = cell([r["ann_accuracy"] for r in rows])
        for recipe in SEEDED_RECIPES:
            cells = " | ".join(
                cell([r["recipes"][recipe]["accuracy"][str(t)] for r in rows]) for t in TIME_STEPS
            )
            lines.append(f"| {arch} | {recipe} | {len(rows)} | {ann} | {cells} |")
    return "\n".join(lines)


ROBUST_PATHS = "triangle:1.0,rect:1.0,ste,bptr,rga,ann"


def robust_comparison(args, train, test, calibration) -> dict[str, Any]:
    """PGD-AT small CNNs converted by qcfs (QCFS ANN) and threshold-balancing (ReLU ANN):
    clean and worst-case PGD accuracy (over several gradient paths) at T = 4 and 8."""
    eps = args.robust_eps
    samples = test.take(args.robust_samples)
    rows: dict[str, Any] = {}
    for recipe, activation, options in (
        ("qcfs", "qcfs", {}),
        ("threshold-balancing", "relu", RECIPES["threshold-balancing"][1]),
    ):
        ann, ann_acc = trained_ann("small_cnn", activation, args, train, test, robust_eps=eps)
        ann_attack = worst_case_accuracy(
            ann, samples.images, samples.labels, eps=eps, paths=None, steps=10
        )
        rows[recipe] = {
            "ann": activation,
            "ann_clean_accuracy": ann_acc,
            "ann_pgd_accuracy": ann_attack.robust_accuracy,
        }
        for steps in (4, 8):
            snn = convert(copy.deepcopy(ann), recipe, calibration, time_steps=steps, **options)
            result = worst_case_accuracy(
                snn, samples.images, samples.labels, eps=eps, paths=ROBUST_PATHS, steps=10
            )
            clean = evaluate_accuracy(snn, test)
            rows[recipe][f"T={steps}"] = {
                "clean_accuracy": clean,
                "clean_accuracy_attacked_subset": result.clean_accuracy,
                "worst_case_pgd_accuracy": result.robust_accuracy,
                "per_path": result.per_member,
            }
            print(
                f"robust {recipe} T={steps}: clean {100 * clean:.2f} "
                f"worst-case PGD {100 * result.robust_accuracy:.2f}",
                flush=True,
            )
    return {
        "eps": eps,
        "attack": "PGD-10, step 2.5·eps/10, random start, per-sample worst case over paths",
        "paths": ROBUST_PATHS,
        "samples": len(samples),
        "training": "PGD-AT (5 steps) at the same eps",
        "qcfs_lambda_init": ARCHITECTURES["small_cnn"]["qcfs_lambda"],
        "results": rows,
    }


def recipe_row(
    arch: str, recipe: str, ann: nn.Module, args, calibration, test, seed: int | None = None
) -> dict[str, Any]:
    """Convert a copy of ``ann`` with ``recipe`` and measure its accuracy at every T."""
    t0 = time.perf_counter()
    snn = convert(
        copy.deepcopy(ann),
        recipe,
        calibration,
        time_steps=TIME_STEPS[-1],
        **recipe_options(recipe, args),
    )
    accuracy = accuracy_vs_time(snn, test, TIME_STEPS)
    row = {
        "ann": RECIPES[recipe][0],
        "latency_offset": latency_offset(snn),
        "accuracy": {str(t): a for t, a in accuracy.items()},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    delay = getattr(snn, "readout_delay", 0)
    if delay:
        row["readout_delay"] = delay
    cells = " ".join(f"{100 * a:.2f}" for a in accuracy.values())
    label = f"{arch} {recipe}" + (f" seed {seed}" if seed is not None else "")
    print(f"{label}: {cells} ({row['seconds']}s)", flush=True)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--levels", type=int, default=4, help="QCFS levels L")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0, 1, 2],
        help="the first gives the full table; the others rerun qcfs / cos / srp",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--calibration", type=int, default=1024, help="calibration images")
    parser.add_argument("--models", nargs="*", default=list(ARCHITECTURES))
    parser.add_argument("--recipes", nargs="*", default=list(RECIPES))
    parser.add_argument("--runs", type=Path, default=Path("runs/bench_conversion"))
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "conversion.json")
    parser.add_argument("--force", action="store_true", help="retrain cached ANNs")
    parser.add_argument(
        "--merge", action="store_true", help="update the rows run here in an existing --out JSON"
    )
    parser.add_argument(
        "--presim-steps", type=int, default=4, help="COS ρ / SRP τ (pre-simulation steps)"
    )
    parser.add_argument("--robust-eps", type=float, default=0.1, help="0: skip the PGD part")
    parser.add_argument("--robust-samples", type=int, default=200)
    parser.add_argument(
        "--robust-only", action="store_true", help="add the PGD part to an existing --out JSON"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.runs.mkdir(parents=True, exist_ok=True)
    train = load_dataset("mnist5k", "train")
    test = load_dataset("mnist5k", "test")
    calibration = train.take(args.calibration)
    results: dict[str, Any] = {
        "dataset": "mnist5k",
        "test_samples": len(test),
        "time_steps": list(TIME_STEPS),
        "settings": {
            "epochs": args.epochs,
            "levels": args.levels,
            "lr": args.lr,
            "seeds": args.seeds,
            "seeded_recipes": list(SEEDED_RECIPES),
            "calibration_images": args.calibration,
            "recipes": {name: recipe_options(name, args) for name in RECIPES},
            "qcfs_lambda_init": {k: v["qcfs_lambda"] for k, v in ARCHITECTURES.items()},
            "clip_lambda_init": {k: v["clip_lambda"] for k, v in ARCHITECTURES.items()},
        },
        "notes": NOTES,
        "models": {},
    }
    if args.merge and args.out.exists():
        previous = json.loads(args.out.read_text())
        results["models"] = previous.get("models", {})
        for key in (
            "robust",
            "resnet_mini_with_paper_lambda_init",
            "small_cnn_with_paper_lambda_init",
            "exploration_resnet_mini_qcfs",
            "seeds",
        ):
            if key in previous:
                results[key] = previous[key]
    start = time.perf_counter()
    if args.robust_only:
        results = json.loads(args.out.read_text())
        results["robust"] = robust_comparison(args, train, test, calibration)
        atomic_write_json(args.out, results)
        write_markdown(args.out.with_suffix(".md"), results)
        print(markdown(results))
        print(robust_markdown(results["robust"]))
        return 0
    for arch in args.models:
        anns: dict[str, Any] = {}
        block: dict[str, Any] = results["models"].get(arch, {"ann_accuracy": {}, "recipes": {}})
        for recipe in args.recipes:
            activation = RECIPES[recipe][0]
            if activation not in anns:
                anns[activation], block["ann_accuracy"][activation] = trained_ann(
                    arch, activation, args, train, test
                )
            block["recipes"][recipe] = recipe_row(
                arch, recipe, anns[activation], args, calibration, test
            )
        results["models"][arch] = block
        if len(args.seeds) > 1 and set(SEEDED_RECIPES) <= set(args.recipes):
            by_seed = results.setdefault("seeds", {}).setdefault(arch, {})
            by_seed[str(args.seeds[0])] = {
                "ann_accuracy": block["ann_accuracy"]["qcfs"],
                "recipes": {
                    r: {"accuracy": block["recipes"][r]["accuracy"]} for r in SEEDED_RECIPES
                },
            }
            for seed in args.seeds[1:]:
                ann, accuracy = trained_ann(arch, "qcfs", args, train, test, seed=seed)
                rows = {
                    r: recipe_row(arch, r, ann, args, calibration, test, seed)
                    for r in SEEDED_RECIPES
                }
                by_seed[str(seed)] = {"ann_accuracy": accuracy, "recipes": rows}
    if args.robust_eps > 0:
        results["robust"] = robust_comparison(args, train, test, calibration)
    results["wall_time_s"] = round(time.perf_counter() - start, 1)
    needed = {"qcfs", "cos", "srp", "tfc"}
    if results["models"] and all(needed <= set(b["recipes"]) for b in results["models"].values()):
        results["targets"] = targets(results)
    results["environment"] = {
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": args.threads,
    }
    atomic_write_json(args.out, results)
    write_markdown(args.out.with_suffix(".md"), results)
    print(markdown(results))
    if results.get("seeds"):
        print(seeds_markdown(results["seeds"]))
    if "robust" in results:
        print(robust_markdown(results["robust"]))
    if "targets" in results:
        print(results["targets"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
