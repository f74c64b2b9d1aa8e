"""The distribution ships every package of the source tree.

An editable install imports from the tree, so a package missing from ``pyproject.toml`` goes
unnoticed there and breaks every plain ``pip install .``.
"""

from __future__ import annotations

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent


def _packages_in_tree(name: str, folder: Path) -> set[str]:
    return {
        ".".join([name, *init.parent.relative_to(folder).parts])
        for init in folder.rglob("__init__.py")
        if "__pycache__" not in init.parts
    }


def test_every_package_in_the_tree_is_in_pyproject():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = setuptools["package-dir"]
    in_tree = set().union(*(_packages_in_tree(name, ROOT / folder)
                            for name, folder in folders.items()))
    assert set(setuptools["packages"]) == in_tree


def test_every_entry_point_names_a_shipped_package():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = set(project["tool"]["setuptools"]["packages"])
    for name, target in project["project"]["entry-points"]["convkit.backends"].items():
        module = target.split(":")[0]
        assert module.rsplit(".", 1)[0] in packages, name


def test_asv_backends_keep_their_order():
    """asv's parameter lists follow the entry points' order (benchmarks/common.py): the
    backends asv measured before must keep their places, new ones come after."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    names = list(project["project"]["entry-points"]["convkit.backends"])
    assert names[:4] == ["naive", "im2col-strided", "im2col-take", "numba"]
