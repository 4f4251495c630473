"""Model cards: RobustBench-style JSON that validates against the schema, and its markdown."""

import copy
import json

import pytest
import torch
from torch import nn

from ciiv.card import CARD_SCHEMA, card_markdown, load_card_info, model_card, write_cards

jsonschema = pytest.importorskip("jsonschema")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def summary(tmp_path_factory):
    from ciiv.evaluate import evaluate_robustness

    torch.manual_seed(0)
    x = torch.rand(12, 3, 8, 8)
    y = torch.randint(0, 3, (12,))
    # A deterministic toy model (random weights): the card only needs a real summary.
    model = nn.Sequential(nn.Flatten(), nn.Linear(192, 3))
    out = tmp_path_factory.mktemp("eval") / "toy" / "eval" / "quick-full"
    result = evaluate_robustness(model, x, y, suite="quick", out_dir=out, dataset="cifar10")
    data = result.to_dict()
    data["_path"] = str(out / "summary.json")
    return data


def _audited(summary, passed):
    data = copy.deepcopy(summary)
    data["audit"] = {
        "passed": passed,
        "counts": {"pass": 7, "warn": 1, "fail": 0 if passed else 1},
        "checks": [
            {"name": "randomness", "status": "pass" if passed else "fail"},
            {"name": "gradient_health", "status": "warn"},
        ],
    }
    return data


def test_the_schema_is_valid_and_a_card_follows_it(summary):
    jsonschema.Draft202012Validator.check_schema(CARD_SCHEMA)
    card = model_card(summary)
    jsonschema.validate(card, CARD_SCHEMA)
    # RobustBench's conventions: accuracies in % as strings with two decimals, eps as a label.
    assert card["clean_acc"] == f"{100 * summary['clean_accuracy']:.2f}"
    assert card["robust_acc"] == f"{100 * summary['robust_accuracy']:.2f}"
    assert float(card["robust_acc"]) <= float(card["clean_acc"])
    assert card["eps"] == "8/255" and card["threat_model"] == "Linf"
    assert card["dataset"] == "cifar10" and card["number_forward_passes"] == 1
    extra = card["ciiv"]
    assert extra["suite"] == "quick" and extra["n_examples"] == 12 and extra["draws"] == 1
    assert [a["name"] for a in extra["attacks"]] == list(summary["attacks"])
    low, high = extra["robust_acc_ci95"]
    assert low <= float(card["robust_acc"]) <= high
    assert extra["audit"] == {"verdict": "not run"} and "unreliable" not in card


@pytest.mark.parametrize("passed", [True, False])
def test_the_audit_verdict_sets_unreliable_and_the_footnote(summary, passed):
    card = model_card(_audited(summary, passed))
    jsonschema.validate(card, CARD_SCHEMA)
    assert card["unreliable"] is (not passed)
    assert card["ciiv"]["audit"]["verdict"] == ("passed" if passed else "failed")
    assert card["ciiv"]["audit"]["warned"] == ["gradient_health"]
    assert ("audit FAILED (randomness)" in card["footnote"]) is (not passed)
    markdown = card_markdown(card)
    assert ("failed: randomness" in markdown) is (not passed)


@pytest.mark.parametrize(
    "breakage",
    [
        lambda c: c.update(clean_acc=0.92),  # a number, not RobustBench's string
        lambda c: c.update(robust_acc="92.4"),  # one decimal
        lambda c: c.update(threat_model="L1"),
        lambda c: c.pop("robust_acc"),
        lambda c: c.update(autoattack_acc="50.00"),  # not what ciiv measures
        lambda c: c["ciiv"].update(protocol="other"),
        lambda c: c["ciiv"]["attacks"][0].update(accuracy="101.00"),
        lambda c: c["ciiv"]["audit"].update(verdict="maybe"),
    ],
)
def test_the_schema_refuses_broken_cards(summary, breakage):
    card = model_card(summary)
    breakage(card)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(card, CARD_SCHEMA)


def test_user_fields_replace_the_defaults_and_are_checked(summary, tmp_path):
    info = {"name": "My defense", "link": "https://example.org", "authors": "A. B.",
            "additional_data": False, "reported": "70.1"}  # fmt: skip
    card = model_card(summary, info)
    jsonschema.validate(card, CARD_SCHEMA)
    assert {k: card[k] for k in info} == info
    with pytest.raises(ValueError, match="unknown card field.*clean_acc"):
        model_card(summary, {"clean_acc": "99.00"})  # measured figures are not user-supplied
    with pytest.raises(ValueError, match="'additional_data' must be a bool"):
        model_card(summary, {"additional_data": "no"})
    (tmp_path / "info.yaml").write_text("name: Mine\nreported: 70.1\n")
    assert load_card_info(tmp_path / "info.yaml") == {"name": "Mine", "reported": "70.1"}
    (tmp_path / "bad.yaml").write_text("- a list\n")
    with pytest.raises(ValueError, match="must hold a mapping"):
        load_card_info(tmp_path / "bad.yaml")


def test_write_cards_writes_json_and_markdown_per_summary(summary, tmp_path):
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({k: v for k, v in summary.items() if k != "_path"}))
    other = tmp_path / "again" / "summary.json"
    other.parent.mkdir()
    other.write_text(path.read_text())
    written = write_cards([path, other], tmp_path / "cards", {"name": "Same name"})
    assert [p.suffix for p in written] == [".json", ".md", ".json", ".md"]
    assert len({p.name for p in written}) == 4  # equal names never overwrite each other
    card = json.loads(written[0].read_text())
    jsonschema.validate(card, CARD_SCHEMA)
    text = written[1].read_text()
    assert text.startswith("# Same name") and f"**{card['robust_acc']} %**" in text
    for attack in card["ciiv"]["attacks"]:
        assert f"| {attack['name']} |" in text
