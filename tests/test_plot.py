"""``convkit plot``: a roofline and per-layer speedups from a bench report."""

from __future__ import annotations

import builtins
import json

import pytest
from click.testing import CliRunner

from convkit.bench import BenchSettings, run_benchmark
from convkit.cases import parse_case
from convkit.cli import main
from convkit.plot import PlotUnavailableError, intensity, save_plot

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def report() -> dict:
    cases = [parse_case("name=a,n=2,c=4,o=8,hw=12,k=3,p=1"), parse_case("name=b,c=8,o=8,hw=6,k=1")]
    settings = BenchSettings(threads=1, min_time=1e-3, repeats=2, passes=1)
    return run_benchmark(cases, ["naive", "im2col-take"], settings, isolate=False)


def test_intensity_counts_each_operand_once():
    case = {"input_shape": [1, 1, 4, 4], "weight_shape": [1, 1, 1, 1],
            "output_shape": [1, 1, 4, 4], "flops": 32}
    assert intensity(case, "float32") == pytest.approx(32 / (33 * 4))
    assert intensity(case, "float64") == pytest.approx(32 / (33 * 8))


@pytest.mark.parametrize(("suffix", "start"), [(".png", b"\x89PNG"), (".svg", b"<?xml"),
                                               (".html", b"<!doctype html>")])
def test_each_format_is_written(tmp_path, report, suffix, start):
    output = tmp_path / f"report{suffix}"
    save_plot(report, output)
    data = output.read_bytes()
    assert data.startswith(start) and len(data) > 10_000
    if suffix == ".html":
        assert b"data:image/png;base64," in data


def test_unknown_suffix_is_refused(tmp_path, report):
    with pytest.raises(ValueError, match=r"must end in one of \.png, \.svg, \.html"):
        save_plot(report, tmp_path / "report.pdf")


def test_missing_matplotlib_names_the_install_command(tmp_path, report, monkeypatch):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(PlotUnavailableError, match=r"pip install 'convkit\[plot\]'"):
        save_plot(report, tmp_path / "report.png")


def test_cli_plots_a_saved_report(tmp_path, report):
    saved = tmp_path / "report.json"
    saved.write_text(json.dumps(report))
    result = CliRunner().invoke(main, ["plot", str(saved), "--output", str(tmp_path / "r.png")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r.png").stat().st_size > 10_000
    bad = CliRunner().invoke(main, ["plot", str(saved), "--output", str(tmp_path / "r.jpg")])
    assert bad.exit_code == 2 and "must end in .png, .svg or .html" in bad.output


def test_speedups_without_default_or_torch_say_so(tmp_path, report):
    import matplotlib.pyplot as plt

    from convkit.plot import _draw_speedups

    figure, axes = plt.subplots()
    _draw_speedups(axes, report)  # the fixture ran naive and im2col-take only
    assert "nothing to compare with" in axes.texts[0].get_text()
    plt.close(figure)
