"""The model as an attack sees it: gradients through a path, success on the true forward.

A :class:`Victim` wraps a model, a gradient path and the model's randomness:

* gradients are computed inside ``using_gradient_path(model, path)`` (``ann`` runs them at
  T = 0 on the SNN's weights);
* success is judged on the model's true forward pass, outside that context;
* Poisson-coded models (``model.encoding == 'poisson'``) are stochastic: their spikes are
  drawn here, per sample, from :class:`~robustsnn.attacks.seeding.SampleRandom` and fed to the
  model as event input ``[T, B, ...]`` (what the model's own encoder would do, with a
  straight-through backward), so every draw is reproducible and independent of batching.
  Gradients are averaged over ``eot`` draws inside each step (expectation over
  transformation); the true forward is judged over ``draws`` draws, and a sample counts as
  fooled when any draw misclassifies it (worst of K).
"""

from __future__ import annotations

import torch
from torch import nn

from robustsnn.attacks.core import LossFn, path_context
from robustsnn.attacks.seeding import SampleRandom, sample_ids
from robustsnn.snn.adaptive import SharpnessState, using_sharpness_state
from robustsnn.snn.network import get_time_steps
from robustsnn.snn.paths import GradientPath, parse_path

JUDGE_KEY = "judge"


def time_steps(model: nn.Module) -> int:
    """The model's T; 0 for ANNs and for models without spiking neurons."""
    try:
        return get_time_steps(model)
    except ValueError:
        return 0


def is_stochastic(model: nn.Module) -> bool:
    """True when the model's forward pass is random (Poisson rate coding at T > 0)."""
    return getattr(model, "encoding", None) == "poisson" and time_steps(model) > 0


def poisson_spikes(
    x: torch.Tensor, steps: int, ids: torch.Tensor, random: SampleRandom, stream: str
) -> torch.Tensor:
    """Bernoulli spikes ``[T, B, ...]`` with rate ``x``; d spikes / d x = 1 (straight through)."""
    noise = random.uniform(ids, (steps, *x.shape[1:]), stream, x.device, x.dtype)
    noise = noise.transpose(0, 1)
    rates = x.clamp(0, 1).unsqueeze(0).expand_as(noise)
    spikes = (noise < rates).to(x.dtype)
    return rates + (spikes - rates).detach()


def judge_random(model: nn.Module) -> SampleRandom:
    """The random stream of a stochastic model's true forward (its ``poisson_seed``, or 0)."""
    return SampleRandom(getattr(model, "poisson_seed", None) or 0, JUDGE_KEY)


def true_logits(
    model: nn.Module, x: torch.Tensor, ids: torch.Tensor | None = None, draw: int = 0
) -> torch.Tensor:
    """Logits of the model's true forward pass (draw number ``draw`` for stochastic models)."""
    ids = sample_ids(ids, x.shape[0])
    with torch.no_grad():
        if is_stochastic(model):
            steps = time_steps(model)
            return model(poisson_spikes(x, steps, ids, judge_random(model), f"draw{draw}"))
        return model(x)


def correct_fraction(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    ids: torch.Tensor | None = None,
    draws: int = 1,
) -> torch.Tensor:
    """Per sample, the fraction of ``draws`` true forward passes that classify it correctly.

    Deterministic models are run once (the fraction is 0 or 1).
    """
    count = draws if is_stochastic(model) else 1
    hits = torch.zeros(x.shape[0], device=x.device)
    for draw in range(count):
        hits += (true_logits(model, x, ids, draw).argmax(1) == y).float()
    return hits / count


class Victim:
    """One model seen through one gradient path, with per-sample seeded randomness.

    Args:
        model: the attacked model (any ``nn.Module`` mapping [0, 1] images to logits).
        path: gradient path (None: the model's own; must be None for models without neurons).
        eot: gradient draws averaged per step for stochastic models (ignored otherwise).
        draws: true-forward draws when judging a stochastic model.
        seed, key: the member's random stream (see :mod:`robustsnn.attacks.seeding`).
    """

    def __init__(
        self,
        model: nn.Module,
        path: str | GradientPath | None = None,
        *,
        eot: int = 1,
        draws: int = 1,
        seed: int = 0,
        key: str = "",
    ) -> None:
        if eot < 1 or draws < 1:
            raise ValueError(f"eot and draws must be >= 1, got eot={eot}, draws={draws}")
        self.model = model
        self.path = parse_path(path) if path is not None else None
        self.steps = time_steps(model)
        self.proxy = self.path is not None and self.path.kind == "ann" and self.steps > 0
        self.stochastic = is_stochastic(model)
        self.stochastic_gradient = self.stochastic and not self.proxy
        self.eot = eot if self.stochastic_gradient else 1
        self.draws = draws if self.stochastic else 1
        self.random = SampleRandom(seed, key)
        self.adaptive: SharpnessState | None = None
        self.new_run()

    def new_run(self) -> None:
        """Forget adaptive gradient state (ASSG's sharpness statistics): every attack run and
        every restart starts fresh. Attacks call it at the start of each run."""
        adaptive = self.path is not None and self.path.kind == "assg" and self.steps > 0
        self.adaptive = SharpnessState() if adaptive else None

    @property
    def exact(self) -> bool:
        """True when the gradient's forward pass *is* the true forward pass (deterministic
        model, path not ``ann``): its logits then judge success for free."""
        return not self.proxy and not self.stochastic

    @property
    def judges_every_step(self) -> bool:
        """True when every iterate is judged on the true forward (deterministic models), so
        a sample can stop at its first fooling iterate."""
        return not self.stochastic

    def step_verdict(
        self, x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor, logits: torch.Tensor
    ) -> torch.Tensor | None:
        """Whether the iterate ``x`` fools the true forward, given the gradient's ``logits``
        (free when exact, one forward for the ANN proxy); None for stochastic models, whose
        iterates are judged only at the end (over ``draws`` draws)."""
        if self.exact:
            return logits.argmax(1) != y
        if self.stochastic:
            return None
        with torch.no_grad():
            return self.model(x).argmax(1) != y

    def verdict(
        self, x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor, logits: torch.Tensor
    ) -> torch.Tensor:
        """:meth:`step_verdict`, or for stochastic models the gradient forward's own verdict
        (their final candidates are judged over ``draws`` draws afterwards)."""
        hit = self.step_verdict(x, y, ids, logits)
        return logits.argmax(1) != y if hit is None else hit

    def gradient(
        self, x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor, loss_fn: LossFn, stream: str
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Input gradient of the per-sample loss (EOT mean), the loss and the logits.

        ``stream`` names the call (e.g. ``r0:i3``) so stochastic draws differ between steps.
        """
        grad = torch.zeros_like(x)
        loss_sum = torch.zeros(x.shape[0], device=x.device)
        with path_context(self.model, self.path), torch.enable_grad():
            for k in range(self.eot):
                xg = x.detach().requires_grad_(True)
                inp = xg
                if self.stochastic_gradient:
                    inp = poisson_spikes(xg, self.steps, ids, self.random, f"eot:{stream}:k{k}")
                with using_sharpness_state(self.adaptive, ids, frozen=k > 0):
                    logits = self.model(inp)
                loss = loss_fn(logits, y)
                (g,) = torch.autograd.grad(loss.sum(), xg)
                grad += g.detach()
                loss_sum += loss.detach()
        return grad / self.eot, loss_sum / self.eot, logits.detach()

    def logits(self, x: torch.Tensor, ids: torch.Tensor, stream: str) -> torch.Tensor:
        """Forward logits for score-based attacks: true model, mean over ``eot`` draws."""
        if not self.stochastic:
            with torch.no_grad():
                return self.model(x)
        total = 0.0
        with torch.no_grad():
            for k in range(self.eot):
                spikes = poisson_spikes(x, self.steps, ids, self.random, f"q:{stream}:k{k}")
                total = total + self.model(spikes)
        return total / self.eot

    def fooled(self, x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """True-forward verdict per sample: misclassified in at least one of ``draws`` draws."""
        return correct_fraction(self.model, x, y, ids, self.draws) < 1
