"""Attacks and the worst-case evaluator: budgets, analytic optima, determinism, order, resume."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

from robustsnn.attacks import (
    DIAGNOSTICS,
    Member,
    Suite,
    Victim,
    apgd,
    apgd_t,
    ce_loss,
    correct_fraction,
    evaluate,
    fgsm,
    get_suite,
    list_suites,
    load_suite,
    perturbation_norm,
    pgd,
    predict,
    rfgsm,
    square,
    worst_case_accuracy,
)
from robustsnn.attacks.reference import autoattack_available, autoattack_cross_check
from robustsnn.snn import Neuron, SpikingNetwork, set_time_steps


class TinySNN(SpikingNetwork):
    """Flatten → linear → neuron → linear: an 8x8 digits classifier that trains in a second."""

    def __init__(self, hidden: int = 48, encoding: str = "direct") -> None:
        super().__init__((1, 8, 8), 10, encoding=encoding)
        self.fc1 = nn.Linear(64, hidden)
        self.act = Neuron(hidden, activation="qcfs", levels=4, clip_value=2.0)
        self.fc2 = nn.Linear(hidden, 10)

    def forward_body(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x.flatten(1))))


def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    d = load_digits()
    x = torch.tensor(d.images / 16.0, dtype=torch.float32).unsqueeze(1)
    return x, torch.tensor(d.target)


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    return _digits()


@pytest.fixture(scope="module")
def snn(digits) -> TinySNN:
    """Trained as a QCFS ANN (full batch, Adam), converted (θ = λ, v0 = θ/2), run at T = 4."""
    torch.manual_seed(0)
    x, y = digits
    model = TinySNN()
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(150):
        opt.zero_grad()
        F.cross_entropy(model(x[:1400]), y[:1400]).backward()
        opt.step()
    model.act.set_threshold(float(model.act.clip_value.detach()))
    model.act.configure(initial_potential="half")
    set_time_steps(model, 4)
    return model.eval()


@pytest.fixture(scope="module")
def test_set(digits) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = digits
    return x[1400:1440], y[1400:1440]


def test_tiny_snn_is_a_real_classifier(snn, test_set):
    x, y = test_set
    assert (predict(snn, x) == y).float().mean() > 0.8


# ---- budgets ----------------------------------------------------------------------------
ATTACK_CALLS = {
    "fgsm": lambda m, x, y, e, n: fgsm(m, x, y, e, norm=n),
    "rfgsm": lambda m, x, y, e, n: rfgsm(m, x, y, e, norm=n),
    "pgd": lambda m, x, y, e, n: pgd(m, x, y, e, norm=n, steps=5, restarts=2),
    "pgd-ann": lambda m, x, y, e, n: pgd(m, x, y, e, norm=n, steps=3, path="ann"),
    "apgd-ce": lambda m, x, y, e, n: apgd(m, x, y, e, norm=n, steps=8),
    "apgd-dlr": lambda m, x, y, e, n: apgd(m, x, y, e, norm=n, steps=8, loss="dlr"),
    "apgd-t": lambda m, x, y, e, n: apgd_t(m, x, y, e, norm=n, steps=4, targets=2),
    "square": lambda m, x, y, e, n: square(m, x, y, e, queries=40),
}


BUDGETS = [
    (attack, norm, eps)
    for attack in sorted(ATTACK_CALLS)
    for norm, eps in (("linf", 0.1), ("l2", 0.8))
    if not (attack == "square" and norm == "l2")  # Square is L∞ only
]


@pytest.mark.parametrize("attack,norm,eps", BUDGETS)
def test_no_adversarial_example_leaves_its_budget(snn, test_set, attack, norm, eps):
    x, y = test_set[0][:12], test_set[1][:12]
    x_adv = ATTACK_CALLS[attack](snn, x, y, eps, norm)
    assert x_adv.shape == x.shape
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (perturbation_norm(x_adv, x, norm) <= eps * (1 + 1e-5)).all()
    assert not torch.equal(x_adv, x)


def test_model_mode_is_restored(snn, test_set):
    snn.train()
    try:
        pgd(snn, test_set[0][:4], test_set[1][:4], 0.1, steps=2)
        assert snn.training
    finally:
        snn.eval()


# ---- analytic worst case of a linear model ----------------------------------------------
def _box_worst_case(w: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor, eps):
    """Exact L∞ worst case of a linear classifier in the ε-box ∩ [0, 1]: for each wrong class
    j, x_i moves to its upper bound where (w_j − w_y)_i > 0 and its lower bound otherwise,
    i.e. x − ε·sign(w_y − w_j) clipped to [0, 1]; returns the best margin and its point."""
    lo, hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    best_margin = torch.full((x.shape[0],), -float("inf"))
    best_point = x.clone()
    for j in range(w.shape[0]):
        diff = w[j] - w[y]
        point = torch.where(diff > 0, hi, lo)
        margin = (diff * point).sum(1) + b[j] - b[y]
        margin[y == j] = -float("inf")
        better = margin > best_margin
        best_margin[better], best_point[better] = margin[better], point[better]
    return best_margin, best_point


def _linear(inputs: int, classes: int, seed: int) -> nn.Linear:
    torch.manual_seed(seed)
    model = nn.Linear(inputs, classes)
    with torch.no_grad():
        model.weight.normal_()
        model.bias.zero_()
    return model.eval()


def test_pgd_finds_the_analytic_worst_case_of_a_binary_linear_model():
    model = _linear(20, 2, seed=1)
    torch.manual_seed(2)
    x = torch.rand(200, 20)
    y = model(x).argmax(1)  # every sample correct before the attack
    eps = 0.08
    margin, corner = _box_worst_case(model.weight, model.bias, x, y, eps)
    x_adv = pgd(model, x, y, eps, steps=10)
    fooled = predict(model, x_adv) != y
    assert torch.equal(fooled, margin > 0)
    assert 0 < fooled.sum() < 200
    # robust samples end on the exact optimum (PGD moves 2.5ε along a fixed sign)
    assert torch.allclose(x_adv[~fooled], corner[~fooled], atol=1e-6)


def test_pgd_matches_the_analytic_worst_case_of_a_multiclass_linear_model():
    model = _linear(16, 5, seed=3)
    torch.manual_seed(4)
    x = torch.rand(300, 16)
    y = model(x).argmax(1)
    eps = 0.1
    margin, _ = _box_worst_case(model.weight, model.bias, x, y, eps)
    clear = margin.abs() > 0.3  # away from the decision boundary
    x_adv = pgd(model, x, y, eps, steps=20, restarts=2)
    fooled = predict(model, x_adv) != y
    assert clear.sum() > 200
    assert torch.equal(fooled[clear], (margin > 0)[clear])
    targeted = apgd_t(model, x, y, eps, steps=20, targets=4)
    assert torch.equal((predict(model, targeted) != y)[clear], (margin > 0)[clear])


# ---- the worst case over members ---------------------------------------------------------
PATHS = ["triangle:1.0", "rect:0.5", "ann"]


def test_worst_case_is_below_every_member_and_independent_of_order(snn, test_set):
    x, y = test_set
    forward = worst_case_accuracy(snn, x, y, eps=0.1, paths=PATHS, steps=5, standalone=True)
    assert set(forward.alone) == {f"pgd/{p}" for p in PATHS}
    assert forward.robust_accuracy <= min(forward.alone.values())
    assert forward.robust_accuracy < forward.clean_accuracy
    values = list(forward.per_member.values())
    assert values == sorted(values, reverse=True)
    backward = worst_case_accuracy(snn, x, y, eps=0.1, paths=PATHS[::-1], steps=5, batch_size=7)
    assert backward.robust == forward.robust
    assert backward.robust_accuracy == forward.robust_accuracy


def test_identical_calls_give_identical_results(snn, test_set):
    x, y = test_set
    first = worst_case_accuracy(snn, x, y, eps=0.1, paths=PATHS, attack="rfgsm")
    second = worst_case_accuracy(snn, x, y, eps=0.1, paths=PATHS, attack="rfgsm")
    assert first == second
    assert torch.equal(apgd(snn, x, y, 0.1, steps=6), apgd(snn, x, y, 0.1, steps=6))


def test_results_do_not_depend_on_batch_composition(snn, test_set):
    x, y = test_set
    ids = torch.arange(40, 80)
    member = Member("apgd-dlr", "triangle:1.0", steps=6)
    whole = member.craft(snn, x, y, 0.1, ids=ids)
    part = torch.tensor([5, 0, 31, 17])
    alone = member.craft(snn, x[part], y[part], 0.1, ids=ids[part])
    assert torch.equal(whole[part], alone)


def test_unbounded_eps_drives_accuracy_to_zero(snn, test_set):
    x, y = test_set
    result = worst_case_accuracy(snn, x, y, eps=1.0, paths=["triangle:1.0", "ann"], steps=20)
    assert result.clean_accuracy > 0.8
    assert result.robust_accuracy == 0.0


def test_bad_arguments_are_refused(snn, test_set):
    x, y = test_set
    with pytest.raises(ValueError, match="attack must be one of"):
        worst_case_accuracy(snn, x, y, eps=0.1, paths=PATHS, attack="cw")
    with pytest.raises(ValueError, match="norm must be one of"):
        pgd(snn, x, y, 0.1, norm="l1")
    with pytest.raises(ValueError, match="eps must be >= 0"):
        fgsm(snn, x, y, -0.1)


# ---- suites ----------------------------------------------------------------------------
def test_builtin_suites_have_the_documented_members():
    paper = get_suite("paper")
    names = [m.name for m in paper.members()]
    assert len(names) == 5 * 19 and names[0] == "fgsm/triangle:1.0" and "apgd-t/ann" in names
    assert paper.apgd_steps == 100 and paper.steps == 10
    full = get_suite("full")
    assert [m.name for m in full.members()][-1] == "square"
    assert "pgd/pdsg" in {m.name for m in full.members()}
    assert "sapgd/assg:atan:0.425/dr" in {m.name for m in full.members()}
    quick = get_suite("quick")
    assert [m.name for m in quick.members(spiking=False)] == ["fgsm", "pgd", "sapgd"]
    assert "pgd/arctan:8.0/dr" in {m.name for m in quick.members()}
    strong = get_suite("strong")
    assert [m.name for m in strong.members()] == [
        "sapgd/assg:atan:0.425/dr", "apgd-dlr/arctan:8.0/dr", "apgd-dlr/assg:atan:0.425/dr",
        "pgd/ann",
    ]  # fmt: skip
    assert [m.name for m in strong.members(spiking=False)] == ["sapgd", "apgd-dlr", "pgd"]
    assert [m.steps for m in strong.members()] == [100, 100, 100, 10]
    assert set(list_suites()) >= {"strong", "quick", "paper", "full"}


def test_suites_load_from_yaml_and_refuse_bad_keys(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("base: quick\neps: [0.1, 0.2]\npaths: [triangle:1.0, ann]\nsamples: 10\n")
    suite = load_suite(path, samples=20)
    assert suite.name == "mine" and suite.eps == [0.1, 0.2] and suite.samples == 20
    assert suite.attacks == ["fgsm", "pgd"]
    assert suite.path_list() == ["triangle:1.0", "ann", "assg:atan:0.425/dr"]
    assert Suite.from_dict(suite.to_dict()) == suite
    with pytest.raises(ValueError, match="unknown suite key 'step'.*accepted: name, attacks"):
        Suite.from_dict({"step": 3})
    with pytest.raises(ValueError, match="suite key 'attacks'.*'cw'.*fgsm, rfgsm, pgd"):
        Suite(attacks=["cw"])
    with pytest.raises(ValueError, match="suite key 'paths'"):
        Suite(paths=["triangle:-1"])
    with pytest.raises(ValueError, match="suite key 'attacks'.*Square is L∞ only"):
        Suite(attacks=["square"], norm="l2")
    with pytest.raises(ValueError, match="suite key 'eps'"):
        Suite(eps=[-0.1])
    with pytest.raises(ValueError, match="unknown suite 'fast'"):
        get_suite("fast")
    with pytest.raises(FileNotFoundError):
        load_suite(tmp_path / "missing.yaml")


# ---- the ensemble evaluator ------------------------------------------------------------
def _suite(**changes) -> Suite:
    base = dict(
        attacks=["fgsm", "pgd", "apgd-ce"],
        paths=["triangle:1.0", "rect:0.5", "bptr", "ann"],
        eps=[0.1],
        apgd_steps=8,
        steps=5,
        samples=48,
        batch_size=16,
        screening_samples=16,
        diagnostics=False,
    )
    return Suite(**{**base, **changes})


def _comparable(result) -> dict:
    out = result.to_dict()
    for eps in out["per_eps"].values():
        for m in eps["members"]:
            m.pop("seconds")
    out.pop("results_path")
    return out


class Interrupt(Exception):
    pass


def test_adaptive_order_gives_the_fixed_worst_case_with_less_work(snn, digits):
    x, y = digits[0][1400:], digits[1][1400:]
    fixed = evaluate(snn, x, y, _suite(order="fixed"))
    adaptive = evaluate(snn, x, y, _suite(order="adaptive"))
    for key, f in fixed.per_eps.items():
        a = adaptive.per_eps[key]
        assert a.robust == f.robust
        assert a.robust_accuracy == f.robust_accuracy < fixed.clean_accuracy
        assert a.order != f.order and sorted(a.order) == sorted(f.order)
        assert a.work["member_samples"] <= f.work["member_samples"]
        # 4 paths x (FGSM 1 + PGD 5 + APGD 8 gradient steps) on 48 samples
        assert f.work["naive_gradient_budget"] == 48 * 4 * (1 + 5 + 8)
        assert f.work["naive_member_samples"] == 48 * 12
        assert f.members[0].alone == pytest.approx(f.members[0].cumulative)


def test_a_killed_evaluation_resumes_to_the_same_result(snn, digits, tmp_path):
    x, y = digits[0][1400:], digits[1][1400:]
    whole = evaluate(snn, x, y, _suite(), results_path=tmp_path / "whole.json")
    calls = []

    def stop_after_some_batches(label, done, total):
        calls.append(label)
        if len(calls) == 9:
            raise Interrupt

    path = tmp_path / "killed.json"
    with pytest.raises(Interrupt):
        evaluate(snn, x, y, _suite(), results_path=path, progress=stop_after_some_batches)
    state = json.loads(path.read_text())["eps"]["0.1"]["members"]
    finished = [name for name, record in state.items() if record["done"]]
    assert finished and len(finished) < 12
    seen = []
    resumed = evaluate(
        snn, x, y, _suite(), results_path=path, progress=lambda *a: seen.append(a[0])
    )
    assert not any(name in label for name in finished for label in seen)
    assert _comparable(resumed) == _comparable(whole)
    with pytest.raises(ValueError, match="another model, data or suite"):
        evaluate(snn, x, y, _suite(steps=6), results_path=path)


def test_ensemble_accuracy_is_never_above_any_member(snn, digits):
    x, y = digits[0][1400:], digits[1][1400:]
    result = evaluate(snn, x, y, _suite(standalone="all", samples=32))
    eps = result.per_eps["0.1"]
    alone = [m.alone for m in eps.members]
    assert None not in alone
    assert eps.robust_accuracy <= min(alone)
    assert eps.robust_accuracy < max(alone)  # the ensemble beats its weakest member
    cumulative = [m.cumulative for m in eps.members]
    assert cumulative == sorted(cumulative, reverse=True)
    assert sum(m.marginal for m in eps.members) == pytest.approx(
        result.clean_accuracy - eps.robust_accuracy
    )
    for i, name in enumerate(eps.fooled_by):
        assert (name is None) == (eps.perturbation[i] is None)
        if name is not None:
            assert eps.perturbation[i] <= 0.1 + 1e-6


def test_transfer_members_are_crafted_on_their_source(snn, digits):
    x, y = digits[0][1400:], digits[1][1400:]
    ann = copy.deepcopy(snn)
    set_time_steps(ann, 0)
    suite = _suite(attacks=["fgsm"], paths=["triangle:1.0"], transfer=["ann-copy"])
    result = evaluate(snn, x, y, suite, sources={"ann-copy": ann})
    names = [m.name for m in result.per_eps["0.1"].members]
    assert names == ["fgsm/triangle:1.0", "transfer:ann-copy/pgd"]
    with pytest.raises(ValueError, match="transfer source"):
        evaluate(snn, x, y, suite)
    implicit = evaluate(
        snn, x, y, _suite(attacks=["fgsm"], paths=["triangle:1.0"]), sources={"a": ann}
    )
    assert implicit.per_eps["0.1"].order[-1] == "transfer:a/pgd"


# ---- stochastic (Poisson-coded) models -------------------------------------------------
@pytest.fixture(scope="module")
def poisson_snn(snn) -> TinySNN:
    model = copy.deepcopy(snn)
    model.encoding = "poisson"
    set_time_steps(model, 8)
    return model.eval()


def test_eot_averages_gradients_inside_each_step(poisson_snn, test_set):
    x, y = test_set[0][:16], test_set[1][:16]
    ids = torch.arange(16)

    def gradient(eot: int, stream: str) -> torch.Tensor:
        victim = Victim(poisson_snn, "triangle:1.0", eot=eot, key="eot-test")
        return victim.gradient(x, y, ids, ce_loss, stream)[0].flatten(1)

    single = F.cosine_similarity(gradient(1, "a"), gradient(1, "b")).mean()
    averaged = F.cosine_similarity(gradient(16, "a"), gradient(16, "b")).mean()
    assert averaged > single + 0.1  # averaging draws removes most of the sampling noise
    eight = Victim(poisson_snn, "triangle:1.0", eot=8, key="eot-test")
    first = eight.gradient(x, y, ids, ce_loss, "a")[0]
    assert torch.equal(first, eight.gradient(x, y, ids, ce_loss, "a")[0])


def test_stochastic_accuracy_is_reported_as_mean_and_worst_of_k(poisson_snn, test_set):
    x, y = test_set
    once = correct_fraction(poisson_snn, x, y, draws=10)
    assert torch.equal(once, correct_fraction(poisson_snn, x, y, draws=10))
    assert ((once > 0) & (once < 1)).any()  # the forward pass really is random
    suite = _suite(attacks=["pgd"], paths=["triangle:1.0"], eot=4, draws=6, samples=24)
    result = evaluate(poisson_snn, x, y, suite)
    assert result.stochastic
    assert result.clean_accuracy <= result.clean_accuracy_mean
    eps = result.per_eps["0.1"]
    assert eps.robust_accuracy <= eps.robust_accuracy_mean <= result.clean_accuracy_mean
    assert _comparable(evaluate(poisson_snn, x, y, suite)) == _comparable(result)


# ---- diagnostics -------------------------------------------------------------------------
class RoundedInput(nn.Module):
    """Quantises its input before a classifier: gradients are zero almost everywhere (the
    textbook shattered gradient), robustness against gradient attacks is an illusion."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(torch.round(x * 4) / 4)


def test_diagnostics_pass_on_an_honest_model_and_flag_masked_gradients(snn, digits):
    x, y = digits[0][1400:], digits[1][1400:]
    checks = dict(diagnostics=True, diagnostic_samples=24, diagnostic_queries=300)
    honest = evaluate(snn, x, y, _suite(attacks=["pgd"], samples=24, **checks))
    assert set(honest.diagnostics) == set(DIAGNOSTICS)
    for name in DIAGNOSTICS:
        if name != "sharper_or_detached":  # a looseness check, not a masking one: see below
            assert honest.diagnostics[name]["passed"], (name, honest.diagnostics[name])
    assert honest.diagnostics["eps_sweep"]["accuracy"][-1] == 0
    ann = copy.deepcopy(snn)
    set_time_steps(ann, 0)
    masked = evaluate(RoundedInput(ann), x, y, _suite(attacks=["pgd"], samples=24, **checks))
    flagged = masked.failed_diagnostics()
    assert {"zero_gradients", "white_vs_black_box", "eps_sweep"} <= set(flagged)
    assert masked.diagnostics["zero_gradients"]["per_path"]["None"]["zero_samples"] == 1.0


def test_a_loose_worst_case_is_flagged_by_sharper_or_detached_gradients(snn, digits):
    """PGD through a needle-thin rectangle alone barely moves; the probes (its detached and
    sharper versions, SA-PGD through ASSG) fool samples it left robust, and are counted."""
    x, y = digits[0][1400:], digits[1][1400:]
    checks = dict(diagnostics=["sharper_or_detached"], diagnostic_samples=24)
    loose = evaluate(snn, x, y, _suite(attacks=["pgd"], paths=["rect:0.02"], samples=24, **checks))
    check = loose.diagnostics["sharper_or_detached"]
    assert check["passed"] is False and "sharper_or_detached" in loose.failed_diagnostics()
    assert check["fooled_only_by_probes"] == sum(check["by_probe"].values()) > 0
    assert "sapgd/assg:atan:0.425/dr" in check["probes"]
    robust = loose.per_eps["0.1"].robust[:24]
    assert check["fooled_only_by_probes"] <= sum(robust)


# ---- cross-check with the reference implementation --------------------------------------
def test_our_apgd_ce_agrees_with_pyautoattack(snn, digits):
    if not autoattack_available():
        pytest.skip("pyautoattack is not installed (optional extra)")
    from robustsnn.attacks.reference import reference_apgd

    ann = copy.deepcopy(snn)
    set_time_steps(ann, 0)
    x, y = digits[0][1297:], digits[1][1297:]  # 500 samples
    ours = (predict(ann, apgd(ann, x, y, 0.08)) == y).float().mean()
    theirs = (predict(ann, reference_apgd(ann, x, y, 0.08)) == y).float().mean()
    assert 0.2 < ours < 0.9
    assert abs(ours - theirs) <= 0.02
    check = autoattack_cross_check(snn, x[:40], y[:40], eps=0.08, path="triangle:1.0",
                                   attacks=["apgd-ce"])  # fmt: skip
    assert check.samples == 40 and check.robust_accuracy < check.clean_accuracy
