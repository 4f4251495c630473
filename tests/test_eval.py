"""Evaluation: suites, protocols, worst-case bookkeeping, randomness accounting, resume, shards.

Models are trained inside the tests on a tiny synthetic task (class = a faint colour shift under
strong pixel noise, 12 px), where a budget of a few /255 leaves an intermediate robust accuracy.
"""

import copy
import dataclasses
import json
import logging
import sys

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

import ciiv.evaluate.api as api_module
from ciiv import distributed
from ciiv.attacks import PGD, AttackContractError, create_attack
from ciiv.attacks import registry as attack_registry
from ciiv.distributed import DistContext
from ciiv.evaluate import (
    AttackEntry,
    EvalSettings,
    ModelTraits,
    Suite,
    Sweep,
    evaluate_robustness,
    get_protocol,
    get_suite,
    list_suites,
    resolve_suite,
    worst_case_stats,
)
from ciiv.evaluate.engine import derive_seed, run_attack
from ciiv.evaluate.records import load_done, read_jsonl
from ciiv.loss import consistency_loss, view_cross_entropy
from ciiv.models import CentreView, CiiVClassifier, Classifier, create_model
from ciiv.sampling import RetinotopicSampler

SIZE = 12
COLOURS = torch.tensor([[1, 1, -1], [-1, 1, 1], [1, -1, 1], [-1, -1, -1]], dtype=torch.float32)
MEAN, STD = [0.5] * 3, [0.25] * 3


def colour_data(n: int, seed: int, amp: float = 0.06, noise: float = 0.2):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    x = (
        0.5
        + amp * COLOURS[y][:, :, None, None]
        + noise * torch.randn(n, 3, SIZE, SIZE, generator=g)
    )
    return x.clamp(0, 1), y


def _train(model: nn.Module, epochs: int, views: bool = False) -> nn.Module:
    x, y = colour_data(1024, 0)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            idx = perm[i : i + 64]
            if views:
                out = model.forward_views(x[idx])
                loss = view_cross_entropy(out.logits, y[idx])
                loss = loss + 0.1 * consistency_loss(out.features, out.z)
            else:
                loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def _ciiv(num_views: int = 4) -> CiiVClassifier:
    backbone = create_model("small_cnn", num_classes=4, in_channels=3, width=8)
    sampler = RetinotopicSampler(SIZE, num_views=num_views, samples_per_view=1)
    return CiiVClassifier(backbone, sampler, MEAN, STD)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def vanilla() -> nn.Module:
    torch.manual_seed(0)
    backbone = create_model("small_cnn", num_classes=4, in_channels=3, width=8)
    return _train(Classifier(backbone, MEAN, STD), epochs=3)


@pytest.fixture(scope="module")
def trained_ciiv() -> CiiVClassifier:
    torch.manual_seed(0)
    return _train(_ciiv(), epochs=6, views=True)


class Counting(nn.Module):
    """Wraps a deterministic model and counts the images it sees."""

    stochastic = False

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.images = 0

    def forward(self, x):
        self.images += x.shape[0]
        return self.inner(x)


def _pgd_suite(eps: float, steps: int = 50) -> dict:
    return {
        "name": f"pgd-{steps}",
        "norm": "Linf",
        "budget": {"default": eps},
        "entries": [
            {
                "name": f"pgd-{steps}",
                "attack": "pgd",
                "hyper": {"steps": steps},
                "step_fraction": 0.1,
            }
        ],
    }


# -- suites and protocols --------------------------------------------------------------------


def test_builtin_suites_exist_and_round_trip_through_dicts():
    names = list_suites()
    for name in ("quick", "standard-linf", "standard-l2", "ciiv-adaptive", "paper-cifar10",
                 "paper-mnist"):  # fmt: skip
        assert name in names
        suite = get_suite(name)
        assert Suite.from_dict(json.loads(json.dumps(suite.to_dict()))) == suite
    with pytest.raises(ValueError, match="valid: .*quick"):
        get_suite("nope")
    with pytest.raises(ValueError, match="unknown attack entry key"):
        Suite.from_dict({"name": "s", "norm": "Linf", "budget": {"default": 0.1},
                         "entries": [{"name": "a", "attack": "pgd", "stepz": 3}]})  # fmt: skip


@pytest.mark.parametrize("name", list_suites())
def test_every_builtin_suite_builds_every_attack(name):
    """Hyper-parameter names in the suites match the attacks' (a typo fails here, not mid-run)."""
    models = {
        ModelTraits(stochastic=True, views=True): _ciiv(),
        ModelTraits(stochastic=False, views=False): Classifier(
            create_model("small_cnn", num_classes=4, in_channels=3, width=8), MEAN, STD
        ),
    }
    for traits, model in models.items():
        for protocol in ("full", "paper"):
            attacks, _, _ = resolve_suite(get_suite(name), protocol=protocol, traits=traits, eot=2)
            assert attacks
            for attack in attacks:
                create_attack(attack.attack, model, **attack.hyper)


def test_budgets_overrides_and_sweeps_resolve_as_documented():
    traits = ModelTraits(stochastic=True, views=True)
    suite = get_suite("paper-cifar10")
    attacks, skipped, budget = resolve_suite(suite, protocol="full", traits=traits, eot=5)
    by_name = {a.name: a for a in attacks}
    assert budget == pytest.approx(8 / 255)
    assert by_name["pgd-20"].hyper["step_size"] == pytest.approx(2 / 255)
    assert by_name["pgd-20"].hyper["eot"] == 5 and by_name["pgd-20"].worst_case
    assert [by_name[f"pgd@steps={s}"].steps for s in (10, 20, 50, 100, 200)] == [10, 20, 50, 100,
                                                                                  200]  # fmt: skip
    assert by_name["fgsm@eps=96/255"].eps == pytest.approx(96 / 255)
    assert not by_name["fgsm@eps=96/255"].worst_case and not by_name["spsa"].worst_case
    assert by_name["spsa"].eps == pytest.approx(16 / 255) and by_name["cw-l2"].norm == "L2"
    assert not skipped
    # eps= overrides the budget and the steps that follow it, not fixed-eps entries.
    attacks, _, budget = resolve_suite(suite, protocol="full", traits=traits, eps="4/255")
    by_name = {a.name: a for a in attacks}
    assert budget == pytest.approx(4 / 255)
    assert by_name["pgd-20"].hyper["step_size"] == pytest.approx(1 / 255)
    assert by_name["spsa"].eps == pytest.approx(16 / 255)
    # MNIST budget chosen by the suite.
    _, _, budget = resolve_suite(get_suite("standard-linf"), protocol="full", traits=traits,
                                 dataset="mnist")  # fmt: skip
    assert budget == pytest.approx(0.3)
    # A worst-case entry outside the threat model is refused.
    bad = Suite("bad", "", "Linf", {"default": "8/255"},
                (AttackEntry("big", "fgsm", eps="16/255"),))  # fmt: skip
    with pytest.raises(ValueError, match="outside the threat model"):
        resolve_suite(bad, protocol="full", traits=traits)
    sweep = Sweep("f", AttackEntry("f", "pgd"), eps=("2/255", "4/255"), steps=(5, 10))
    assert [e.name for e in sweep.expand()] == [
        "f@eps=2/255,steps=5", "f@eps=2/255,steps=10", "f@eps=4/255,steps=5", "f@eps=4/255,steps=10"
    ]  # fmt: skip
    # The swept values are data in the summary (``sweep``), never parsed back from the names.
    assert sweep.expand()[1].sweep_point == {"family": "f", "axes": {"eps": 2 / 255, "steps": 10}}
    described = {a.name: a.describe()["sweep"] for a in attacks}
    assert described["pgd@steps=50"] == {"family": "pgd", "axes": {"steps": 50}}
    assert described["fgsm@eps=32/255"] == {"family": "fgsm", "axes": {"eps": 32 / 255}}
    assert described["pgd-20"] is None
    # ... and no part of a suite file: the suite's dict round trip is unchanged.
    data = Suite("s", "", "Linf", {"default": 0.1}, (sweep,)).to_dict()
    assert "sweep_point" not in data["entries"][0]["base"]
    assert Suite.from_dict(data).to_dict() == data
    with pytest.raises(ValueError, match="unknown attack entry key.*sweep_point"):
        Suite.from_dict({**data, "entries": [{"name": "a", "attack": "pgd", "sweep_point": {}}]})


def test_protocols_set_views_and_eot_per_model():
    suite = get_suite("standard-linf")
    ciiv_traits = ModelTraits(stochastic=True, views=True)
    paper, skipped, _ = resolve_suite(suite, protocol="paper", traits=ciiv_traits, eot=6)
    assert {a.hyper["eot"] for a in paper if "eot" in a.hyper} == {1}
    assert {a.protocol_views for a in paper} == {"centre"}
    assert "pgd-20-adaptive" in skipped  # one view has no consistency loss
    full, skipped, _ = resolve_suite(suite, protocol="full", traits=ciiv_traits, eot=6)
    assert {a.hyper["eot"] for a in full if "eot" in a.hyper} == {6} and not skipped
    # A deterministic model: EOT is pointless (1), CiiV-only entries are skipped.
    plain = ModelTraits(stochastic=False, views=False)
    full, skipped, _ = resolve_suite(suite, protocol="full", traits=plain, eot=6)
    assert {a.hyper["eot"] for a in full if "eot" in a.hyper} == {1}
    assert set(skipped) == {"pgd-20-bpda-identity", "pgd-20-bpda-smooth", "pgd-20-adaptive"}
    # Without views the paper protocol is the full one (a random model keeps its EOT).
    rs = ModelTraits(stochastic=True, views=False)
    assert resolve_suite(suite, protocol="paper", traits=rs) == resolve_suite(
        suite, protocol="full", traits=rs
    )
    assert "equals the full one" in get_protocol("paper").note(rs)
    # The paper protocol's attacks query the centre view; the model itself never changes.
    model = _ciiv()
    attacked = get_protocol("paper").attacked(model)
    assert isinstance(attacked, CentreView) and attacked.model is model
    assert attacked.num_views == 1 and model.num_views == 4
    assert get_protocol("full").attacked(model) is model
    plain = nn.Sequential(nn.Flatten(), nn.Linear(3, 2))
    assert get_protocol("paper").attacked(plain) is plain


def test_paper_protocol_attacks_one_view_and_counts_accuracy_with_all(trained_ciiv):
    """Every gradient the paper protocol's attack takes comes from the centre view alone; the
    prediction draws use all 4 views; the model keeps its 4 views throughout."""
    model, seen = trained_ciiv, []

    def hook(module, args, out):
        seen.append((out.views.shape[0], torch.is_grad_enabled(), model.num_views))

    handle = model.sampler.register_forward_hook(hook)
    x, y = colour_data(16, 1)
    try:
        result = evaluate_robustness(
            model, x, y, suite=_pgd_suite(0.03, steps=2), protocol="paper", draws=2, audit=False
        )
    finally:
        handle.remove()
    assert result.summary["attacks"]["pgd-2"]["views"] == "centre" and result.clean_accuracy > 0
    assert {views for views, grad, _ in seen if grad} == {1}
    assert {views for views, _, _ in seen} == {1, 4}
    assert {num_views for _, _, num_views in seen} == {4}


# -- correctness on trained models -------------------------------------------------------------


def test_pgd_at_a_large_eps_leaves_nothing_standing(vanilla):
    x, y = colour_data(128, 1)
    result = evaluate_robustness(vanilla, x, y, suite="quick", eps="32/255", batch_size=64)
    assert result.clean_accuracy > 0.9
    assert result.robust_accuracy <= 0.02
    assert result.summary["draws"] == 1 and result.eot == 1  # deterministic model detected


def test_pgd_matches_autoattack_apgd_ce(vanilla):
    apgd_module = pytest.importorskip("pyautoattack.autopgd_base")
    x, y = colour_data(256, 1)
    eps = 6 / 255
    ours = evaluate_robustness(vanilla, x, y, suite=_pgd_suite(eps), batch_size=256)
    apgd = apgd_module.APGDAttack(vanilla, n_iter=50, norm="Linf", eps=eps, seed=0, device="cpu")
    with torch.no_grad():
        reference = (vanilla(apgd.perturb(x, y)).argmax(1) == y).float().mean().item()
    assert 0.15 < reference < 0.85  # an informative budget, not a saturated one
    assert abs(ours.robust_accuracy - reference) <= 0.04


def test_full_protocol_is_never_weaker_than_the_paper_protocol(trained_ciiv):
    x, y = colour_data(96, 1)
    common = {"suite": "quick", "eps": "6/255", "eot": 4, "draws": 4, "batch_size": 48}
    paper = evaluate_robustness(trained_ciiv, x, y, protocol="paper", **common)
    full = evaluate_robustness(trained_ciiv, x, y, protocol="full", **common)
    assert paper.clean_accuracy == full.clean_accuracy  # same seed -> same clean draws
    assert paper.robust_accuracy > 0.2  # the paper protocol leaves points standing ...
    assert full.robust_accuracy <= paper.robust_accuracy  # ... that the full one may break
    assert full.summary["eot"] == 4 and full.summary["draws"] == 4
    assert full.summary["attacks"]["pgd-10"]["hyper"]["eot"] == 4
    assert paper.summary["attacks"]["pgd-10"]["hyper"]["eot"] == 1
    assert paper.summary["attacks"]["pgd-10"]["views"] == "centre"
    assert trained_ciiv.num_views == 4  # restored


# -- bookkeeping -------------------------------------------------------------------------------


def test_only_standing_points_are_attacked_and_every_pass_is_counted(vanilla):
    x, y = colour_data(100, 2)
    model = Counting(vanilla)
    suite = {
        "name": "chain",
        "norm": "Linf",
        "budget": {"default": "5/255"},
        "entries": [
            {"name": "fgsm", "attack": "fgsm"},
            {"name": "pgd-5", "attack": "pgd", "hyper": {"steps": 5}},
            {"name": "pgd-5-all", "attack": "pgd", "hyper": {"steps": 5}, "worst_case": False},
            {"name": "fgsm-big", "attack": "fgsm", "eps": "32/255", "worst_case": False},
        ],
    }
    result = evaluate_robustness(model, x, y, suite=suite, batch_size=40)
    s = result.summary
    rows = result.rows
    clean_ok = sum(r["clean"]["robust"] for r in rows)
    after_fgsm = sum(r["clean"]["robust"] and r["attacks"]["fgsm"]["robust"] for r in rows)
    assert s["attacks"]["fgsm"]["attacked"] == clean_ok
    assert s["attacks"]["pgd-5"]["attacked"] == after_fgsm < clean_ok
    assert s["attacks"]["pgd-5-all"]["attacked"] == clean_ok  # standalone: every clean-correct
    assert s["attacks"]["fgsm-big"]["attacked"] == clean_ok
    for r in rows:
        if r["broken_by"] in ("clean", "fgsm"):
            assert r["attacks"]["pgd-5"] is None
    # Every image through the model is in the count: predictions + attack queries.
    assert s["forward_passes"] == model.images
    # pgd: 5 gradient steps + the final point scored, per attacked image.
    assert s["forward_passes_by_source"]["pgd-5"] == 6 * after_fgsm
    # Worst case <= every attack inside the threat model (the standalone PGD counts too), and it
    # is the fraction of rows robust throughout; the 32/255 FGSM is another threat model.
    inside = ("fgsm", "pgd-5", "pgd-5-all")
    assert all(s["robust_accuracy"] <= s["per_attack"][name] for name in inside)
    assert s["per_attack"]["fgsm-big"] < s["robust_accuracy"]
    assert s["robust_accuracy"] == sum(r["robust"] for r in rows) / len(rows)
    assert s["robust_accuracy"] <= s["per_attack"]["pgd-5"] <= s["per_attack"]["fgsm"]
    robust_rows = [r for r in rows if r["robust"]]
    assert all(r["attacks"]["pgd-5-all"]["robust"] for r in robust_rows)
    assert "fgsm-big" not in s["broken_by"]
    assert sum(v for k, v in s["broken_by"].items() if k != "clean") == clean_ok - len(robust_rows)


def test_run_attack_is_seeded_by_its_key_and_refuses_another_ball(vanilla, monkeypatch):
    """The one way the evaluation and the audit run an attack: the seed derives from (seed, key)
    alone, max_batch reaches the attack, R prediction draws where asked, the images the model saw
    are counted; an attack built with another ball than the one asked for is refused."""
    x, y = colour_data(6, 3)
    hyper = {"norm": "Linf", "eps": 4 / 255, "steps": 2}
    kwargs = dict(hyper=hyper, seed=5, max_batch=4)
    first = run_attack(vanilla, "pgd", x, y, key=(0, "pgd"), draws=2, **kwargs)
    again = run_attack(vanilla, "pgd", x, y, key=(0, "pgd"), draws=2, **kwargs)
    other = run_attack(vanilla, "pgd", x, y, key=(1, "pgd"), **kwargs)
    assert first.settings["seed"] == derive_seed(5, "attack", 0, "pgd") != other.settings["seed"]
    assert torch.equal(first.x_adv, again.x_adv) and first.settings["max_batch"] == 4
    assert first.preds.shape == (2, 6) and other.preds is None
    assert first.queried == first.forward_passes == 3 * 6 and first.mode_restored

    class Loose(PGD):  # steps and checks its points in a ball twice the one asked for
        def __init__(self, model, *, eps, **rest):
            super().__init__(model, eps=2 * eps, **rest)

    monkeypatch.setitem(attack_registry._ATTACKS, "loose", Loose)
    with pytest.raises(
        AttackContractError, match=r"Linf ball of radius 0.0156863 but checks .*eps=0.0313725"
    ):
        run_attack(vanilla, "loose", x, y, **kwargs)


def test_random_model_is_counted_over_all_draws():
    class Noisy(nn.Module):
        """Right with probability about 0.7 per draw, whatever the input (no `stochastic`)."""

        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(()))

        def forward(self, x):
            logits = torch.randn(x.shape[0], 3, device=x.device) * self.scale
            offset = torch.tensor([1.2, 0.0, 0.0], device=x.device)
            return logits + offset + 0 * x.flatten(1).sum(1, keepdim=True)

    x = torch.rand(200, 1, 8, 8)
    y = torch.zeros(200, dtype=torch.long)
    suite = {"name": "n", "norm": "Linf", "budget": {"default": 0.0},
             "entries": [{"name": "fgsm", "attack": "fgsm", "eot": "protocol"}]}  # fmt: skip
    result = evaluate_robustness(Noisy(), x, y, suite=suite, draws=5, eot=3, batch_size=100)
    s = result.summary
    assert s["model"]["stochastic"] and s["draws"] == 5 and s["eot"] == 3
    per_draw = s["clean_accuracy_per_draw"]["mean"]
    assert 0.55 < per_draw < 0.85
    # All five draws right is much rarer than one draw right.
    assert s["clean_accuracy"] < per_draw - 0.2
    low, high = s["clean_accuracy_ci95"]
    assert low <= s["clean_accuracy"] <= high
    assert all(len(r["clean"]["preds"]) == 5 for r in result.rows)


def test_stats_from_rows_follow_the_all_draws_rule():
    def row(i, clean, **attacks):
        out = {name: None if c is None else {"correct": c, "robust": c == 2}
               for name, c in attacks.items()}  # fmt: skip
        return {"index": i, "clean": {"correct": clean}, "attacks": out}

    rows = [
        row(0, 2, a=2, b=2, s=2),  # robust
        row(1, 2, a=1, b=None, s=2),  # broken by a in one draw of two
        row(2, 1, a=None, b=None, s=None),  # clean-wrong in one draw
        row(3, 2, a=2, b=0, s=1),
    ]
    # Standalone s outside the threat model: reported on its own, not in the worst case.
    stats = worst_case_stats(rows, [("a", True, True), ("b", True, True), ("s", False, False)], 2)
    assert stats["clean"]["accuracy"] == 0.75
    assert stats["attacks"]["a"]["accuracy"] == 0.5
    assert stats["attacks"]["b"]["accuracy"] == stats["robust"]["accuracy"] == 0.25
    assert stats["attacks"]["s"]["accuracy"] == 0.5
    assert stats["broken_by"] == {"clean": 1, "a": 1, "b": 1}
    # per-draw: worst fraction per example = 1, 0.5, 0.5, 0 -> 0.5
    assert stats["robust"]["per_draw"]["mean"] == 0.5
    # Inside the threat model, a standalone attack also breaks points (here: none new).
    rows.append(row(4, 2, a=2, b=2, s=1))
    stats = worst_case_stats(rows, [("a", True, True), ("b", True, True), ("s", False, True)], 2)
    assert stats["robust"]["accuracy"] == 0.2 and stats["broken_by"]["s"] == 1
    assert stats["attacks"]["b"]["accuracy"] == 0.4  # cumulative before s ran
    with pytest.raises(ValueError, match="standing"):
        worst_case_stats([row(0, 2, a=None)], [("a", True, True)], draws=2)


def test_interrupted_evaluation_resumes_to_the_uninterrupted_result(vanilla, tmp_path, caplog):
    x, y = colour_data(90, 3)
    kwargs = {"suite": "quick", "eps": "5/255", "batch_size": 32, "seed": 7}
    whole = evaluate_robustness(vanilla, x, y, out_dir=tmp_path / "whole", **kwargs)

    class Stop(Exception):
        pass

    def stop_after_first(event, info):
        if event == "batch":
            raise Stop

    with pytest.raises(Stop):
        evaluate_robustness(vanilla, x, y, out_dir=tmp_path / "cut", progress=stop_after_first,
                            **kwargs)  # fmt: skip
    # Simulate a crash in the middle of writing the next batch: an unterminated row.
    with open(tmp_path / "cut" / "examples.jsonl", "a") as f:
        f.write('{"index": 40, "position": 40, "batch": 1, "lab')
    counting = Counting(vanilla)
    with caplog.at_level(logging.INFO, logger="ciiv.evaluate.api"):
        resumed = evaluate_robustness(counting, x, y, out_dir=tmp_path / "cut", **kwargs)
    assert "resuming: 1 of 3 batches done" in caplog.text
    assert resumed.rows == whole.rows
    for key in ("clean_accuracy", "robust_accuracy", "per_attack", "forward_passes"):
        assert resumed.summary[key] == whole.summary[key]
    assert read_jsonl(tmp_path / "cut" / "examples.jsonl") == whole.rows
    # Batch 0 (32 examples) was not redone: fewer images than the whole evaluation needed.
    assert 0 < counting.images < whole.summary["forward_passes"]
    # A different setting in the same directory is refused.
    with pytest.raises(ValueError, match="different settings"):
        evaluate_robustness(vanilla, x, y, out_dir=tmp_path / "cut", **{**kwargs, "seed": 8})
    # So are other weights (another checkpoint, more training): two models never mix.
    other = copy.deepcopy(vanilla)
    with torch.no_grad():
        next(other.parameters()).add_(1e-3)
    with pytest.raises(ValueError, match=r"different settings \(model_digest\)"):
        evaluate_robustness(other, x, y, out_dir=tmp_path / "cut", **kwargs)


def test_the_weights_are_hashed_once_and_only_for_a_directory(vanilla, tmp_path, monkeypatch):
    # The model's digest (every weight, copied to the host) only guards a resume in a directory.
    hashed = []
    real = api_module.model_digest
    monkeypatch.setattr(api_module, "model_digest", lambda m: hashed.append(m) or real(m))
    x, y = colour_data(20, 9)
    kwargs = {"suite": "quick", "eps": "5/255", "batch_size": 8}
    in_memory = evaluate_robustness(vanilla, x, y, **kwargs)
    assert hashed == []
    written = evaluate_robustness(vanilla, x, y, out_dir=tmp_path / "e", **kwargs)
    assert hashed == [vanilla]
    config = json.loads((tmp_path / "e" / "config.json").read_text())
    assert config["model_digest"] == real(vanilla)
    assert in_memory.rows == written.rows


@pytest.mark.parametrize("finisher", ["rank0", "single"])
def test_sharded_ranks_merge_into_the_single_process_rows(vanilla, tmp_path, monkeypatch, finisher):
    x, y = colour_data(70, 4)
    kwargs = {"suite": "quick", "eps": "5/255", "batch_size": 16}
    whole = evaluate_robustness(vanilla, x, y, out_dir=tmp_path / "one", **kwargs)
    out = tmp_path / "two"

    # Two ranks, run one after the other: each computes and writes only its own batches. The
    # all-gather is simulated by reading every finished batch from the shard files.
    class Rank(DistContext):
        def barrier(self):
            pass

        def all_gather(self, obj):
            rows, recs = load_done(out)
            return [([r for b in sorted(rows) for r in rows[b]], list(recs.values()))]

        def broadcast(self, obj):
            return obj

    monkeypatch.setattr(distributed, "current", lambda: Rank(1, 2))
    part = evaluate_robustness(vanilla, x, y, out_dir=out, **kwargs)
    assert {r["batch"] % 2 for r in part.rows} == {1}  # a rank's own rows
    assert (out / "shards" / "rank1" / "examples.jsonl").exists()
    counting = Counting(vanilla)
    if finisher == "rank0":
        monkeypatch.setattr(distributed, "current", lambda: Rank(0, 2))
    else:  # the multi-process run died after rank 1 finished; one process resumes it
        monkeypatch.undo()
    merged = evaluate_robustness(counting, x, y, out_dir=out, **kwargs)
    monkeypatch.undo()
    assert 0 < counting.images < whole.summary["forward_passes"]  # only rank 0's batches
    assert merged.rows == whole.rows
    assert not (out / "shards").exists()
    assert read_jsonl(out / "examples.jsonl") == whole.rows
    # A later single process finds every batch done and only rewrites the summary (after the
    # output check on 8 examples).
    counting = Counting(vanilla)
    again = evaluate_robustness(counting, x, y, out_dir=out, **kwargs)
    assert counting.images == again.summary["forward_passes_by_source"]["output_check"] == 8
    assert again.summary["robust_accuracy"] == whole.summary["robust_accuracy"]


def test_config_stores_the_resolved_settings_and_they_resume_the_evaluation(vanilla, tmp_path):
    x, y = colour_data(12, 3)
    keywords = {"suite": "quick", "eps": "4/255", "batch_size": 8, "seed": 5, "audit": False}
    whole = evaluate_robustness(vanilla, x, y, out_dir=tmp_path, **keywords)
    config = json.loads((tmp_path / "config.json").read_text())
    stored = EvalSettings.from_dict(config["settings"])
    # Every default resolved for this deterministic model on the CPU: E = R = 1, 64 per call.
    resolved = dataclasses.replace(EvalSettings(**keywords), eot=1, draws=1, max_batch=64)
    assert stored == resolved and stored.eps == 4 / 255 and stored.suite == get_suite("quick")
    assert config["n_examples"] == 12 and set(config["attacks"]) == set(whole.per_attack)
    # The stored settings, passed back, resume the directory: nothing is recomputed.
    counting = Counting(vanilla)
    again = evaluate_robustness(counting, x, y, out_dir=tmp_path, settings=stored)
    assert again.rows == whole.rows and counting.images == 8  # the output check only
    with pytest.raises(ValueError, match="not both"):
        evaluate_robustness(vanilla, x, y, settings=stored, seed=6)
    with pytest.raises(ValueError, match="unknown evaluation setting 'sead'; did you mean 'seed'"):
        EvalSettings.from_dict({**config["settings"], "sead": 1})
    with pytest.raises(ValueError, match="batch_size must be an int >= 1, got 0"):
        EvalSettings(batch_size=0)


def test_summary_schema_and_files(vanilla, tmp_path):
    x, y = colour_data(20, 5)
    result = evaluate_robustness(vanilla, x, y, suite="quick", batch_size=8, out_dir=tmp_path,
                                 indices=list(range(100, 120)))  # fmt: skip
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary == result.to_dict()
    for key in ("clean_accuracy", "robust_accuracy", "per_attack", "protocol", "eot", "n_examples",
                "seed", "forward_passes", "attack_settings", "versions", "elapsed_s",
                "robust_accuracy_ci95", "clean_accuracy_ci95", "model", "threat_model",
                "skipped_attacks", "draws"):  # fmt: skip
        assert key in summary, key
    assert summary["n_examples"] == 20 and summary["versions"]["torch"] == torch.__version__
    assert summary["attack_settings"]["pgd-10"]["steps"] == 10
    rows = read_jsonl(tmp_path / "examples.jsonl")
    assert [r["index"] for r in rows] == list(range(100, 120))
    assert {"index", "label", "clean", "attacks", "robust", "broken_by"} <= set(rows[0])
    assert len(read_jsonl(tmp_path / "batches.jsonl")) == 3


def test_bad_inputs_are_refused_with_a_hint(vanilla):
    x, y = colour_data(4, 0)
    with pytest.raises(ValueError, match="divide uint8 by 255"):
        evaluate_robustness(vanilla, (x * 255).to(torch.uint8), y)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        evaluate_robustness(vanilla, x * 3, y)
    with pytest.raises(ValueError, match="unknown protocol"):
        evaluate_robustness(vanilla, x, y, protocol="weak")
    for labels in (torch.tensor([0, 1, 4, 2]), torch.tensor([0, -1, 3, 2])):
        with pytest.raises(ValueError, match=r"but the model has 4 classes \(valid labels: 0..3\)"):
            evaluate_robustness(vanilla, x, labels)
    with pytest.raises(ValueError, match=r"Linf eps 2 is out of range; valid: \[0, 1\]"):
        evaluate_robustness(vanilla, x, y, eps=2)
    with pytest.raises(ValueError, match=r"L2 eps 21 .*\(the image diameter sqrt\(3\*12\*12\)"):
        evaluate_robustness(vanilla, x, y, suite="standard-l2", eps=21)
    entry = AttackEntry("a", "pgd")
    with pytest.raises(ValueError, match="entry's own fields"):
        dataclasses.replace(entry, hyper={"eps": 0.1})


def test_the_models_pixel_check_runs_before_the_batches_not_in_them(vanilla, monkeypatch):
    # x is checked once at the entry and by the model's first calls (shape); the batches' model
    # calls skip the per-call check (a host sync each), and the flag comes back afterwards.
    import ciiv.models.classifier as classifier

    checked = []
    check = classifier.check_images
    monkeypatch.setattr(classifier, "check_images", lambda x, **kw: checked.append(check(x, **kw)))
    before = []  # the checks made before the batches start

    def progress(event, _info):
        if event == "start":
            before.append(len(checked))

    x, y = colour_data(8, 0)
    suite = _pgd_suite(2 / 255, steps=3)
    evaluate_robustness(vanilla, x, y, suite=suite, audit=False, progress=progress)
    assert before[0] > 0 and len(checked) == before[0]
    assert vanilla.check_inputs


def test_a_model_that_outputs_probabilities_gets_a_warning(vanilla, caplog):
    x, y = colour_data(4, 0)
    softmax = nn.Sequential(vanilla, nn.Softmax(dim=1)).eval()
    with caplog.at_level(logging.WARNING, logger="ciiv.evaluate.api"):
        evaluate_robustness(softmax, x, y, suite=_pgd_suite(2 / 255, steps=2))
    assert "look like probabilities" in caplog.text and "attacks need logits" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ciiv.evaluate.api"):
        evaluate_robustness(vanilla, x, y, suite=_pgd_suite(2 / 255, steps=2))
    assert "probabilities" not in caplog.text


def test_progress_reports_batches_attacks_and_every_attack_step(vanilla):
    x, y = colour_data(10, 6)
    events = []

    def progress(event, info):
        events.append((event, dict(info)))

    evaluate_robustness(
        vanilla, x, y, suite=_pgd_suite(2 / 255, steps=3), batch_size=6, progress=progress
    )
    per_batch = [
        ("attack", {"name": "pgd-3", "index": 0, "attacks": 1}),
        *[("step", {"name": "pgd-3", "step": s, "steps": 3}) for s in (1, 2, 3)],
    ]
    expected = [("start", {"total": 2, "done": 0})]
    for b, seen in ((0, 6), (1, 10)):
        expected += [(event, {"batch": b, **info}) for event, info in per_batch]
        expected.append(("batch", {"batch": b, "done": b + 1, "total": 2, "seen": seen}))
    assert events[0][0] == "plan" and [e for e, _ in events].count("estimate") == 1
    shown = [(e, info) for e, info in events if e not in ("plan", "estimate")]
    for (event, info), (want_event, want) in zip(shown, expected, strict=True):
        assert event == want_event and want.items() <= info.items()


def test_a_missing_attack_package_stops_the_evaluation_before_it_writes(vanilla, tmp_path,
                                                                        monkeypatch):  # fmt: skip
    from ciiv.deps import MissingDependency

    monkeypatch.setitem(sys.modules, "pyautoattack", None)  # as if it were not installed
    x, y = colour_data(4, 0)
    with pytest.raises(MissingDependency, match=r"attack 'autoattack'.*ciiv\[autoattack\]"):
        evaluate_robustness(vanilla, x, y, suite="standard-linf", out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_suite_files_load_and_bad_ones_say_what_is_wrong(tmp_path):
    from ciiv.evaluate.suites import load_suite_file

    good = tmp_path / "mine.yaml"
    good.write_text(yaml.safe_dump(_pgd_suite(4 / 255, steps=2)))
    assert get_suite(str(good)) == Suite.from_dict(_pgd_suite(4 / 255, steps=2))
    assert get_suite(good).name == "pgd-2"
    entry = {"name": "a", "attack": "pgd"}
    for text, message in (
        (None, "cannot read suite file"),
        ("[1, 2]", "must hold a mapping with name"),
        ("name: x\nnorm: Linf\nbudget: {default: 8/255}\n", "has no entries"),
        ("name: x\nnorm: Linf\nbudget: {default: 8/255}\nentries: {a: 1}\n", "list of mappings"),
        ("name: x\nnorm: Linf\nbudget: {default: 8/255}\nentries: [{attack: pgd}]\n",
         "missing attack entry key name"),
        ("name: x\nnorm: Linf\nbudget: {default: 8/255}\nentries: [{name: a, attack: pgdd}]\n",
         "unknown attack 'pgdd'"),
        (yaml.safe_dump({"name": "x", "norm": "Linf", "budget": {"default": "8/255"},
                         "entries": [{**entry, "hyper": {"stepz": 3}}]}),
         "attack 'pgd': unknown hyper-parameter 'stepz'"),
        ("name: x\nnorm: L3\nbudget: {default: 8/255}\nentries: [{name: a, attack: pgd}]\n",
         "unknown norm"),
        ("name: x\nnorm: Linf\nbudget: {default: 8/255\n", "cannot read suite file"),
    ):  # fmt: skip
        path = tmp_path / "bad.yaml"
        path.unlink(missing_ok=True)
        if text is not None:
            path.write_text(text)
        with pytest.raises(ValueError) as error:
            load_suite_file(path)
        assert str(path) in str(error.value) and message in str(error.value), error.value
    with pytest.raises(ValueError, match="or a YAML file"):
        get_suite("no-such-suite")


def test_the_documented_suite_file_example_loads(tmp_path):
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "evaluation.md").read_text()
    block = doc.split("### Custom suites", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "my_suite.yaml").write_text(block)
    suite = get_suite(str(tmp_path / "my_suite.yaml"))
    names = [e.name for e in suite.expanded()]
    assert suite.name == "my-linf" and names == [
        "fgsm", "pgd-50-bpda", "fgsm@eps=16/255", "fgsm@eps=32/255",
    ]  # fmt: skip
