"""Training: objectives (budget, modes, hand-computed steps), the loop (exact resume), finetune."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustsnn.data import DatasetInfo, ImageDataset, load_dataset
from robustsnn.snn import Neuron, SpikingNetwork, set_time_steps
from robustsnn.train import (
    LOG_FILE,
    evaluate_accuracy,
    fit,
    learning_rate,
    make_objective,
    mart_loss,
    rfgsm_kl,
    robust_finetune,
)

INFO = DatasetInfo("toy", (1, 4, 4), 3, (0.5,), (0.25,))


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class TinyNet(SpikingNetwork):
    """flatten → linear → BN → neuron → dropout → linear: an ANN at T = 0, an SNN at T > 0."""

    def __init__(self, shape=(1, 4, 4), hidden=12, classes=3, dropout=0.0, threshold=0.3):
        super().__init__(shape, classes)
        features = int(torch.tensor(shape).prod())
        self.fc1 = nn.Linear(features, hidden)
        self.bn = nn.BatchNorm1d(hidden)
        self.act = Neuron(hidden, threshold=threshold)
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, classes)

    def forward_body(self, x):
        return self.fc2(self.drop(self.act(self.bn(self.fc1(x.flatten(1))))))


def tiny(steps=0, seed=0, **kwargs):
    torch.manual_seed(seed)
    model = TinyNet(**kwargs)
    set_time_steps(model, steps)
    return model


def toy_data(n=48, seed=0):
    """Three linearly separable classes of 4x4 images in [0, 1], some pixels exactly 0 or 1."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    images = 0.2 * torch.rand(n, 1, 4, 4, generator=gen) + 0.4
    for c in range(3):
        images[labels == c, 0, c] += 0.5
    images[:, 0, 3, :2] = torch.tensor([0.0, 1.0])
    return ImageDataset(images.clamp(0, 1), labels, INFO)


ADVERSARIAL = [
    ("pgd_at", "pgd"),
    ("pgd_at", "rfgsm"),
    ("pgd_at", "fgsm"),
    ("trades", "pgd"),
    ("trades", "rfgsm"),
    ("trades", "fgsm"),
    ("mart", "pgd"),
    ("mart", "rfgsm"),
    ("mart", "fgsm"),
    ("rfgsm_kl", "rfgsm"),
]


# ---- objectives -------------------------------------------------------------------------------
@pytest.mark.parametrize("steps", [0, 2])
@pytest.mark.parametrize(("name", "inner"), ADVERSARIAL)
def test_adversarial_examples_stay_in_budget_and_move(name, inner, steps):
    model = tiny(steps)
    data = toy_data(12)
    eps = 0.1
    objective = make_objective(name, eps=eps, steps=3, inner=inner)
    gen = torch.Generator().manual_seed(1)
    x_adv = objective.perturb(model, data.images, data.labels, gen)
    delta = x_adv - data.images
    assert delta.abs().max() <= eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert delta.abs().max() > eps / 4  # the attack did something
    loss, metrics = objective(model, data.images, data.labels, gen)
    assert loss.requires_grad and torch.isfinite(loss)
    assert "adv_acc" in metrics and metrics["loss"] == pytest.approx(loss.item())


@pytest.mark.parametrize(
    ("name", "inner"), [("pgd_at", "pgd"), ("trades", "pgd"), ("mart", "rfgsm")]
)
def test_inner_attack_runs_in_eval_mode_and_restores_the_mode(name, inner):
    model = tiny(2, dropout=0.5)
    modes = []
    model.fc1.register_forward_pre_hook(lambda m, a: modes.append(m.training))
    data = toy_data(12)
    objective = make_objective(name, eps=0.1, steps=2, inner=inner)
    model.train()
    tracked = int(model.bn.num_batches_tracked)
    objective(model, data.images, data.labels, torch.Generator().manual_seed(0))
    assert model.training and all(m.training for m in model.modules())
    # only the outer-loss forwards run in train mode (and update BN's running statistics)
    outer = 1 if name == "pgd_at" else 2
    assert modes.count(True) == outer
    assert int(model.bn.num_batches_tracked) == tracked + outer
    assert modes.count(False) >= 1
    model.eval()
    objective.perturb(model, data.images, data.labels)
    assert not any(m.training for m in model.modules())


def test_inner_attack_uses_its_gradient_path_and_restores_it():
    model = tiny(2)
    seen = []
    model.act.register_forward_pre_hook(lambda m, a: seen.append(str(m.gradient_path)))
    data = toy_data(6)
    objective = make_objective("trades", eps=0.1, steps=2, gradient_path="rect:0.5")
    objective(model, data.images, data.labels)
    assert str(model.act.gradient_path) == "triangle:1.0"
    assert "rect:0.5" in seen and seen[0] == "triangle:1.0"  # clean outer forward first


def test_trades_equals_ce_when_eps_is_zero():
    model = tiny(2).train()
    data = toy_data(12)
    loss, metrics = make_objective("trades", eps=0.0, steps=3)(model, data.images, data.labels)
    expected = F.cross_entropy(model(data.images), data.labels)
    assert torch.allclose(loss, expected, atol=1e-6)
    assert metrics["kl"] == pytest.approx(0.0, abs=1e-6)


class Linear(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x)


def test_pgd_at_matches_a_hand_computed_step():
    model = Linear()
    x = torch.tensor([[0.5, 0.02, 0.98, 0.3], [0.1, 0.7, 0.5, 0.99]])
    y = torch.tensor([2, 0])
    eps, alpha = 0.05, 0.02
    objective = make_objective("pgd_at", eps=eps, steps=1, step_size=alpha)
    loss, _ = objective(model, x, y, torch.Generator().manual_seed(5))
    w, b = model.fc.weight.detach(), model.fc.bias.detach()
    u = torch.rand(x.shape, generator=torch.Generator().manual_seed(5))
    start = torch.minimum(torch.maximum(x + eps * (2 * u - 1), x - eps), x + eps).clamp(0, 1)
    # d CE / d x for a linear model: W^T (softmax(W x + b) − onehot(y))
    grad = (torch.softmax(start @ w.T + b, 1) - F.one_hot(y, 3).float()) @ w
    step = torch.minimum(torch.maximum(start + alpha * grad.sign(), x - eps), x + eps).clamp(0, 1)
    logits = step @ w.T + b
    hand = -(logits.log_softmax(1).gather(1, y[:, None])).mean()
    assert torch.allclose(loss, hand, atol=1e-6)
    assert torch.allclose(objective.perturb(model, x, y, torch.Generator().manual_seed(5)), step)


def test_rfgsm_kl_takes_a_random_then_a_gradient_sign_step():
    model = tiny(2).eval()
    x = torch.full((4, 1, 4, 4), 0.5)
    eps = 0.1
    x_adv = rfgsm_kl(model, x, eps=eps, generator=torch.Generator().manual_seed(0))
    delta = (x_adv - x).flatten()
    # α = ε/2: α·sign(noise) + (ε − α)·sign(gradient) ∈ {−ε, 0, ε}
    allowed = torch.tensor([-eps, 0.0, eps])
    assert torch.isclose(delta[:, None], allowed[None], atol=1e-6).any(1).all()
    assert (delta.abs() > eps / 2).any()


def test_mart_loss_matches_its_formula():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
    logits_adv = torch.tensor([[0.5, 1.5, -1.0], [0.3, 0.2, 0.1]])
    y = torch.tensor([0, 2])
    beta = 4.0
    p, q = logits.softmax(1), logits_adv.softmax(1)
    total = 0.0
    for i in range(2):
        wrong = max((c for c in range(3) if c != y[i]), key=lambda c: q[i, c])
        boosted = -torch.log(q[i, y[i]]) - torch.log(1.0001 - q[i, wrong])
        kl = (p[i] * (p[i].log() - q[i].log())).sum()
        total = total + boosted + beta * kl * (1.0000001 - p[i, y[i]])
    assert torch.allclose(mart_loss(logits, logits_adv, y, beta), total / 2, atol=1e-5)


def test_objective_defaults_and_mistakes():
    assert make_objective("trades").beta == 6.0
    assert make_objective("mart").beta == 4.0
    finetune = make_objective("rfgsm_kl", eps=2 / 255)
    assert (finetune.beta, finetune.inner) == (2.0, "rfgsm")
    assert finetune.effective_step_size() == pytest.approx(1 / 255)
    assert make_objective("pgd_at", eps=0.1, steps=10).effective_step_size() == pytest.approx(0.025)
    with pytest.raises(ValueError, match="objective must be one of"):
        make_objective("madry")
    with pytest.raises(ValueError, match="inner attack"):
        make_objective("trades", inner="apgd")
    with pytest.raises(ValueError, match="α <= ε"):
        make_objective("trades", eps=0.1, inner="rfgsm", step_size=0.2)
    with pytest.raises(ValueError, match="eps"):
        make_objective("pgd_at", eps=-1)
    with pytest.raises(ValueError, match="no adversarial"):
        make_objective("ce").perturb(tiny(), torch.zeros(1, 1, 4, 4), torch.zeros(1).long())


# ---- the loop ---------------------------------------------------------------------------------
def test_learning_rate_schedules():
    assert learning_rate(0.1, 0, 10, "cosine") == pytest.approx(0.1)
    assert learning_rate(0.1, 5, 10, "cosine") == pytest.approx(0.05)
    assert learning_rate(0.1, 7, 10, "step", [3, 6], 0.1) == pytest.approx(0.001)
    assert learning_rate(0.1, 7, 10, "none") == 0.1
    with pytest.raises(ValueError, match="schedule"):
        learning_rate(0.1, 0, 10, "linear")


@pytest.fixture(scope="module")
def digits():
    train = load_dataset("digits", "train")
    test = load_dataset("digits", "test")
    return train.take(400), test.take(200)


def test_fit_reduces_the_loss_on_digits(digits, tmp_path):
    train, test = digits
    model = tiny(shape=(1, 8, 8), hidden=32, classes=10)
    batches_seen = []

    class Listener:
        def on_batch(self, epoch, index, total, metrics):
            batches_seen.append((epoch, index, total))

    result = fit(
        model,
        train,
        objective=make_objective("ce"),
        epochs=4,
        batch_size=50,
        lr=0.05,
        eval_set=test,
        checkpoint_dir=tmp_path,
        callbacks=Listener(),
    )
    losses = [r["train_loss"] for r in result.history]
    assert losses[-1] < 0.5 * losses[0]
    assert result.final["eval_acc"] > 0.7
    assert result.final["eval_acc"] == evaluate_accuracy(model, test)
    assert not model.training
    assert batches_seen[:2] == [(0, 0, 8), (0, 1, 8)] and len(batches_seen) == 32
    lines = [json.loads(line) for line in (tmp_path / LOG_FILE).read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [0, 1, 2, 3]
    assert {"lr", "train_loss", "train_acc", "eval_acc", "seconds"} <= set(lines[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "log.jsonl",
        "state-0003.safetensors",
        "state.json",
    ]


class Kill(Exception):
    pass


def _resumable_run(directory, callbacks=None, resume=False, init_seed=0):
    model = tiny(2, seed=init_seed, dropout=0.3)
    rng = torch.get_rng_state()
    result = fit(
        model,
        toy_data(30),
        objective=make_objective("trades", eps=0.1, steps=2),
        epochs=2,
        batch_size=8,
        lr=0.05,
        augment=lambda x, gen: (x + 0.05 * torch.randn(x.shape, generator=gen)).clamp(0, 1),
        checkpoint_dir=directory,
        resume=resume,
        callbacks=callbacks,
        seed=3,
    )
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's random state is untouched
    return model, result


def test_resume_gives_bit_identical_weights(tmp_path):
    reference, full = _resumable_run(tmp_path / "full")

    class KillInSecondEpoch:
        def on_batch(self, epoch, index, total, metrics):
            if epoch == 1 and index == 2:
                raise Kill

    with pytest.raises(Kill):
        _resumable_run(tmp_path / "cut", KillInSecondEpoch())
    model, resumed = _resumable_run(tmp_path / "cut", resume=True, init_seed=99)
    assert resumed.resumed_from == 1
    expected, got = reference.state_dict(), model.state_dict()
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in full.history]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in resumed.history] == strip
    log = (tmp_path / "cut" / LOG_FILE).read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == [0, 1]
    # resuming a finished run trains nothing and restores the final weights
    again, done = _resumable_run(tmp_path / "cut", resume=True, init_seed=5)
    assert done.resumed_from == 2 and len(done.history) == 2
    assert all(torch.equal(expected[k], v) for k, v in again.state_dict().items())


def test_resume_refuses_other_settings_and_without_state_starts_fresh(tmp_path):
    model = tiny()
    data = toy_data(12)
    fit(model, data, objective=make_objective("ce"), epochs=1, checkpoint_dir=tmp_path, lr=0.1)
    with pytest.raises(ValueError, match="lr"):
        fit(
            tiny(),
            data,
            objective=make_objective("ce"),
            epochs=2,
            lr=0.2,
            checkpoint_dir=tmp_path,
            resume=True,
        )
    fresh = fit(
        tiny(),
        data,
        objective=make_objective("ce"),
        epochs=1,
        checkpoint_dir=tmp_path / "new",
        resume=True,
    )
    assert fresh.resumed_from is None and len(fresh.history) == 1


def test_fit_rejects_mistakes():
    data = toy_data(6)
    with pytest.raises(ValueError, match="optimizer"):
        fit(tiny(), data, objective=make_objective("ce"), epochs=1, optimizer="rmsprop")
    with pytest.raises(ValueError, match="epochs"):
        fit(tiny(), data, objective=make_objective("ce"), epochs=0)
    with pytest.raises(ValueError, match="diverged"):
        fit(tiny(), data, objective=lambda m, x, y, g: (m(x).sum() * float("nan"), {}), epochs=1)


# ---- robust finetuning ------------------------------------------------------------------------
def test_robust_finetune_trains_thresholds_with_the_surrogate(tmp_path):
    snn = tiny(2)
    snn.act.configure(gradient_path="rect:1.0")
    before = snn.act.threshold.detach().clone()
    assert not snn.act.threshold.requires_grad
    result = robust_finetune(
        snn,
        toy_data(24),
        epochs=1,
        lr=0.05,
        eps=0.1,
        batch_size=8,
        eval_set=toy_data(9, seed=1),
        checkpoint_dir=tmp_path,
    )
    assert snn.act.threshold.requires_grad
    assert not torch.equal(snn.act.threshold.detach(), before)
    assert str(snn.act.gradient_path) == "triangle:1.0"
    record = result.final
    assert {"train_loss", "train_acc", "train_adv_acc", "train_kl", "eval_acc"} <= set(record)
    saved = json.loads((tmp_path / "state.json").read_text())["progress"]["settings"]
    assert saved["objective"]["step_size"] == pytest.approx(0.05)
    assert saved["objective"]["gradient_path"] == "triangle:1.0"
    assert (saved["weight_decay"], saved["momentum"]) == (1e-3, 0.9)


def test_robust_finetune_needs_an_snn():
    with pytest.raises(ValueError, match="needs an SNN"):
        robust_finetune(tiny(0), toy_data(6), epochs=1)
    with pytest.raises(ValueError, match="loss"):
        robust_finetune(tiny(2), toy_data(6), epochs=1, loss="pgd_at")
