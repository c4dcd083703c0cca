"""Time and memory of one BPTT training step of the toolkit's SNN; writes JSON.

For each model (the small CNN on 1x28x28, VGG-11 on 3x32x32) at batch B it times

* one ANN training step (the same model at T = 0), reported as T times that time;
* one SNN training step with the toolkit's neuron (BPTT at T, one autograd function over time);
* the same SNN step with a straightforward neuron written here: float spikes and autograd
  through every time step (an autograd function only for the Heaviside, triangle surrogate),

and compares their memory: the bytes of every tensor saved for the backward pass (exact,
deterministic) and, in a fresh process per configuration, the growth of the resident set
(peak) and of malloc's bytes in use (peak, and held from forward into backward) during one
step. A training step is forward, cross-entropy on the time-averaged output, backward and an
SGD step. Both SNNs give identical outputs and agreeing gradients (asserted).

    .venv/bin/python benchmarks/snn_speed.py [--models small_cnn,vgg11_a,vgg11] [--batch 32]
        [--time-steps 4,8] [--repeats 5] [--memory-runs 2] [--threads 2] [--out PATH]

Targets (issue "Foundation"): SNN step time at most T ANN steps at T = 8 (ratio <= 1.0), and
peak memory of the SNN step at most half of the straightforward implementation's.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from robustsnn.io import atomic_write_json
from robustsnn.models import count_parameters, create_model, list_models
from robustsnn.runtime import keep_freed_memory
from robustsnn.snn import kernel
from robustsnn.snn.network import named_neurons, set_time_steps
from robustsnn.snn.neuron import Neuron

ROOT = Path(__file__).resolve().parent
DEFAULT_OUT = ROOT / "results" / "snn_speed.json"
INPUT_SHAPES = {
    "small_cnn": (1, 28, 28),
    "vgg11_a": (3, 32, 32),
    "vgg11": (3, 32, 32),
}
DEFAULT_MODELS = ("small_cnn", "vgg11_a", "vgg11")
IMPLEMENTATIONS = ("toolkit", "straightforward")
LEARNING_RATE = 1e-3
TIME_RATIO_TARGET = 1.0
MEMORY_RATIO_TARGET = 0.5
GRADIENT_TOLERANCE = 1e-3
SETTLE_BELOW_S = 1.0
MAX_BLOCK = 10

ALLOCATORS = {
    "keep": "robustsnn.runtime.keep_freed_memory() (glibc: blocks up to 32 MiB from the heap, "
    "freed memory kept, no trimming)",
    "default": "glibc defaults",
}

METHOD = {
    "training_step": (
        "optimizer.zero_grad(set_to_none=True); cross_entropy(model(x), y).backward(); "
        f"SGD(lr={LEARNING_RATE}).step(). The SNN readout is the mean over T of the last layer; "
        "direct coding (the layers before the first neuron run once)."
    ),
    "ann_reference": "the same model at T = 0 (ReLU neurons), one step at the same batch, times T",
    "straightforward": (
        "every Neuron replaced by a subclass whose T > 0 forward loops over t with float "
        "tensors and plain autograd (v = v + x_t; s = H(v - theta) through an autograd "
        "function saving v - theta, triangle surrogate; v = v - s * theta; outputs stacked); "
        "same time folding, same settings and thresholds as the toolkit's neuron"
    ),
    "timing": (
        "time.perf_counter around whole training steps after warm-up. Each repeat is one round "
        "over the configurations of a model (ANN, then toolkit and straightforward SNN per T), "
        "so that load from other processes affects them alike; in a round each configuration "
        f"runs one untimed step if its step takes under {SETTLE_BELOW_S} s (the allocator "
        "settles after the previous configuration), then about --block-seconds of timed "
        f"consecutive steps (1 to {MAX_BLOCK}). Medians over all timed steps are reported"
    ),
    "ratio": "snn_step_s / (T * ann_step_s); naive_ratio likewise for the straightforward SNN",
    "saved_bytes": (
        "torch.autograd.graph.saved_tensors_hooks around forward+backward: sum of "
        "untyped_storage().nbytes() over distinct storages (by data_ptr) of every tensor saved "
        "for backward, excluding the model's own parameters and buffers"
    ),
    "peak_rss_delta": (
        "fresh Python process per (model, implementation, T) and run: build the model, run one "
        "ANN step, drop the gradients (set_to_none), gc + malloc_trim, baseline = VmRSS, reset "
        "the high-water mark (/proc/self/clear_refs 5), run one SNN step (gradients allocated "
        "again inside it), delta = VmHWM - baseline. VmHWM is the ru_maxrss of this process "
        "alone (getrusage would inherit the parent's peak across fork+exec). Median over "
        "--memory-runs processes; peak_ratio = toolkit / straightforward"
    ),
    "peak_alloc_delta": (
        "in the same step: glibc mallinfo2 bytes in use (uordblks + hblkhd), sampled after "
        "every aten operation of forward and backward (a TorchDispatchMode), peak minus the "
        "value before the step. Counts allocated bytes, not touched pages, so it is free of "
        "allocator caching; it misses temporaries inside a single operation"
    ),
    "held_after_forward": (
        "in the same step: mallinfo2 bytes in use at the end of the forward pass minus before "
        "it, i.e. what the graph keeps for backward (in whatever form the model stores it)"
    ),
    "memory_target": (
        "peak_ratio (resident set) is the acceptance figure; peak_alloc_ratio counts allocated "
        "bytes only. They differ because the straightforward SNN's many per-step temporaries "
        "fragment the heap: its resident peak exceeds its allocated peak, the toolkit's less so. "
        "Every figure is measured twice: with the parameter gradients allocated inside the "
        "step (the default zero_grad(set_to_none=True)) and, suffix _grads_kept, with their "
        "buffers kept from the previous step (zero_grad(set_to_none=False)). The gradients "
        "(4 bytes per parameter: 245 MB for vgg11, 113 MB for vgg11_a) are the same in both "
        "implementations, so the _grads_kept ratio is the one that compares what the neurons "
        "keep and recompute"
    ),
    "check": (
        "at batch 4 and every T, both SNNs run from identical weights: outputs must be equal "
        f"(asserted) and the largest relative gradient difference must stay below "
        f"{GRADIENT_TOLERANCE} (asserted)"
    ),
}


class TriangleSpike(torch.autograd.Function):
    """Heaviside step of ``u = v - θ`` forward; triangle surrogate ``max(0, γ-|u|)/γ²`` back."""

    @staticmethod
    def forward(ctx, u: torch.Tensor, width: float, strict: bool) -> torch.Tensor:
        ctx.save_for_backward(u)
        ctx.width = width
        return (u > 0 if strict else u >= 0).to(u.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (u,) = ctx.saved_tensors
        width = ctx.width
        return grad * (width - u.abs()).clamp_min(0) / (width * width), None, None


class StraightforwardNeuron(Neuron):
    """The toolkit's neuron with a plain-autograd IF loop at T > 0 (the comparison baseline).

    Time folding (``[T·B, ...]`` in and out, a static batch repeated over T) and every setting
    are inherited, so the network around it is unchanged; only the recurrence differs: one
    float tensor per step and autograd through every operation of every step.
    """

    def _spiking(self, x: torch.Tensor) -> torch.Tensor:
        if self.gradient_path.kind != "triangle":
            raise ValueError(
                f"the straightforward neuron implements the triangle surrogate only, "
                f"not '{self.gradient_path}'"
            )
        steps = self.time_steps
        if self._static_batch is not None and x.shape[0] == self._static_batch:
            seq = x.unsqueeze(0).expand(steps, *x.shape)
        else:
            seq = x.reshape(steps, x.shape[0] // steps, *x.shape[1:])
        theta = self.effective_threshold()
        if theta.dim() == 1:
            theta = theta.view(-1, *([1] * (seq.dim() - 3)))
        v = self._initial_potential(theta, seq.dim() - 2).to(x.dtype)
        (width,) = self.gradient_path.params
        outputs = []
        for t in range(steps):
            v = v + seq[t] if self.leak == 1.0 else self.leak * v + seq[t]
            spikes = TriangleSpike.apply(v - theta, width, self.strict_firing)
            outputs.append(spikes * theta if self.spike_amplitude == "threshold" else spikes)
            v = v - spikes * theta if self.reset == "subtract" else v * (1 - spikes)
        return torch.stack(outputs).flatten(0, 1)


def to_straightforward(model: nn.Module) -> nn.Module:
    """Replace every toolkit neuron of ``model`` (in place) by a :class:`StraightforwardNeuron`."""
    for name, neuron in named_neurons(model):
        settings = neuron.settings()
        replacement = StraightforwardNeuron(settings.pop("channels"), **settings)
        replacement.load_state_dict(neuron.state_dict())
        replacement.time_steps = neuron.time_steps
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, replacement)
    return model


def build(name: str, implementation: str, seed: int = 0) -> nn.Module:
    """The zoo model ``name`` for its input shape, with the toolkit's or the plain neuron."""
    torch.manual_seed(seed)
    model = create_model(name, input_shape=INPUT_SHAPES[name])
    return to_straightforward(model) if implementation == "straightforward" else model


def make_batch(name: str, batch: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, *INPUT_SHAPES[name], generator=gen)
    labels = torch.randint(0, 10, (batch,), generator=gen)
    return images, labels


def training_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor, labels: torch.Tensor
) -> None:
    """One step: forward, cross-entropy on the (time-averaged) output, backward, SGD."""
    optimizer.zero_grad(set_to_none=True)
    F.cross_entropy(model(images), labels).backward()
    optimizer.step()


def saved_tensor_bytes(model: nn.Module, run: Callable[[], None]) -> int:
    """Bytes of the distinct storages saved for backward while ``run()`` builds its graph."""
    own = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in own:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        run()
    return sum(storages.values())


def check_agreement(name: str, steps: int) -> dict[str, float]:
    """Both SNNs from the same weights: equal outputs (asserted), gradient agreement."""
    images, labels = make_batch(name, 4, seed=2)
    grads = []
    outputs = []
    for implementation in IMPLEMENTATIONS:
        model = set_time_steps(build(name, implementation), steps)
        torch.manual_seed(3)
        out = model(images)
        F.cross_entropy(out, labels).backward()
        outputs.append(out.detach())
        grads.append({k: p.grad for k, p in model.named_parameters() if p.grad is not None})
    if not torch.equal(outputs[0], outputs[1]):
        diff = (outputs[0] - outputs[1]).abs().max().item()
        raise AssertionError(f"{name} T={steps}: outputs differ by up to {diff:.3g}")
    if grads[0].keys() != grads[1].keys():
        raise AssertionError(f"{name} T={steps}: different parameters receive gradients")
    worst = 0.0
    for key, g in grads[0].items():
        scale = g.abs().max().item()
        if scale > 0:
            worst = max(worst, (g - grads[1][key]).abs().max().item() / scale)
    if worst > GRADIENT_TOLERANCE:
        raise AssertionError(f"{name} T={steps}: gradients differ (relative {worst:.3g})")
    return {"outputs_equal": True, "max_relative_gradient_difference": worst}


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (field, ctypes.c_size_t)
        for field in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    return libc


def _malloc_in_use(libc: ctypes.CDLL) -> int:
    """Bytes currently allocated through malloc (heap arenas + mmapped chunks)."""
    info = libc.mallinfo2()
    return info.uordblks + info.hblkhd


class _AllocationPeak(TorchDispatchMode):
    """Samples malloc's bytes in use after every aten operation (forward and backward)."""

    def __init__(self, libc: ctypes.CDLL) -> None:
        super().__init__()
        self.libc = libc
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.peak = max(self.peak, _malloc_in_use(self.libc))
        return out


def memory_of_step(
    name: str, implementation: str, steps: int, batch: int, keep_gradients: bool = False
) -> dict[str, int]:
    """In this (fresh) process: memory growth of one SNN training step.

    After one ANN step, the gradients are dropped (or, with ``keep_gradients``, zeroed in
    place, so that their buffers belong to the baseline) and free memory returned to the
    system; then one SNN step runs with the resident-set high-water mark reset. Reported: VmHWM
    growth over VmRSS before the step, and malloc's bytes in use (sampled after every
    operation): their peak growth, and the growth held from the end of the forward pass into
    the backward.
    """
    libc = _libc()
    model = build(name, implementation)
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
    images, labels = make_batch(name, batch)
    training_step(set_time_steps(model, 0), optimizer, images, labels)
    set_time_steps(model, steps)
    optimizer.zero_grad(set_to_none=not keep_gradients)
    gc.collect()
    libc.malloc_trim(0)
    baseline_rss = _status_kib("VmRSS") * 1024
    baseline_malloc = _malloc_in_use(libc)
    with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
        f.write("5")
    sampler = _AllocationPeak(libc)
    with sampler:
        loss = F.cross_entropy(model(images), labels)
        held = _malloc_in_use(libc) - baseline_malloc
        loss.backward()
        optimizer.step()
    return {
        "peak_rss_delta": _status_kib("VmHWM") * 1024 - baseline_rss,
        "peak_alloc_delta": sampler.peak - baseline_malloc,
        "held_after_forward": held,
        "baseline_rss": baseline_rss,
    }


def measure_memory(
    name: str, implementation: str, steps: int, args, keep_gradients: bool = False
) -> dict[str, int]:
    """Run :func:`memory_of_step` in a fresh interpreter and return its result."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--memory-of",
        name,
        implementation,
        str(steps),
        "kept" if keep_gradients else "fresh",
        "--batch",
        str(args.batch),
        "--threads",
        str(args.threads),
        "--allocator",
        args.allocator,
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"memory process failed for {name}/{implementation}/T={steps}:\n{done.stderr[-2000:]}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def timed(step: Callable[[], None]) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def benchmark_model(name: str, args) -> dict[str, Any]:
    """Timings, saved bytes, peak memory and the agreement check for one model."""
    load_before = os.getloadavg()[0]
    checks = {str(t): check_agreement(name, t) for t in args.time_steps}
    images, labels = make_batch(name, args.batch)
    models = {impl: build(name, impl) for impl in IMPLEMENTATIONS}
    optimizers = {
        impl: torch.optim.SGD(m.parameters(), lr=LEARNING_RATE) for impl, m in models.items()
    }

    def step(impl: str, steps: int) -> Callable[[], None]:
        model = models[impl]
        return lambda: training_step(set_time_steps(model, steps), optimizers[impl], images, labels)

    configs = [("toolkit", 0)] + [(impl, t) for t in args.time_steps for impl in IMPLEMENTATIONS]
    estimate: dict[tuple[str, int], float] = {}
    saved: dict[tuple[str, int], int] = {}
    for impl, t in configs:
        if t > 0:
            saved[impl, t] = saved_tensor_bytes(models[impl], step(impl, t))
        for _ in range(args.warmup):
            estimate[impl, t] = timed(step(impl, t))
    times: dict[tuple[str, int], list[float]] = {config: [] for config in configs}
    for _ in range(args.repeats):
        for config in configs:
            run = step(*config)
            if estimate[config] < SETTLE_BELOW_S:
                run()
            block = min(MAX_BLOCK, max(1, round(args.block_seconds / estimate[config])))
            times[config] += [timed(run) for _ in range(block)]
    ann_s = statistics.median(times["toolkit", 0])
    results: dict[str, Any] = {}
    for t in args.time_steps:
        snn_s = statistics.median(times["toolkit", t])
        naive_s = statistics.median(times["straightforward", t])
        record: dict[str, Any] = {
            "ann_step_s": ann_s,
            "ann_steps_times_T_s": t * ann_s,
            "snn_step_s": snn_s,
            "ratio": snn_s / (t * ann_s),
            "naive_snn_step_s": naive_s,
            "naive_ratio": naive_s / (t * ann_s),
            "saved_bytes_snn": saved["toolkit", t],
            "saved_bytes_naive": saved["straightforward", t],
            "saved_ratio": saved["toolkit", t] / saved["straightforward", t],
        }
        if args.memory_runs:
            record.update(memory_record(name, t, args))
        record["raw_times_s"] = {
            "ann": times["toolkit", 0],
            "snn": times["toolkit", t],
            "naive_snn": times["straightforward", t],
        }
        record["check"] = checks[str(t)]
        results[str(t)] = record
    return {
        "input_shape": list(INPUT_SHAPES[name]),
        "batch": args.batch,
        "parameters": count_parameters(models["toolkit"]),
        "neurons": len(named_neurons(models["toolkit"])),
        "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
        "time_steps": results,
    }


def memory_record(name: str, steps: int, args) -> dict[str, Any]:
    """Medians over ``--memory-runs`` fresh processes per implementation, and their ratios.

    Measured twice: with the parameter gradients allocated inside the step (``set_to_none``)
    and with their buffers kept from the previous step (suffix ``_grads_kept``); the second
    leaves out the 4 bytes per parameter that both implementations need alike.
    """
    record: dict[str, Any] = {}
    ratio_name = {"peak_rss_delta": "peak_ratio", "peak_alloc_delta": "peak_alloc_ratio"}
    for keep, suffix in ((False, ""), (True, "_grads_kept")):
        runs = {
            impl: [measure_memory(name, impl, steps, args, keep) for _ in range(args.memory_runs)]
            for impl in IMPLEMENTATIONS
        }
        for key in ("peak_rss_delta", "peak_alloc_delta", "held_after_forward"):
            snn = statistics.median(r[key] for r in runs["toolkit"])
            naive = statistics.median(r[key] for r in runs["straightforward"])
            record[f"{key}_snn{suffix}"] = snn
            record[f"{key}_naive{suffix}"] = naive
            record[ratio_name.get(key, "held_ratio") + suffix] = snn / naive
        record[f"memory_runs{suffix}"] = runs
    return record


def summarise(models: dict[str, Any]) -> dict[str, Any]:
    """Target verdicts at the largest T measured."""
    summary = {}
    for name, result in models.items():
        steps = max(result["time_steps"], key=int)
        record = result["time_steps"][steps]
        memory = record.get("peak_ratio", record["saved_ratio"])
        summary[name] = {
            "T": int(steps),
            "ratio": record["ratio"],
            "naive_ratio": record["naive_ratio"],
            "peak_ratio": record.get("peak_ratio"),
            "peak_alloc_ratio": record.get("peak_alloc_ratio"),
            "peak_ratio_grads_kept": record.get("peak_ratio_grads_kept"),
            "peak_alloc_ratio_grads_kept": record.get("peak_alloc_ratio_grads_kept"),
            "held_ratio": record.get("held_ratio"),
            "saved_ratio": record["saved_ratio"],
            "time_target_met": record["ratio"] <= TIME_RATIO_TARGET,
            "memory_target_met": memory <= MEMORY_RATIO_TARGET,
            "memory_target_met_grads_kept": record.get("peak_ratio_grads_kept", memory)
            <= MEMORY_RATIO_TARGET,
        }
    return summary


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models",
        default=",".join(DEFAULT_MODELS),
        help="comma-separated zoo names (default: %(default)s)",
    )
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--time-steps", default="4,8", help="comma-separated T values")
    parser.add_argument(
        "--repeats", type=int, default=5, help="rounds over all configurations (default: 5)"
    )
    parser.add_argument(
        "--block-seconds",
        type=float,
        default=0.5,
        help="per round, time about this long of consecutive steps of each configuration",
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per configuration")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--allocator",
        choices=("keep", "default"),
        default="keep",
        help="keep: robustsnn.runtime.keep_freed_memory(), as the command line does (default); "
        "default: glibc's own settings",
    )
    parser.add_argument(
        "--memory-runs",
        type=int,
        default=2,
        help="fresh processes per implementation and T for peak memory (0 skips them)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--memory-of", nargs=4, metavar=("MODEL", "IMPL", "T", "GRADS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    try:
        args.time_steps = sorted({int(t) for t in args.time_steps.split(",") if t.strip()})
    except ValueError:
        parser.error(f"--time-steps must be comma-separated integers, got {args.time_steps!r}")
    unknown = [m for m in args.models if m not in INPUT_SHAPES or m not in list_models()]
    if unknown:
        known = [m for m in INPUT_SHAPES if m in list_models()]
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    if not args.time_steps or min(args.time_steps) < 1:
        parser.error("--time-steps needs at least one T >= 1")
    if min(args.batch, args.repeats, args.warmup, args.threads) < 1 or args.block_seconds <= 0:
        parser.error("--batch, --repeats, --warmup, --threads and --block-seconds must be positive")
    if args.memory_runs < 0:
        parser.error("--memory-runs must be 0 or more")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.allocator == "keep" and not keep_freed_memory():
        print("note: no glibc mallopt here; the allocator keeps its defaults", file=sys.stderr)
    if args.memory_of:
        name, implementation, steps, grads = args.memory_of
        keep = grads == "kept"
        print(json.dumps(memory_of_step(name, implementation, int(steps), args.batch, keep)))
        return 0
    start = time.perf_counter()
    models = {}
    for name in args.models:
        print(f"{name}: B={args.batch}, T={args.time_steps}", flush=True)
        models[name] = benchmark_model(name, args)
        for t, r in models[name]["time_steps"].items():
            memory = f"saved {r['saved_ratio']:.2f}"
            if "peak_ratio" in r:
                memory += (
                    f", held {r['held_ratio']:.2f}, peak RSS {r['peak_ratio']:.2f}, "
                    f"peak allocated {r['peak_alloc_ratio']:.2f}; gradient buffers kept: "
                    f"peak RSS {r['peak_ratio_grads_kept']:.2f}, "
                    f"peak allocated {r['peak_alloc_ratio_grads_kept']:.2f}"
                )
            print(
                f"  T={t}: ANN {r['ann_step_s']:.3f}s, SNN {r['snn_step_s']:.3f}s "
                f"(ratio {r['ratio']:.2f}), straightforward {r['naive_snn_step_s']:.3f}s "
                f"(ratio {r['naive_ratio']:.2f}); memory vs straightforward: {memory}",
                flush=True,
            )
    result = {
        "benchmark": "snn_speed",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        "settings": {
            "batch": args.batch,
            "time_steps": args.time_steps,
            "repeats": args.repeats,
            "block_seconds": args.block_seconds,
            "warmup": args.warmup,
            "optimizer": f"SGD(lr={LEARNING_RATE})",
            "neuron": "zoo default: IF, threshold 1, reset by subtraction, v0 = 0, triangle:1.0",
            "allocator": ALLOCATORS[args.allocator],
            "if_kernel": "compiled C kernel" if kernel.usable(torch.zeros(1)) else "torch",
        },
        "targets": {
            "time_ratio_max_at_T8": TIME_RATIO_TARGET,
            "peak_ratio_max": MEMORY_RATIO_TARGET,
        },
        "method": METHOD,
        "models": models,
        "summary": summarise(models),
        "wall_time_s": time.perf_counter() - start,
    }
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
