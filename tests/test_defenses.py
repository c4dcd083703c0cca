"""Direct-training defenses: HIRE-SNN periods and noise, SR's finite difference, the direct
trainer, the config section and ``compare``."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

from robustsnn.cli import app
from robustsnn.compare import compare_runs, markdown_table
from robustsnn.config import ConfigError, load_config
from robustsnn.data.dataset import DatasetInfo, ImageDataset
from robustsnn.models import create_model
from robustsnn.snn import get_time_steps, set_time_steps
from robustsnn.train import (
    HireObjective,
    SparsityObjective,
    finite_difference_sensitivity,
    prepare_snn,
    train_direct,
    two_class_probability,
)

INFO = DatasetInfo("tiny", (1, 8, 8), 10, (0.0,), (1.0,))


def tiny_snn(time_steps: int = 8) -> nn.Module:
    torch.manual_seed(0)
    model = create_model("small_cnn", input_shape=(1, 8, 8), channels=[4, 8], hidden=16)
    return prepare_snn(model, time_steps, "triangle:1.0")


class CountingSGD(torch.optim.SGD):
    """SGD that counts its steps."""

    def __init__(self, params, **kwargs) -> None:
        super().__init__(params, **kwargs)
        self.count = 0

    def step(self, closure=None):
        self.count += 1
        return super().step(closure)


# ---- HIRE-SNN ------------------------------------------------------------------------------
@pytest.mark.parametrize("periods", [1, 2, 4])
def test_hire_splits_time_steps_into_periods_with_one_update_each(periods: int) -> None:
    model = tiny_snn(8)
    seen: list[int] = []
    model.register_forward_pre_hook(lambda m, args: seen.append(get_time_steps(m)))
    opt = CountingSGD(model.parameters(), lr=0.01)
    hire = HireObjective(periods=periods, eps=0.1)
    x, y = torch.rand(6, 1, 8, 8), torch.arange(6)
    loss, metrics = hire.train_step(model.train(), x, y, None, opt)
    assert seen == [8 // periods] * periods
    assert opt.count == periods
    assert get_time_steps(model) == 8  # restored after the batch
    assert torch.isfinite(loss) and set(metrics) >= {"loss", "acc", "noisy_acc"}


def test_hire_through_fit_makes_n_steps_per_batch() -> None:
    model = tiny_snn(4)
    data = ImageDataset(torch.rand(10, 1, 8, 8), torch.arange(10), INFO)
    counts: list[int] = []
    original = torch.optim.SGD.step

    def counting_step(self, closure=None):
        counts.append(1)
        return original(self, closure)

    torch.optim.SGD.step = counting_step
    try:
        train_direct(model, data, method="hire", time_steps=4, eps=0.1, epochs=1, batch_size=4)
    finally:
        torch.optim.SGD.step = original
    assert len(counts) == 2 * 3  # N = 2 periods × 3 batches


def test_hire_rejects_time_steps_not_divisible_by_periods() -> None:
    model = tiny_snn(6)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with pytest.raises(ValueError, match="not a multiple"):
        HireObjective(periods=4).train_step(
            model, torch.rand(2, 1, 8, 8), torch.arange(2), None, opt
        )


@pytest.mark.parametrize("accumulate", [True, False])
def test_hire_noise_stays_in_its_bound_and_in_unit_range(accumulate: bool) -> None:
    eps = 0.05
    hire = HireObjective(periods=4, eps=eps, step_size=0.03, accumulate=accumulate)
    model = tiny_snn(8)
    inputs: list[torch.Tensor] = []
    model.register_forward_pre_hook(lambda m, args: inputs.append(args[0].detach().clone()))
    x = torch.rand(8, 1, 8, 8)
    x[:4] = (x[:4] > 0.5).float()  # pixels at exactly 0 and 1
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    hire.train_step(model.train(), x, torch.arange(8), None, opt)
    assert len(inputs) == 4
    assert torch.equal(inputs[0], x)  # the first period sees the clean image
    for noisy in inputs[1:]:
        assert (noisy - x).abs().max() <= eps + 1e-6
        assert noisy.min() >= 0 and noisy.max() <= 1
    assert any((noisy - x).abs().max() > 0 for noisy in inputs[1:])
    # many steps of one sign accumulate up to the bound, never past it
    delta = torch.zeros_like(x)
    for _ in range(5):
        delta = hire.next_noise(x, delta, torch.ones_like(x))
        assert delta.abs().max() <= eps + 1e-6 and (x + delta).max() <= 1
    expected = min(eps, 5 * 0.03) if accumulate else 0.03
    inside = (x < 0.5).flatten()
    assert torch.allclose(delta.flatten()[inside], torch.full_like(x.flatten()[inside], expected))


def test_hire_updated_noise_gradient_uses_an_extra_pass() -> None:
    model = tiny_snn(8)
    calls: list[int] = []
    model.register_forward_pre_hook(lambda m, args: calls.append(get_time_steps(m)))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    hire = HireObjective(periods=2, eps=0.1, noise_gradient="updated")
    hire.train_step(model.train(), torch.rand(4, 1, 8, 8), torch.arange(4), None, opt)
    assert calls == [4, 4, 4]  # period 1, the gradient with the updated weights, period 2


# ---- SR ------------------------------------------------------------------------------------
def test_sr_finite_difference_matches_a_hand_computation() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    x = torch.rand(5, 1, 2, 2)
    y = torch.tensor([0, 1, 2, 0, 1])
    h = 0.01
    fd, logits = finite_difference_sensitivity(model, x, y, h)

    weight, bias = model[1].weight.detach(), model[1].bias.detach()
    flat = x.flatten(1)
    z = flat @ weight.T + bias
    expected = []
    for b in range(5):
        others = [i for i in range(3) if i != y[b]]
        j = max(others, key=lambda i: z[b, i])
        diff_w = weight[y[b]] - weight[j]
        margin = float(z[b, y[b]] - z[b, j])
        p = 1 / (1 + math.exp(-margin))
        direction = torch.sign(p * (1 - p) * diff_w)  # sign of ∇_x p̃ for a linear model
        shifted = margin + h * float(diff_w @ direction)
        expected.append((1 / (1 + math.exp(-shifted)) - p) / h)
    assert torch.allclose(logits, z, atol=1e-6)
    assert torch.allclose(fd, torch.tensor(expected), atol=1e-5)


def test_sr_loss_is_ce_plus_weighted_mean_square_and_trains_both_passes() -> None:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    x, y = torch.rand(6, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1, 2])
    objective = SparsityObjective(weight=0.3, h=0.01)
    loss, metrics = objective(model, x, y)
    fd, logits = finite_difference_sensitivity(model, x, y, 0.01)
    expected = F.cross_entropy(logits, y) + 0.3 * (fd**2).mean()
    assert torch.allclose(loss, expected, atol=1e-6)
    assert metrics["fd2"] == pytest.approx(float((fd**2).mean().detach()), rel=1e-5)
    loss.backward()
    assert model[1].weight.grad is not None and model[1].weight.grad.abs().sum() > 0


def test_sr_direction_fd_approximates_the_l1_gradient_norm() -> None:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    x, y = torch.rand(4, 1, 2, 2), torch.tensor([0, 1, 2, 0])
    fd, logits = finite_difference_sensitivity(model, x, y, 1e-4)
    xg = x.clone().requires_grad_(True)
    z = model(xg)
    rival = z.detach().clone().scatter_(1, y[:, None], float("-inf")).argmax(1)
    (grad,) = torch.autograd.grad(two_class_probability(z, y, rival).sum(), xg)
    assert torch.allclose(fd, grad.flatten(1).abs().sum(1), rtol=1e-2, atol=1e-4)


# ---- the direct trainer ---------------------------------------------------------------------
def _separable(n: int = 48) -> ImageDataset:
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 2
    images = 0.2 * torch.rand(n, 1, 8, 8, generator=gen)
    images[labels == 1, :, :4] += 0.7
    return ImageDataset(images.clamp(0, 1), labels, INFO)


@pytest.mark.parametrize("method", ["ce", "sr"])
def test_direct_training_lowers_the_loss(method: str) -> None:
    torch.manual_seed(0)
    model = create_model("small_cnn", input_shape=(1, 8, 8), channels=[4, 8], hidden=16)
    result = train_direct(
        model, _separable(), method=method, time_steps=4, epochs=4, batch_size=16, lr=0.05
    )
    losses = [r["train_loss"] for r in result.history]
    assert losses[-1] < losses[0]
    assert get_time_steps(model) == 4
    assert all(str(n.gradient_path) == "triangle:1.0" for _, n in model.neurons())


def test_direct_adversarial_training_runs_through_bptt() -> None:
    model = create_model("small_cnn", input_shape=(1, 8, 8), channels=[4, 8], hidden=16)
    result = train_direct(
        model, _separable(16), method="pgd_at", time_steps=2, eps=0.1, steps=2, epochs=1
    )
    assert "train_adv_acc" in result.final


def test_rate_coded_training_is_stochastic_per_forward() -> None:
    torch.manual_seed(0)
    model = create_model(
        "small_cnn", input_shape=(1, 8, 8), channels=[4, 8], hidden=16, encoding="poisson"
    )
    set_time_steps(model, 4)
    x = torch.rand(4, 1, 8, 8)
    assert not torch.equal(model(x), model(x))
    result = train_direct(model, _separable(16), method="ce", time_steps=4, epochs=1)
    assert math.isfinite(result.final["train_loss"])


# ---- config ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"method": "hybrid"}, "method: 'hybrid' is not one of conversion, direct"),
        ({"direct.objective": "fgsm"}, "direct.objective: 'fgsm' is not one of ce, pgd_at"),
        ({"direct.encoding": "latency"}, "direct.encoding: 'latency' is not one of direct"),
        ({"direct.init": "ann"}, "direct.init: 'ann' is not one of scratch, converted"),
        ({"direct.hire.noise_gradient": "old"}, "direct.hire.noise_gradient: 'old' is not one"),
        (
            {"direct.objective": "hire", "direct.hire.periods": 3},
            "direct.hire.periods: must divide",
        ),
        ({"direct.sr.lambda": 1}, "unknown key 'direct.sr.lambda'; accepted: weight, h"),
        ({"direct.sr.h": 0}, "direct.sr.h: must be > 0"),
        ({"direct.time_steps": 0}, "direct.time_steps: must be >= 1"),
        ({"direct.surrogate": "nope:1"}, "direct.surrogate:"),
    ],
)
def test_direct_config_errors_name_the_key(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config("mnist5k_direct_ce", overrides)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_conversion_configs_keep_their_method_and_direct_presets_load() -> None:
    assert load_config("demo").method == "conversion"
    hire = load_config("mnist5k_hire")
    assert (hire.method, hire.direct.objective, hire.direct.hire.periods) == ("direct", "hire", 2)
    assert load_config("mnist5k_rate_ce").direct.encoding == "poisson"
    assert load_config("mnist5k_hire_hybrid").direct.init == "converted"
    assert load_config("mnist5k_sr_at").direct.sr.adversarial is True


# ---- compare --------------------------------------------------------------------------------
def _stage(clean: float, robust: float, steps: int) -> dict:
    return {
        "suite": "quick",
        "samples": 100,
        "clean_accuracy": clean,
        "robust": {"0.1": {"worst_case_accuracy": robust, "per_member": {}}},
        "time_steps": steps,
        "attack": {"suite": "quick", "samples": 100, "paths": ["triangle:1.0"]},
    }


def _fake_runs(tmp_path) -> tuple:
    conversion = tmp_path / "conv"
    conversion.mkdir()
    (conversion / "summary.json").write_text(
        json.dumps(
            {
                "name": "conv",
                "time_steps": 8,
                "stages": {
                    "ann": _stage(0.99, 0.95, 0),
                    "snn_converted": _stage(0.97, 0.90, 8),
                    "snn_finetuned": _stage(0.98, 0.92, 8),
                },
                "wall_time_s": {
                    "ann": 100.0,
                    "snn_converted": 10.0,
                    "snn_finetuned": 200.0,
                    "evaluate_ann": 50.0,
                },
                "energy": {"snn": {"8": {"spikes_per_image": 1234.0}}},
            }
        )
    )
    (conversion / "config.yaml").write_text("ann:\n  objective: pgd_at\n")
    direct = tmp_path / "direct"
    direct.mkdir()
    (direct / "summary.json").write_text(
        json.dumps(
            {
                "name": "hire",
                "method": "direct",
                "objective": "hire",
                "encoding": "direct",
                "time_steps": 8,
                "stages": {"snn_direct": _stage(0.96, 0.5, 8)},
                "wall_time_s": {"snn_direct": 42.0, "evaluate_snn_direct": 9.0},
                "training_wall_time_s": 42.0,
                "spikes_per_image": 999.0,
            }
        )
    )
    return conversion, direct


def test_compare_rows_from_two_run_directories(tmp_path) -> None:
    conversion, direct = _fake_runs(tmp_path)
    result = compare_runs([conversion, direct])
    first, second = result["rows"]
    assert first["method"] == "conversion+finetune (ANN pgd_at)"
    assert first["stage"] == "snn_finetuned"
    assert first["clean_accuracy"] == 0.98 and first["robust"] == {"0.1": 0.92}
    assert first["training_wall_time_s"] == pytest.approx(310.0)  # evaluation not counted
    assert first["spikes_per_image"] == 1234.0 and first["time_steps"] == 8
    assert second["method"] == "direct:hire"
    assert (second["training_wall_time_s"], second["spikes_per_image"]) == (42.0, 999.0)
    assert result["eps"] == ["0.1"] and result["same_suite"]
    table = markdown_table(result)
    assert "| conv | conversion+finetune (ANN pgd_at) | 98.0 | 92.0 | 310 | 8 | 1234 |" in table
    assert "| hire | direct:hire | 96.0 | 50.0 | 42 | 8 | 999 |" in table


def test_compare_command_prints_the_table_and_refuses_a_missing_run(tmp_path) -> None:
    conversion, direct = _fake_runs(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["compare", str(conversion), str(direct), "--markdown"])
    assert result.exit_code == 0, result.output
    assert "direct:hire" in result.output and "92.0" in result.output
    missing = runner.invoke(app, ["compare", str(tmp_path / "nothing")])
    assert missing.exit_code != 0


# ---- the run -------------------------------------------------------------------------------
def test_direct_run_writes_a_summary_that_compare_reads(tmp_path) -> None:
    from robustsnn.pipeline import run

    config = load_config(
        "mnist5k_hire",
        {
            "data.dataset": "digits",
            "data.train_samples": 32,
            "data.test_samples": 8,
            "direct.epochs": 1,
            "direct.time_steps": 2,
            "direct.hire.periods": 2,
            "evaluation.samples": 8,
            "evaluation.paths": ["triangle:1.0"],
            "evaluation.steps": 2,
            "evaluation.time_steps_curve": [1, 2],
            "evaluation.options": {"diagnostics": False},
            "energy.enabled": False,
            "energy.samples": 4,
        },
    )
    summary = run(config, tmp_path / "hire")
    stage = summary["stages"]["snn_direct"]
    assert summary["method"] == "direct" and summary["objective"] == "hire"
    assert summary["time_steps"] == 2 and summary["spikes_per_image"] > 0
    assert summary["training_wall_time_s"] > 0
    assert set(stage["robust"]) == {"0.1"} and "per_member" in stage["robust"]["0.1"]
    assert (tmp_path / "hire" / "report.md").read_text().count("HIRE-SNN") == 1
    row = compare_runs([tmp_path / "hire"])["rows"][0]
    assert row["method"] == "direct:hire" and row["clean_accuracy"] == stage["clean_accuracy"]
    again = run(config, tmp_path / "hire")  # the checkpoint is loaded, not retrained
    assert again["training_wall_time_s"] == pytest.approx(summary["training_wall_time_s"])
