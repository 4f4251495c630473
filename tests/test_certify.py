"""Certification (Cohen et al.'s CERTIFY / PREDICT): binomial bounds against scipy, radii against
a model whose smoothed class probability is known in closed form, files, resume, CLI and report."""

import json
import math
from statistics import NormalDist

import numpy as np
import pytest
import torch
from torch import nn

from ciiv.certify import certify, clopper_pearson, clopper_pearson_lower, predict
from ciiv.certify.stats import beta_ppf, binomial_test_half, regularized_incomplete_beta
from ciiv.cli import main
from ciiv.evaluate.records import read_jsonl
from ciiv.evaluate.selection import select_examples
from ciiv.models import SmoothedClassifier

pytestmark = pytest.mark.usefixtures("one_thread")

PHI = NormalDist()


class Threshold(nn.Module):
    """Class 1 where the first pixel exceeds t, else class 0 (logits [B, 2]).

    A threshold t in (0, 1) commutes with clipping to [0, 1], so under Gaussian noise of std
    sigma the smoothed class probability is exactly Phi(|x - t| / sigma) and the true L2 radius
    of the smoothed classifier at x is |x - t|: Cohen et al.'s bound is tight here."""

    def __init__(self, t: float = 0.5) -> None:
        super().__init__()
        self.t = t
        self.calls: list[tuple[int, float, float]] = []

    def forward(self, x):
        self.calls.append((x.shape[0], float(x.min()), float(x.max())))
        v = x.flatten(1)[:, 0] - self.t
        return torch.stack([-v, v], 1)


def _pixels(values):
    return torch.tensor(values, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).clone()


# --- binomial statistics against scipy ------------------------------------------------------


def test_clopper_pearson_matches_scipy_on_a_grid_including_k_0_and_k_n():
    stats = pytest.importorskip("scipy.stats")
    for n in (1, 2, 7, 100, 1000, 100_000):
        ks = sorted({0, 1, n // 3, n // 2, n - 1, n})
        for alpha in (0.001, 0.01, 0.05, 0.25):
            got = clopper_pearson_lower(ks, n, alpha)
            ref = [stats.binomtest(k, n).proportion_ci(1 - 2 * alpha, "exact").low for k in ks]
            np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12)
        low, high = clopper_pearson(ks, n, 0.95)
        cis = [stats.binomtest(k, n).proportion_ci(0.95, "exact") for k in ks]
        np.testing.assert_allclose(low, [c.low for c in cis], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(high, [c.high for c in cis], rtol=1e-9, atol=1e-12)
        pvalues = [stats.binomtest(k, n, 0.5).pvalue for k in ks]
        np.testing.assert_allclose(binomial_test_half(ks, n), pvalues, rtol=1e-9, atol=1e-12)
    # closed forms at the ends: k = n gives alpha ** (1 / n); k = 0 gives 0
    assert clopper_pearson_lower(100_000, 100_000, 0.001) == pytest.approx(0.001**1e-5, rel=1e-12)
    assert clopper_pearson_lower(0, 10, 0.001) == 0.0


def test_incomplete_beta_and_its_quantile_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    special = pytest.importorskip("scipy.special")
    rng = np.random.default_rng(0)
    a = np.exp(rng.uniform(-1, 11, 200))  # 0.37 .. 60000
    b = np.exp(rng.uniform(-1, 11, 200))
    q = rng.uniform(0, 1, 200)
    x = stats.beta.ppf(q, a, b)
    np.testing.assert_allclose(regularized_incomplete_beta(x, a, b), special.betainc(a, b, x),
                               rtol=1e-9, atol=1e-13)  # fmt: skip
    np.testing.assert_allclose(beta_ppf(q, a, b), x, rtol=1e-8, atol=1e-13)
    assert beta_ppf(0.0, 2, 3) == 0.0 and beta_ppf(1.0, 2, 3) == 1.0
    with pytest.raises(ValueError, match="0 <= k <= n"):
        clopper_pearson_lower(5, 4, 0.01)


# --- CERTIFY against the closed form ------------------------------------------------------------


def test_radius_converges_to_the_analytic_one_from_below():
    sigma = 0.25
    x = _pixels([0.7, 0.55, 0.1, 0.95])
    margin = (x.flatten(1)[:, 0] - 0.5).abs().double()
    label = (x.flatten(1)[:, 0] > 0.5).long()
    gaps = []
    for n in (1_000, 10_000, 100_000):
        result = certify(Threshold(), x, sigma, n0=100, n=n, alpha=0.001, batch_size=20_000)
        assert torch.equal(result.prediction, label)
        assert (result.radius <= margin).all()  # the bound fails with probability <= alpha
        gaps.append(float((margin - result.radius).max()))
        assert torch.equal(result.counts.sum(1), torch.full((4,), n))
        assert torch.equal(result.count, result.counts.gather(1, label[:, None])[:, 0])
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 0.012
    # pA_lower is the Clopper-Pearson bound of the counts, and radius = sigma * Phi^-1(pA_lower)
    assert result.p_lower.tolist() == pytest.approx(
        clopper_pearson_lower(result.count.numpy(), 100_000, 0.001).tolist()
    )
    expected = [sigma * PHI.inv_cdf(p) for p in result.p_lower.tolist()]
    assert result.radius.tolist() == pytest.approx(expected, rel=1e-9)


def test_the_certificate_fails_at_most_at_rate_alpha():
    """4000 independent certifications (independent noise per example) at margin 0.1: a failure
    is a certified wrong class or a radius above the true one. Its rate must stay <= alpha."""
    alpha, sigma, count = 0.05, 0.25, 4000
    x = _pixels([0.6] * count)
    failures = 0
    for seed in range(2):
        result = certify(Threshold(), x, sigma, n0=10, n=100, alpha=alpha, seed=seed)
        wrong = result.prediction == 0
        over = result.radius > 0.1
        failures += int((wrong | over).sum())
        assert (result.prediction == 1).float().mean() > 0.5  # not vacuous: most are certified
    rate = failures / (2 * count)
    assert rate <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / (2 * count))


def test_margin_zero_abstains_with_radius_zero():
    result = certify(Threshold(), _pixels([0.5] * 300), 0.25, n0=50, n=2000, alpha=0.001, seed=3)
    abstained = result.prediction == -1
    assert abstained.float().mean() >= 0.99 and result.abstained.equal(abstained)
    assert (result.radius[abstained] == 0).all() and (result.p_lower[abstained] <= 0.5).all()


def test_predict_abstains_when_the_top_two_are_not_significantly_apart():
    stats = pytest.importorskip("scipy.stats")
    tie = predict(Threshold(), _pixels([0.5] * 200), 0.25, n=500, alpha=0.01, seed=1)
    assert (tie.prediction == -1).float().mean() >= 0.95
    clear = predict(Threshold(), _pixels([0.9, 0.1, 0.65]), 0.25, n=500, alpha=0.01, seed=1)
    assert clear.prediction.tolist() == [1, 0, 1]
    for counts, p in zip(tie.counts[:5].tolist(), tie.p_value[:5].tolist(), strict=True):
        top, second = sorted(counts, reverse=True)
        assert p == pytest.approx(stats.binomtest(top, top + second, 0.5).pvalue, rel=1e-9)


def test_smoothed_classifier_certifies_its_base_with_clipped_noise_reproducibly():
    base = Threshold()
    model = SmoothedClassifier(base, sigma=0.5).train()
    x = _pixels([0.05, 0.97])
    first = certify(model, x, 0.5, n0=20, n=1000, batch_size=64, seed=7)
    # the base saw only clipped inputs, in calls of at most batch_size images
    assert all(size <= 64 and 0 <= low and high <= 1 for size, low, high in base.calls)
    assert model.training and base.training  # modes restored
    again = certify(model, x, 0.5, n0=20, n=1000, batch_size=64, seed=7)
    other = certify(model, x, 0.5, n0=20, n=1000, batch_size=64, seed=8)
    assert torch.equal(first.counts, again.counts) and torch.equal(first.radius, again.radius)
    assert not torch.equal(first.counts, other.counts)


def test_a_random_base_classifier_draws_per_row_and_reproducibly():
    from ciiv.models import CiiVClassifier, create_model
    from ciiv.sampling import RetinotopicSampler

    ciiv = CiiVClassifier(
        create_model("small_cnn", num_classes=3, in_channels=1, width=4),
        RetinotopicSampler(8, num_views=2, samples_per_view=1),
        [0.5],
        [0.25],
    )
    x = torch.rand(3, 1, 8, 8)
    first = certify(ciiv, x, 0.25, n0=10, n=50, alpha=0.01, batch_size=32, seed=2)
    again = certify(ciiv, x, 0.25, n0=10, n=50, alpha=0.01, batch_size=32, seed=2)
    assert torch.equal(first.counts, again.counts)
    assert not ciiv.sampler.per_example_masks  # switched on for the calls only


def test_certify_examples_in_memory_matches_certify_per_batch():
    from ciiv.certify import certify_examples
    from ciiv.evaluate.engine import derive_seed

    x, y = _pixels([0.9, 0.3, 0.5, 0.62, 0.05]), torch.tensor([1, 0, 0, 0, 0])
    result = certify_examples(Threshold(), x, y, sigma=0.25, n0=20, n=500, alpha=0.01,
                              examples_per_batch=2, seed=4)  # fmt: skip
    direct = certify(Threshold(), x[2:4], 0.25, n0=20, n=500, alpha=0.01,
                     seed=derive_seed(4, "certify", 1))  # fmt: skip
    assert [r["radius"] for r in result.rows[2:4]] == direct.radius.tolist()
    assert [r["correct"] for r in result.rows] == [True, True, False, False, True]
    summary = result.summary
    assert summary["accuracy"] == 0.6 and summary["forward_passes"] == 5 * 520
    assert result.out_dir is None and summary["abstain_rate"] >= 0.2


def test_certify_examples_runs_the_spread_test_once_not_per_batch(monkeypatch):
    import ciiv.attacks.draws as draws
    from ciiv.certify import certify_examples

    class Noisy(Threshold):  # random, and declares nothing about its rows
        def forward(self, x):
            return super().forward(x) + torch.rand(x.shape[0], 2)

    measured = []

    def counted(model, x, **kwargs):
        measured.append(x.shape[0])
        return real(model, x, **kwargs)

    real = draws.measure_rows
    monkeypatch.setattr(draws, "measure_rows", counted)
    x, y = _pixels([0.9, 0.3, 0.5, 0.62, 0.05]), torch.tensor([1, 0, 0, 0, 0])
    result = certify_examples(Noisy(), x, y, sigma=0.25, n0=5, n=20, examples_per_batch=2)
    assert measured == [5] and len(result.rows) == 5  # three batches, one test on the examples


def test_bad_arguments_are_refused():
    x = _pixels([0.5])
    for kwargs, message in (
        ({"sigma": 0.0}, "sigma must be a positive number"),
        ({"alpha": 1.0}, "alpha must lie in"),
        ({"n0": 0}, "n0 must be a positive integer"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
    ):
        with pytest.raises(ValueError, match=message):
            certify(Threshold(), x, **{"sigma": 0.25, **kwargs})
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        certify(Threshold(), x + 1, 0.25)


# --- the command, files, resume and report ----------------------------------------------------


def _train(root, method):
    from ciiv.train import fit, load_config

    config = load_config(
        None,
        {
            "data.dataset": "shapes",
            "data.options": {"n_train": 160, "n_test": 48, "image_size": 16},
            "method.name": method,
            "model.backbone": "small_cnn",
            "model.backbone_kwargs": {"width": 8},
            "model.smoothing_draws": 2,
            "model.smoothing_votes": 3,
            "epochs": 1,
            "batch_size": 32,
            "device": "cpu",
        },
    )
    fit(config, root / method)
    return root / method


@pytest.fixture(scope="module")
def rs_run(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("runs"), "rs")


def _args(run_dir, *extra):
    return ["certify", str(run_dir), "--n", "200", "--n0", "20", "--n-examples", "12",
            "--batch-size", "400", "--examples-per-batch", "5", "--device", "cpu",
            *extra]  # fmt: skip


def _comparable(rows):
    return [{k: v for k, v in r.items() if k != "time"} for r in rows]


def test_cli_writes_rows_summary_and_plot_and_resumes(rs_run, tmp_path):
    assert main(_args(rs_run)) == 0
    out = rs_run / "certify" / "sigma0.25-n200"
    summary = json.loads((out / "summary.json").read_text())
    rows = read_jsonl(out / "examples.jsonl")
    assert [r["index"] for r in rows] == select_examples(48, 12, 0).tolist()
    assert summary["sigma"] == 0.25 and summary["n"] == 200 and summary["n_examples"] == 12
    assert summary["run"]["method"] == "rs" and summary["run"]["deployed"]
    assert summary["forward_passes"] == 12 * 220 and (out / "certified_accuracy.png").stat().st_size
    curve = summary["certified_accuracy"]
    assert curve[0]["radius"] == 0 and [p["radius"] for p in curve][:2] == [0, 0.25][: len(curve)]
    assert curve[0]["accuracy"] == pytest.approx(sum(r["correct"] for r in rows) / 12)
    assert all(a["accuracy"] >= b["accuracy"] for a, b in zip(curve, curve[1:], strict=False))
    assert curve[-1]["radius"] <= summary["largest_radius"] < curve[-1]["radius"] + 0.25
    for r in rows:
        assert r["n"] == 200 and (r["prediction"] == -1) == (r["radius"] == 0)
        assert r["correct"] == (r["prediction"] == r["label"])
    # Cut the run short: one finished batch and a half-written row. Resuming recomputes only
    # the rest, and gives the rows of the uninterrupted run.
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "config.json").write_text((out / "config.json").read_text())
    lines = (out / "examples.jsonl").read_text().splitlines(keepends=True)
    (partial / "examples.jsonl").write_text("".join(lines[:6]) + lines[6][:20])
    first_batch = (out / "batches.jsonl").read_text().splitlines()[0]
    (partial / "batches.jsonl").write_text(first_batch + "\n")
    assert main(_args(rs_run, "--out", str(partial))) == 0
    assert _comparable(read_jsonl(partial / "examples.jsonl")) == _comparable(rows)
    resumed = read_jsonl(partial / "batches.jsonl")
    assert [b["batch"] for b in resumed] == [0, 1, 2]
    assert resumed[0] == read_jsonl(out / "batches.jsonl")[0]  # the finished batch was kept
    # Other settings into the same directory are refused with a hint.
    assert main(_args(rs_run, "--alpha", "0.01")) == 2


def test_a_run_that_is_not_randomized_smoothing_needs_sigma(tmp_path, capsys):
    vanilla = _train(tmp_path, "vanilla")
    assert main(_args(vanilla)) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "not randomized smoothing (rs); pass --sigma" in err
    assert main(_args(vanilla, "--sigma", "0.5", "--n-examples", "5")) == 0
    summary = json.loads((vanilla / "certify" / "sigma0.5-n200" / "summary.json").read_text())
    assert summary["base"] == "ciiv.models.classifier.Classifier"
    assert not summary["run"]["deployed"] and summary["model"]["trained_sigma"] is None


def test_report_puts_certified_beside_empirical_l2_and_flags_an_excess(rs_run, tmp_path):
    from ciiv.evaluate import evaluate_robustness
    from ciiv.report import load_summaries, write_report
    from ciiv.train import load_data, load_run

    if not (rs_run / "certify" / "sigma0.25-n200" / "summary.json").exists():
        assert main(_args(rs_run)) == 0
    loaded = load_run(rs_run, device="cpu")
    test = load_data(loaded.config.data).test["iid"]
    suite = {"name": "l2-tiny", "norm": "L2", "budget": {"default": 0.25},
             "entries": [{"name": "pgd-l2", "attack": "pgd", "hyper": {"steps": 2}}]}  # fmt: skip
    evaluate_robustness(loaded.model, test.images[:12].float() / 255, test.labels[:12],
                        suite=suite, eot=1, draws=2, out_dir=rs_run / "eval" / "l2-tiny-full",
                        run_info={"run_dir": str(rs_run), "method": "rs"})  # fmt: skip
    # A certification-only run directory is accepted too; eval summaries skip certify ones.
    assert all(s["suite"] == "l2-tiny" for s in load_summaries([rs_run]))
    written = write_report([rs_run], tmp_path / "report", "both")
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## Certified L2 accuracy (randomized smoothing)" in text
    row = next(line for line in text.splitlines() if "| 0.25 |" in line and "l2-tiny" in line)
    assert "rs (rs)" in row and "FLAG" not in text
    assert "certified-accuracy.png" in {p.name for p in written}
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    comparison = report["certified"][0]["comparisons"][0]
    assert comparison["eps"] == 0.25 and comparison["flag"] is False
    # An empirical figure below the certified one beyond noise is flagged (it would be a bug).
    evaluation = json.loads((rs_run / "eval" / "l2-tiny-full" / "summary.json").read_text())
    evaluation["robust_accuracy_per_draw"] = {"mean": 0.1, "ci95": [0.0, 0.2]}
    certification = json.loads((rs_run / "certify" / "sigma0.25-n200" / "summary.json").read_text())
    certification["correct_radii"] = [0.3] * 10  # 10 of 12 certified at r = 0.25: 51.6 % or more
    for name, data in (("eval.json", evaluation), ("certify.json", certification)):
        (tmp_path / name).write_text(json.dumps(data))
    write_report([tmp_path / "eval.json", tmp_path / "certify.json"], tmp_path / "flagged")
    text = (tmp_path / "flagged" / "report.md").read_text()
    assert "**FLAG: certified accuracy above the empirical robust accuracy** (rs (rs) at r" in text
    row = "| 0.25 | 83.3 (51.6–97.9) | 10.0 (<= 20.0) | l2-tiny/full worst case (per draw) |"
    assert row in text
    assert "**FLAG: certified > empirical** |" in text


@pytest.mark.slow
def test_torchrun_shares_the_examples_and_merges_to_the_single_process_rows(rs_run, tmp_path):
    import os
    import shutil
    import subprocess
    import sys

    if shutil.which("torchrun") is None:
        pytest.skip("torchrun is not on PATH")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = ["torchrun", "--nproc_per_node", "2", "-m", "ciiv"]
    for command, out in ((two, "two"), ([sys.executable, "-m", "ciiv"], "one")):
        # torchrun reads --n as an abbreviation of its own options: the long name works.
        args = [a.replace("--n", "--n-draws") if a == "--n" else a for a in _args(rs_run)]
        args += ["--out", str(tmp_path / out)]
        subprocess.run([*command, *args], check=True, env=env, capture_output=True)
    rows = {out: read_jsonl(tmp_path / out / "examples.jsonl") for out in ("two", "one")}
    assert _comparable(rows["two"]) == _comparable(rows["one"]) and len(rows["one"]) == 12
    assert not (tmp_path / "two" / "shards").exists()
