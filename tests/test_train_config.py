"""Training config: the paper's defaults, presets, typed overrides, errors that name the key."""

from __future__ import annotations

import dataclasses
import math

import pytest
import yaml

from ciiv.train import (
    ConfigError,
    MethodConfig,
    ModelConfig,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    list_presets,
    load_config,
    save_config,
)
from ciiv.train.methods import NoOptions, get_method
from ciiv.train.optim import lr_factor


def test_defaults_are_the_papers_cifar_setting():
    c = TrainConfig()
    assert (c.optim.name, c.optim.lr, c.optim.momentum, c.optim.weight_decay) == (
        "sgd",
        0.1,
        0.9,
        5e-4,
    )
    assert (c.batch_size, c.epochs, c.optim.milestones, c.optim.gamma) == (
        128,
        110,
        [10, 100, 105],
        0.1,
    )
    assert (c.model.backbone, c.model.num_views, c.model.samples_per_view) == (
        "preact_resnet18",
        9,
        3,
    )
    ciiv = c.method.options
    assert (c.method.name, ciiv.w_reg, ciiv.w_reg_factor) == ("ciiv", 0.1, 10.0)
    assert ciiv.w_reg_milestones == [25, 50, 75]
    trades, mixup = MethodConfig("trades").options, MethodConfig("mixup").options
    assert (trades.beta, mixup.alpha, c.model.smoothing_sigma) == (6.0, 1.0, 0.25)
    assert trades.pgd.eps == pytest.approx(8 / 255) and trades.pgd.steps == 10


def test_presets_load_with_their_dataset_settings():
    names = list_presets()
    for name in (
        "paper-cifar10",
        "paper-cifar100",
        "paper-mnist",
        "paper-miniimagenet",
        "shapes-fast",
    ):
        assert name in names
    # the preset spells out the defaults (val_fraction and spike_scale: CIFAR's values)
    explicit = {"data": {"dataset": "cifar10", "val_fraction": 0.1}, "model": {"spike_scale": 0.9}}
    assert load_config("paper-cifar10") == config_from_dict(explicit)
    assert load_config("paper-cifar100").data.dataset == "cifar100"
    mnist = load_config("paper-mnist")
    assert (mnist.data.dataset, mnist.model.spike_scale) == ("mnist", 0.8)
    mini = load_config("paper-miniimagenet")
    assert (mini.model.spike_scale, mini.data.options, mini.data.val_fraction) == (
        0.8,
        {"image_size": 64},
        None,
    )
    assert load_config("shapes-fast").model.backbone == "small_cnn"


def test_overrides_are_typed_and_take_precedence(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim: {lr: 0.2}\nepochs: 3\n")
    c = load_config(
        path,
        [
            "optim.lr=0.05",
            "method.name=pgd_at",
            "method.pgd.eps=4/255",
            "data.options.n_train=100",
            "model.spike_scale=null",
            "optim.milestones=[1, 2]",
        ],
    )
    assert c.optim.lr == 0.05 and c.epochs == 3
    assert c.method.options.pgd.eps == pytest.approx(4 / 255)
    assert c.data.options == {"n_train": 100}
    assert c.model.spike_scale is None and c.optim.milestones == [1, 2]
    assert isinstance(load_config(None, {"optim.lr": 1}).optim.lr, float)


def test_roundtrip_through_yaml(tmp_path):
    c = load_config("shapes-fast", ["method.name=trades", "seed=3"])
    save_config(c, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == c
    assert config_from_dict(yaml.safe_load(yaml.safe_dump(config_to_dict(c)))) == c


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("optim.lrr=0.1", "unknown config key 'optim.lrr'; did you mean 'optim.lr'?"),
        ("optim.lrr=0.1", "(valid: optim.name, optim.lr,"),
        ("bogus=1", "unknown config key 'bogus'"),
        ("method.w_regg=1", "unknown config key 'method.w_regg'; did you mean 'method.w_reg'?"),
        (
            "method.pgd.eps=1/255",
            "method 'ciiv': unknown config key 'method.pgd' (valid: method.w_ce",
        ),
        ("epochs.x=1", "epochs has no sub-keys"),
        ("optim.lr=fast", "optim.lr: expected a number"),
        ("optim.lr=-1", "optim.lr: must be > 0"),
        ("epochs=2.5", "epochs: expected an integer"),
        ("epochs=0", "epochs: must be >= 1"),
        ("amp=fp8", "amp: 'fp8' is not one of"),
        ("compile=yes please", "compile: expected true or false"),
        ("optim.milestones=[5, 2]", "optim.milestones: must be increasing"),
        ("optim.lr=1/0", "optim.lr: expected a number or a fraction"),
        ("data.val_fraction=1.5", "data.val_fraction: must be in [0, 1)"),
        ("data.max_train=0", "data.max_train: must be >= 1 or null"),
        ("device=tpu", "device: must be auto, cpu, cuda or cuda:N"),
        ("method.name=bogus", "unknown method 'bogus'; valid: bpfc, ciiv"),
        ("data.dataset=imagenet22k", "unknown dataset 'imagenet22k'; valid:"),
        ("model.backbone=resnet9000", "unknown backbone 'resnet9000'; valid:"),
        ("model.num_views=1", "model.num_views: method 'ciiv' needs at least 2 views"),
        ("model.num_views=10", "model.num_views: at most 9 views"),
        ("model.num_views=0", "model.num_views: must be >= 1, got 0"),
        ("model.smoothing_sigma=0", "model.smoothing_sigma: must be > 0, got 0.0"),
        ("model.spike_scale=-0.5", "model.spike_scale: must be > 0 or null (the dataset's)"),
        ("model.keep_threshold=1.5", "model.keep_threshold: must be in (0, 1], got 1.5"),
        ("optim.betas=[0.9]", "optim.betas: must be two numbers"),
        ("nonsense", "must look like key=value"),
    ],
)
def test_bad_keys_and_values_name_the_key(override, fragment):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert fragment in str(info.value)


def test_model_config_checks_its_ranges_when_built_directly():
    with pytest.raises(ValueError, match="alpha: must be > 0, got 0"):
        ModelConfig(alpha=0)
    with pytest.raises(ValueError, match="num_views: at most 9 views"):
        ModelConfig(num_views=12)
    assert ModelConfig(num_views=12, random_centers=True).num_views == 12


def test_bad_sources():
    with pytest.raises(ConfigError, match="neither a file nor a preset; presets: paper-cifar10"):
        load_config("no-such-preset")
    with pytest.raises(ConfigError, match="a config must be a mapping"):
        config_from_dict([1, 2])


def test_yaml_file_errors(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        load_config(path)
    path.write_text("optim:\n  lr: 0.1\n  sgd_momentum: 0.9\n")
    with pytest.raises(ConfigError, match="unknown config key 'optim.sgd_momentum'"):
        load_config(path)


def test_schedules():
    c = load_config(None)
    # the paper's: lr x0.1 after epochs 10, 100, 105 (0-based epoch index)
    factors = [lr_factor(c.optim, e, 110) for e in (0, 9.99, 10, 99, 100, 105, 109)]
    assert factors == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.001, 0.001])
    cos = load_config(None, ["optim.schedule=cosine"]).optim
    assert lr_factor(cos, 0, 10) == 1 and lr_factor(cos, 5, 10) == pytest.approx(0.5)
    assert lr_factor(cos, 10, 10) == pytest.approx(0)
    one = load_config(None, ["optim.schedule=onecycle", "optim.warmup_fraction=0.2"]).optim
    assert lr_factor(one, 0, 10) == pytest.approx(1 / 25)
    assert lr_factor(one, 2, 10) == pytest.approx(1)
    assert lr_factor(one, 1, 10) == pytest.approx((1 / 25 + 1) / 2)
    assert lr_factor(one, 10, 10) == pytest.approx(0, abs=1e-12)
    assert not math.isnan(lr_factor(one, 6, 10))


def test_max_train_and_max_val_shrink_the_splits_not_the_test_set():
    from ciiv.train import load_data

    options = {"n_train": 400, "n_test": 50}
    full = load_data(load_config("shapes-fast", {"data.options": options}).data)
    config = load_config("shapes-fast", {"data.options": options, "data.max_train": 120,
                                         "data.max_val": 20})  # fmt: skip
    small = load_data(config.data)
    assert abs(len(small.train) - 120) <= 2 and abs(len(small.val) - 20) <= 2
    assert {k: len(v) for k, v in small.test.items()} == {k: len(v) for k, v in full.test.items()}
    assert set(small.train.labels.tolist()) == set(full.train.labels.tolist())  # every class


def test_each_method_takes_its_own_options():
    c = load_config(None, ["method.name=trades", "method.beta=3", "method.pgd.steps=4"])
    assert isinstance(c.method.options, get_method("trades").Options)
    assert (c.method.options.beta, c.method.options.pgd.steps) == (3.0, 4)
    assert config_to_dict(c)["method"] == {"name": "trades", **dataclasses.asdict(c.method.options)}
    assert load_config(None, ["method.name=vanilla"]).method.options == NoOptions()
    for override, fragment in [
        ("method.beta=-1", "method.beta: must be >= 0, got -1"),
        ("method.pgd.steps=0", "method.pgd.steps: must be >= 1"),
        ("method.pgd.bpda=straight", "method.pgd.bpda: 'straight' is not one of"),
        ("method.trades_beta=3", "method.trades_beta is now method.beta"),
        ("method.alpha=1", "method 'trades': unknown config key 'method.alpha'"),
    ]:
        with pytest.raises(ConfigError) as info:
            load_config(None, ["method.name=trades", override])
        assert fragment in str(info.value)
    with pytest.raises(ConfigError, match="method 'vanilla': unknown config key 'method.pgd'"):
        load_config(None, ["method.name=vanilla", "method.pgd.steps=2"])


def test_choosing_another_method_keeps_the_options_it_takes():
    # options set before the method is chosen (a preset, a grid's shared `set`) reach the
    # methods that take them and no other
    shared = {"method.w_reg": 0.5, "method.pgd": {"steps": 3}, "method.alpha": 0.2}
    at = load_config(None, {**shared, "method.name": "ciiv_at"}).method.options
    assert (at.w_reg, at.pgd.steps) == (0.5, 3)
    mixup = load_config(None, {**shared, "method.name": "mixup"}).method.options
    assert mixup == get_method("mixup").Options(alpha=0.2)
    assert load_config(None, {**shared, "method.name": "rs"}).method.options == NoOptions()
    preset = load_config("paper-cifar10", ["method.name=ciiv_mixup"]).method.options
    assert preset.w_reg_milestones == [25, 50, 75] and preset.alpha == 1.0
    with pytest.raises(ConfigError, match="unknown config key 'method.pgd'"):
        load_config(None, {"method.pgd": {"steps": 3}})  # still ciiv, which crafts nothing


def test_a_config_saved_with_every_methods_options_still_loads():
    """Configs of runs trained before each method owned its options held all methods' options
    in one flat `method` mapping; they load as the run's own method and its options."""
    old = {
        "name": "trades", "w_ce": 1.0, "w_reg": 0.1, "w_reg_factor": 10.0,
        "w_reg_milestones": [25, 50, 75], "consistency": "smooth_l1",
        "pgd": {"norm": "Linf", "eps": 0.1, "step_size": 0.02, "steps": 7, "bpda": None, "eot": 1},
        "trades_beta": 3.0, "mixup_alpha": 1.0, "bpfc_step": 0.125, "bpfc_noise": 0.03,
        "bpfc_weight": 1.0, "bpfc_factor": 9.0, "bpfc_milestones": [25, 50, 75],
    }  # fmt: skip
    trades = config_from_dict({"method": old}).method
    assert trades == load_config(None, {"method.name": "trades", "method.beta": 3.0,
                                        "method.pgd": old["pgd"]}).method  # fmt: skip
    bpfc = config_from_dict({"method": {**old, "name": "bpfc"}}).method.options
    assert (bpfc.step, bpfc.noise, bpfc.milestones) == (0.125, 0.03, [25, 50, 75])
