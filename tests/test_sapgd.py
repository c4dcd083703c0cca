"""SA-PGD: its step-size schedule, budgets, zero gradients, the analytic optimum of a linear
model, batch independence and its ensemble member."""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

from robustsnn.attacks import (
    GRADIENT_ATTACKS,
    Member,
    margin_loss,
    perturbation_norm,
    predict,
    run_member,
    sapgd,
)
from robustsnn.attacks.sapgd import halving_iterations, step_sizes
from robustsnn.models import create_model
from robustsnn.snn import Neuron, SpikingNetwork, set_time_steps


class Recorder(nn.Module):
    """Wraps a model and records every input it is run on (every iterate of an attack).

    ``offset`` is added to class 0's logit, so that a large one keeps label-0 samples
    unfooled (and iterating) under the margin loss, whose gradient it does not change."""

    def __init__(self, inner: nn.Module, offset: float = 0.0) -> None:
        super().__init__()
        self.inner, self.offset, self.seen = inner, offset, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        out = self.inner(x)
        return out + self.offset * F.one_hot(torch.zeros_like(out[:, 0]).long(), out.shape[1])


def _cnn(time_steps: int = 0, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    model = create_model(
        "small_cnn", input_shape=(1, 8, 8), num_classes=4, channels=[4, 8], hidden=16, **kwargs
    )
    if time_steps:
        set_time_steps(model, time_steps)
    return model.eval()


def _distance(a: torch.Tensor, b: torch.Tensor, norm: str) -> torch.Tensor:
    return perturbation_norm(a, b, norm)


# ---- the schedule -------------------------------------------------------------------------
def test_step_size_is_halved_after_the_reference_checkpoints():
    assert halving_iterations(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    etas = step_sizes(0.5, 100)
    halvings = [sum(i >= c for c in halving_iterations(100)) for i in range(100)]
    assert etas == [0.5 / 2**h for h in halvings]
    assert halving_iterations(1) == [1] and step_sizes(0.1, 1) == [0.1]


def test_the_attack_steps_by_the_scheduled_step_size():
    """Recorded iterates of a never-fooled SNN: an L∞ step never exceeds that iteration's η,
    and in every segment between halvings some step reaches it (so η halves exactly there)."""
    eps, steps = 0.1, 100
    model = Recorder(_cnn(time_steps=4), offset=1000.0)
    x = torch.rand(6, 1, 8, 8) * 0.4 + 0.3
    sapgd(model, x, torch.zeros(6, dtype=torch.long), eps, steps=steps, loss="margin")
    iterates = model.seen[-(steps + 1) :]  # the start and one per iteration
    moves = torch.stack([_distance(b, a, "linf") for a, b in pairwise(iterates)])
    etas = torch.tensor(step_sizes(eps, steps))
    assert (moves <= etas[:, None] + 1e-6).all()
    bounds = [0, *halving_iterations(steps), steps]
    for lo, hi in pairwise(bounds):
        assert (moves[lo:hi] / etas[lo:hi, None]).max() > 0.9, (lo, hi)


# ---- budgets --------------------------------------------------------------------------------
@pytest.mark.parametrize("time_steps", [0, 4])
@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("linf", 0.6), ("l2", 0.5), ("l2", 3.0)])
def test_every_iterate_stays_in_its_ball_and_the_unit_box(time_steps, norm, eps):
    """One image (so that every recorded sub-batch has the same centre) and eight ids (eight
    starts), never fooled (so both restarts run every step); every iterate is recorded."""
    model = Recorder(_cnn(time_steps), offset=1000.0)
    x = torch.rand(1, 1, 8, 8).expand(8, -1, -1, -1)
    y = torch.zeros(8, dtype=torch.long)
    x_adv = sapgd(model, x, y, eps, steps=15, restarts=2, norm=norm, loss="margin")
    assert not torch.equal(x_adv, x)
    assert len(model.seen) == 1 + 2 * 16
    for z in [*model.seen, x_adv]:
        assert z.min() >= 0 and z.max() <= 1
        assert (_distance(z, x[: z.shape[0]], norm) <= eps * (1 + 1e-5)).all()


def test_a_poisson_coded_model_stays_in_budget():
    model = _cnn(time_steps=4, encoding="poisson")
    x, y = torch.rand(5, 1, 8, 8), torch.arange(5) % 4
    x_adv = sapgd(model, x, y, 0.2, steps=6, eot=2, draws=2)
    assert (_distance(x_adv, x, "linf") <= 0.2 * (1 + 1e-5)).all() and not torch.equal(x_adv, x)


# ---- zero gradients -----------------------------------------------------------------------
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_a_zero_gradient_gives_no_nan(norm):
    """Sample 0 sits where the model is flat (below a Hardtanh: its gradient is exactly 0),
    sample 1 where it is not: no NaN, both in budget, and only sample 1 moves off its start."""
    torch.manual_seed(0)
    body = nn.Sequential(nn.Flatten(), nn.Hardtanh(0.8, 2.0), nn.Linear(64, 3))
    model = Recorder(body, offset=1000.0)  # never fooled: both samples run every step
    x = torch.stack([torch.full((1, 8, 8), 0.2), torch.full((1, 8, 8), 0.95)])
    eps = 0.1 if norm == "linf" else 0.5
    x_adv = sapgd(model, x, torch.zeros(2).long(), eps, steps=10, norm=norm, loss="margin")
    assert torch.isfinite(x_adv).all() and all(torch.isfinite(z).all() for z in model.seen)
    assert (_distance(x_adv, x, norm) <= eps * (1 + 1e-5)).all()
    iterates = model.seen[1:]  # the first is the class check
    assert len(iterates) == 11
    assert all(torch.equal(z[0], iterates[0][0]) for z in iterates)
    assert all(not torch.equal(z[1], iterates[0][1]) for z in iterates[1:])


# ---- the optimum of a linear model --------------------------------------------------------
@pytest.fixture(scope="module")
def linear_problem() -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two classes, inputs in [0.3, 0.7]; the margin's gradient w_{1−y} − w_y is constant."""
    torch.manual_seed(1)
    model = nn.Linear(64, 2)
    x = torch.rand(200, 64) * 0.4 + 0.3
    y = model(x).argmax(1)
    direction = (model.weight[1 - y] - model.weight[y]).detach()
    return model, x, y, direction


def test_linf_reaches_the_linear_optimum(linear_problem):
    """With CE, the L∞ optimum is the corner x + ε·sign(w_j − w_y) (clipped): SA-PGD fools
    exactly the samples it fools, and the others end at its margin."""
    model, x, y, direction = linear_problem
    eps = 0.02
    best = margin_loss(model((x + eps * direction.sign()).clamp(0, 1)), y).detach()
    got = margin_loss(model(sapgd(model, x, y, eps, steps=30)), y).detach()
    fooled = best > 0
    assert 20 < fooled.sum() < 180
    assert torch.equal(got > 0, fooled)
    assert torch.allclose(got[~fooled], best[~fooled], atol=1e-5)


def test_a_fooled_sample_stops_at_its_first_fooling_iterate(linear_problem):
    """At ε = 0.3 some samples are fooled by their random start and the rest by the first
    step: those run no step, the others one, and each returns the iterate that fooled it."""
    model, x, y, _ = linear_problem
    recorder = Recorder(model)
    x_adv = sapgd(recorder, x, y, 0.3, steps=30)
    _, start, *steps = recorder.seen  # the first is the class check
    at_start = margin_loss(model(start), y) > 0
    assert 0 < at_start.sum() < len(x)
    assert [len(z) for z in steps] == [(~at_start).sum()]
    assert torch.equal(x_adv[at_start], start[at_start])
    assert torch.equal(x_adv[~at_start], steps[0])
    assert (margin_loss(model(x_adv), y) > 0).all()


def test_l2_reaches_the_linear_optimum(linear_problem):
    """The L2 extension steps along the momentum m at length η: on a linear model (constant
    g) it reaches the L2 optimum x + ε·g/‖g‖, beyond the sign direction of the L∞ step."""
    model, x, y, direction = linear_problem
    eps = 0.15
    unit = direction.sign() / direction.sign().norm(dim=1, keepdim=True)
    sign_end = margin_loss(model(x + eps * unit), y).detach()
    optimum = margin_loss(model(x + eps * F.normalize(direction, dim=1)), y).detach()
    got = margin_loss(model(sapgd(model, x, y, eps, steps=50, norm="l2")), y).detach()
    robust = (optimum < 0) & (sign_end < 0)
    assert robust.sum() > 20
    assert (optimum[robust] > sign_end[robust] + 1e-3).all()
    assert (got[robust] >= optimum[robust] - 0.05 * (optimum - sign_end)[robust]).all()


# ---- on a trained SNN ---------------------------------------------------------------------
class TinySNN(SpikingNetwork):
    def __init__(self) -> None:
        super().__init__((1, 8, 8), 10)
        self.fc1 = nn.Linear(64, 32)
        self.act = Neuron(32, activation="qcfs", levels=4, clip_value=2.0)
        self.fc2 = nn.Linear(32, 10)

    def forward_body(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x.flatten(1))))


@pytest.fixture(scope="module")
def digits_snn() -> tuple[TinySNN, torch.Tensor, torch.Tensor]:
    """A QCFS ANN trained on the 8x8 digits, converted and run at T = 4; 40 test samples."""
    digits = load_digits()
    x = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(digits.target)
    torch.manual_seed(0)
    model = TinySNN()
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(100):
        opt.zero_grad()
        F.cross_entropy(model(x[:1400]), y[:1400]).backward()
        opt.step()
    model.act.set_threshold(float(model.act.clip_value.detach()))
    model.act.configure(initial_potential="half")
    set_time_steps(model, 4)
    model.eval()
    assert (predict(model, x[1400:1440]) == y[1400:1440]).float().mean() > 0.8
    return model, x[1400:1440], y[1400:1440]


def test_results_do_not_depend_on_the_batch(digits_snn):
    model, x, y = digits_snn
    ids = torch.arange(100, 140)
    whole = sapgd(model, x, y, 0.1, steps=8, restarts=2, path="triangle:1.0", ids=ids)
    part = torch.tensor([7, 0, 33, 18])
    alone = sapgd(
        model, x[part], y[part], 0.1, steps=8, restarts=2, path="triangle:1.0", ids=ids[part]
    )
    assert torch.equal(whole[part], alone)


def test_the_member_runs_through_the_evaluator_and_beats_fgsm(digits_snn):
    model, x, y = digits_snn
    member = Member("sapgd", "triangle:1.0", steps=20)
    assert "sapgd" in GRADIENT_ATTACKS and member.name == "sapgd/triangle:1.0"
    assert member.cost == 20
    rows = torch.arange(x.shape[0])
    outcome = run_member(model, member, x, y, rows, eps=0.1, batch_size=16)
    assert torch.equal(outcome.rows, rows) and (outcome.norms <= 0.1 + 1e-6).all()
    baseline = run_member(model, Member("fgsm", "triangle:1.0"), x, y, rows, eps=0.1)
    assert outcome.fooled.sum() > baseline.fooled.sum()
    assert outcome.fooled.sum() < x.shape[0]
