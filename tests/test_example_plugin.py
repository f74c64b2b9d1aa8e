"""The example plugin distribution in examples/convkit-example-plugin, installed as pip would.

Its entry points are read from its own pyproject.toml, so the test exercises the
declaration a user would copy, not a copy of it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import convkit
from convkit import cli
from convkit.testing import CHECK_KINDS, CONFORMANCE_CASES, check_backend

tomllib = pytest.importorskip("tomllib")

PLUGIN_DIR = Path(__file__).resolve().parent.parent / "examples" / "convkit-example-plugin"
NAME = "example-einsum"


@pytest.fixture
def example_plugin(make_distribution, monkeypatch: pytest.MonkeyPatch) -> str:
    """The example distribution 'installed': its source on sys.path plus its dist-info."""
    project = tomllib.loads((PLUGIN_DIR / "pyproject.toml").read_text())["project"]
    monkeypatch.syspath_prepend(str(PLUGIN_DIR))
    monkeypatch.delitem(sys.modules, "convkit_example_plugin", raising=False)
    make_distribution(project["name"], project["entry-points"]["convkit.backends"])
    return project["name"]


def test_listed_with_its_distribution(example_plugin: str) -> None:
    info = next(i for i in convkit.registry.backend_infos() if i.name == NAME)
    assert info.distribution == example_plugin == "convkit-example-plugin"
    assert info.target == "convkit_example_plugin:EinsumBackend" and info.problem is None


def test_passes_the_conformance_suite(example_plugin: str) -> None:
    report = check_backend(NAME)
    assert report.ok, report.summary()
    dilated = sum(1 for c in CONFORMANCE_CASES if c.geometry().dilation != (1, 1))
    assert report.skip_reasons == {"dilation": dilated * len(CHECK_KINDS) * 2}
    assert sum(report.passed.values()) == (len(CONFORMANCE_CASES) - dilated) * len(CHECK_KINDS) * 2


def test_selected_by_environment_variable(
    example_plugin: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVKIT_BACKEND", NAME)
    backend = convkit.get_backend()
    assert type(backend).__name__ == "EinsumBackend" and backend.name == NAME
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 4, 7, 6)), rng.standard_normal((6, 2, 3, 3))
    layer = convkit.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, dtype=np.float64)
    layer.weight = w
    expected = convkit.conv2d(x, w, layer.bias, stride=2, padding=1, groups=2, backend="naive")
    np.testing.assert_allclose(layer(x), expected, rtol=1e-12, atol=1e-12)
    # The environment choice reaches real calls: a dilated one is refused by this backend.
    with pytest.raises(convkit.UnsupportedConfigurationError, match=NAME):
        convkit.conv2d(x, w, dilation=2, groups=2)


def test_undeclared_capability_is_refused_naming_backend_and_capability(
    example_plugin: str,
) -> None:
    x, w = np.ones((1, 2, 9, 9)), np.ones((3, 2, 3, 3))
    gy = np.ones((1, 3, 5, 5))
    calls = [
        lambda: convkit.conv2d(x, w, dilation=2, backend=NAME),
        lambda: convkit.conv2d_input_grad(x.shape, w, gy, dilation=(2, 2), backend=NAME),
        lambda: convkit.conv2d_weight_grad(x, w.shape, gy, dilation=2, backend=NAME),
    ]
    for call in calls:
        with pytest.raises(convkit.UnsupportedConfigurationError) as err:
            call()
        assert f"backend {NAME!r}" in str(err.value)
        assert "dilation=(2, 2) is not supported" in str(err.value)


def test_shows_up_in_the_cli_and_passes_convkit_check(example_plugin: str) -> None:
    runner = CliRunner()
    listing = runner.invoke(cli.main, ["backends"])
    assert listing.exit_code == 0, listing.output
    line = next(row for row in listing.stdout.splitlines() if row.startswith(NAME))
    assert "available" in line and example_plugin in line
    checked = runner.invoke(cli.main, ["check", NAME, "--dtype", "float64"])
    assert checked.exit_code == 0, checked.output
    assert checked.stdout.splitlines()[-1].startswith("PASS:")
    assert "skipped" in checked.stdout and "dilation" in checked.stdout
