"""Benchmark cases: the suites are valid layers and spec strings read back what they wrote."""

from __future__ import annotations

import pytest

from convkit.cases import SUITES, case_spec, parse_case
from convkit.workload import ConvCase

ALL_CASES = [case for suite in SUITES.values() for case in suite]


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda c: c.name)
def test_suite_cases_are_valid_and_round_trip(case: ConvCase) -> None:
    assert case.geometry().flops > 0
    assert parse_case(case_spec(case)) == case


def test_suite_names_are_unique() -> None:
    for suite in SUITES.values():
        names = [case.name for case in suite]
        assert len(names) == len(set(names))


def test_spec_with_every_key() -> None:
    case = parse_case("name=mine,n=2,c=4,o=6,h=9,w=7,kh=3,kw=2,s=2,p=1x2,d=1,g=2")
    assert case == ConvCase("mine", (2, 4, 9, 7), (6, 2, 3, 2), stride=2, padding=(1, 2),
                            groups=2)
    assert parse_case(case_spec(case)) == case


def test_default_name_is_short_and_round_trips() -> None:
    case = parse_case("c=64, o=128, hw=28, k=3, p=same, n=8")
    assert case.name == "n8-c64-o128-28x28-k3x3-psame"
    assert parse_case(case_spec(case)) == case
    assert parse_case("c=3,o=4,hw=8,k=3").name == "n1-c3-o4-8x8-k3x3"  # defaults left out
    assert parse_case("c=3,o=4,hw=8,k=3,p=1x2").name == "n1-c3-o4-8x8-k3x3-p1x2"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("c=3,o=4,hw=8", "needs 'k'"),
        ("c=3,o=4,hw=8,k=3,x=1", "unknown key 'x'"),
        ("c=3,o=4,hw=8,k=3,c=5", "'c' twice"),
        ("c=3,o=4,hw=8,k", "not key=value"),
        ("c=a,o=4,hw=8,k=3", "c='a' must be an integer"),
        ("c=3,o=4,hw=8,k=3,p=1x2x3", "p='1x2x3'"),
        ("c=3,o=4,hw=2,k=3", "larger than the padded input"),
        ("c=3,o=4,hw=8,k=3,g=2", "groups=2 must divide"),
        ("c=3,o=4,hw=8,k=3,s=0", "stride must be at least 1"),
    ],
)
def test_bad_specs_name_the_problem(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_case(spec)


def test_stride_and_dilation_pairs_round_trip() -> None:
    case = parse_case("c=3,o=4,hw=9,k=3,s=1x2,d=2x1")
    assert (case.stride, case.dilation) == ((1, 2), (2, 1))
    assert case.name == "n1-c3-o4-9x9-k3x3-s1x2-d2x1"
    assert parse_case(case_spec(case)) == case
    assert parse_case("c=3,o=4,hw=9,k=3,s=2x2").name == "n1-c3-o4-9x9-k3x3-s2"


def test_bad_pair_names_the_key() -> None:
    with pytest.raises(ValueError, match="s='1x2x3' must be an integer or HxW"):
        parse_case("c=3,o=4,hw=9,k=3,s=1x2x3")
