"""The demo: vanilla vs CiiV on the built-in ``shapes`` data, trained and attacked in minutes.

It trains each method with the ``shapes-fast`` preset, then evaluates the best checkpoint (chosen
on the validation split) on two test splits: ``iid`` (the background colour agrees with the shape
with probability rho, as in training) and ``shifted`` (colour independent of shape, so a model that
learnt the colour shortcut fails). Each split is attacked with the ``quick`` suite under the full
protocol (FGSM, PGD-10 and, for CiiV, BPDA-PGD-10, all with EOT on the random model). Every
number comes from :func:`ciiv.evaluate.evaluate_robustness`, so it has the same per-example
files, R prediction draws and worst-case accounting as ``ciiv eval``.

Outputs, under ``out_dir``: ``runs/<method>/`` (full training runs, evaluations under
``eval/``), ``results.json``, ``report.md`` (with :func:`reading_notes`) and ``accuracy.png``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ciiv._io import atomic_write, write_json_atomic
from ciiv.evaluate.audit import audit_verdict
from ciiv.report import markdown_table, plot_bars

__all__ = ["DemoSettings", "run_demo", "write_report"]

logger = logging.getLogger(__name__)

SPLITS = ("iid", "shifted")
# What results.json keeps of each evaluation summary.
_HEADLINE = (
    "clean_accuracy clean_accuracy_ci95 robust_accuracy robust_accuracy_ci95 per_attack eot "
    "n_examples forward_passes"
).split()
# The 95 % intervals of a split's clean and worst-case accuracy, by the reading notes' names.
_INTERVALS = {"clean": "clean_accuracy_ci95", "worst-case": "robust_accuracy_ci95"}


@dataclass(frozen=True)
class DemoSettings:
    """What the demo trains and how hard it attacks.

    Attributes:
        methods: training methods to compare (names from ``ciiv.train.list_methods``).
        epochs, n_train: training length and training-set size (the ``shapes-fast`` preset's
            6 epochs on 4000 images by default).
        n_test: examples evaluated per test split.
        suite: attack suite; eps: its Linf budget; eot: gradient draws per step for the random
            model (None: the evaluation default); draws: prediction draws per example (None: the
            evaluation default).
        backbone, seed, device: as for ``ciiv train``.
    """

    methods: tuple[str, ...] = ("vanilla", "ciiv")
    epochs: int = 6
    n_train: int = 4000
    n_test: int = 100
    suite: str = "quick"
    eps: str = "8/255"
    eot: int | None = None
    draws: int | None = None
    backbone: str = "small_cnn"
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in ("epochs", "n_train", "n_test"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.methods:
            raise ValueError("methods must name at least one training method")


def run_demo(
    out_dir: str | Path,
    settings: DemoSettings | None = None,
    *,
    train_progress: Callable | None = None,
    eval_progress: Callable[[str], Callable | None] | None = None,
) -> dict[str, Any]:
    """Train and evaluate every method of ``settings`` into ``out_dir`` (new or empty: nothing
    written before is overwritten); write results, report and plot. Returns the content of
    ``results.json``: per method and split, the headline numbers and where the summary is.
    ``train_progress`` goes to ``fit``; ``eval_progress(label)`` (label "ciiv / iid") returns an
    evaluation progress callback or None."""
    from ciiv.evaluate import evaluate_robustness
    from ciiv.train import fit, load_config, load_data, load_run

    settings = settings or DemoSettings()
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(
            f"{out} exists and is not empty; choose another --out (the demo never overwrites "
            "earlier results)"
        )
    out.mkdir(parents=True, exist_ok=True)
    record = {**asdict(settings), "methods": list(settings.methods)}  # JSON's own types
    results: dict[str, Any] = {"settings": record, "methods": {}}
    overrides = [  # of the shapes-fast preset, after each method's name
        ("model.backbone", settings.backbone),
        ("epochs", settings.epochs),
        ("seed", settings.seed),
        ("device", settings.device),
        ("data.options", {"n_train": settings.n_train, "n_test": settings.n_test}),
    ]
    for method in settings.methods:
        config = load_config("shapes-fast", [("method.name", method), *overrides])
        run_dir = out / "runs" / method
        logger.info("training %s on shapes (%d epochs)", method, settings.epochs)
        fit(config, run_dir, progress=train_progress)
        loaded = load_run(run_dir, "best")
        splits = load_data(loaded.config.data)
        per_split = {}
        for split in SPLITS:
            data = splits.test[split].subset(slice(0, settings.n_test))
            x, y = data.images.float() / 255, data.labels
            label = f"{method} / {split}"
            logger.info("evaluating %s with the %s suite", label, settings.suite)
            result = evaluate_robustness(
                loaded.model,
                x,
                y,
                suite=settings.suite,
                protocol="full",
                eps=settings.eps,
                eot=settings.eot,
                draws=settings.draws,
                seed=settings.seed,
                dataset="shapes",
                out_dir=run_dir / "eval" / f"{settings.suite}-full-{split}",
                run_info={  # what `ciiv report` groups and labels by
                    "run_dir": str(run_dir),
                    "method": method,
                    "dataset": "shapes",
                    "test_split": split,
                    "checkpoint": "best",
                    "epoch": loaded.epoch,
                    "selection": f"first {len(y)} of the split",
                },
                progress=eval_progress(label) if eval_progress else None,
            )
            summary = result.to_dict()
            per_split[split] = {
                **{key: summary[key] for key in _HEADLINE},
                "per_attack_ci95": {k: v["ci95"] for k, v in summary["attacks"].items()},
                "audit": audit_verdict(summary.get("audit")),
                "summary": str(result.out_dir / "summary.json"),
            }
        results["num_classes"] = loaded.dataset_info.num_classes
        results["methods"][method] = {
            "run_dir": str(run_dir),
            "best_epoch": loaded.epoch,
            "splits": per_split,
        }
    write_json_atomic(out / "results.json", results)
    write_report(results, out)
    return results


def _attacks(results: dict[str, Any]) -> list[str]:
    """Attack names of the suite, in run order, over every method."""
    splits = (split for m in results["methods"].values() for split in m["splits"].values())
    return list(dict.fromkeys(name for split in splits for name in split["per_attack"]))


def _bars(n: dict[str, Any], attacks: list[str]) -> tuple[list, list]:
    """Accuracies and 95 % intervals of a split's clean, attacks and worst case (None: n/a)."""
    ci = n.get("per_attack_ci95", {})
    values = [n["clean_accuracy"], *map(n["per_attack"].get, attacks), n["robust_accuracy"]]
    cis = [n.get("clean_accuracy_ci95"), *map(ci.get, attacks), n.get("robust_accuracy_ci95")]
    return values, cis


def table_rows(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows (accuracy in %) of the demo's table: one row per method and split."""
    attacks = _attacks(results)
    rows = []
    for method, record in results["methods"].items():
        for split, numbers in record["splits"].items():
            cells = ("n/a" if v is None else f"{100 * v:.1f}" for v in _bars(numbers, attacks)[0])
            rows.append([method, split, *cells])
    return ["method", "test split", "clean", *attacks, "worst case"], rows


def _interval_text(ci: list[float]) -> str:
    return f"{100 * ci[0]:.0f}–{100 * ci[1]:.0f} %"


def reading_notes(results: dict[str, Any]) -> list[str]:
    """Sentences for the report where the numbers cannot carry a conclusion: the methods are
    indistinguishable on a split (their 95 % intervals overlap, so the demo does not rank them
    there), or a method is at chance on ``shifted`` (1 / K inside its interval), where the
    colour shortcut no longer helps."""
    methods = results["methods"]
    overlaps = []
    for split in SPLITS:
        for measure, key in _INTERVALS.items():
            intervals = {name: record["splits"][split].get(key) for name, record in methods.items()}
            if len(intervals) < 2 or None in intervals.values():
                continue
            if max(ci[0] for ci in intervals.values()) <= min(ci[1] for ci in intervals.values()):
                listed = ", ".join(f"{n} {_interval_text(ci)}" for n, ci in intervals.items())
                overlaps.append(f"{measure} accuracy on `{split}` ({listed})")
    notes = []
    if overlaps:
        notes.append(
            "The methods are indistinguishable (their 95 % intervals overlap) in "
            + "; ".join(overlaps)
            + ": this demo does not rank them there, and more test images (`--n-test`) would "
            "narrow the intervals."
        )
    k = results.get("num_classes")
    at_chance = []
    for name, record in methods.items():
        for measure, key in _INTERVALS.items():
            ci = record["splits"]["shifted"].get(key)
            if k and ci is not None and ci[0] <= 1 / k <= ci[1]:
                at_chance.append(f"{name}'s {measure} accuracy ({_interval_text(ci)})")
    if at_chance:
        notes.append(
            f"At chance on `shifted` (1/{k} = {100 / k:.0f} % lies inside the 95 % interval, "
            f"so no better than guessing the shape): {'; '.join(at_chance)}."
        )
    flagged = []
    for name, record in methods.items():
        verdicts = [n.get("audit") or {} for n in record["splits"].values()]
        checks = {c for v in verdicts for c in v.get("warned", []) + v.get("failed", [])}
        if checks:
            failed = any(v.get("verdict") == "failed" for v in verdicts)
            flagged.append(
                f"{name} ({'failed' if failed else 'warned'}: {', '.join(sorted(checks))})"
            )
    if flagged:
        notes.append(
            f"The default audit flagged {'; '.join(flagged)}: the true gradient of a random "
            "model may be obfuscated, so trust its accuracy under the BPDA attacks of the suite, "
            "not under plain PGD, and run `ciiv audit` on the run for the full audit (details in "
            "each summary's `audit`)."
        )
    return notes


def write_report(results: dict[str, Any], out: Path) -> None:
    """``report.md`` (the table and how to read it) and ``accuracy.png`` (grouped bars with the
    95 % intervals and the chance level)."""
    header, rows = table_rows(results)
    settings = results["settings"]
    eot = max(split["eot"] for m in results["methods"].values() for split in m["splits"].values())
    half_width = 100 * 1.96 * math.sqrt(0.25 / settings["n_test"])  # the widest 95 % interval's
    lines = [
        "# ciiv demo: vanilla vs CiiV on shapes",
        "",
        f"Accuracy (%) on {settings['n_test']} test images per split; attacks are Linf with eps "
        f"{settings['eps']}, suite `{settings['suite']}`, full protocol: every attack queries the "
        f"deployed model, averaging gradients over EOT {eot} draws when the model is random. "
        "`worst case` counts an example as robust only if it survives every attack of the "
        "suite. `iid` test images share the training set's colour-shape correlation; in "
        "`shifted` the background colour says nothing about the shape, so accuracy there measures "
        "reliance on the shape itself. Read the two splits together: a model that reads the "
        "background colour resists small perturbations (a colour survives them) yet fails on "
        "`shifted`, so its robust accuracy on `iid` is not evidence that it recognises shapes. "
        f"With {settings['n_test']} images per split, the 95 % interval of each number is up to "
        f"+-{half_width:.0f} points (exact intervals in the summaries and "
        "as error bars in the plot).",
        "",
        *markdown_table(header, rows, "l" * len(header)),
    ]
    notes = reading_notes(results)
    if notes:
        lines += ["**What these numbers cannot tell.** " + " ".join(notes), ""]
    lines += [
        f"Training: `shapes-fast` preset, backbone `{settings['backbone']}`, {settings['epochs']} "
        f"epochs on {settings['n_train']} images, seed {settings['seed']}; best checkpoint by "
        "validation accuracy. Per-example results and full summaries are under "
        "`runs/<method>/eval/`. This is a minutes-scale synthetic benchmark: it shows the "
        "pipeline and the direction of the effects, not the paper's numbers.",
        "",
        "![accuracy](accuracy.png)",
        "",
    ]
    text = "\n".join(lines)
    atomic_write(out / "report.md", lambda f: f.write(text))
    _plot(results, out / "accuracy.png")


def _plot(results: dict[str, Any], path: Path) -> None:
    """Grouped bars per split (one panel each): clean, each attack, worst case; one bar per
    method with its 95 % interval; the chance level 1 / K dashed (where K is recorded)."""
    attacks = _attacks(results)
    categories = ["clean", *attacks, "worst case"]
    panels = []
    for split in SPLITS:
        series = []
        for method, record in results["methods"].items():
            values, intervals = _bars(record["splits"][split], attacks)
            series.append({"label": method, "values": values, "ci95": intervals})
        panels.append({"title": f"{split} test split", "categories": categories, "series": series})
    k = results.get("num_classes")
    plot_bars(
        panels,
        path,
        title=f"shapes, Linf eps {results['settings']['eps']}, full protocol",
        chance=1 / k if k else None,
    )
