"""Claim C7 of the seeds (PDSG, Lun et al. CVPR 2025): an attacker who does not know the
victim's training surrogate. Writes JSON.

Victims: the small CNN of ``configs/mnist5k_direct_ce.yaml`` (T = 8, direct coding), trained
with cross-entropy through BPTT for ``--epochs`` epochs, once per training surrogate of
``--train`` (three shapes by default). Attacks at one ε (``--eps``, L∞) on the first
``--samples`` mnist5k test images:

* PGD-10 (the paper's protocol) through fixed surrogates the attacker picks without knowing
  the victim's (``--paths``), through PDSG (reset differentiated and detached), and through
  the sharp ATan and the wide triangle with the reset detached;
* SA-PGD (100 iterations) through ASSG with the reset detached;
* the ``strong`` suite (as ``robustsnn evaluate`` runs it), and per victim the union of all of
  the above, with the number of samples some other attack fooled and ``strong`` did not.

The table is the attack success rate (fooled / clean-correct) of each attack on each victim.
PDSG's claim: roughly the same ASR whatever the victim's surrogate, where fixed attack
surrogates vary with the match. Trained victims are kept under ``--work-dir`` and reused.

    .venv/bin/python benchmarks/claims_pdsg.py [--epochs 4] [--eps 0.1] [--samples 300]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from robustsnn.attacks import Member, evaluate, get_suite, run_member
from robustsnn.attacks.members import clean_correct
from robustsnn.config import load_config
from robustsnn.data import load_dataset
from robustsnn.io import atomic_write_json, load_checkpoint, save_checkpoint
from robustsnn.pipeline import build_model
from robustsnn.train import train_direct

ROOT = Path(__file__).resolve().parent
TRAIN = "triangle:1.0,arctan:2.0,sigmoid:4.0"
PATHS = "triangle:1.0,arctan:2.0,sigmoid:4.0,rect:1.0,pdsg,pdsg/dr,arctan:8.0/dr,triangle:1.0/dr"


def victim(surrogate: str, epochs: int, work: Path, train, test):
    """The CE-trained direct SNN with ``surrogate`` (trained once, then loaded)."""
    stem = work / surrogate.replace(":", "_").replace("/", "_")
    if stem.with_suffix(".safetensors").exists():
        model, meta = load_checkpoint(stem)
        return model.eval(), meta["extra"]["training_seconds"]
    config = load_config("mnist5k_direct_ce")
    torch.manual_seed(config.seed)
    model = build_model(config, train.info)
    start = time.perf_counter()
    d = config.direct
    train_direct(model, train, method="ce", time_steps=d.time_steps, surrogate=surrogate,
                 epochs=epochs, batch_size=d.batch_size, lr=d.lr, weight_decay=d.weight_decay,
                 seed=config.seed)  # fmt: skip
    seconds = time.perf_counter() - start
    save_checkpoint(model, stem, {"extra": {"training_seconds": seconds, "surrogate": surrogate}})
    return model.eval(), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", default=TRAIN, help="training surrogates of the victims")
    parser.add_argument("--paths", default=PATHS, help="PGD-10 attack paths")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-strong", action="store_true", help="skip the strong suite")
    parser.add_argument("--work-dir", type=Path, default=Path("runs/claims_pdsg"))
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "claims_pdsg.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    train = load_dataset("mnist5k", split="train")
    test = load_dataset("mnist5k", split="test")
    images, labels = test.images[: args.samples], test.labels[: args.samples]
    members = [Member("pgd", p, steps=10) for p in args.paths.split(",")]
    members.append(Member("sapgd", "assg:atan:0.425/dr", steps=100))
    table: dict[str, dict[str, float]] = {}
    victims = {}
    for surrogate in args.train.split(","):
        model, seconds = victim(surrogate, args.epochs, args.work_dir, train, test)
        correct = clean_correct(model, images, labels) == 1
        rows = correct.nonzero().flatten()
        victims[surrogate] = {"clean_accuracy": float(correct.float().mean()),
                              "training_seconds": round(seconds, 1)}  # fmt: skip
        table[surrogate] = {}
        fooled_any: set[int] = set()
        for m in members:
            start = time.perf_counter()
            out = run_member(model, m, images, labels, rows, eps=args.eps, batch_size=300)
            asr = float(out.fooled.float().mean()) if out.fooled.numel() else 0.0
            table[surrogate][m.name] = asr
            fooled_any |= set(out.rows[out.fooled].tolist())
            print(f"{surrogate:14s} {m.name:28s} ASR {100 * asr:5.1f}% "
                  f"({time.perf_counter() - start:.0f}s)", file=sys.stderr, flush=True)  # fmt: skip
        if not args.no_strong:
            suite = get_suite("strong", eps=[args.eps], samples=args.samples, diagnostics=False)
            stem = args.work_dir / f"strong_{surrogate.replace(':', '_').replace('/', '_')}.json"
            r = next(iter(evaluate(model, test.images, test.labels, suite,
                                   results_path=stem, resume=False).per_eps.values()))  # fmt: skip
            strong_fooled = {i for i in rows.tolist() if not r.robust[i]}
            table[surrogate]["strong"] = len(strong_fooled) / max(rows.numel(), 1)
            victims[surrogate]["strong_tuning"] = {k: v["chosen"] for k, v in r.tuning.items()}
            victims[surrogate]["union_asr"] = len(fooled_any | strong_fooled) / max(rows.numel(), 1)
            victims[surrogate]["fooled_by_others_not_strong"] = len(fooled_any - strong_fooled)
    names = [m.name for m in members] + ([] if args.no_strong else ["strong"])
    spread = {
        n: max(t[n] for t in table.values()) - min(t[n] for t in table.values()) for n in names
    }
    matched = {s: table[s].get(f"pgd/{s}") for s in table}
    result = {
        "benchmark": "claims_pdsg",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "threads": args.threads, "torch": torch.__version__},
        "settings": {"eps": args.eps, "samples": args.samples, "epochs": args.epochs,
                     "attack": "PGD-10 (step 2.5ε/10, random start); SA-PGD 100 for ASSG"},
        "victims": victims,
        "asr": table,
        "asr_spread_over_victims": spread,
        "asr_with_the_victims_own_surrogate": matched,
        "mean_asr": {n: sum(t[n] for t in table.values()) / len(table) for n in names},
    }  # fmt: skip
    atomic_write_json(args.out, result)
    print("ASR % (rows: attack; columns: victim's training surrogate)")
    print(f"{'attack':30s}" + "".join(f"{s:>16s}" for s in table))
    for n in names:
        print(f"{n:30s}" + "".join(f"{100 * table[s][n]:15.1f}%" for s in table))


if __name__ == "__main__":
    main()
