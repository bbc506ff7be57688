"""Translators, one module each, laid out as their volfile type names them.

`load_all` imports every built translator so that each registers its type and option table.
"""

import importlib
import pkgutil


def load_all() -> None:
    for kind in pkgutil.iter_modules(__path__):
        package = importlib.import_module(f"{__name__}.{kind.name}")
        for module in pkgutil.iter_modules(package.__path__):
            if not module.name.startswith("_"):
                importlib.import_module(f"{package.__name__}.{module.name}")
