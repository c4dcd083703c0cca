"""Typed, validated run configuration (YAML), and the named presets shipped in ``configs/``.

A config describes one run of the pipeline: robust ANN → conversion → robust finetuning →
evaluation → energy. Every section is a dataclass; loading checks every key and value and a
mistake gives one line naming the key and the accepted values.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from robustsnn.errors import ConfigError, NotFoundError, storage

CONFIG_DIR = Path(__file__).parent / "configs"


def parse_eps(
    value: Any, key: str = "eps", *, upper: float | None = 1.0, zero: bool = False
) -> float:
    """A budget as a number or a fraction string such as ``"8/255"``.

    An L∞ pixel budget lies in (0, 1] (images are in [0, 1]), so ``8`` or ``255`` is refused
    with a hint to write ``8/255``; ``upper=None`` drops the upper bound (L2 budgets),
    ``zero=True`` accepts 0 (a sweep's clean point).
    """
    if isinstance(value, str):
        text = value.strip()
        try:
            if "/" in text:
                num, den = text.split("/", 1)
                value = float(num) / float(den)
            else:
                value = float(text)
        except (ValueError, ZeroDivisionError):
            raise ConfigError(f"{key}: '{text}' is not a number or a fraction like 8/255") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key}: expected a number or a fraction like 8/255, got {value!r}")
    value = float(value)
    low = "0 <=" if zero else "0 <"
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        raise ConfigError(f"{key}: must be a finite number with {low} ε <= 1, got {value}")
    if upper is not None and value > upper:
        raise ConfigError(
            f"{key}: {value:g} is above {upper:g}: an L∞ budget is in pixel units of [0, 1]; "
            f"write a fraction like 8/255 for 8 grey levels"
        )
    return value


@dataclass
class DataConfig:
    dataset: str = "mnist5k"
    root: str | None = None
    train_samples: int | None = None
    test_samples: int | None = None
    augment: list[str] | None = None
    size: int | None = None
    time_steps: int | None = None


@dataclass
class ModelConfig:
    name: str = "small_cnn"
    kwargs: dict[str, Any] = field(default_factory=dict)
    neuron: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    """Robust ANN training (stage 1)."""

    objective: str = "pgd_at"
    eps: float = 2 / 255
    steps: int = 10
    step_size: float | None = None
    beta: float = 6.0
    epochs: int = 200
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"


@dataclass
class ConversionConfig:
    recipe: str = "threshold-balancing"
    time_steps: int = 8
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class FinetuneConfig:
    """Robust SNN finetuning (stage 3)."""

    enabled: bool = True
    epochs: int = 60
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-3
    beta: float = 2.0
    loss: str = "trades"
    eps: float = 2 / 255
    step_size: float | None = None
    inner: str = "rfgsm"
    surrogate: str = "triangle:1.0"
    attack_path: str | None = None


@dataclass
class EvaluationConfig:
    """Evaluation of every stage (stage 4): the attack suite ``suite`` (a built-in name or a
    suite YAML file) with this run's ``eps``, ``samples``, ``batch_size``, PGD ``steps`` and,
    when given, ``paths``; ``options`` sets any other suite key (e.g. ``apgd_steps``).
    ``attack`` and ``steps`` also drive the ε sweep through the strongest path."""

    suite: str = "quick"
    eps: list[float] = field(default_factory=lambda: [2 / 255])
    attack: str = "pgd"
    steps: int = 10
    paths: list[str] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    samples: int | None = 1000
    batch_size: int = 256
    sweep_eps: list[float] = field(default_factory=list)
    sweep_samples: int = 200
    time_steps_curve: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32])


@dataclass
class HireConfig:
    """HIRE-SNN's open choices (see ``robustsnn.train.hire``); ``eps`` null: ``direct.eps``."""

    periods: int = 2
    eps: float | None = None
    step_size: float | None = None
    accumulate: bool = True
    noise_gradient: str = "period"


@dataclass
class SparsityConfig:
    """Gradient-sparsity regularisation: CE + weight·mean(FD²) with step h, optionally at PGD
    examples (``adversarial``, with ``direct.eps`` and ``direct.steps``)."""

    weight: float = 0.005
    h: float = 0.01
    adversarial: bool = False


@dataclass
class DirectConfig:
    """Direct SNN training with BPTT (``method: direct``): ``objective`` ce, pgd_at, trades,
    hire or sr; ``init`` scratch (a fresh model) or converted (the ANN and conversion stages
    first: the hybrid variant); ``encoding`` direct or poisson (rate coding)."""

    objective: str = "ce"
    init: str = "scratch"
    time_steps: int = 8
    encoding: str = "direct"
    surrogate: str = "triangle:1.0"
    attack_path: str | None = None
    trainable_threshold: bool = False
    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    eps: float = 2 / 255
    steps: int = 10
    step_size: float | None = None
    beta: float = 6.0
    hire: HireConfig = field(default_factory=HireConfig)
    sr: SparsityConfig = field(default_factory=SparsityConfig)


@dataclass
class EnergyConfig:
    enabled: bool = True
    preset: str = "45nm-fp32"
    samples: int = 200
    time_steps: list[int] = field(default_factory=list)


@dataclass
class RunConfig:
    name: str = "run"
    seed: int = 0
    method: str = "conversion"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    ann: TrainConfig = field(default_factory=TrainConfig)
    conversion: ConversionConfig = field(default_factory=ConversionConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    energy: EnergyConfig = field(default_factory=EnergyConfig)
    direct: DirectConfig = field(default_factory=DirectConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


_CHOICES: dict[str, tuple[str, ...]] = {
    "ann.objective": ("ce", "pgd_at", "trades", "mart"),
    "ann.optimizer": ("sgd", "adam"),
    "ann.schedule": ("cosine", "step", "none"),
    "finetune.loss": ("trades", "mart"),
    "finetune.inner": ("rfgsm", "fgsm", "pgd"),
    "evaluation.attack": ("fgsm", "rfgsm", "pgd"),
    "energy.preset": ("45nm-fp32", "45nm-int32", "45nm-fp16", "45nm-int8"),
    "method": ("conversion", "direct"),
    "direct.objective": ("ce", "pgd_at", "trades", "hire", "sr"),
    "direct.init": ("scratch", "converted"),
    "direct.encoding": ("direct", "poisson"),
    "direct.optimizer": ("sgd", "adam"),
    "direct.schedule": ("cosine", "step", "none"),
    "direct.hire.noise_gradient": ("period", "updated"),
}
_POSITIVE_INT = {
    "ann.epochs",
    "ann.steps",
    "ann.batch_size",
    "conversion.time_steps",
    "finetune.epochs",
    "finetune.batch_size",
    "evaluation.steps",
    "evaluation.batch_size",
    "evaluation.sweep_samples",
    "energy.samples",
    "direct.time_steps",
    "direct.epochs",
    "direct.batch_size",
    "direct.steps",
    "direct.hire.periods",
}
_EPS_KEYS = {"ann.eps", "ann.step_size", "finetune.eps", "finetune.step_size", "direct.hire.eps"}


def _convert(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{key}: a value is required")
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], key)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key)
    if hint is float:
        if key.split(".")[-1] in ("eps", "step_size") or key in _EPS_KEYS:
            return parse_eps(value, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            try:
                return float(value)
            except (TypeError, ValueError):
                raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if origin is list:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item,) = args
        if item is float and key.endswith("eps"):
            # Evaluation budgets may be L2 (no upper bound): validate() checks them per norm.
            evaluation = key.startswith("evaluation.")
            upper = None if evaluation else 1.0
            return [parse_eps(v, key, upper=upper, zero=key.endswith("sweep_eps")) for v in value]
        return [_convert(v, item, key) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    return value


def _build(cls: type, data: Any, prefix: str = "") -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise ConfigError(f"unknown key '{full}'; accepted: {', '.join(names)}")
        kwargs[key] = _convert(value, hints[key], full)
    return cls(**kwargs)


def validate(config: RunConfig) -> RunConfig:
    """Check values that types alone cannot (choices, ranges, names of datasets and models)."""
    flat = _flatten(config.to_dict())
    if not 0 <= config.seed < 2**63:
        raise ConfigError(f"seed: must be an integer in [0, 2**63), got {config.seed}")
    for key, value in flat.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}: must be a finite number, got {value}")
    for key in ("ann.momentum", "direct.momentum"):
        if not 0 <= flat[key] < 1:
            raise ConfigError(f"{key}: must be in [0, 1), got {flat[key]}")
    for key, choices in _CHOICES.items():
        if flat[key] not in choices:
            raise ConfigError(f"{key}: '{flat[key]}' is not one of {', '.join(choices)}")
    for key in _POSITIVE_INT:
        if flat[key] < 1:
            what = "an SNN stage needs T >= 1" if key == "conversion.time_steps" else "must be >= 1"
            raise ConfigError(f"{key}: {what}, got {flat[key]}")
    _check_direct(config)
    for key in ("ann.lr", "finetune.lr"):
        if flat[key] <= 0:
            raise ConfigError(f"{key}: must be > 0, got {flat[key]}")
    for key in ("ann.weight_decay", "finetune.weight_decay", "ann.beta", "finetune.beta"):
        if flat[key] < 0:
            raise ConfigError(f"{key}: must be >= 0, got {flat[key]}")
    if not config.evaluation.eps:
        raise ConfigError("evaluation.eps: give at least one budget")
    if config.evaluation.options.get("norm", "linf") != "l2":
        for key in ("evaluation.eps", "evaluation.sweep_eps"):
            for value in flat[key]:
                parse_eps(value, key, zero=key.endswith("sweep_eps"))
    for key, values in (
        ("evaluation.time_steps_curve", config.evaluation.time_steps_curve),
        ("energy.time_steps", config.energy.time_steps),
    ):
        if any(t < 1 for t in values):
            raise ConfigError(f"{key}: every T must be >= 1, got {values}")
    for key in ("data.train_samples", "data.test_samples", "evaluation.samples"):
        if flat[key] is not None and flat[key] < 1:
            raise ConfigError(f"{key}: must be >= 1 or null, got {flat[key]}")
    _check_names(config)
    return config


def _check_direct(config: RunConfig) -> None:
    """Values of the ``direct`` section that types and choices alone cannot check."""
    d = config.direct
    if d.lr <= 0:
        raise ConfigError(f"direct.lr: must be > 0, got {d.lr}")
    for key, value in (
        ("direct.weight_decay", d.weight_decay),
        ("direct.beta", d.beta),
        ("direct.sr.weight", d.sr.weight),
    ):
        if value < 0:
            raise ConfigError(f"{key}: must be >= 0, got {value}")
    if d.sr.h <= 0:
        raise ConfigError(f"direct.sr.h: must be > 0, got {d.sr.h}")
    if d.objective == "hire" and d.time_steps % d.hire.periods:
        raise ConfigError(
            f"direct.hire.periods: must divide direct.time_steps = {d.time_steps}, "
            f"got {d.hire.periods}"
        )


def _check_names(config: RunConfig) -> None:
    from robustsnn.data import list_datasets
    from robustsnn.models import list_models
    from robustsnn.snn.paths import expand_paths

    if config.data.dataset not in list_datasets():
        raise ConfigError(
            f"data.dataset: unknown dataset '{config.data.dataset}'; "
            f"accepted: {', '.join(list_datasets())}"
        )
    if config.model.name not in list_models():
        raise ConfigError(
            f"model.name: unknown model '{config.model.name}'; accepted: {', '.join(list_models())}"
        )
    try:
        if config.evaluation.paths is not None:
            expand_paths(config.evaluation.paths)
        expand_paths([config.finetune.surrogate])
    except ValueError as err:
        raise ConfigError(f"evaluation.paths / finetune.surrogate: {err}") from None
    for key, value in (
        ("finetune.attack_path", config.finetune.attack_path),
        ("direct.surrogate", config.direct.surrogate),
        ("direct.attack_path", config.direct.attack_path),
    ):
        try:
            if value is not None:
                expand_paths([value])
        except ValueError as err:
            raise ConfigError(f"{key}: {err}") from None


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict) and k not in ("kwargs", "neuron", "options"):
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Build and validate a :class:`RunConfig` from plain data (e.g. parsed YAML)."""
    return validate(_build(RunConfig, data))


def list_presets() -> list[str]:
    """Names of the configs shipped with the package."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def load_config(source: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Load a YAML file or a preset name; ``overrides`` maps dotted keys to values."""
    path = Path(source)
    if not path.exists():
        preset = CONFIG_DIR / f"{source}.yaml"
        if not preset.exists():
            raise NotFoundError(
                f"config '{source}' not found: give a YAML file or one of the presets "
                f"({', '.join(list_presets())})"
            )
        path = preset
    with storage(path, "read the config"):
        raw = path.read_bytes()
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text (UTF-8 YAML) file") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if data is None:
        raise ConfigError(
            f"{path}: the config is empty; start from a preset (robustsnn run demo) or copy one "
            f"of {CONFIG_DIR} and change it"
        )
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: a config must be a mapping of sections (name:, data:, model:, ann:, ...), "
            f"got a {type(data).__name__}"
        )
    for key, value in (overrides or {}).items():
        _set_dotted(data, key, value)
    return config_from_dict(data)


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    if not all(parts):
        raise ConfigError(f"--set {key}: a key is dotted section names like ann.epochs")
    node = data
    for part in parts[:-1]:
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: '{part}' is not a section")
    node[parts[-1]] = value
