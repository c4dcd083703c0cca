"""Attack suites as configuration: which members, which budgets, how many samples.

A :class:`Suite` is a plain dataclass that round-trips through YAML/dict. Its members are every
gradient attack in ``attacks`` through every path in ``paths``, then the single members named in
``pairs`` (``attack/path``), then one transfer member per source model named in ``transfer``,
then Square if ``square`` is in ``attacks``. Built-ins:

* ``strong`` (the default of ``robustsnn evaluate``): the few members that were never beaten,
  per sample, by anything else the toolkit has (``benchmarks/frontier_eval.py``): SA-PGD
  through ASSG, APGD-DLR through a sharp fixed ATan and through ASSG, all with the reset
  detached, and PGD-10 through the ANN proxy as a cheap safety net for masked surrogates;
* ``quick``: FGSM and PGD-10 over six paths (one sharp with the reset detached) and SA-PGD-50
  through ASSG, 200 samples, light diagnostics;
* ``paper``: the primary paper's ensemble (FGSM, PGD-10, APGD-CE, APGD-DLR, APGD-T over the
  19 ``paper19`` paths) with the standard 100-iteration APGD, exactly as published;
* ``full``: ``paper`` and SA-PGD over the ``extended``, ``frontier`` and ``sharpness`` paths,
  plus Square (5,000 queries).

``tune_iterations`` > 0 picks the sharpness of every tunable path (ASSG's A, a fixed ATan's or
sigmoid's α, HART's width) per victim and ε by a ternary search on ``tune_samples`` samples
that are not among those reported, and adds a member through the chosen sharpness beside the
suite's own (see :mod:`~robustsnn.attacks.tuning`).

Diagnostics run with every suite unless ``diagnostics: false``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from robustsnn.attacks.core import NORMS
from robustsnn.attacks.members import ATTACKS, GRADIENT_ATTACKS, Member
from robustsnn.snn.paths import PATH_SETS, expand_paths, parse_path

ORDERS = ("adaptive", "fixed")
DIAGNOSTICS = (
    "eps_sweep",
    "steps_sweep",
    "white_vs_black_box",
    "iterative_vs_single_step",
    "zero_gradients",
    "random_noise",
    "sharper_or_detached",
)


@dataclass
class Suite:
    """One evaluation protocol.

    Args:
        name: label used for the results file (``eval/NAME.json``).
        attacks: base attacks, from ``fgsm rfgsm pgd apgd-ce apgd-dlr apgd-t sapgd square``.
        paths: a named set (``paper19``, ``extended``, ``frontier``, ``sharpness``, ``quick``)
            or a list of path strings and set names.
        pairs: extra single members ``attack/path`` (e.g. ``sapgd/assg:atan:0.425/dr``).
        eps: budgets in [0, 1] pixel units (L∞) or L2 norm.
        norm: ``linf`` or ``l2`` (Square is L∞ only).
        steps: PGD iterations (step 2.5·ε/steps).
        apgd_steps: APGD / APGD-T / SA-PGD iterations.
        restarts: random restarts of PGD and APGD (per target for APGD-T).
        targets: APGD-T target classes.
        queries: Square queries.
        transfer: names of source models for transfer members (given to ``evaluate``).
        transfer_attack: the gradient attack run on each source (its own gradient path).
        samples: evaluate the first N samples (None: all).
        batch_size: samples per attack batch.
        seed: seed of every random start (per sample and member).
        eot: gradient draws per step for Poisson-coded models.
        draws: true-forward draws that judge Poisson-coded models (worst of K).
        order: ``adaptive`` (screen paths with FGSM, strongest members first) or ``fixed``.
        screening_samples: samples of the FGSM screening.
        standalone: members (names) or ``all`` whose accuracy alone is computed exactly
            (they run on every clean-correct sample).
        diagnostics: True, False or a list of names from :data:`DIAGNOSTICS`.
        diagnostic_samples: samples the diagnostics run on.
        diagnostic_queries: Square queries of the white- vs black-box diagnostic.
        tune_iterations: ternary-search iterations per tunable path (0: no tuning).
        tune_samples: samples of the search, taken after the reported ones.
        tune_steps: SA-PGD iterations of each trial of the search.
    """

    name: str = "custom"
    attacks: list[str] = field(default_factory=lambda: ["pgd"])
    paths: str | list[str] = "paper19"
    pairs: list[str] = field(default_factory=list)
    eps: list[float] = field(default_factory=lambda: [8 / 255])
    norm: str = "linf"
    steps: int = 10
    apgd_steps: int = 100
    restarts: int = 1
    targets: int = 9
    queries: int = 5000
    transfer: list[str] = field(default_factory=list)
    transfer_attack: str = "pgd"
    samples: int | None = None
    batch_size: int = 256
    seed: int = 0
    eot: int = 20
    draws: int = 10
    order: str = "adaptive"
    screening_samples: int = 64
    standalone: str | list[str] = field(default_factory=list)
    diagnostics: bool | list[str] = True
    diagnostic_samples: int = 100
    diagnostic_queries: int = 1000
    tune_iterations: int = 0
    tune_samples: int = 64
    tune_steps: int = 20

    def __post_init__(self) -> None:
        self.validate()

    # ---- validation ---------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ValueError naming the first bad key and its accepted values."""
        if not isinstance(self.name, str) or not self.name or "/" in self.name:
            _bad("name", self.name, "a non-empty name without '/'")
        if isinstance(self.attacks, str):
            self.attacks = [a.strip() for a in self.attacks.split(",") if a.strip()]
        if isinstance(self.pairs, str):
            self.pairs = [p.strip() for p in self.pairs.split(",") if p.strip()]
        if not self.attacks and not self.pairs:
            _bad("attacks", self.attacks, f"a non-empty list from {', '.join(ATTACKS)}")
        for pair in self.pairs:
            attack, slash, path = str(pair).partition("/")
            if not slash or attack not in GRADIENT_ATTACKS:
                accepted = f"'attack/path' with an attack from {', '.join(GRADIENT_ATTACKS)}"
                _bad("pairs", pair, accepted)
            try:
                parse_path(path)
            except ValueError as err:
                raise ValueError(f"suite key 'pairs': {pair!r}: {err}") from None
        for a in self.attacks:
            if a not in ATTACKS:
                _bad("attacks", a, ", ".join(ATTACKS))
        if len(set(self.attacks)) != len(self.attacks):
            _bad("attacks", self.attacks, "each attack once")
        if isinstance(self.paths, list) and not self.paths:
            gradient = [a for a in self.attacks if a != "square"]
            if gradient:
                _bad("paths", self.paths, f"a set or list of paths for {', '.join(gradient)}")
        else:
            self._expand_paths()
        if isinstance(self.eps, (int, float)):
            self.eps = [self.eps]
        if not self.eps or any(
            isinstance(e, bool) or not isinstance(e, (int, float)) or not e >= 0 for e in self.eps
        ):
            _bad("eps", self.eps, "a non-empty list of numbers >= 0")
        self.eps = [float(e) for e in self.eps]
        if self.norm not in NORMS:
            _bad("norm", self.norm, ", ".join(NORMS))
        if "square" in self.attacks and self.norm != "linf":
            _bad("attacks", "square", "gradient attacks only with norm l2 (Square is L∞ only)")
        for key in ("steps", "apgd_steps", "restarts", "targets", "queries", "batch_size"):
            _positive_int(key, getattr(self, key))
        for key in ("eot", "draws", "screening_samples", "diagnostic_samples"):
            _positive_int(key, getattr(self, key))
        _positive_int("diagnostic_queries", self.diagnostic_queries)
        for key in ("tune_samples", "tune_steps"):
            _positive_int(key, getattr(self, key))
        if isinstance(self.tune_iterations, bool) or not isinstance(self.tune_iterations, int):
            _bad("tune_iterations", self.tune_iterations, "an integer >= 0")
        if self.tune_iterations < 0:
            _bad("tune_iterations", self.tune_iterations, "an integer >= 0")
        if self.samples is not None:
            _positive_int("samples", self.samples)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            _bad("seed", self.seed, "an integer")
        if self.transfer_attack not in GRADIENT_ATTACKS:
            _bad("transfer_attack", self.transfer_attack, ", ".join(GRADIENT_ATTACKS))
        if isinstance(self.transfer, str):
            self.transfer = [self.transfer]
        if any(not isinstance(s, str) or not s or "/" in s for s in self.transfer):
            _bad("transfer", self.transfer, "a list of source names without '/'")
        if self.order not in ORDERS:
            _bad("order", self.order, ", ".join(ORDERS))
        if isinstance(self.standalone, str) and self.standalone != "all":
            self.standalone = [self.standalone]
        if isinstance(self.diagnostics, str):
            self.diagnostics = [self.diagnostics]
        if not isinstance(self.diagnostics, bool):
            for d in self.diagnostics:
                if d not in DIAGNOSTICS:
                    _bad("diagnostics", d, f"true, false or a list from {', '.join(DIAGNOSTICS)}")

    # ---- members ------------------------------------------------------------------------
    def _expand_paths(self) -> list[str]:
        if isinstance(self.paths, list) and not self.paths:
            return []
        try:
            return [str(p) for p in expand_paths(self.paths)]
        except (ValueError, TypeError) as err:
            raise ValueError(
                f"suite key 'paths': {err} (a set from {', '.join(PATH_SETS)} or a list of paths)"
            ) from None

    def path_list(self) -> list[str]:
        """The gradient paths of the suite's members, expanded and in order (``paths``, then
        those of ``pairs``)."""
        out = self._expand_paths()
        for pair in self.pairs:
            path = str(parse_path(pair.partition("/")[2]))
            if path not in out:
                out.append(path)
        return out

    def members(self, spiking: bool = True) -> list[Member]:
        """Members in the suite's fixed order: attack-major over paths, transfer, Square.

        For a model that does not spike (T = 0) every path gives the same gradient, so each
        gradient attack runs once with the model's own gradient.
        """
        paths: list[str | None] = self._expand_paths() if spiking else [None]
        out = [self._member(a, p) for a in self.attacks if a != "square" for p in paths]
        for pair in self.pairs:
            attack, _, path = pair.partition("/")
            member = self._member(attack, path if spiking else None)
            if member.name not in {m.name for m in out}:
                out.append(member)
        for source in self.transfer:
            out.append(self._member(self.transfer_attack, None, source))
        if "square" in self.attacks:
            out.append(Member("square", queries=self.queries, eot=self.eot))
        return out

    def _member(self, attack: str, path: str | None, source: str | None = None) -> Member:
        steps = self.steps if attack in ("pgd", "fgsm", "rfgsm") else self.apgd_steps
        return Member(
            attack,
            path,
            source=source,
            steps=steps,
            restarts=self.restarts,
            targets=self.targets,
            eot=self.eot,
        )

    def diagnostic_names(self) -> list[str]:
        """The diagnostics this suite runs."""
        if self.diagnostics is True:
            return list(DIAGNOSTICS)
        if self.diagnostics is False:
            return []
        return list(self.diagnostics)

    def standalone_names(self, members: list[Member]) -> set[str]:
        """Members whose accuracy alone must be exact."""
        if self.standalone == "all":
            return {m.name for m in members}
        return set(self.standalone)

    # ---- (de)serialisation ------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any], **overrides: Any) -> Suite:
        """Build from a mapping; unknown keys are refused with the accepted ones listed."""
        if not isinstance(data, dict):
            raise ValueError(f"a suite must be a mapping of keys to values, got {type(data)}")
        merged = {**data, **{k: v for k, v in overrides.items() if v is not None}}
        known = [f.name for f in fields(cls)]
        for key in merged:
            if key not in known:
                raise ValueError(f"unknown suite key '{key}'; accepted: {', '.join(known)}")
        return cls(**merged)

    def with_overrides(self, **overrides: Any) -> Suite:
        """A copy with some keys replaced (None values are ignored)."""
        return Suite.from_dict(self.to_dict(), **overrides)


def _bad(key: str, value: Any, accepted: str) -> None:
    raise ValueError(f"suite key '{key}': bad value {value!r}; accepted: {accepted}")


def _positive_int(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        _bad(key, value, "an integer >= 1")


BUILTIN_SUITES: dict[str, dict[str, Any]] = {
    "strong": {
        "attacks": [],
        "paths": [],
        "pairs": [
            "sapgd/assg:atan:0.425/dr",
            "apgd-dlr/arctan:8.0/dr",
            "apgd-dlr/assg:atan:0.425/dr",
            "pgd/ann",
        ],
    },
    "quick": {
        "attacks": ["fgsm", "pgd"],
        "paths": "quick",
        "pairs": ["sapgd/assg:atan:0.425/dr"],
        "apgd_steps": 50,
        "samples": 200,
        "diagnostic_samples": 50,
        "diagnostic_queries": 300,
        "eot": 5,
        "draws": 5,
    },
    "paper": {
        "attacks": ["fgsm", "pgd", "apgd-ce", "apgd-dlr", "apgd-t"],
        "paths": "paper19",
    },
    "full": {
        "attacks": ["fgsm", "pgd", "apgd-ce", "apgd-dlr", "apgd-t", "sapgd", "square"],
        "paths": ["extended", "frontier", "sharpness"],
        "queries": 5000,
        "diagnostic_queries": 5000,
    },
}


def list_suites() -> list[str]:
    """Names of the built-in suites."""
    return list(BUILTIN_SUITES)


def get_suite(name: str, **overrides: Any) -> Suite:
    """A built-in suite by name, with optional overrides (e.g. ``eps=[0.1]``, ``samples=100``)."""
    if name not in BUILTIN_SUITES:
        raise ValueError(f"unknown suite '{name}'; built-in suites: {', '.join(BUILTIN_SUITES)}")
    return Suite.from_dict({"name": name, **BUILTIN_SUITES[name]}, **overrides)


def load_suite(source: str | Path, **overrides: Any) -> Suite:
    """A built-in suite name or a YAML file; a file may start from a built-in with
    ``base: NAME`` and change some keys."""
    if isinstance(source, str) and source in BUILTIN_SUITES:
        return get_suite(source, **overrides)
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(
            f"no suite '{source}': not a built-in ({', '.join(BUILTIN_SUITES)}) and no such file"
        )
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"suite file {path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"suite file {path} must hold a mapping of keys to values")
    base = data.pop("base", None)
    start: dict[str, Any] = {"name": path.stem}
    if base is not None:
        if base not in BUILTIN_SUITES:
            _bad("base", base, ", ".join(BUILTIN_SUITES))
        start = {"name": path.stem, **BUILTIN_SUITES[base]}
    return Suite.from_dict({**start, **data}, **overrides)
