"""Hostile and mistaken inputs through the real command line: one line, no traceback, no damage.

Every case runs ``python -m robustsnn ...`` in a subprocess and must end with a non-zero exit,
exactly one line on stderr (``error: ...``) that names the key, file or value at fault, no
traceback, and no file changed in an existing run (the run directory is hashed before and
after). Cases that target a run get their own copy of one finished tiny run. The cases run
once per module, three processes at a time, each forked from one interpreter that has imported
torch and robustsnn already (on Linux; elsewhere each is a fresh ``python -m robustsnn``); each
test then checks one case.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

TINY = """\
name: hostile
seed: 0
data: {dataset: mnist5k, train_samples: 64, test_samples: 16}
model: {name: small_cnn, kwargs: {channels: [4, 8], hidden: 16}}
ann: {objective: pgd_at, eps: 0.1, steps: 1, epochs: 1, batch_size: 32, lr: 0.05}
conversion: {time_steps: 2, options: {time_steps_calibration: 4, batches: 1, batch_size: 32}}
finetune: {epochs: 1, batch_size: 32, eps: 0.1, lr: 0.01}
evaluation: {eps: [0.1], steps: 1, samples: 4, paths: ["triangle:1.0"], sweep_eps: [],
             time_steps_curve: [1]}
energy: {samples: 2, time_steps: [2]}
"""


def _environment() -> dict[str, str]:
    environment = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="200")
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(SRC), *filter(None, [environment.get("PYTHONPATH")])]
    )
    for name in ("ROBUSTSNN_DEBUG", "ROBUSTSNN_KILL_AT_REPLACE", "ROBUSTSNN_TRACE"):
        environment.pop(name, None)
    return environment


def robustsnn(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``python -m robustsnn ARGS`` on this checkout's source."""
    return subprocess.run(
        [sys.executable, "-m", "robustsnn", *args],
        cwd=cwd,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def tree_hash(directory: Path) -> dict[str, str]:
    """Every file under ``directory`` (names and contents)."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


# One warm interpreter forks a child per case: each child is a separate process that runs the
# command line's entry point (robustsnn.cli.main, what the ``robustsnn`` script runs) with its
# own argv, working directory, stdout, stderr and exit code, but none pays torch's import again.
_FORKER = """
import json, os, sys, traceback
import torch  # noqa: F401 - imported once, before any fork (no OpenMP thread has started)
import robustsnn.attacks, robustsnn.cli, robustsnn.compare, robustsnn.config  # noqa: E401
import robustsnn.convert, robustsnn.data, robustsnn.energy, robustsnn.pipeline  # noqa: E401
requests = [json.loads(line) for line in sys.stdin]
workers, running, codes = int(sys.argv[1]), {}, {}
while requests or running:
    while requests and len(running) < workers:
        request = requests.pop(0)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.chdir(request["cwd"])
                for stream, name in ((1, "stdout"), (2, "stderr")):
                    os.dup2(os.open(request[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC), stream)
                sys.argv = ["robustsnn", *request["args"]]
                robustsnn.cli.main()
                code = 0
            except SystemExit as done:
                code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        running[pid] = request["id"]
    pid, status = os.wait()
    codes[running.pop(pid)] = os.waitstatus_to_exitcode(status)
print(json.dumps(codes))
"""


def robustsnn_many(
    commands: dict[str, list[str]], cwd: Path, workers: int = 3
) -> dict[str, subprocess.CompletedProcess]:
    """Run every command (id -> args) in its own process; fork from one warm interpreter where
    the platform can, else start ``python -m robustsnn`` for each."""
    if not hasattr(os, "fork") or sys.platform != "linux":
        return {key: robustsnn(args, cwd) for key, args in commands.items()}
    outputs = cwd / "outputs"
    outputs.mkdir(exist_ok=True)
    requests = [
        {
            "id": key,
            "args": args,
            "cwd": str(cwd),
            "stdout": str(outputs / f"{key}.out"),
            "stderr": str(outputs / f"{key}.err"),
        }
        for key, args in commands.items()
    ]
    done = subprocess.run(
        [sys.executable, "-c", _FORKER, str(workers)],
        input="".join(json.dumps(r) + "\n" for r in requests),
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    codes = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        r["id"]: subprocess.CompletedProcess(
            r["args"],
            codes[r["id"]],
            Path(r["stdout"]).read_text(errors="replace"),
            Path(r["stderr"]).read_text(errors="replace"),
        )
        for r in requests
    }


# ---- hostile files -----------------------------------------------------------------------------
def _checkpoint_json(stem: Path) -> dict:
    return json.loads(stem.with_suffix(".json").read_text())


def _edit_json(run: Path, name: str, change: Callable[[dict], None]) -> None:
    path = run / f"{name}.json"
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def nan_weights(run: Path) -> None:
    """The ANN's tensors with NaN weights, and a JSON whose SHA-256 matches them."""
    from safetensors.numpy import load, save

    tensors = load((run / "ann.safetensors").read_bytes())
    name = next(k for k, v in tensors.items() if v.dtype.kind == "f" and v.size > 1)
    tensors[name] = np.full_like(tensors[name], np.nan)
    blob = save(tensors)
    (run / "ann.safetensors").write_bytes(blob)
    _edit_json(run, "ann", lambda m: m.update(tensors_sha256=hashlib.sha256(blob).hexdigest()))


def huge_time_steps(run: Path) -> None:
    _edit_json(run, "snn", lambda m: m.update(time_steps=10**12))


def huge_kwargs(run: Path) -> None:
    _edit_json(run, "ann", lambda m: m["architecture"]["kwargs"].update(channels=[4096, 65536]))


def no_metadata(run: Path) -> None:
    (run / "snn.json").unlink()


def bad_metadata(run: Path) -> None:
    (run / "snn.json").write_text("{not json")


def other_tensors(run: Path) -> None:
    shutil.copy(run / "snn_converted.safetensors", run / "snn.safetensors")


def foreign_json(run: Path) -> None:
    _edit_json(run, "snn", lambda m: m.pop("format"))


def negative_time_steps(run: Path) -> None:
    _edit_json(run, "snn", lambda m: m.update(time_steps=-1))


def malformed_state(run: Path) -> None:
    """An interrupted finetuning whose state.json is garbage (its checkpoint not yet written)."""
    for suffix in (".safetensors", ".json"):
        (run / f"snn{suffix}").unlink()
    (run / "train" / "finetune" / "state.json").write_text("{broken")


def interrupted_ann(run: Path) -> None:
    """The ANN interrupted after its first epoch (its checkpoint not yet written)."""
    for suffix in (".safetensors", ".json"):
        (run / f"ann{suffix}").unlink()


def list_summary(run: Path) -> None:
    (run / "summary.json").write_text("[1, 2, 3]")


def broken_summary(run: Path) -> None:
    (run / "summary.json").write_text("{")


def scalar_stages(run: Path) -> None:
    (run / "summary.json").write_text('{"stages": 3}')


def write_cifar(root: Path, data: object, *, hostile: bool = False) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            if hostile:
                f.write(b"cos\nsystem\n(S'echo pwned'\ntR.")
            else:
                pickle.dump({b"data": data, b"labels": [0] * 4}, f)
    return root


def write_png(path: Path, width: int, height: int) -> None:
    """A 1-bit greyscale PNG of zeros: tiny on disk, huge once decoded."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    row = b"\x00" * (1 + (width + 7) // 8)
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    payload = zlib.compress(row * height, 9)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", payload)
        + chunk(b"IEND", b"")
    )


# ---- the cases ---------------------------------------------------------------------------------
@dataclass
class Case:
    """``args`` with ``{cfg}``, ``{run}`` (a fresh copy of the finished run), ``{tmp}`` and
    ``{ro}`` (a read-only directory holding a copy of the run) filled in; ``expect`` must be
    in the one stderr line."""

    id: str
    args: list[str]
    expect: list[str]
    prepare: Callable[[Path], None] | None = None
    files: dict[str, Callable[[Path], None]] = field(default_factory=dict)
    readonly: bool = False


def _run(*sets: str, extra: tuple[str, ...] = ()) -> list[str]:
    args = ["run", "{cfg}", "-o", "{run}", *extra]
    for item in sets:
        args += ["--set", item]
    return args


def _fresh(*sets: str) -> list[str]:
    """A run into a new directory (a dataset's files are read only once no stage refuses)."""
    args = ["run", "{cfg}", "-o", "{tmp}/new-" + sets[-1].rsplit("/", 1)[-1]]
    for item in sets:
        args += ["--set", item]
    return args


CASES = [
    # ε: (0, 1], with the 8/255 spelling offered
    Case("eps-8", _run("ann.eps=8"), ["ann.eps", "8/255"]),
    Case("finetune-eps-1.5", _run("finetune.eps=1.5"), ["finetune.eps"]),
    Case("evaluation-eps-2", _run("evaluation.eps=[2]"), ["evaluation.eps", "8/255"]),
    Case("eps-zero", _run("ann.eps=0"), ["ann.eps", "0 < ε"]),
    Case("eps-word", _run("ann.eps=abc"), ["ann.eps", "abc"]),
    # --set syntax and values
    Case("set-not-yaml", _run("ann.lr=[1"), ["--set ann.lr", "[1"]),
    Case("set-no-equals", _run("ann.lr"), ["--set", "KEY=VALUE", "ann.lr"]),
    Case("set-empty-part", _run("ann..lr=1"), ["ann..lr"]),
    Case("set-unknown-key", _run("ann.bogus=1"), ["ann.bogus"]),
    Case("epochs-zero", _run("ann.epochs=0"), ["ann.epochs"]),
    Case("momentum-nan", _run("ann.momentum=.nan"), ["ann.momentum"]),
    Case("seed-huge", _run("seed=99999999999999999999999"), ["seed"]),
    Case("recipe-unknown", _run("conversion.recipe=nope"), ["conversion", "nope"]),
    Case("recipe-option-unknown", _run("conversion.options.bogus=1"), ["conversion", "bogus"]),
    Case("suite-unknown", _run("evaluation.suite=strongest"), ["evaluation", "strongest"]),
    Case("model-unknown", _run("model.name=nonet"), ["model.name", "nonet"]),
    Case("model-kwarg-unknown", _run("model.kwargs.bogus=3"), ["model.kwargs", "bogus"]),
    # a changed config on a finished run, with and without --resume
    Case("changed-lr", _run("ann.lr=0.02"), ["ann.lr 0.05 → 0.02", "--force ann"]),
    Case(
        "changed-epochs-resume",
        _run("finetune.epochs=2", extra=("--resume",)),
        ["finetune.epochs 1 → 2", "--force snn_finetuned"],
    ),
    Case("changed-kwargs", _run("model.kwargs.hidden=32"), ["model.kwargs.hidden 16 → 32"]),
    Case("force-unknown-stage", _run(extra=("--force", "bogus")), ["--force bogus"]),
    Case(
        "resume-after-kwargs-change",
        _run("model.kwargs.hidden=32", extra=("--resume",)),
        ["model.kwargs.hidden 16 → 32"],
        prepare=interrupted_ann,
    ),
    Case(
        "malformed-state",
        _run(extra=("--resume",)),
        ["train/finetune/state.json", "--no-resume"],
        prepare=malformed_state,
    ),
    # config files
    Case("config-empty", ["run", "{tmp}/empty.yaml", "-o", "{run}"], ["empty.yaml", "empty"]),
    Case("config-scalar", ["run", "{tmp}/scalar.yaml", "-o", "{run}"], ["scalar.yaml", "mapping"]),
    Case(
        "config-list-with-set",
        ["run", "{tmp}/list.yaml", "-o", "{run}", "--set", "ann.lr=1"],
        ["list.yaml", "mapping"],
    ),
    Case("config-binary", ["run", "{tmp}/binary.yaml", "-o", "{run}"], ["binary.yaml", "text"]),
    Case("config-bad-yaml", ["run", "{tmp}/bad.yaml", "-o", "{run}"], ["bad.yaml", "YAML"]),
    Case("config-missing", ["run", "{tmp}/none.yaml", "-o", "{run}"], ["none.yaml", "not found"]),
    Case("config-directory", ["run", "{tmp}", "-o", "{run}"], ["it is a directory"]),
    # the run directory itself
    Case("out-is-a-file", ["run", "{cfg}", "-o", "{tmp}/empty.yaml"], ["empty.yaml", "exists"]),
    Case("out-under-a-file", ["run", "{cfg}", "-o", "{tmp}/empty.yaml/x"], ["empty.yaml"]),
    # evaluate
    Case("evaluate-eps-255", ["evaluate", "{run}", "--eps", "255"], ["--eps", "8/255"]),
    Case("evaluate-eps-8", ["evaluate", "{run}", "--eps", "8"], ["--eps", "8/255"]),
    Case("evaluate-samples-zero", ["evaluate", "{run}", "--samples", "0"], ["--samples"]),
    Case(
        "evaluate-wrong-shape",
        ["evaluate", "{run}", "--dataset", "digits"],
        ["--dataset digits", "1x8x8", "1x28x28"],
    ),
    Case(
        "evaluate-unknown-suite",
        ["evaluate", "{run}", "--suite", "strongest"],
        ["--suite strongest"],
    ),
    Case("evaluate-missing", ["evaluate", "{tmp}/nothing"], ["nothing"]),
    Case(
        "evaluate-nan-weights", ["evaluate", "{run}/ann"], ["ann.safetensors", "NaN"], nan_weights
    ),
    # energy
    Case("energy-samples-zero", ["energy", "{run}", "--samples", "0"], ["--samples", "0"]),
    Case("energy-samples-negative", ["energy", "{run}", "--samples", "-3"], ["--samples", "-3"]),
    Case("energy-T-zero", ["energy", "{run}", "--T", "0"], ["--T", "0"]),
    Case("energy-T-huge", ["energy", "{run}", "--T", "100000000000"], ["--T", "100000000000"]),
    Case("energy-wrong-shape", ["energy", "{run}", "--dataset", "digits"], ["--dataset digits"]),
    Case("energy-preset", ["energy", "{run}", "--preset", "nope"], ["energy preset", "nope"]),
    # convert
    Case(
        "convert-T-huge",
        ["convert", "{run}/ann", "--recipe", "qcfs", "--T", "100000000000"],
        ["--T", "100000000000"],
    ),
    Case("convert-unknown-recipe", ["convert", "{run}/ann", "--recipe", "magic"], ["magic"]),
    Case(
        "convert-wrong-shape",
        ["convert", "{run}/ann", "--recipe", "qcfs", "--dataset", "digits"],
        ["--dataset digits"],
    ),
    # compare
    Case("compare-file", ["compare", "{tmp}/empty.yaml"], ["empty.yaml", "not a directory"]),
    Case("compare-missing", ["compare", "{tmp}/nothing"], ["nothing", "no such directory"]),
    Case("compare-list-summary", ["compare", "{run}"], ["summary.json", "list"], list_summary),
    Case("compare-scalar-stages", ["compare", "{run}"], ["summary.json", "stages"], scalar_stages),
    # checkpoints
    Case("info-nan-weights", ["info", "{run}/ann"], ["ann.safetensors", "NaN"], nan_weights),
    Case("info-huge-T", ["info", "{run}/snn"], ["snn.json", "T = 1000000000000"], huge_time_steps),
    Case("info-huge-kwargs", ["info", "{run}/ann"], ["ann.json", "GiB"], huge_kwargs),
    Case(
        "info-torn-pair", ["info", "{run}/snn"], ["snn.json is missing", "interrupted"], no_metadata
    ),
    Case("info-other-tensors", ["info", "{run}/snn"], ["snn.safetensors", "belong"], other_tensors),
    # datasets on disk
    Case(
        "cifar-object-array",
        _fresh("data.dataset=cifar10", "data.root={tmp}/cifar-object"),
        ["data_batch_1", "uint8"],
    ),
    Case(
        "cifar-float-pixels",
        _fresh("data.dataset=cifar10", "data.root={tmp}/cifar-float"),
        ["data_batch_1", "uint8", "float64"],
    ),
    Case(
        "cifar-crafted-pickle",
        _fresh("data.dataset=cifar10", "data.root={tmp}/cifar-hostile"),
        ["data_batch_1", "refused", "system"],
    ),
    Case(
        "png-bomb",
        _fresh("data.dataset=imagefolder", "data.root={tmp}/bomb"),
        ["bomb.png", "pixels"],
    ),
    # a read-only file system: every command that writes
    Case("readonly-run", ["run", "{cfg}", "-o", "{ro}/run"], ["{ro}/run"], readonly=True),
    Case("readonly-demo", ["demo", "-o", "{ro}/demo"], ["{ro}/demo"], readonly=True),
    Case("readonly-evaluate", ["evaluate", "{ro}/run"], ["{ro}/run"], readonly=True),
    Case(
        "readonly-evaluate-out",
        ["evaluate", "{ro}/run", "-o", "{ro}/elsewhere"],
        ["{ro}/elsewhere"],
        readonly=True,
    ),
    Case("readonly-report", ["report", "{ro}/run"], ["{ro}/run"], readonly=True),
    Case(
        "readonly-convert",
        ["convert", "{ro}/run/ann", "--recipe", "max-norm", "--T", "2", "--samples", "4"],
        ["{ro}/run/.lock"],
        readonly=True,
    ),
]


def _make_files(tmp: Path) -> None:
    (tmp / "empty.yaml").write_text("")
    (tmp / "scalar.yaml").write_text("3\n")
    (tmp / "list.yaml").write_text("- 1\n- 2\n")
    (tmp / "binary.yaml").write_bytes(bytes(range(256)) * 4)
    (tmp / "bad.yaml").write_text("ann: [1, 2\n")
    objects = np.empty((4, 3072), dtype=object)
    objects[:] = 1
    write_cifar(tmp / "cifar-object", objects)
    write_cifar(tmp / "cifar-float", np.full((4, 3072), 300.0))
    write_cifar(tmp / "cifar-hostile", None, hostile=True)
    write_png(tmp / "bomb" / "train" / "a" / "bomb.png", 5000, 5000)
    write_png(tmp / "bomb" / "train" / "b" / "bomb.png", 5000, 5000)


def _readonly_dir(path: Path, run: Path) -> str | None:
    """A directory holding a copy of the run, made read-only: a read-only tmpfs where this
    process may mount one, else permissions (which root ignores). The reason if impossible."""
    path.mkdir()
    shutil.copytree(run, path / "run")
    if os.geteuid() != 0:
        for p in [path, *path.rglob("*")]:
            p.chmod(0o555 if p.is_dir() else 0o444)
        return None
    staging = path.parent / "ro-staging"
    shutil.move(path / "run", staging)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(path)])
    if mounted.returncode != 0:
        return "running as root without permission to mount a read-only tmpfs"
    shutil.copytree(staging, path / "run")
    subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
    return None


@dataclass
class Outcome:
    result: subprocess.CompletedProcess | None
    before: dict[str, str] | None
    after: dict[str, str] | None
    expect: list[str]
    skip: str | None = None


@dataclass
class Hostile:
    finished: Path  # the finished tiny run every case copies
    outcomes: dict[str, Outcome]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Hostile:
    root = tmp_path_factory.mktemp("hostile")
    config = root / "tiny.yaml"
    config.write_text(TINY)
    finished = root / "finished"
    done = robustsnn(["run", str(config), "-o", str(finished)], root)
    assert done.returncode == 0, done.stderr
    tmp = root / "files"
    tmp.mkdir()
    _make_files(tmp)
    ro = root / "readonly"
    ro_skip = _readonly_dir(ro, finished)

    prepared: dict[str, tuple[Path | None, list[str], list[str]]] = {}
    skipped: dict[str, str] = {}
    for case in CASES:
        fill = {"{cfg}": str(config), "{tmp}": str(tmp), "{ro}": str(ro)}
        run = None
        if any("{run}" in a for a in case.args):
            run = root / "copies" / case.id
            shutil.copytree(finished, run)
            if case.prepare is not None:
                case.prepare(run)
            fill["{run}"] = str(run)
        if case.readonly:
            if ro_skip is not None:
                skipped[case.id] = ro_skip
                continue
            run = ro / "run"

        def sub(text: str, fill: dict[str, str] = fill) -> str:
            for key, value in fill.items():
                text = text.replace(key, value)
            return text

        prepared[case.id] = (run, [sub(a) for a in case.args], [sub(e) for e in case.expect])
    before = {key: tree_hash(run) for key, (run, _, _) in prepared.items() if run is not None}
    try:
        done = robustsnn_many({key: args for key, (_, args, _) in prepared.items()}, root)
        after = {key: tree_hash(run) for key, (run, _, _) in prepared.items() if run is not None}
    finally:
        if os.geteuid() == 0 and ro_skip is None:
            subprocess.run(["umount", str(ro)], check=False)
    results = {key: Outcome(None, None, None, [], skip=reason) for key, reason in skipped.items()}
    for key, (_, _, expect) in prepared.items():
        results[key] = Outcome(done[key], before.get(key), after.get(key), expect)
    return Hostile(finished, results)


def test_there_are_at_least_sixty_cases():
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_hostile_input_is_one_line_without_traceback_or_damage(hostile, case):
    outcome = hostile.outcomes[case.id]
    if outcome.skip is not None:
        pytest.skip(outcome.skip)
    result = outcome.result
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0, result.stdout[-500:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    for fragment in outcome.expect:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    assert outcome.before == outcome.after, "a file of the existing run changed"


def test_commands_told_to_write_elsewhere_leave_the_run_untouched(hostile, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(hostile.finished, run)
    before = tree_hash(run)
    done = robustsnn(["energy", str(run), "--T", "1", "--samples", "2"], tmp_path)
    assert done.returncode == 0, done.stderr
    evaluated = robustsnn(
        ["evaluate", str(run), "--suite", "quick", "--samples", "2", "-o", str(tmp_path / "o")],
        tmp_path,
    )
    assert evaluated.returncode == 0, evaluated.stderr
    assert list((tmp_path / "o" / "eval").glob("*.json"))
    assert tree_hash(run) == before
