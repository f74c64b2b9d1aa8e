"""convkit's built-in backends, installed as the package ``convkit_backends``.

Each module is one backend, registered in pyproject.toml under the entry-point group
``convkit.backends``; the core never imports them directly.
"""
