"""Model cards: an evaluation summary -> a shareable JSON record and a markdown card.

The JSON takes the shape of RobustBench's ``model_info`` entries (accuracies in percent as
strings with two decimals, "92.44") with two departures, ``robust_acc`` (the worst case over a
ciiv suite, not ``autoattack_acc``) and a ``threat_model`` field, and everything else ciiv knows
under ``"ciiv"``; docs/evaluation.md ("Model cards") lists the fields, :data:`CARD_SCHEMA` is
their schema. Cards are built from ``summary.json`` files alone.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ciiv._io import atomic_write, write_json_atomic
from ciiv.evaluate.audit import audit_verdict
from ciiv.report import _model_class, attack_eot, load_summaries, markdown_table

__all__ = [
    "CARD_INFO_KEYS",
    "CARD_SCHEMA",
    "card_markdown",
    "load_card_info",
    "model_card",
    "write_cards",
]

logger = logging.getLogger(__name__)

SCHEMA_ID = "ciiv.card/1"
# Fields a user may supply (RobustBench's descriptive fields), with their JSON types.
CARD_INFO_KEYS: dict[str, type] = {
    **dict.fromkeys(("name", "link", "authors", "venue", "architecture"), str),
    **{"additional_data": bool, "reported": str, "footnote": str},
}

_TEXT, _BOOL = {"type": "string"}, {"type": "boolean"}
_NAME = {"type": "string", "minLength": 1}
_COUNT = {"type": "integer", "minimum": 1}
_PERCENT = {"type": "string", "pattern": r"^(100|[0-9]{1,2})\.[0-9]{2}$"}
_INTERVAL = {"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 100},
             "minItems": 2, "maxItems": 2}  # fmt: skip
_REPORTED = r"[0-9]+(\.[0-9]+)?"  # an accuracy in %, e.g. "67.31"


def _object(fields: dict[str, Any]) -> dict[str, Any]:
    """A JSON object with exactly ``fields`` (name -> schema); a name ending in "?" is optional."""
    return {
        "type": "object",
        "required": [k for k in fields if not k.endswith("?")],
        "additionalProperties": False,
        "properties": {k.rstrip("?"): v for k, v in fields.items()},
    }


CARD_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": SCHEMA_ID,
    "title": "ciiv model card: RobustBench model_info fields plus ciiv's evaluation record",
    **_object({
        "name": _NAME, "link?": _TEXT, "authors?": _TEXT, "venue?": _TEXT,
        "architecture": _NAME, "additional_data?": _BOOL, "number_forward_passes": _COUNT,
        "dataset": {"type": ["string", "null"]}, "threat_model": {"enum": ["Linf", "L2"]},
        "eps": {"type": "string", "pattern": r"^[0-9.]+(/[0-9]+)?$"},
        "clean_acc": _PERCENT, "robust_acc": _PERCENT,
        "reported?": {"type": "string", "pattern": f"^{_REPORTED}$"},
        "footnote": _TEXT, "unreliable?": _BOOL,
        "ciiv": _object({
            "schema": {"const": SCHEMA_ID}, "suite": _TEXT, "suite_description?": _TEXT,
            "protocol": {"enum": ["full", "paper"]}, "protocol_note?": _TEXT,
            "attacks": {"type": "array", "minItems": 1, "items": _object({
                "name": _TEXT, "attack?": _TEXT, "role": {"enum": ["worst_case", "standalone"]},
                "counts_for_worst_case?": _BOOL, "accuracy": _PERCENT, "ci95?": _INTERVAL,
                "eot?": _COUNT,
            })},
            "skipped_attacks?": {"type": "object", "additionalProperties": _TEXT},
            "n_examples": _COUNT, "eot": {"type": "array", "items": _COUNT}, "draws": _COUNT,
            "seed": {"type": "integer"}, "stochastic": {"type": ["boolean", "null"]},
            "clean_acc_ci95": _INTERVAL, "robust_acc_ci95": _INTERVAL,
            "audit": _object({
                "verdict": {"enum": ["passed", "failed", "not run"]},
                "counts?": {"type": "object", "additionalProperties": {"type": "integer"}},
                "failed?": {"type": "array", "items": _TEXT},
                "warned?": {"type": "array", "items": _TEXT},
            }),
            "forward_passes": {"type": "integer", "minimum": 0},
            "model?": {"type": ["object", "null"]}, "run?": {"type": ["object", "null"]},
            "versions": {"type": "object", "additionalProperties": _TEXT}, "summary?": _TEXT,
        }),
    }),
}  # fmt: skip


def _pct(value: float) -> str:
    return f"{100 * value:.2f}"


def _interval(ci: Any) -> list[float]:
    return [round(100 * bound, 2) for bound in ci]


def _spec(summary: Mapping[str, Any]) -> str | None:
    """A user model's spec without the folders of its file (``defense.py:build``)."""
    spec = ((summary.get("run") or {}).get("model") or {}).get("spec")
    if not spec:
        return None
    source, _, attr = spec.rpartition(":")
    return f"{Path(source).name}:{attr}" if source.endswith(".py") else spec


def _default_name(summary: Mapping[str, Any]) -> str:
    run = summary.get("run") or {}
    folder = f" ({Path(run['run_dir']).name})" if run.get("run_dir") else ""
    name = _spec(summary) or run.get("method")
    return f"{name}{folder}" if name else _model_class(summary)


def _architecture(summary: Mapping[str, Any]) -> str:
    backbone, spec = (summary.get("run") or {}).get("backbone"), _spec(summary)
    if backbone:
        return f"{_model_class(summary)} on {backbone}"
    return spec if spec and spec.split(":", 1)[0] in ("timm", "tv") else _model_class(summary)


def _footnote(summary: Mapping[str, Any], audit: Mapping[str, Any]) -> str:
    threat = summary["threat_model"]
    chain = ", ".join(summary.get("worst_case_chain") or [])
    text = (
        f"ciiv {summary['suite']} suite, {summary['protocol']} protocol, "
        f"{threat['norm']} eps {threat['eps_label']}, {summary['n_examples']} test examples: "
        f"robust accuracy = per-example worst case over {chain or 'the suite'}"
    )
    if summary.get("draws", 1) > 1:
        text += (
            f"; a random model: an example counts only if all {summary['draws']} prediction "
            "draws are correct"
        )
    if audit["verdict"] == "failed":
        failed = ", ".join(audit["failed"])
        return f"{text}; the audit FAILED ({failed}): the robust accuracy may be overstated."
    return f"{text}; audit {audit['verdict']}."


def model_card(summary: Mapping[str, Any], info: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The card (a dict that validates against :data:`CARD_SCHEMA`) of one evaluation summary,
    the dict of ``summary.json``. ``info``: user-supplied fields (:data:`CARD_INFO_KEYS`) that
    replace the defaults of ``name``, ``architecture`` and ``footnote``; ``link``, ``authors``,
    ``venue``, ``additional_data`` and ``reported`` are absent unless given."""
    info = _check_info(info or {})
    audit = audit_verdict(summary.get("audit"))
    attacks = []
    for name, detail in summary["attacks"].items():
        entry = {
            "name": name,
            "attack": detail.get("attack", name),
            "role": detail["role"],
            "counts_for_worst_case": bool(detail.get("counts_for_worst_case", True)),
            "accuracy": _pct(detail["accuracy"]),
            "ci95": _interval(detail["ci95"]),
        }
        eot = (detail.get("hyper") or {}).get("eot")
        if isinstance(eot, int):
            entry["eot"] = eot
        attacks.append(entry)
    threat = summary["threat_model"]
    card: dict[str, Any] = {
        "name": _default_name(summary),
        "architecture": _architecture(summary),
        "number_forward_passes": int(summary.get("draws", 1)),
        "dataset": summary.get("dataset") or (summary.get("run") or {}).get("dataset"),
        "threat_model": threat["norm"],
        "eps": str(threat["eps_label"]),
        "clean_acc": _pct(summary["clean_accuracy"]),
        "robust_acc": _pct(summary["robust_accuracy"]),
        "footnote": _footnote(summary, audit),
    }
    card.update(info)
    if audit["verdict"] != "not run":
        card["unreliable"] = audit["verdict"] == "failed"
    card["ciiv"] = {
        "schema": SCHEMA_ID,
        "suite": summary["suite"],
        "suite_description": summary.get("suite_description", ""),
        "protocol": summary["protocol"],
        "protocol_note": summary.get("protocol_note", ""),
        "attacks": attacks,
        "skipped_attacks": dict(summary.get("skipped_attacks") or {}),
        "n_examples": int(summary["n_examples"]),
        "eot": attack_eot(summary),
        "draws": int(summary.get("draws", 1)),
        "seed": int(summary["seed"]),
        "stochastic": (summary.get("model") or {}).get("stochastic"),
        "clean_acc_ci95": _interval(summary["clean_accuracy_ci95"]),
        "robust_acc_ci95": _interval(summary["robust_accuracy_ci95"]),
        "audit": audit,
        "forward_passes": int(summary.get("forward_passes", 0)),
        "model": summary.get("model"),
        "run": summary.get("run"),
        "versions": {k: str(v) for k, v in (summary.get("versions") or {}).items()},
    }
    if summary.get("_path"):
        card["ciiv"]["summary"] = str(summary["_path"])
    return card


def _check_info(info: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(info) - set(CARD_INFO_KEYS))
    if unknown:
        raise ValueError(
            f"unknown card field(s) {', '.join(unknown)}; valid: {', '.join(CARD_INFO_KEYS)}"
        )
    for key, value in info.items():
        if not isinstance(value, CARD_INFO_KEYS[key]):
            raise ValueError(
                f"card field {key!r} must be a {CARD_INFO_KEYS[key].__name__}, got {value!r}"
            )
    if "reported" in info and not re.fullmatch(_REPORTED, info["reported"]):
        raise ValueError(f"card field 'reported' is an accuracy in %, e.g. \"67.31\"; got "
                         f"{info['reported']!r}")  # fmt: skip
    return dict(info)


def load_card_info(path: str | Path) -> dict[str, Any]:
    """User-supplied card fields from a YAML or JSON mapping (see :data:`CARD_INFO_KEYS`)."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read the card info {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not valid YAML/JSON: {exc}") from None
    if not isinstance(data, Mapping):
        raise ValueError(f"{path} must hold a mapping of card fields ({', '.join(CARD_INFO_KEYS)})")
    if isinstance(data.get("reported"), int | float):
        data["reported"] = str(data["reported"])  # YAML reads 67.31 as a number
    return _check_info(data)


def card_markdown(card: Mapping[str, Any]) -> str:
    """The human-readable card: the headline figures, the attacks, the audit, the versions."""
    extra = card["ciiv"]
    about = [f"- {key}: {card[key]}" for key in ("authors", "venue", "link") if card.get(key)]
    lines = [f"# {card['name']}", "", *about, *([""] if about else [])]
    eot = "/".join(map(str, extra["eot"])) or "-"
    clean, robust = _span(extra["clean_acc_ci95"]), _span(extra["robust_acc_ci95"])
    rows = [
        ("dataset", f"{card['dataset']} ({extra['n_examples']} examples, seed {extra['seed']})"),
        ("architecture", card["architecture"]),
        ("threat model", f"{card['threat_model']}, eps {card['eps']}"),
        ("clean accuracy", f"{card['clean_acc']} % (95 % CI {clean})"),
        ("robust accuracy", f"**{card['robust_acc']} %** (95 % CI {robust})"),
        ("suite", f"{extra['suite']}: {extra.get('suite_description', '')}".rstrip(": ")),
        ("protocol", f"{extra['protocol']}: {extra.get('protocol_note', '')}".rstrip(": ")),
        ("random model", {True: "yes", False: "no", None: "unknown"}[extra["stochastic"]]),
        ("EOT draws per step / prediction draws", f"{eot} / {extra['draws']}"),
        ("audit", _audit_text(extra["audit"])),
        ("forward passes", f"{extra['forward_passes']:,}"),
    ]  # fmt: skip
    if card.get("reported"):
        rows.append(("reported by the authors", f"{card['reported']} %"))
    if "additional_data" in card:
        rows.append(("additional training data", "yes" if card["additional_data"] else "no"))
    escaped = ((k, str(v).replace("|", "\\|")) for k, v in rows)  # a "|" would end the cell
    lines += ["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in escaped), ""]
    attacks = []
    for a in extra["attacks"]:
        role = a["role"] if a.get("counts_for_worst_case", True) else f"{a['role']} (not counted)"
        attacks.append([a["name"], role, a["accuracy"], _span(a["ci95"])])
    lines += [card["footnote"], "", "## Attacks", ""]
    lines += markdown_table(["attack", "role", "accuracy (%)", "95 % CI"], attacks, "llrr")
    skipped = [f"- skipped `{k}`: {why}" for k, why in extra.get("skipped_attacks", {}).items()]
    lines += [
        "Worst-case rows give the accuracy after each attack of the chain (cumulative: later "
        "attacks only see the points still standing); standalone rows are each attack's own.",
        "",
        *skipped,
        *([""] if skipped else []),
    ]
    versions = ", ".join(f"{k} {v}" for k, v in extra["versions"].items())
    lines += ["## Versions", "", versions or "-", ""]
    if extra.get("summary"):
        lines += [f"Source: `{extra['summary']}` (written by `ciiv report --card`).", ""]
    return "\n".join(lines)


def _span(ci: list[float]) -> str:
    """A 95 % interval in % (as the card stores it) with one decimal: "91.2–95.0"."""
    return f"{ci[0]:.1f}–{ci[1]:.1f}"


def _audit_text(audit: Mapping[str, Any]) -> str:
    if audit["verdict"] == "not run":
        return "not run (`ciiv audit`, or `ciiv eval` without `--no-audit`)"
    counts = ", ".join(f"{v} {k}" for k, v in audit.get("counts", {}).items() if v)
    text = f"{audit['verdict']} ({counts})" if counts else audit["verdict"]
    if audit.get("failed"):
        text = f"**{text}**; failed: {', '.join(audit['failed'])}"
    if audit.get("warned"):
        text += f"; warnings: {', '.join(audit['warned'])}"
    return text


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "model"


def write_cards(
    paths: Iterable[str | Path], out_dir: str | Path, info: Mapping[str, Any] | None = None
) -> list[Path]:
    """One ``<name>--<evaluation>.json`` card and its ``.md`` per evaluation summary behind
    ``paths`` (run dirs, evaluation dirs or summary files, as for ``ciiv report``), in
    ``out_dir``; ``info`` fields go into every card. Returns the written files."""
    info = _check_info(info or {})
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    used: set[str] = set()
    for summary in load_summaries(paths):
        card = model_card(summary, info)
        stem = base = f"{_slug(card['name'])}--{_slug(Path(summary['_path']).parent.name)}"
        count = 1
        while stem in used:
            count += 1
            stem = f"{base}-{count}"
        used.add(stem)
        json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
        write_json_atomic(json_path, card)
        atomic_write(md_path, lambda f, card=card: f.write(card_markdown(card)))
        written += [json_path, md_path]
    logger.info("model cards: %d in %s", len(written) // 2, out_dir)
    return written
