"""The documentation's examples run and say what they claim."""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import convkit

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_blocks_run_in_order() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python examples"
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    assert namespace["y"].shape == (8, 16, 32, 32)
    assert namespace["layer"].weight_grad.shape == (16, 3, 3, 3)
    assert namespace["up"].shape == (8, 3, 32, 32) and namespace["gz"].shape == (8, 16, 16, 16)
    assert namespace["gwt"].shape == (16, 3, 4, 4)
    assert namespace["deconv"].weight_grad.shape == (16, 3, 3, 3)


def test_package_docstring_example() -> None:
    failures, tried = doctest.testmod(convkit)
    assert tried > 0 and failures == 0
