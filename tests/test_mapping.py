"""The strict mapping -> dataclass helper behind every settings parser (ciiv._mapping)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from ciiv._mapping import ConfigError, build_dataclass, check_keys


@dataclass(frozen=True)
class Inner:
    eps: float = 0.1
    norm: Literal["Linf", "L2"] = "Linf"

    def __post_init__(self) -> None:
        if self.eps < 0:
            raise ValueError(f"eps: must be >= 0, got {self.eps}")


@dataclass(frozen=True)
class Outer:
    name: str
    steps: int = 10
    grid: tuple[int, ...] = (1, 2)
    split: tuple[int, int] = (3, 4)
    budget: float | str | None = None
    milestones: list[int] = field(default_factory=list)
    inner: Inner = field(default_factory=Inner)


def test_values_are_typed_and_converted():
    built = build_dataclass(
        Outer,
        {
            "name": "a",
            "grid": [5, 6],
            "split": [7, 8],
            "milestones": (1,),
            "inner": {"eps": "1/4"},
        },
    )
    assert built == Outer("a", grid=(5, 6), split=(7, 8), milestones=[1], inner=Inner(0.25))
    # a union keeps a value its first matching type takes as it is: "16/255" stays a string
    assert build_dataclass(Outer, {"name": "a", "budget": "16/255"}).budget == "16/255"
    assert build_dataclass(Outer, {"name": "a", "budget": 2}).budget == 2.0
    assert build_dataclass(Outer, {"name": "a", "inner": Inner(0.5)}).inner == Inner(0.5)


@pytest.mark.parametrize(
    "values, message",
    [
        (
            {"name": "a", "stepz": 1},
            "unknown config key 'stepz'; did you mean 'steps'? (valid: name",
        ),
        ({"name": "a", "x": 1, "y": 2}, "unknown config key 'x', 'y' (valid: name, steps,"),
        ({}, "Outer: missing config key name"),
        ({"name": "a", "steps": 2.5}, "steps: expected an integer"),
        ({"name": "a", "steps": True}, "steps: expected an integer"),
        ({"name": "a", "split": [1, 2, 3]}, "split: expected 2 values"),
        ({"name": "a", "grid": 3}, "grid: expected a list"),
        ({"name": "a", "inner": {"norm": "L3"}}, "inner.norm: 'L3' is not one of 'Linf', 'L2'"),
        ({"name": "a", "inner": {"eps": -1}}, "inner.eps: must be >= 0, got -1"),
        ({"name": "a", "inner": {"epss": 1}}, "unknown config key 'inner.epss'"),
        ({"name": "a", "inner": {"eps": "1/0"}}, "inner.eps: expected a number or a fraction"),
        ({"name": "a", "inner": 3}, "inner: expected a mapping"),
    ],
)
def test_errors_name_the_key_and_what_is_valid(values, message):
    with pytest.raises(ConfigError) as info:
        build_dataclass(Outer, values)
    assert message in str(info.value)


def test_unknown_keys_are_worded_for_their_owner():
    with pytest.raises(ConfigError, match=r"^dataset 'x': unknown option 'b' \(valid: a\)$"):
        check_keys({"b": 1}, ["a"], "option", owner="dataset 'x'")
    with pytest.raises(ConfigError, match=r"unknown option 'b' \(valid: none\)"):
        check_keys(["b"], [], "option")
    check_keys({"a": 1}, ["a"])  # nothing to report
