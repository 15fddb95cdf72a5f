"""The plugin registry: entry points, isolation, strict mode, disable list, duplicates."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import graphopt
from graphopt import PluginError, PluginWarning, Registry, UnknownNameError

THIRD_PARTY = '''
"""A third-party plugin, as a user would publish it."""
import graphopt


class ToyMethod:
    """A method plugin (its real verbs come from graphopt.methods)."""


def toy_knn(features, k=2):
    return ("graph", k)


@graphopt.hookimpl
def graphopt_register(registry):
    registry.add("method", "toy", ToyMethod)
    registry.add("graph", "toy_knn", toy_knn)
'''


def install_plugin(
    root: Path, dist: str, module: str, source: str, entry: str | None = None
) -> None:
    """Write ``module.py`` plus a ``dist-info`` whose entry point names it, as pip would."""
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[graphopt]\n{entry or module} = {module}\n")


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A temporary site directory on sys.path, removed with its modules afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("GRAPHOPT_STRICT_PLUGINS", raising=False)
    monkeypatch.delenv("GRAPHOPT_DISABLE_PLUGINS", raising=False)
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if name.startswith(("toy", "broken", "dupe")):
            del sys.modules[name]


def fresh() -> Registry:
    return Registry(builtins=())


def test_third_party_entry_point_registers_method_and_graph(site):
    install_plugin(site, "graphopt-toy", "toy_plugin", THIRD_PARTY)
    reg = fresh()
    assert reg.get("method", "toy").__name__ == "ToyMethod"
    assert reg.get("graph", "toy_knn")(None) == ("graph", 2)
    entry = reg.entry("graph", "toy_knn")
    assert (entry.plugin, entry.distribution, entry.version) == (
        "toy_plugin",
        "graphopt-toy",
        "1.2.3",
    )


def test_loading_is_lazy_until_first_lookup(site):
    install_plugin(site, "graphopt-toy", "toy_lazy", THIRD_PARTY)
    reg = fresh()
    assert "toy_lazy" not in sys.modules
    reg.names("method")
    assert "toy_lazy" in sys.modules


def test_import_graphopt_loads_no_plugin():
    code = (
        "import sys, graphopt; print(any(m.startswith('graphopt.plugins.') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_broken_plugin_is_reported_and_skipped(site):
    install_plugin(site, "graphopt-broken", "broken_import", "raise RuntimeError('boom')\n")
    install_plugin(site, "graphopt-toy", "toy_ok", THIRD_PARTY)
    reg = fresh()
    with pytest.warns(PluginWarning, match=r"'broken_import'.*graphopt-broken.*boom"):
        names = reg.names("method")
    assert names == ["toy"]
    assert "boom" in reg.failures["broken_import"]


def test_plugin_failing_in_register_leaves_nothing_half_registered(site):
    source = """
    import graphopt

    @graphopt.hookimpl
    def graphopt_register(registry):
        registry.add("graph", "half", object())
        raise ValueError("bad config")
    """
    install_plugin(site, "graphopt-broken", "broken_register", source)
    reg = fresh()
    with pytest.warns(PluginWarning, match="bad config"):
        assert reg.names("graph") == []


def test_strict_mode_makes_a_broken_plugin_fatal(site, monkeypatch):
    install_plugin(site, "graphopt-broken", "broken_strict", "raise RuntimeError('boom')\n")
    monkeypatch.setenv("GRAPHOPT_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match=r"'broken_strict'.*boom"):
        fresh().names("method")


def test_disable_list_blocks_named_entry_points(site, monkeypatch):
    install_plugin(site, "graphopt-broken", "broken_disabled", "raise RuntimeError('boom')\n")
    install_plugin(site, "graphopt-toy", "toy_kept", THIRD_PARTY)
    monkeypatch.setenv("GRAPHOPT_DISABLE_PLUGINS", "broken_disabled, other")
    reg = fresh()
    assert reg.names("method") == ["toy"]
    assert reg.failures == {}
    assert "broken_disabled" not in sys.modules


def test_disable_all_blocks_every_entry_point_but_keeps_builtins(site, monkeypatch):
    install_plugin(site, "graphopt-toy", "toy_blocked", THIRD_PARTY)
    builtin = site / "toy_builtin.py"
    builtin.write_text(
        "import graphopt\n@graphopt.hookimpl\ndef graphopt_register(registry):\n"
        "    registry.add('penalty', 'builtin_pen', abs)\n"
    )
    monkeypatch.setenv("GRAPHOPT_DISABLE_PLUGINS", "all")
    reg = Registry(builtins=("toy_builtin",))
    assert reg.names("method") == []
    assert reg.names("penalty") == ["builtin_pen"]
    assert reg.entry("penalty", "builtin_pen").distribution == "graphopt"


def test_duplicate_name_names_both_plugins(site):
    install_plugin(site, "graphopt-toy", "toy_first", THIRD_PARTY)
    install_plugin(site, "graphopt-dupe", "toy_second", THIRD_PARTY)
    reg = fresh()
    with pytest.warns(PluginWarning, match=r"registered twice.*'toy_first'.*'toy_second'"):
        assert reg.get("method", "toy").__module__ == "toy_first"


def test_duplicate_is_fatal_in_strict_mode(site, monkeypatch):
    install_plugin(site, "graphopt-toy", "toy_a", THIRD_PARTY)
    install_plugin(site, "graphopt-dupe", "toy_b", THIRD_PARTY)
    monkeypatch.setenv("GRAPHOPT_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="registered twice"):
        fresh().load()


def test_unknown_name_lists_what_is_available(site):
    install_plugin(site, "graphopt-toy", "toy_names", THIRD_PARTY)
    reg = fresh()
    with pytest.raises(UnknownNameError, match=r"unknown method 'nope'.*'toy'"):
        reg.get("method", "nope")
    with pytest.raises(UnknownNameError, match=r"unknown kind 'methods'.*'method'"):
        reg.get("methods", "toy")


def test_runtime_register_and_new_kind():
    reg = fresh()

    class Plugin:
        @graphopt.hookimpl
        def graphopt_register(self, registry):
            registry.add_kind("scheduler")
            registry.add("scheduler", "cosine", "cos")

    reg.register(Plugin(), name="inline")
    assert reg.get("scheduler", "cosine") == "cos"
    assert reg.entry("scheduler", "cosine").plugin == "inline"


@pytest.mark.parametrize("name", ["", "Upper", " padded", 3])
def test_bad_names_are_rejected(name):
    reg = fresh()

    class Plugin:
        @graphopt.hookimpl
        def graphopt_register(self, registry):
            registry.add("method", name, object())

    with pytest.warns(PluginWarning, match="lowercase string"):
        reg.register(Plugin())
    assert reg.names("method") == []


def test_every_hookspec_is_exercised_by_the_test_suite():
    """Each hook in hookspecs.py is implemented by a plugin in at least one test."""
    import inspect

    from graphopt import hookspecs

    specs = [
        n for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if n.startswith("graphopt_")
    ]
    tests = "".join(p.read_text() for p in Path(__file__).parent.glob("test_*.py"))
    assert specs, "no hook specs found"
    missing = [s for s in specs if f"def {s}(" not in tests]
    assert not missing, f"hooks without a test: {missing}"
