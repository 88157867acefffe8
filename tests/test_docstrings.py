"""Every public name documents itself: a docstring, and a Parameters section once a function or
a class's constructor takes four or more arguments (numpydoc, as ``objective`` does). Frozen
result records (dataclasses) describe their fields in the class docstring. Public methods may
inherit the docstring of the method they override."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
from typing import Any

import pytest

import doublebackprop

SKIP_METHODS = {"forward", "extra_repr"}  # nn.Module hooks, documented by the class


def _modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(doublebackprop.__path__, "doublebackprop."):
        if not any(part.startswith("_") for part in info.name.split(".")[1:]):
            names.append(info.name)
    return sorted(names)


def _params(obj: object) -> int:
    try:
        sig = inspect.signature(obj)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0
    return sum(1 for p in sig.parameters.values() if p.name not in ("self", "cls"))


def _public(module: object) -> list[tuple[str, Any]]:
    names = getattr(module, "__all__", None)
    if names is None:
        return []
    out = []
    for name in names:
        obj = getattr(module, name, None)
        if (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__ == module.__name__:
            out.append((name, obj))
    return out


@pytest.mark.parametrize("module_name", _modules())
def test_public_names_are_documented(module_name):
    module = importlib.import_module(module_name)
    missing, no_params = [], []
    for name, obj in _public(module):
        doc = inspect.getdoc(obj) or ""
        if not doc:
            missing.append(name)
        target = obj.__init__ if inspect.isclass(obj) else obj  # type: ignore[misc]
        record = inspect.isclass(obj) and dataclasses.is_dataclass(obj)
        if (
            not record
            and _params(target) >= 4
            and "Parameters" not in doc
            and "Parameters" not in (inspect.getdoc(target) or "")
        ):
            no_params.append(name)
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if attr.startswith("_") or attr in SKIP_METHODS or not inspect.isfunction(member):
                    continue
                if not inspect.getdoc(getattr(obj, attr)):
                    missing.append(f"{name}.{attr}")
    assert not missing, f"{module_name}: no docstring: {missing}"
    assert not no_params, f"{module_name}: >= 4 arguments but no Parameters section: {no_params}"
