"""A grid's results: ``results.json`` from the cells' own files, then ``results.md`` and plots
made from ``results.json`` alone (so the markdown is always regenerated identically).

Per dataset, suite and eps, one table row per run (docs/experiments.md, "The results", describes
the columns), with the two honesty invariants checked: full-protocol robust accuracy not above the
paper protocol's, and robust accuracy not rising with eps, each beyond noise (``_margin``). The
per-attack detail goes through :mod:`ciiv.report` into ``report/``.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from ciiv._io import atomic_write, write_json_atomic
from ciiv.evaluate.records import read_json, read_jsonl
from ciiv.evaluate.suites import format_eps
from ciiv.plotting import pyplot, save_png
from ciiv.report import (
    attack_eot,
    certified_table,
    load_certifications,
    load_summaries,
    markdown_table,
    percent,
    write_report,
)

from .grid import Grid
from .runner import CELLS, cell_dir, cell_evaluations, cell_record_path

__all__ = ["SCHEMA", "collect", "render_markdown", "write_results"]

SCHEMA = "ciiv.experiment/1"


def collect(grid: Grid, out: str | Path) -> dict[str, Any]:
    """``results.json``'s content: every cell's files summarised, the tables, the flags."""
    out = Path(out)
    cells = [_cell_entry(grid, cell, out) for cell in grid.cells()]
    tables = _tables(grid, cells)
    flags = [flag for table in tables for row in table["rows"] for flag in row["flags"]]
    return {
        "schema": SCHEMA,
        "grid": grid.name,
        "description": grid.description,
        "spec": grid.to_dict(),
        "cells": cells,
        "tables": tables,
        "flags": flags,
    }


def _cell_entry(grid: Grid, cell, out: Path) -> dict[str, Any]:
    record_path = cell_record_path(out, cell)
    record = read_json(record_path) if record_path.is_file() else {}
    run_dir = cell_dir(out, cell)
    history = read_jsonl(run_dir / "metrics.jsonl")
    val = [h["val_acc"] for h in history if h.get("val_acc") is not None]
    audit_path = run_dir / "audit" / "audit.json"
    audit = read_json(audit_path) if audit_path.is_file() else None
    if audit is not None:
        eps = audit["settings"]["eps"]
        audit = {"passed": audit["passed"], "counts": audit["counts"], "eps": eps}
    evals = []
    for suite, _, _, name in cell_evaluations(grid, views=True):  # every name a cell may have
        path = run_dir / "eval" / name / "summary.json"
        if path.is_file():
            evals.append(_eval_entry(load_summaries([path])[0], suite, path, out))
    return {
        "name": cell.name,
        "run": cell.run,
        "seed": cell.seed,
        "method": cell.config.method.name,
        "dataset": cell.config.data.dataset,
        "backbone": cell.config.model.backbone,
        "status": record.get("status", "not run"),
        "error": record.get("error"),
        "phases_s": {k: round(v, 1) for k, v in (record.get("phases_s") or {}).items()},
        "epochs": len(history),
        "best_val_acc": max(val) if val else None,
        "audit": audit,
        "evals": evals,
        "certified": [_certified_entry(c, out) for c in load_certifications([run_dir])],
    }


def _certified_entry(summary: dict[str, Any], out: Path) -> dict[str, Any]:
    """A ``ciiv certify`` summary of the cell (randomized smoothing's certified L2 accuracy)."""
    keys = ("sigma", "n0", "n", "alpha", "n_examples", "abstain_rate")
    return {
        **{key: summary[key] for key in keys},
        "elapsed_s": round(summary["elapsed_s"], 1),
        "curve": summary["certified_accuracy"],  # [{"radius", "accuracy", "ci95"}]
        "source": Path(summary["_path"]).relative_to(out).as_posix(),
    }


def _eps_text(eps: float) -> str:
    """A budget as people write it: 0.2 for MNIST's round budgets, 8/255 for 1/255 steps."""
    return f"{eps:g}" if round(eps, 2) == eps else format_eps(eps)


def _eval_entry(summary: dict[str, Any], suite: str, path: Path, out: Path) -> dict[str, Any]:
    budget = summary["threat_model"]["eps"]
    return {
        "suite": suite,
        "protocol": summary["protocol"],
        "norm": summary["threat_model"]["norm"],
        "eps": budget,
        "eps_label": _eps_text(budget),
        "views": bool((summary.get("model") or {}).get("views")),
        "n": summary["n_examples"],
        "attack_eot": attack_eot(summary),
        "draws": summary.get("draws"),
        "clean": summary["clean_accuracy"],
        "clean_ci95": summary.get("clean_accuracy_ci95"),
        "robust": summary["robust_accuracy"],
        "robust_ci95": summary.get("robust_accuracy_ci95"),
        "per_attack": summary["per_attack"],
        "forward_passes": summary.get("forward_passes"),
        "elapsed_s": round(summary.get("elapsed_s", 0.0), 1),
        "source": path.relative_to(out).as_posix(),
    }


# -- tables and invariants ----------------------------------------------------------------------


def _margin(p1: float, n1: int, p2: float, n2: int) -> float:
    """What a difference of two accuracies must exceed to count beyond noise: 1.96 standard
    errors of the difference of the two proportions plus one example."""
    se = math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    return 1.96 * se + 1 / min(n1, n2)


def _stat(values: list[float], ci95: list[float] | None) -> dict[str, Any] | None:
    if not values:
        return None
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else None,
        "ci95": ci95 if len(values) == 1 else None,
        "values": values,
    }


def _audit_verdict(cells: list[dict[str, Any]]) -> str:
    audits = [c["audit"] for c in cells if c["audit"] is not None]
    if not audits:
        return "not run"
    failed = sum(not a["passed"] for a in audits)
    warned = sum(a["counts"].get("warn", 0) for a in audits)
    verdict = "pass" if not failed else f"FAIL ({failed} of {len(audits)} seeds)"
    return verdict + (f", {warned} warn" if warned else "")


def _tables(grid: Grid, cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One table per (dataset, suite, eps), rows in grid order, flags attached."""
    first: dict[tuple[str, str, str], dict[str, Any]] = {}  # key -> its first evaluation
    for cell in cells:
        for e in cell["evals"]:
            first.setdefault((cell["dataset"], e["suite"], e["eps_label"]), e)
    tables = []
    for (dataset, suite, eps_label), e in first.items():
        rows = []
        for run in grid.runs:
            mine = [c for c in cells if c["run"] == run.name and c["dataset"] == dataset]
            rows.append(_row(run.name, mine, suite, eps_label))
        table = {"dataset": dataset, "suite": suite, "norm": e["norm"], "eps_label": eps_label}
        tables.append({**table, "eps": e["eps"], "rows": [r for r in rows if r is not None]})
    _flag_eps_rises(cells, tables)
    return tables


def _find(cell: dict[str, Any], suite: str, protocol: str, eps_label: str) -> dict | None:
    wanted = (suite, protocol, eps_label)
    found = [e for e in cell["evals"] if (e["suite"], e["protocol"], e["eps_label"]) == wanted]
    return found[0] if found else None


def _row(run: str, cells: list[dict], suite: str, eps_label: str) -> dict[str, Any] | None:
    full = [(c, e) for c in cells if (e := _find(c, suite, "full", eps_label)) is not None]
    if not full:
        return None
    views = any(e["views"] for _, e in full)
    # (cell, full, paper) of the cells evaluated under both protocols (a model with views)
    both = [(c, f, p) for c, f in full if (p := _find(c, suite, "paper", eps_label)) is not None]
    both = both if views else []
    paper = [(c, p) for c, _, p in both]
    one = len(full) == 1  # one seed: the summaries' 95 % intervals; several: the std
    gaps = [p["robust"] - f["robust"] for _, f, p in both]
    flags = []
    for cell, f, p in both:
        if f["robust"] - p["robust"] > _margin(f["robust"], f["n"], p["robust"], p["n"]):
            flags.append(
                f"{cell['name']}, {suite} eps {eps_label}: full-protocol robust accuracy "
                f"{percent(f['robust'])} % exceeds the paper protocol's {percent(p['robust'])} % "
                "beyond noise: the full attack is weaker than the surrogate's; the evaluation "
                "needs a look (bug or obfuscated gradients)"
            )
    return {
        "run": run,
        "method": full[0][0]["method"],
        "seeds": [c["seed"] for c, _ in full],
        "n": full[0][1]["n"],
        "attack_eot": sorted({v for _, e in full for v in e["attack_eot"]}),
        "draws": full[0][1]["draws"],
        "views": views,
        "clean": _stat([e["clean"] for _, e in full], _ci(full, "clean_ci95", one)),
        "full": _stat([e["robust"] for _, e in full], _ci(full, "robust_ci95", one)),
        "paper": _stat([e["robust"] for _, e in paper], _ci(paper, "robust_ci95", one)),
        "gap": _stat(gaps, None),
        "audit": _audit_verdict([c for c, _ in full]),
        "flags": flags,
    }


def _ci(pairs: list[tuple[dict, dict]], key: str, one: bool) -> list[float] | None:
    return pairs[0][1][key] if pairs and one else None


def _flag_eps_rises(cells: list[dict[str, Any]], tables: list[dict[str, Any]]) -> None:
    """Mark rows whose robust accuracy rises with eps (same cell, suite, protocol)."""
    rows = {
        (t["dataset"], t["suite"], t["eps_label"], r["run"]): r for t in tables for r in t["rows"]
    }
    for cell in cells:
        series: dict[tuple[str, str], list[dict]] = {}
        for e in cell["evals"]:
            series.setdefault((e["suite"], e["protocol"]), []).append(e)
        for (suite, protocol), evals in series.items():
            evals = sorted(evals, key=lambda e: e["eps"])
            for low, high in zip(evals, evals[1:], strict=False):
                if high["robust"] - low["robust"] <= _margin(
                    low["robust"], low["n"], high["robust"], high["n"]
                ):
                    continue
                message = (
                    f"{cell['name']}, {suite}/{protocol}: robust accuracy rises from "
                    f"{percent(low['robust'])} % at eps {low['eps_label']} to "
                    f"{percent(high['robust'])} % at eps {high['eps_label']} beyond noise: "
                    "the attack is failing at the larger budget; the evaluation needs a look"
                )
                row = rows.get((cell["dataset"], suite, high["eps_label"], cell["run"]))
                if row is not None:
                    row["flags"].append(message)


# -- rendering ------------------------------------------------------------------------------------


def _stat_cell(stat: dict[str, Any] | None, bold: bool = False, signed: bool = False) -> str:
    """A :func:`_stat` in %: the mean, then ± the std (seeds) or the 95 % interval (one seed)."""
    if stat is None:
        return "–"
    mean = percent(stat["mean"])
    if signed:  # the gap, "+1.2" or "−1.2" (a minus sign, not a hyphen)
        mean = ("+" if stat["mean"] >= 0 else "−") + percent(abs(stat["mean"]))
    mean = f"**{mean}**" if bold else mean
    if stat["std"] is not None:
        return f"{mean} ± {percent(stat['std'])}"
    if stat["ci95"]:
        low, high = stat["ci95"]
        return f"{mean} ({percent(low)}–{percent(high)})"
    return mean


def render_markdown(results: dict[str, Any]) -> str:
    """``results.md`` from ``results.json``'s content (nothing else is read)."""
    lines = [f"# Results of grid `{results['grid']}`", ""]
    if results["description"]:
        lines += [results["description"].strip(), ""]
    lines += _status_lines(results["cells"])
    lines += [
        "Accuracies in % on the same test examples for every run. *robust* = the per-example "
        "worst case over the suite's attacks; a random model's example counts only if all R "
        "prediction draws are correct. *full* = the attacks query the evaluated function (all "
        "views, EOT); *paper* = the authors' protocol (attacks see the centre view only; only "
        "models with views differ). *gap* = paper − full: how much the paper's protocol "
        "overstates robustness. In brackets: the 95 % interval (one seed); ± = std over seeds. "
        "E = EOT draws per attack step under the full protocol, R = prediction draws. ⚠ marks a "
        "row that breaks an honesty invariant (listed below the tables).",
        "",
    ]
    header = ["run", "method", "seeds", "n", "E", "R", "clean", "robust (full)"]
    header += ["robust (paper)", "gap", "audit"]
    for table in results["tables"]:
        rows = []
        for row in table["rows"]:
            mark = " ⚠" if row["flags"] else ""
            eot = "–".join(str(v) for v in (row["attack_eot"][:1] + row["attack_eot"][1:][-1:]))
            paper = _stat_cell(row["paper"]) if row["views"] else "= full"
            cells = [
                f"{row['run']}{mark}",
                row["method"],
                str(len(row["seeds"])),
                str(row["n"]),
                eot or "1",
                str(row["draws"]),
                _stat_cell(row["clean"]),
                _stat_cell(row["full"], bold=True),
                paper,
                _stat_cell(row["gap"], signed=True) if row["views"] else "n/a",
                row["audit"],
            ]
            rows.append(cells)
        title = f"{table['dataset']}: `{table['suite']}`, {table['norm']} eps {table['eps_label']}"
        lines += [f"## {title}", "", *markdown_table(header, rows, "llrrrrrrrrl")]
    lines += _certified_lines(results["cells"])
    lines += _training_lines(results["cells"])
    lines += ["## Honesty checks", ""]
    if results["flags"]:
        lines += [f"- ⚠ {flag}" for flag in results["flags"]]
    else:
        lines.append(
            "- No run has a full-protocol robust accuracy above its paper-protocol one, and no "
            "robust accuracy rises with eps, beyond noise (1.96 standard errors + one example)."
        )
    lines.append("")
    plots = results.get("plots") or []
    if plots:
        lines += ["## Plots", "", *(f"![{Path(p).stem}]({p})" for p in plots), ""]
    lines += [
        "## Sources",
        "",
        "Every number above comes from the cells' files: `cells/<run>-s<seed>/eval/*/summary.json`"
        " (per-example rows beside them), `cells/<run>-s<seed>/audit/audit.json` and "
        "`metrics.jsonl`. Per-attack tables: `report/report.md`.",
        "",
    ]
    return "\n".join(lines)


def _status_lines(cells: list[dict[str, Any]]) -> list[str]:
    counts = Counter(cell["status"] for cell in cells)
    lines = ["Cells: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) + ".", ""]
    for cell in cells:
        if cell["status"] == "failed":
            lines.append(f"- **{cell['name']} failed**: {cell['error']}")
    return lines + ([""] if len(lines) > 2 else [])


def _certified_lines(cells: list[dict[str, Any]]) -> list[str]:
    """Certified L2 accuracy of the cells that were certified (``ciiv certify``), if any."""
    rows = [(c, cert) for c in cells for cert in c.get("certified", [])]
    if not rows:
        return []
    lines = [
        "## Certified L2 accuracy (randomized smoothing)",
        "",
        "`ciiv certify` (Cohen et al.'s CERTIFY): the share of the examples whose smoothed "
        "prediction is certified correct within L2 radius r (each certificate holds with "
        "probability 1 − alpha). L2 radii in [0, 1] pixel units; a radius r guarantees Linf "
        "robustness only up to r / sqrt(pixels), so these numbers do not compare with the Linf "
        "tables above.",
        "",
    ]
    table = [(cell["name"], cert, cert["curve"]) for cell, cert in rows]
    return lines + certified_table(table, first="cell", elapsed=True)


def _training_lines(cells: list[dict[str, Any]]) -> list[str]:
    header = ["cell", "method", "status", "epochs", "best val acc"]
    header += ["train s", "audit s", "eval s", "audit"]
    rows = []
    for c in cells:
        phases = c["phases_s"]
        audit = "not run"
        if c["audit"] is not None:
            counts = ", ".join(f"{v} {k}" for k, v in c["audit"]["counts"].items() if v)
            audit = ("pass" if c["audit"]["passed"] else "**FAIL**") + f" ({counts})"
        times = [f"{phases.get(phase, 0):.0f}" for phase in ("train", "audit", "eval")]
        row = [c["name"], c["method"], c["status"], str(c["epochs"]), percent(c["best_val_acc"])]
        rows.append([*row, *times, audit])
    total = sum(v for c in cells for v in c["phases_s"].values())
    lines = ["## Cells", "", *markdown_table(header, rows, "lllrrrrrl")]
    lines += [
        f"The cells' own time, all phases summed (training, loading, audit, evaluation): "
        f"{total:.0f} s ({total / 60:.1f} min).",
    ]
    return [*lines, ""]


# -- plots ----------------------------------------------------------------------------------------


def _plots(results: dict[str, Any], out: Path) -> list[str]:
    """Robust accuracy against eps (full solid, paper dashed; clean at eps 0) and the protocol gap
    per run with views, one PNG each per (dataset, suite). Returns paths relative to ``out``."""
    plt = pyplot()
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for table in results["tables"]:
        groups.setdefault((table["dataset"], table["suite"]), []).append(table)
    written = []
    for (dataset, suite), tables in groups.items():
        tables = sorted(tables, key=lambda t: t["eps"])
        runs = [row["run"] for row in tables[0]["rows"]]
        by_run = {
            run: [next((r for r in t["rows"] if r["run"] == run), None) for t in tables]
            for run in runs
        }
        colours = plt.get_cmap("tab10" if len(runs) <= 10 else "tab20")
        fig, ax = plt.subplots(figsize=(7.5, 4.2))
        for i, (run, rows) in enumerate(by_run.items()):
            points = [(t["eps"], r) for t, r in zip(tables, rows, strict=True) if r is not None]
            if not points:
                continue
            clean = points[0][1]["clean"]["mean"]
            xs = [0.0] + [eps for eps, _ in points]
            paper = points[0][1]["views"] and all(r["paper"] for _, r in points)
            for protocol, marker, style in [("full", "o", "-"), ("paper", "s", "--")][: 1 + paper]:
                ys = [100 * clean] + [100 * r[protocol]["mean"] for _, r in points]
                colour, label = colours(i % colours.N), f"{run} ({protocol})"
                ax.plot(xs, ys, color=colour, marker=marker, linestyle=style, label=label)
        ax.set_xlabel(f"eps ({tables[0]['norm']}); 0 = clean")
        ax.set_ylabel("robust accuracy (%)")
        ax.set_ylim(-2, 102)
        ax.set_title(f"{dataset}, {suite}: robust accuracy against eps")
        ax.grid(alpha=0.3)
        written.append(_save_plot(fig, ax, out / f"{dataset}-{suite}-robust-vs-eps.png"))
        # Per run with views, its gap at each eps (None where it has none).
        gaps = {
            run: [r["gap"] if r and r["views"] else None for r in rows]
            for run, rows in by_run.items()
        }
        gaps = {run: values for run, values in gaps.items() if any(values)}
        if gaps:
            written.append(_plot_gaps(tables, gaps, dataset, suite, out))
    return written


def _plot_gaps(tables, gaps: dict[str, list], dataset: str, suite: str, out: Path) -> str:
    fig, ax = pyplot().subplots(figsize=(7.5, 3.6))
    width = 0.8 / len(tables)
    runs = list(gaps)
    for j, table in enumerate(tables):
        column = [values[j] for values in gaps.values()]
        heights = [0.0 if gap is None else 100 * gap["mean"] for gap in column]
        errors = [0.0 if gap is None or gap["std"] is None else 100 * gap["std"] for gap in column]
        xs = [i + (j - (len(tables) - 1) / 2) * width for i in range(len(runs))]
        ax.bar(xs, heights, width, yerr=errors, label=f"eps {table['eps_label']}")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(runs)), runs)
    ax.set_ylabel("paper − full robust acc. (points)")
    ax.set_title(f"{dataset}, {suite}: protocol gap (how much the paper protocol overstates)")
    ax.grid(alpha=0.3, axis="y")
    return _save_plot(fig, ax, out / f"{dataset}-{suite}-protocol-gap.png")


def _save_plot(fig, ax, path: Path) -> str:
    """Legend to the right of the axes, then the PNG; returns its file name."""
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return save_png(fig, path, dpi=110).name


def write_results(grid: Grid, out: str | Path) -> list[Path]:
    """Write ``results.json``, the plots, ``results.md`` and ``report/`` (the per-attack report
    of every summary, through :func:`ciiv.report.write_report`). Returns the written files."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = collect(grid, out)
    results["plots"] = _plots(results, out) if results["tables"] else []
    write_json_atomic(out / "results.json", results)
    text = render_markdown(results)
    atomic_write(out / "results.md", lambda f: f.write(text))
    written = [out / "results.json", out / "results.md", *(out / p for p in results["plots"])]
    # Whole run directories: the per-attack tables of every evaluation, and any certification.
    sources = [out / CELLS / c["name"] for c in results["cells"] if c["evals"]]
    if sources:
        written += write_report(sources, out / "report", "both")
    return written
