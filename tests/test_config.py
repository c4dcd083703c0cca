"""Configs: presets load, mistakes give one line naming the key and the accepted values."""

from __future__ import annotations

import pytest

from robustsnn.config import ConfigError, config_from_dict, list_presets, load_config, parse_eps


def test_every_preset_loads_and_has_paper_defaults():
    presets = list_presets()
    assert "demo" in presets
    for dataset in ("cifar10", "cifar100", "svhn"):
        for model in ("vgg11", "resnet20", "wrn16_4"):
            for objective in ("pgdat", "trades", "mart"):
                assert f"{dataset}_{model}_{objective}" in presets
    cfg = load_config("cifar10_vgg11_trades")
    assert cfg.ann.eps == pytest.approx(2 / 255) and cfg.ann.beta == 6.0
    assert cfg.ann.epochs == 200 and cfg.ann.lr == 0.1 and cfg.ann.weight_decay == 5e-4
    assert cfg.conversion.options["scale"] == 0.3 and cfg.conversion.time_steps == 8
    assert cfg.finetune.lr == 1e-3 and cfg.finetune.beta == 2.0
    assert cfg.finetune.step_size == pytest.approx(1 / 255)
    assert load_config("svhn_resnet20_mart").ann.beta == 4.0


def test_parse_eps():
    assert parse_eps("8/255") == pytest.approx(8 / 255)
    assert parse_eps(0.1) == 0.1
    for bad in ("-1", "x/3", -0.5, True):
        with pytest.raises(ConfigError):
            parse_eps(bad)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"ann": {"epochz": 3}}, "unknown key 'ann.epochz'; accepted: objective"),
        ({"ann": {"eps": -0.1}}, "ann.eps: must be a finite number with 0 < ε <= 1"),
        ({"finetune": {"eps": "-2/255"}}, "finetune.eps"),
        ({"conversion": {"time_steps": 0}}, "conversion.time_steps: an SNN stage needs T >= 1"),
        ({"data": {"dataset": "imagenet22k"}}, "data.dataset: unknown dataset 'imagenet22k'"),
        ({"model": {"name": "gpt"}}, "model.name: unknown model 'gpt'; accepted: "),
        ({"ann": {"objective": "magic"}}, "ann.objective: 'magic' is not one of ce, pgd_at"),
        ({"evaluation": {"paths": ["wiggle:1"]}}, "unknown gradient path"),
        ({"ann": {"epochs": "ten"}}, "ann.epochs: expected an integer"),
    ],
)
def test_config_mistakes_name_the_key(data, message):
    with pytest.raises(ConfigError) as err:
        config_from_dict(data)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_config_file_lists_presets():
    with pytest.raises(FileNotFoundError, match="presets"):
        load_config("no_such_config.yaml")


def test_overrides_and_yaml_round_trip(tmp_path):
    cfg = load_config("demo", {"ann.epochs": 3, "evaluation.eps": ["8/255", 0.1]})
    assert cfg.ann.epochs == 3 and cfg.evaluation.eps == pytest.approx([8 / 255, 0.1])
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path).to_dict() == cfg.to_dict()
