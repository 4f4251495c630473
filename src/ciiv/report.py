"""Evaluation summaries -> one markdown (or JSON) report and accuracy-vs-eps / -steps plots.

Reads only ``summary.json`` files of ``ciiv eval`` (and of ``ciiv certify``, whose certified L2
accuracy goes beside the empirical one), never a model: a path is a summary file, an evaluation
directory or a run directory. docs/evaluation.md ("Reports") describes every column and plot.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ciiv._io import atomic_write, write_json_atomic
from ciiv.plotting import pyplot, save_png

if TYPE_CHECKING:
    import matplotlib.figure

__all__ = [
    "accuracy_bars",
    "attack_eot",
    "certified_table",
    "certified_vs_empirical",
    "chance_accuracy",
    "load_certifications",
    "find_summaries",
    "load_summaries",
    "markdown_table",
    "percent",
    "plot_bars",
    "plot_sweeps",
    "report_json",
    "report_markdown",
    "sweep_curves",
    "write_report",
]

logger = logging.getLogger(__name__)

FORMATS = ("markdown", "json", "both")
_REQUIRED = ("suite", "protocol", "clean_accuracy", "robust_accuracy", "per_attack", "attacks")
CERTIFY_SCHEMA = "ciiv.certify/1"  # summaries of `ciiv certify` (ciiv.certify.run.SCHEMA)


def _summary_files(path: Path, folder: str) -> list[Path]:
    """``path`` itself (a file), ``path/summary.json``, or a run's ``<folder>/*/summary.json``
    (``folder``: "eval" or "certify"); [] when there is none."""
    if path.is_file():
        return [path]
    if (path / "summary.json").is_file():
        return [path / "summary.json"]
    return sorted(path.glob(f"{folder}/*/summary.json")) if path.is_dir() else []


def find_summaries(paths: Iterable[str | Path]) -> list[Path]:
    """The summary files behind ``paths`` (files, evaluation dirs or run dirs), in order. A
    directory without any (a run not evaluated yet, e.g. from ``ciiv report runs/*``) is skipped
    with a warning; a path that does not exist, or nothing found at all, is an error."""
    paths = [Path(p) for p in paths]
    found: list[Path] = []
    skipped: list[Path] = []
    for path in paths:
        files = _summary_files(path, "eval")
        if files:
            found.extend(files)
        elif _summary_files(path, "certify"):
            continue  # a run with certifications only: see load_certifications
        elif path.is_dir() and len(paths) > 1:
            logger.warning("skipping %s: no evaluation summary in it (run ciiv eval first)", path)
            skipped.append(path)
        else:
            raise ValueError(
                f"no evaluation summary at {path}: pass a summary.json, an evaluation directory "
                "or a run directory evaluated with `ciiv eval`"
            )
    if len(skipped) == len(paths):
        raise ValueError(f"no evaluation summary in any of {', '.join(map(str, paths))}")
    return found


def load_summaries(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Summaries (dicts) with ``"_path"`` and ``"_label"`` added; bad files raise ValueError."""
    summaries = []
    for path in find_summaries(paths):
        data = _read(path)
        if data.get("schema") == CERTIFY_SCHEMA:
            continue  # a certification: see load_certifications
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise ValueError(f"{path} is not an evaluation summary (missing {', '.join(missing)})")
        summaries.append(data)
    _disambiguate(summaries)
    return summaries


def _disambiguate(summaries: list[dict[str, Any]]) -> None:
    """Two evaluations of one run under the same suite, protocol and data (e.g. a re-run into
    another folder) would share a label, a table row name and a bar colour: name their folders."""
    rows: dict[tuple, list[dict[str, Any]]] = {}
    for s in summaries:
        key = (s["_label"], s["suite"], s["protocol"], _dataset(s), _threat(s))
        rows.setdefault(key, []).append(s)
    for group in rows.values():
        if len(group) > 1:
            for s in group:
                s["_where"] = f" [{Path(s['_path']).parent}]"
                s["_label"] += s["_where"]


def _read(path: Path) -> dict[str, Any]:
    """A summary file, with ``"_path"`` and ``"_label"`` (the run's method and folder) added."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    run = data.get("run") or {}
    if run.get("run_dir"):
        label = f"{run.get('method', '?')} ({Path(run['run_dir']).name})"
    else:
        label = f"{_model_class(data)} ({path.parent.name})"
    return {**data, "_path": str(path), "_label": label}


def _model_class(summary: dict[str, Any], default: str = "model") -> str:
    return (summary.get("model") or {}).get("class", default).rsplit(".", 1)[-1]


def percent(value: float | None) -> str:
    """An accuracy in [0, 1] in % with one decimal ("95.8"); "–" for None."""
    return "–" if value is None else f"{100 * value:.1f}"


def _columns(group: Sequence[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """Chain and standalone attack names of a suite's summaries, in first-seen order."""
    chain = dict.fromkeys(name for s in group for name in s.get("worst_case_chain", []))
    standalone = dict.fromkeys(name for s in group for name in s.get("standalone", []))
    return list(chain), list(standalone)


def _dataset(summary: dict[str, Any]) -> str:
    """The data a summary was measured on: the run's dataset (else the one given to the
    evaluation), with its test split when that is not the only one ("shapes (shifted)")."""
    run = summary.get("run") or {}
    name = run.get("dataset") or summary.get("dataset") or "unspecified"
    split = run.get("test_split")
    return name if split in (None, "test") else f"{name} ({split})"


def _run_name(summary: dict[str, Any]) -> str:
    run = summary.get("run") or {}
    name = Path(run["run_dir"]).name if run.get("run_dir") else Path(summary["_path"]).parent.name
    return name + summary.get("_where", "")


def _method(summary: dict[str, Any]) -> str:
    return (summary.get("run") or {}).get("method") or _model_class(summary, "?")


def _by_suite(summaries: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Summaries per table: one per dataset, suite and threat model, in first-seen order."""
    groups: dict[str, list[dict[str, Any]]] = {}
    several = len({_dataset(s) for s in summaries}) > 1
    for summary in summaries:
        key = f"{summary['suite']} ({_threat(summary)})"
        if several:
            key = f"{_dataset(summary)}: {key}"
        groups.setdefault(key, []).append(summary)
    return groups


def _mixed_datasets_note(summaries: Sequence[dict[str, Any]]) -> str | None:
    datasets = list(dict.fromkeys(_dataset(s) for s in summaries))
    if len(datasets) < 2:
        return None
    return (
        f"**{len(datasets)} datasets** ({', '.join(f'`{d}`' for d in datasets)}): one table "
        "and one plot per dataset. Accuracies measured on different datasets (or test splits) "
        "are not comparable; compare runs only within a table."
    )


def chance_accuracy(summaries: Sequence[dict[str, Any]]) -> float | None:
    """1 / K, the accuracy of guessing, shared by ``summaries``; None when K is unknown or differs.
    K is a summary's ``num_classes``, else (older summaries) its dataset's registry entry."""
    counts = {_num_classes(s) for s in summaries}
    if len(counts) != 1 or None in counts:
        return None
    return 1 / counts.pop()


def _num_classes(summary: dict[str, Any]) -> int | None:
    if summary.get("num_classes"):
        return int(summary["num_classes"])
    name = (summary.get("run") or {}).get("dataset") or summary.get("dataset")
    if not name or name == "imagefolder":  # imagefolder: K depends on files the report lacks
        return None
    from ciiv.data import get_dataset_info

    try:
        return get_dataset_info(name).num_classes
    except (ValueError, FileNotFoundError):  # a dataset this installation does not know
        return None


def _threat(summary: dict[str, Any]) -> str:
    threat = summary.get("threat_model") or {}
    return f"{threat.get('norm', '?')} eps {threat.get('eps_label', '?')}"


def _missing_protocols(summaries: Sequence[dict[str, Any]]) -> list[str]:
    """Notes for CiiV runs evaluated under only one protocol of a suite."""
    seen: dict[tuple[str, str], set[str]] = {}
    for s in summaries:
        if (s.get("model") or {}).get("views"):
            seen.setdefault((s["_label"], s["suite"]), set()).add(s["protocol"])
    return [
        f"{label}, {suite}: no `{missing}` protocol summary given"
        for (label, suite), protocols in seen.items()
        for missing in sorted({"full", "paper"} - protocols)
    ]


def attack_eot(summary: dict[str, Any]) -> list[int]:
    """The EOT draws per step that the summary's attacks really used (sorted, distinct). Under the
    paper protocol most attacks take one draw whatever the configured E, so E alone misleads."""
    attacks = summary.get("attacks", {}).values()
    return sorted({a["hyper"]["eot"] for a in attacks if "eot" in a.get("hyper", {})})


def _eot_label(summary: dict[str, Any]) -> str:
    used = attack_eot(summary)
    if not used:
        return str(summary.get("eot", ""))
    return str(used[0]) if len(used) == 1 else f"{used[0]}–{used[-1]}"


def report_markdown(
    summaries: Sequence[dict[str, Any]],
    plots: Sequence[Path] = (),
    certifications: Sequence[dict[str, Any]] = (),
) -> str:
    """The markdown report: one table per suite (accuracies in %), notes, the certified accuracy
    of ``certifications`` (if any) beside the empirical L2 numbers, then the plots."""
    lines = [
        "# Robustness report",
        "",
        "Accuracies in %. An example counts as correct only if all R prediction draws are correct "
        "(R = 1 for deterministic models). Worst-case columns give the robust accuracy *after* "
        "each attack of the chain (cumulative, in run order); standalone columns are each "
        "attack's own accuracy. `paper` = the authors' protocol (attacks see the centre view "
        "only); `full` = attacks query the evaluated function (all views, EOT). E = gradient draws "
        "per attack step that the attacks used (a range when they differ).",
        "",
    ]
    mixed = _mixed_datasets_note(summaries)
    if mixed:
        lines += [mixed, ""]
    for title, group in _by_suite(summaries).items():
        chain, standalone = _columns(group)
        header = ["dataset", "run", "method", "protocol", "E", "R", "n", "clean", *chain]
        header += ["worst case", *standalone]
        rows = []
        for s in group:
            low, high = s.get("robust_accuracy_ci95", [None, None])
            worst = f"**{percent(s['robust_accuracy'])}**"
            if low is not None:
                worst += f" ({percent(low)}–{percent(high)})"
            cells = [
                _dataset(s),
                _run_name(s),
                _method(s),
                s["protocol"],
                _eot_label(s),
                str(s.get("draws", "")),
                str(s.get("n_examples", "")),
                percent(s["clean_accuracy"]),
                *(percent(s["per_attack"].get(name)) for name in chain),
                worst,
                *(percent(s["per_attack"].get(name)) for name in standalone),
            ]
            rows.append(cells)
        lines += [f"## {title}", ""]
        lines += markdown_table(header, rows, "l" * 7 + "r" * (len(header) - 7))
        notes = []
        for s in group:
            if s.get("skipped_attacks"):
                skipped = "; ".join(f"`{k}`: {v}" for k, v in s["skipped_attacks"].items())
                notes.append(f"{s['_label']} / {s['protocol']}: skipped {skipped}")
            if s["protocol"] == "paper" and not (s.get("model") or {}).get("views"):
                notes.append(f"{s['_label']} / paper: {s.get('protocol_note', '')}")
            audit = s.get("audit")
            if isinstance(audit, dict) and audit.get("passed") is False:
                notes.append(f"{s['_label']} / {s['protocol']}: **the audit failed** (see summary)")
        lines += _bullets(notes)
    missing = _missing_protocols(summaries)
    if missing:
        lines += ["## Missing protocols", "", *(f"- {m}" for m in missing), ""]
    if certifications:
        lines += _certified_markdown(certifications, summaries)
    if plots:
        lines += [
            "## Plots",
            "",
            "`accuracy-*.png`: per table, the accuracy (%) of each run after each attack (bars), "
            "its 95 % interval (error bars) and the chance level 1/K (dashed), one panel per "
            "protocol; left of the dotted line the worst-case chain (cumulative) and the worst "
            "case, right of it the standalone attacks (sweeps have their own line plots).",
            "",
            *(f"![{p.stem}]({p.name})" for p in plots),
            "",
        ]
    sources = [*summaries, *certifications]
    lines += ["## Sources", "", *_bullets(f"`{s['_path']}`" for s in sources)]
    return "\n".join(lines)


def _bullets(items: Iterable[str]) -> list[str]:
    """A markdown list and the blank line after it; nothing for no items."""
    items = [f"- {item}" for item in items]
    return [*items, ""] if items else []


def sweep_curves(summaries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Curves to plot: for each suite, sweep family and axis ("eps" or "steps", as each attack's
    ``sweep`` in the summary records them) with at least two points, ``{"suite", "family",
    "axis", "lines": [{"label", "x", "y"}]}``; x sorted."""
    curves: dict[tuple[str, str, str], dict[str, list]] = {}
    for s in summaries:
        line_label = f"{s['_label']} / {s['protocol']}"
        for detail in s["attacks"].values():
            sweep = detail.get("sweep")
            if not sweep:
                continue
            for axis, value in sweep["axes"].items():
                key = (s["suite"], sweep["family"], axis)
                curves.setdefault(key, {}).setdefault(line_label, []).append(
                    (value, detail["accuracy"])
                )
    out = []
    for (suite, family, axis), lines in curves.items():
        if max(len(points) for points in lines.values()) < 2:
            continue
        plotted = []
        for label, points in lines.items():
            x, y = zip(*sorted(points), strict=True)
            plotted.append({"label": label, "x": list(x), "y": list(y)})
        out.append({"suite": suite, "family": family, "axis": axis, "lines": plotted})
    return out


def _interval(summary: dict[str, Any], category: str) -> tuple[float | None, list | None]:
    """(accuracy, 95 % interval) of a bar: "clean", "worst case" or an attack; (None, None) when
    the summary lacks it (an attack skipped for this model)."""
    if category in ("clean", "worst case"):
        key = "clean_accuracy" if category == "clean" else "robust_accuracy"
        return summary[key], summary.get(f"{key}_ci95")
    detail = summary["attacks"].get(category)
    if detail is None:
        return summary["per_attack"].get(category), None
    return detail["accuracy"], detail.get("ci95")


def accuracy_bars(summaries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the bar plots show, one ``{"title", "dataset", "chance", "panels"}`` per table of
    :func:`report_markdown`: one panel (as :func:`plot_bars` takes it) per protocol, ``full``
    first, one series per run. Categories: clean, the worst-case chain (cumulative), the worst
    case, then the standalone attacks except sweep points (``name@...``: they have line plots)."""
    out = []
    for group in _by_suite(summaries).values():
        chain, standalone = _columns(group)
        categories = ["clean", *chain, "worst case", *(n for n in standalone if "@" not in n)]
        protocols = sorted({s["protocol"] for s in group}, key=lambda p: (p != "full", p))
        panels = []
        for protocol in protocols:
            series = []
            for s in (s for s in group if s["protocol"] == protocol):
                values, intervals = zip(*(_interval(s, c) for c in categories), strict=True)
                series.append(
                    {"label": s["_label"], "values": list(values), "ci95": list(intervals)}
                )
            panels.append(
                {"title": f"{protocol} protocol", "categories": categories, "series": series}
            )
        first = group[0]
        out.append(
            {
                "title": f"{_dataset(first)}: {first['suite']} ({_threat(first)})",
                "dataset": _dataset(first),
                "chance": chance_accuracy(group),
                "panels": panels,
            }
        )
    return out


def plot_bars(
    panels: Sequence[dict[str, Any]],
    path: str | Path,
    *,
    title: str,
    chance: float | None = None,
) -> Path:
    """Grouped bars of accuracy (%) into the PNG ``path`` (returned): one panel per entry of
    ``panels``, side by side (stacked when too wide), sharing the y axis, the legend below them.

    A panel is ``{"title", "categories", "series": [{"label", "values", "ci95"}]}``: one bar per
    category and series (one colour per label), values and ``[low, high]`` intervals in [0, 1]
    (None: no bar, no error bar). ``chance`` (in [0, 1]) draws a dashed line.
    """
    return save_png(_bar_figure(panels, title=title, chance=chance), path)


def _bar_figure(
    panels: Sequence[dict[str, Any]], *, title: str, chance: float | None
) -> matplotlib.figure.Figure:
    """The figure of :func:`plot_bars`, not saved (tests measure where its legend lies)."""
    labels = list(dict.fromkeys(sr["label"] for panel in panels for sr in panel["series"]))
    colours = {label: f"C{i % 10}" for i, label in enumerate(labels)}
    widest = max(len(panel["categories"]) for panel in panels)
    panel_width = min(14.0, max(4.0, 1.0 + widest * (0.35 + 0.22 * len(labels))))
    # Side by side when that stays readable, else one panel under the other (same categories).
    stacked = len(panels) > 1 and panel_width * len(panels) > 14.0
    rows, columns = (len(panels), 1) if stacked else (1, len(panels))
    # Legend columns that fit the figure's width (about 0.075 inch per character at size 8),
    # one more for the chance line; the legend's rows make the figure taller.
    entry_inches = 0.075 * (max(len(label) for label in labels) + 6)
    panel_width = max(panel_width, entry_inches / columns)  # a name longer than the panels
    legend_columns = max(1, min(3, int(panel_width * columns / entry_inches), len(labels) + 1))
    legend_height = 0.2 * (-(-(len(labels) + 1) // legend_columns) + 1)
    fig, axes = pyplot().subplots(
        rows,
        columns,
        figsize=(panel_width * columns, 3.6 * rows + 0.8 + legend_height),
        sharex=stacked,
        sharey=True,
        squeeze=False,
        layout="constrained",
    )
    axes = axes.ravel()
    for ax, panel in zip(axes, panels, strict=True):
        series, categories = panel["series"], panel["categories"]
        bar = 0.8 / max(1, len(series))
        for i, sr in enumerate(series):
            xs, heights, errors = [], [], [[], []]
            for j, (value, ci) in enumerate(zip(sr["values"], sr["ci95"], strict=True)):
                x = j + (i - (len(series) - 1) / 2) * bar
                if value is None:  # e.g. BPDA on a model without views: say so, draw nothing
                    style = {"ha": "center", "va": "bottom", "fontsize": 7, "color": "dimgray"}
                    ax.text(x, 1, "n/a", rotation=90, **style)
                    continue
                xs.append(x)
                heights.append(100 * value)
                low, high = (value, value) if ci is None else ci
                errors[0].append(100 * max(0.0, value - low))
                errors[1].append(100 * max(0.0, high - value))
            ax.bar(xs, heights, bar, color=colours[sr["label"]], label=sr["label"])
            ax.errorbar(xs, heights, yerr=errors, fmt="none", ecolor="black", lw=0.8, capsize=2)
        if "worst case" in categories[:-1]:  # chain and worst case | standalone attacks
            ax.axvline(categories.index("worst case") + 0.5, color="grey", lw=0.6, ls=":")
        if chance is not None:
            label = f"chance (1/{round(1 / chance)} = {100 * chance:.3g} %)"
            ax.axhline(100 * chance, color="black", lw=1, ls="--", label=label)
        ax.set_xticks(range(len(categories)))
        ax.set_xticklabels(categories, rotation=30, ha="right", fontsize=8)
        ax.set_xlim(-0.6, len(categories) - 0.4)
        ax.set_ylim(0, 100)
        ax.set_title(panel["title"], fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes if stacked else axes[:1]:
        ax.set_ylabel("accuracy (%), 95 % interval")
    entries: dict[str, Any] = {}  # runs in order of appearance, then the chance line
    for ax in axes:
        for handle, name in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(name, handle)
    names = sorted(entries, key=lambda name: name.startswith("chance ("))
    handles = [entries[name] for name in names]
    legend_columns = min(legend_columns, len(names))
    fig.legend(handles, names, loc="outside lower center", ncols=legend_columns, fontsize=8)
    fig.suptitle(title, fontsize=11)
    return fig


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def plot_sweeps(curves: Sequence[dict[str, Any]], out_dir: str | Path) -> list[Path]:
    """One PNG per curve set; returns the written paths."""
    plt = pyplot()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for curve in curves:
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        for line in curve["lines"]:
            x = [v * 255 for v in line["x"]] if curve["axis"] == "eps" else line["x"]
            ax.plot(x, [100 * v for v in line["y"]], marker="o", label=line["label"])
        ax.set_xlabel("eps (x 1/255)" if curve["axis"] == "eps" else "attack steps")
        if curve["axis"] == "steps":
            ax.set_xscale("log")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(-2, 102)
        ax.set_title(f"{curve['suite']}: {curve['family']} vs {curve['axis']}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        path = out_dir / f"{_slug(curve['suite'])}-{_slug(curve['family'])}-vs-{curve['axis']}.png"
        paths.append(save_png(fig, path))
    return paths


def report_json(summaries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The merged report as JSON: compact rows per (run, protocol), the bar plots' data and the
    sweep curves."""
    rows = [
        {
            "label": s["_label"],
            "source": s["_path"],
            "dataset": _dataset(s),
            "run_name": _run_name(s),
            "method": _method(s),
            "num_classes": _num_classes(s),
            "suite": s["suite"],
            "threat_model": s.get("threat_model"),
            "protocol": s["protocol"],
            "eot": s.get("eot"),
            "attack_eot": attack_eot(s),
            "draws": s.get("draws"),
            "n_examples": s.get("n_examples"),
            "clean_accuracy": s["clean_accuracy"],
            "robust_accuracy": s["robust_accuracy"],
            "robust_accuracy_ci95": s.get("robust_accuracy_ci95"),
            "per_attack": s["per_attack"],
            "worst_case_chain": s.get("worst_case_chain", []),
            "standalone": s.get("standalone", []),
            "run": s.get("run"),
            "audit_passed": (s.get("audit") or {}).get("passed"),
        }
        for s in summaries
    ]
    return {"rows": rows, "bars": accuracy_bars(summaries), "curves": sweep_curves(summaries)}


def load_certifications(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Summaries of ``ciiv certify`` behind ``paths`` (files, certification or run directories),
    with ``"_path"`` and ``"_label"`` added as in :func:`load_summaries`; others are skipped."""
    found = [_read(file) for raw in paths for file in _summary_files(Path(raw), "certify")]
    return [data for data in found if data.get("schema") == CERTIFY_SCHEMA]


def _empirical_l2(summary: dict[str, Any]) -> list[tuple[float, float, float, str]]:
    """(eps, accuracy, its upper 95 % bound, source) of every L2 figure of an evaluation
    summary: the worst case of an L2 suite and each standalone L2 attack. Each one bounds the
    true L2 robust accuracy at its eps from above. For a random model the per-draw mean (the
    accuracy of one prediction) is used: the fairest comparison with the smoothed classifier."""

    def figure(strict: float, ci: list | None, per_draw: Any) -> tuple[float, float, str]:
        if summary.get("draws", 1) > 1 and isinstance(per_draw, dict) and "mean" in per_draw:
            return per_draw["mean"], per_draw["ci95"][1], " (per draw)"
        return strict, strict if ci is None else ci[1], ""

    name = f"{summary['suite']}/{summary['protocol']}"
    points = []
    threat = summary.get("threat_model") or {}
    if threat.get("norm") == "L2" and threat.get("eps") is not None:
        value, high, how = figure(
            summary["robust_accuracy"],
            summary.get("robust_accuracy_ci95"),
            summary.get("robust_accuracy_per_draw"),
        )
        points.append((threat["eps"], value, high, f"{name} worst case{how}"))
    for attack, detail in summary["attacks"].items():
        standalone_l2 = detail.get("norm") == "L2" and detail.get("role") == "standalone"
        if standalone_l2 and detail.get("eps") is not None:
            value, high, how = figure(
                detail["accuracy"], detail.get("ci95"), detail.get("per_draw")
            )
            points.append((detail["eps"], value, high, f"{name} {attack}{how}"))
    return points


def certified_vs_empirical(
    certifications: Sequence[dict[str, Any]], summaries: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Per certification: its curve and, at every eps where an evaluation of the same run (same
    label) has an L2 figure, the certified accuracy at r = eps beside it; ``flag`` where the
    certified 95 % lower bound (Clopper-Pearson) exceeds the empirical 95 % upper bound, which is
    impossible (docs/evaluation.md). Only for the smoothed classifier the run deploys
    (``run.deployed``: an rs run certified with its own sigma)."""
    from ciiv.certify.run import certified_at

    rows = []
    for cert in certifications:
        copied = ("sigma", "n", "alpha", "n_examples", "abstain_rate", "certified_accuracy")
        row = {"label": cert["_label"], "source": cert["_path"], **{k: cert[k] for k in copied}}
        row.update(comparisons=[], note=None)
        rows.append(row)
        if not (cert.get("run") or {}).get("deployed"):
            row["note"] = (
                "not compared: the certified smoothed classifier is not the deployed model"
            )
            continue
        points = [p for s in summaries if s["_label"] == cert["_label"] for p in _empirical_l2(s)]
        if not points:
            row["note"] = "no L2 evaluation of this run to compare with"
        for eps, value, high, source in sorted(points):
            certified, ci = certified_at(cert["correct_radii"], cert["n_examples"], eps)
            row["comparisons"].append(
                {
                    "eps": eps,
                    "certified": certified,
                    "certified_ci95": ci,
                    "empirical": value,
                    "empirical_upper95": high,
                    "empirical_source": source,
                    "flag": ci[0] > high,
                }
            )
    return rows


def _certified_markdown(
    certifications: Sequence[dict[str, Any]], summaries: Sequence[dict[str, Any]]
) -> list[str]:
    rows = certified_vs_empirical(certifications, summaries)
    lines = [
        "## Certified L2 accuracy (randomized smoothing)",
        "",
        "Certified accuracy (%) of the smoothed classifier at L2 radius r (Cohen et al.'s "
        "CERTIFY: n noise draws, each certificate wrong with probability <= alpha; an abstention "
        "counts as wrong), beside the empirical L2 robust accuracy of the same run at eps = r "
        "(per-draw mean for a random model). Certified accuracy can never exceed the true robust "
        "accuracy, which the empirical figure bounds from above: a certified figure above the "
        "empirical one beyond their 95 % intervals is flagged (docs/evaluation.md).",
        "",
    ]
    flagged = [(r, c) for r in rows for c in r["comparisons"] if c["flag"]]
    if flagged:
        where = "; ".join(f"{r['label']} at r = {c['eps']:.3g}" for r, c in flagged)
        lines.append(f"**FLAG: certified accuracy above the empirical robust accuracy** ({where}).")
        lines.append("")
    lines += certified_table([(row["label"], row, row["certified_accuracy"]) for row in rows])
    compared = [(r, c) for r in rows for c in r["comparisons"]]
    if compared:
        header = ["method", "eps = r", "certified", "empirical", "source", "check"]
        table = [
            [
                row["label"],
                f"{c['eps']:.4g}",
                f"{percent(c['certified'])} ({percent(c['certified_ci95'][0])}–"
                f"{percent(c['certified_ci95'][1])})",
                f"{percent(c['empirical'])} (<= {percent(c['empirical_upper95'])})",
                c["empirical_source"],
                "**FLAG: certified > empirical**" if c["flag"] else "ok",
            ]
            for row, c in compared
        ]
        lines += markdown_table(header, table, "lrrrll")
    notes = [f"{r['label']} / sigma {r['sigma']:g}: {r['note']}" for r in rows if r["note"]]
    return lines + _bullets(notes)


def certified_table(
    rows: Sequence[tuple[str, dict[str, Any], Sequence[dict[str, Any]]]],
    first: str = "method",
    elapsed: bool = False,
) -> list[str]:
    """The markdown table of certified L2 accuracy (%), one line per ``(name, cert, curve)``:
    ``cert`` holds sigma, n, alpha, n_examples, abstain_rate (and elapsed_s, in an ``s`` column,
    when ``elapsed``); ``curve`` the ``{"radius", "accuracy"}`` points (0.0 past its end)."""
    radii = sorted({p["radius"] for *_, curve in rows for p in curve})
    header = [first, "sigma", "n", "alpha", "examples", "abstain", *(["s"] if elapsed else [])]
    header += [f"r = {r:g}" for r in radii]
    table = []
    for name, cert, curve in rows:
        at = {p["radius"]: p["accuracy"] for p in curve}
        cells = [name, f"{cert['sigma']:g}", str(cert["n"]), f"{cert['alpha']:g}"]
        cells += [str(cert["n_examples"]), percent(cert["abstain_rate"])]
        cells += [f"{cert['elapsed_s']:.0f}"] if elapsed else []
        table.append(cells + [percent(at.get(r, 0.0)) for r in radii])
    return markdown_table(header, table, "l" + "r" * (len(header) - 1))


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]], align: str) -> list[str]:
    """A markdown table and the blank line after it; ``align`` has one letter per column, "l"
    (left) or "r" (right)."""
    rule = "|" + "".join("---:|" if a == "r" else "---|" for a in align)
    lines = ["| " + " | ".join(header) + " |", rule]
    return [*lines, *("| " + " | ".join(row) + " |" for row in rows), ""]


def write_report(
    paths: Iterable[str | Path], out_dir: str | Path, fmt: str = "markdown"
) -> list[Path]:
    """Merge the summaries behind ``paths`` into ``out_dir``: ``report.md`` (markdown),
    ``report.json`` (json) or both, plus the PNG plots. Returns the written files."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    summaries = load_summaries(paths)
    certifications = load_certifications(paths)
    if _mixed_datasets_note(summaries):
        datasets = ", ".join(dict.fromkeys(_dataset(s) for s in summaries))
        logger.warning("summaries from several datasets (%s): one table per dataset", datasets)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = []
    for table in accuracy_bars(summaries):
        path = out_dir / f"accuracy-{_slug(table['title'])}.png"
        plots.append(plot_bars(table["panels"], path, title=table["title"], chance=table["chance"]))
    plots += plot_sweeps(sweep_curves(summaries), out_dir)
    if certifications:
        from ciiv.certify.run import plot_certified_accuracy

        plots.append(plot_certified_accuracy(certifications, out_dir / "certified-accuracy.png"))
    written = []
    if fmt in ("markdown", "both"):
        text = report_markdown(summaries, plots, certifications)
        written.append(atomic_write(out_dir / "report.md", lambda f: f.write(text)))
    if fmt in ("json", "both"):
        merged = report_json(summaries)
        if certifications:
            merged["certified"] = certified_vs_empirical(certifications, summaries)
        written.append(write_json_atomic(out_dir / "report.json", merged))
    logger.info("report: %s (%d plots)", ", ".join(map(str, written)), len(plots))
    return [*written, *plots]
