"""Every example config parses with `lmrl fit --print_config`, and its model settings, data module and callbacks
build (the model itself needs the data and checkpoints that the config's comments say how to make; its settings
groups are built and range-checked here, which is what the constructor does first)."""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import io
import sys
import typing
from pathlib import Path

import pytest
import yaml

from lmrl_lightning import registry
from lmrl_lightning.validation import as_settings
from lmrl_lightning.cli import main

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "examples" / "configs").glob("*.yaml")) + sorted((ROOT / "examples" / "plugin").glob("*.yaml"))


@pytest.fixture(autouse=True)
def plugin_importable(monkeypatch):
    """The plug-in example's algorithm and task, importable without installing the package, and gone afterwards:
    test_plugin_package installs it and checks that its task is found through the entry point."""
    monkeypatch.syspath_prepend(str(ROOT / "examples" / "plugin"))
    yield
    for name in [m for m in sys.modules if m.split(".")[0] == "lmrl_plugin_example"]:
        del sys.modules[name]


def resolved_config(config: Path) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            code = main(["fit", "-c", str(config), "--print_config"])
        except SystemExit as e:
            code = e.code
    assert code in (0, None), out.getvalue()[-2000:]
    return yaml.safe_load(out.getvalue())


def import_class(path: str) -> type:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def settings_type(hint):
    """The dataclass of an argument's type hint (`X` or `Optional[X]`), or None."""
    for candidate in (hint, *typing.get_args(hint)):
        if dataclasses.is_dataclass(candidate):
            return candidate
    return None


def build(spec: dict):
    return import_class(spec["class_path"])(**(spec.get("init_args") or {}))


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_example_config_prints_and_builds(config, monkeypatch):
    if config.parent.name == "plugin":  # registered for this test only
        import lmrl_plugin_example.guess_number as guess_number

        monkeypatch.setitem(registry._TASKS, guess_number.TASK.name, guess_number.TASK)
    resolved = resolved_config(config)
    model = resolved["model"]
    cls = import_class(model["class_path"])
    hints = {}  # a subclass may pass its base's arguments through **kwargs (the plug-in's AWBC)
    for klass in reversed(cls.__mro__):
        if "__init__" in vars(klass) and klass.__module__.startswith(("lmrl_", "lmrl_plugin_example")):
            hints.update(typing.get_type_hints(klass.__init__))
    groups = 0
    for name, value in model["init_args"].items():
        kind = settings_type(hints.get(name))
        if kind is not None and value is not None:
            as_settings(value, kind, f"model.{name}")  # range checks included
            groups += 1
    assert groups >= 2  # backbone and optim at least
    if resolved.get("data"):
        build(resolved["data"])
    callbacks = [build(c) for c in resolved["trainer"]["callbacks"]]
    assert any(type(c).__name__ == "RolloutEvaluation" for c in callbacks)
    # A constructor takes groups, not a copied list of their fields.
    assert len(model["init_args"]) <= 10
