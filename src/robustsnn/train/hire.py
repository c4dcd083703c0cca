"""HIRE-SNN (Kundu, Pedram & Beerel, ICCV 2021): training with crafted input noise, for free.

The T time steps of each batch are split into N periods of T/N steps. Each period runs one
forward and backward pass of T/N steps on the image plus the current noise and updates the
weights; the input gradient then gives a gradient-sign noise for the next period. Every image is
therefore seen as N progressively perturbed variants, with a total simulation length of T per
batch: the same cost as one ordinary T-step BPTT step (research notes §3.1).

The paper leaves several choices open (its training code was never released); here they are
options, with these defaults:

* ``periods`` N = 2 (the paper's figure uses T = 4, N = 2); T must be a multiple of N.
* ``eps``: the noise bound (L∞, [0, 1] pixels); the paper's value is unknown (probably 2/255 on
  CIFAR, the bound of its successors). The image plus noise is always clipped to [0, 1].
* ``step_size``: the size of each gradient-sign step (default ``eps``).
* ``accumulate`` (default True): the noise of period k+1 is ``Π_ε(δ_k + α·sign(g_k))``, as in
  "adversarial training for free"; False restarts from the clean image,
  ``δ_{k+1} = α·sign(g_k)`` (clipped to ε). The first period of every batch sees the clean
  image; the noise does not carry over between batches (each batch holds new images).
* ``noise_gradient``: which weights the noise is crafted with. ``period`` (default) takes the
  input gradient of the period's own backward pass, i.e. the weights before that period's
  update: free, which is what makes HIRE-SNN cost no more than plain training. ``updated``
  recomputes it with the updated weights (one extra T/N-step forward and backward in eval
  mode per period, about twice the cost): the literal reading of the paper's description.
* membrane state does not carry over between periods: each period is a fresh simulation of
  T/N steps from the neurons' initial potential (carrying state would make the next period's
  input gradient depend on the previous period's graph, which the update has invalidated).

Use it as the ``objective`` of :func:`~robustsnn.train.loop.fit`: it implements ``train_step``,
so the loop lets it make its own N optimizer steps per batch. The model's T is the total T.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from robustsnn.attacks.core import check_budget, eval_mode, input_gradient, project
from robustsnn.snn.network import get_time_steps, using_time_steps
from robustsnn.train.objectives import ce_per_sample

NOISE_GRADIENTS = ("period", "updated")


@dataclass
class HireObjective:
    """HIRE-SNN's per-batch schedule (see the module docstring for every option)."""

    periods: int = 2
    eps: float = 2 / 255
    step_size: float | None = None
    accumulate: bool = True
    noise_gradient: str = "period"

    def __post_init__(self) -> None:
        if isinstance(self.periods, bool) or not isinstance(self.periods, int) or self.periods < 1:
            raise ValueError(f"periods must be an integer >= 1, got {self.periods!r}")
        if not self.eps >= 0:
            raise ValueError(f"the noise bound eps must be >= 0, got {self.eps}")
        if self.step_size is not None and not self.step_size >= 0:
            raise ValueError(f"step_size must be >= 0, got {self.step_size}")
        if self.noise_gradient not in NOISE_GRADIENTS:
            choices = ", ".join(NOISE_GRADIENTS)
            got = self.noise_gradient
            raise ValueError(f"noise_gradient must be one of {choices}; got {got!r}")

    @property
    def alpha(self) -> float:
        """The size of one gradient-sign step."""
        return self.eps if self.step_size is None else self.step_size

    def describe(self) -> dict[str, object]:
        """JSON-serialisable settings (compared on resume)."""
        return {
            "name": "hire",
            "periods": self.periods,
            "eps": self.eps,
            "step_size": self.alpha,
            "accumulate": self.accumulate,
            "noise_gradient": self.noise_gradient,
        }

    def period_steps(self, model: nn.Module) -> int:
        """T/N, the time steps of one period (T is the model's)."""
        total = get_time_steps(model)
        if total < 1:
            raise ValueError("HIRE-SNN trains an SNN: set the model's time steps T >= 1 first")
        if total % self.periods:
            raise ValueError(
                f"HIRE-SNN splits T into N periods: T = {total} is not a multiple of "
                f"N = {self.periods}"
            )
        return total // self.periods

    def next_noise(self, x: torch.Tensor, delta: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """The noise of the next period from the current one and an input gradient.

        The result keeps ``x + δ`` inside the ε-ball around ``x`` and inside [0, 1].
        """
        start = x + delta if self.accumulate else x
        noisy = project(start + self.alpha * grad.sign(), x, self.eps)
        return noisy - x

    def train_step(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        generator: torch.Generator | None,
        optimizer: torch.optim.Optimizer,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """N periods of T/N steps on one batch, each ending with an optimizer step."""
        steps = self.period_steps(model)
        x = x.detach()
        delta = torch.zeros_like(x)
        losses: list[torch.Tensor] = []
        accuracies: list[float] = []
        with using_time_steps(model, steps):
            for period in range(self.periods):
                last = period == self.periods - 1
                noisy = (x + delta).detach().requires_grad_(not last)
                check_budget(noisy, x, self.eps)
                logits = model(noisy)
                loss = F.cross_entropy(logits, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(loss.detach())
                accuracies.append(float((logits.argmax(1) == y).float().mean()))
                if last or not torch.isfinite(loss):
                    continue
                if self.noise_gradient == "period":
                    grad = noisy.grad
                else:
                    with eval_mode(model):
                        grad, _ = input_gradient(model, noisy.detach(), y, ce_per_sample)
                delta = self.next_noise(x, delta, grad).detach()
        loss = torch.stack(losses).mean()
        metrics = {"loss": float(loss), "acc": accuracies[0], "noisy_acc": accuracies[-1]}
        return loss, metrics
