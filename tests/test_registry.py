"""The plugin registry: entry points, isolation, strict mode, disable list, duplicates."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import graphopt
from graphopt import PluginError, PluginWarning, Registry, UnknownNameError
from graphopt._registry import BUILTIN_PLUGINS
from graphopt.cli import main

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
    with pytest.warns(
        PluginWarning, match=r"'broken_import'.*graphopt-broken 1\.2\.3.*boom.*pip uninstall"
    ):
        names = reg.names("method")
    assert names == ["toy"]
    [failure] = reg.failures
    assert (failure.plugin, failure.distribution, failure.version) == (
        "broken_import",
        "graphopt-broken",
        "1.2.3",
    )
    assert failure.error == "RuntimeError: boom"


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
    with pytest.raises(
        PluginError, match=r"'broken_strict'.*graphopt-broken 1\.2\.3.*raised"
    ) as err:
        fresh().names("method")
    assert "skipped" not in str(err.value)


def test_disable_list_blocks_named_entry_points(site, monkeypatch):
    install_plugin(site, "graphopt-broken", "broken_disabled", "raise RuntimeError('boom')\n")
    install_plugin(site, "graphopt-toy", "toy_kept", THIRD_PARTY)
    monkeypatch.setenv("GRAPHOPT_DISABLE_PLUGINS", "broken_disabled, other")
    reg = fresh()
    assert reg.names("method") == ["toy"]
    assert reg.failures == []
    assert [s.name for s in reg.disabled] == ["broken_disabled"]
    assert "broken_disabled" not in sys.modules


def test_disable_all_blocks_every_entry_point_but_keeps_builtins(site, monkeypatch):
    install_plugin(site, "graphopt-toy", "toy_blocked", THIRD_PARTY)
    builtin = site / "toy_builtin.py"
    builtin.write_text(
        "import graphopt\n@graphopt.hookimpl\ndef graphopt_register(registry):\n"
        "    registry.add('penalty', 'builtin_pen', abs)\n"
    )
    monkeypatch.setenv("GRAPHOPT_DISABLE_PLUGINS", "all")
    reg = Registry(builtins={"toy_builtin": "toy_builtin"})
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


# -- failures never end the process, and name the distribution ---------------------------------


@pytest.mark.parametrize(
    "source",
    ["import sys\nsys.exit(3)\n", "raise BaseException('odd')\n", "raise GeneratorExit\n"],
)
def test_base_exception_on_import_is_a_plugin_failure(site, source):
    install_plugin(site, "graphopt-broken", "broken_exit", source)
    install_plugin(site, "graphopt-toy", "toy_survives", THIRD_PARTY)
    reg = fresh()
    with pytest.warns(PluginWarning, match="'broken_exit'"):
        assert reg.names("method") == ["toy"]
    assert reg.failures[0].plugin == "broken_exit"


def test_system_exit_in_register_is_a_plugin_failure(site):
    source = """
    import sys
    import graphopt

    @graphopt.hookimpl
    def graphopt_register(registry):
        registry.add("graph", "gone", object())
        sys.exit(3)
    """
    install_plugin(site, "graphopt-broken", "broken_exit_register", source)
    reg = fresh()
    with pytest.warns(PluginWarning, match="SystemExit: 3"):
        assert reg.names("graph") == []


def test_keyboard_interrupt_is_not_swallowed(site):
    install_plugin(site, "graphopt-broken", "broken_interrupt", "raise KeyboardInterrupt\n")
    with pytest.raises(KeyboardInterrupt):
        fresh().load()


def test_a_plugin_calling_sys_exit_does_not_end_the_cli(site):
    install_plugin(site, "graphopt-broken", "broken_cli_exit", "import sys\nsys.exit(3)\n")
    code = "from graphopt.cli import main; raise SystemExit(main(['plugins', '--kind', 'method']))"
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONWARNINGS": "ignore"}
    env.pop("GRAPHOPT_STRICT_PLUGINS", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert "lora" in out.stdout
    assert (
        "failed plugin 'broken_cli_exit' (distribution graphopt-broken 1.2.3): SystemExit: 3"
        in out.stdout
    )


def test_a_plugin_without_hooks_or_with_a_misspelt_hook_fails_loudly(site):
    install_plugin(site, "graphopt-broken", "broken_nohook", "def graphopt_register(r): pass\n")
    misspelt = "import graphopt\n@graphopt.hookimpl\ndef graphopt_regster(registry): pass\n"
    install_plugin(site, "graphopt-broken2", "broken_misspelt", misspelt)
    reg = fresh()
    with pytest.warns(PluginWarning) as caught:
        reg.load()
    messages = " ".join(str(w.message) for w in caught)
    assert "'broken_nohook'" in messages and "implements no hook" in messages
    assert "'broken_misspelt'" in messages and "graphopt_regster" in messages


# -- built-ins by short name ---------------------------------------------------------------------


def test_builtins_are_named_by_short_name():
    reg = Registry()
    assert reg.entry("method", "lora").plugin == "lora"
    assert reg.entry("graph", "knn_cosine").plugin == "graphs"
    assert {s.name for s in reg.plugins} == set(BUILTIN_PLUGINS)


@pytest.mark.parametrize("disabled", ["lora", " lora , graphs"])
def test_a_builtin_is_disabled_by_its_short_name(monkeypatch, disabled):
    monkeypatch.setenv("GRAPHOPT_DISABLE_PLUGINS", disabled)
    reg = Registry()
    assert "lora" not in reg.names("method")
    assert "linchain" in reg.names("method")
    assert "lora" in [s.name for s in reg.disabled]
    with pytest.raises(UnknownNameError, match="unknown method 'lora'"):
        reg.get("method", "lora")


def test_an_entry_point_may_share_a_builtin_plugin_name(site):
    install_plugin(site, "graphopt-toy", "toy_as_lora", THIRD_PARTY, entry="lora")
    reg = Registry()
    assert reg.entry("method", "toy").plugin == "lora"
    assert reg.entry("method", "toy").distribution == "graphopt-toy"
    assert reg.entry("method", "lora").distribution == "graphopt"
    assert reg.failures == []


# -- lazy references -----------------------------------------------------------------------------

LAZY = """
import graphopt


@graphopt.hookimpl
def graphopt_register(registry):
    registry.add_lazy("graph", "toy_heavy", "toy_heavy_impl:build")
    registry.add_lazy("graph", "toy_missing", "toy_heavy_impl:nope")
"""


def test_lazy_reference_is_imported_on_get_only(site):
    install_plugin(site, "graphopt-toy", "toy_lazy_plugin", LAZY)
    (site / "toy_heavy_impl.py").write_text("def build(features):\n    return 'built'\n")
    reg = fresh()
    entry = reg.entry("graph", "toy_heavy")
    assert reg.names("graph") == ["toy_heavy", "toy_missing"]
    assert entry.lazy and entry.reference == "toy_heavy_impl:build"
    assert "toy_heavy_impl" not in sys.modules
    assert reg.get("graph", "toy_heavy")(None) == "built"
    assert "toy_heavy_impl" in sys.modules
    assert reg.get("graph", "toy_heavy") is sys.modules["toy_heavy_impl"].build


def test_a_broken_lazy_reference_names_its_plugin_on_get(site):
    install_plugin(site, "graphopt-toy", "toy_lazy_broken", LAZY)
    (site / "toy_heavy_impl.py").write_text("def build(features):\n    return 'built'\n")
    reg = fresh()
    with pytest.raises(
        PluginError,
        match=r"graph 'toy_missing' of graphopt plugin 'toy_lazy_broken' \(distribution "
        r"graphopt-toy 1\.2\.3\).*'toy_heavy_impl:nope'.*AttributeError",
    ):
        reg.get("graph", "toy_missing")


@pytest.mark.parametrize("reference", ["no_colon", "a.b:", ":attr", "a b:c", "a:b-c", 3])
def test_a_malformed_reference_fails_the_plugin(reference):
    reg = fresh()

    class Plugin:
        @graphopt.hookimpl
        def graphopt_register(self, registry):
            registry.add_lazy("graph", "bad", reference)

    with pytest.warns(PluginWarning, match="package.module:attribute"):
        reg.register(Plugin(), name="malformed")
    assert reg.names("graph") == []


def test_every_builtin_reference_resolves_to_the_solvers_own_object():
    from graphopt.solvers import graphs, spectral
    from graphopt.solvers.eigen import SOLVERS as EIGENSOLVERS
    from graphopt.solvers.ggm.api import PENALTIES
    from graphopt.solvers.ggm.api import SOLVERS as GGM_SOLVERS

    reg = Registry()
    assert all(e.lazy for e in reg.entries())
    assert {n: reg.get("eigensolver", n) for n in reg.names("eigensolver")} == EIGENSOLVERS
    assert {n: reg.get("penalty", n) for n in reg.names("penalty")} == PENALTIES
    assert {n: reg.get("ggm_solver", n) for n in reg.names("ggm_solver")} == GGM_SOLVERS
    assert reg.get("graph", "knn_cosine") is graphs.knn_cosine
    assert reg.get("graph", "gaussian") is graphs.gaussian_kernel
    assert reg.get("response", "heat") is spectral.heat
    for entry in reg.entries():
        assert entry.obj is not None, entry


def test_listing_and_lookup_import_no_torch():
    code = (
        "import sys, graphopt\n"
        "from graphopt.cli import main\n"
        "for kind in graphopt.registry.kinds: graphopt.registry.names(kind)\n"
        "graphopt.registry.entry('method', 'spectral')\n"
        "assert main(['plugins']) == 0 and main(['plugins', '--json']) == 0\n"
        "print('HEAVY', sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[-1] == "HEAVY []"


def test_help_imports_no_torch():
    code = (
        "import sys\nfrom graphopt.cli import build_parser\nbuild_parser().format_help()\n"
        "print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


# -- graphopt plugins ----------------------------------------------------------------------------


@pytest.fixture
def cli_registry(site, monkeypatch):
    """The CLI sees a fresh registry (built-ins plus what the test installs in ``site``)."""

    def make() -> Registry:
        reg = Registry()
        monkeypatch.setattr(graphopt, "registry", reg)
        return reg

    return make


def test_plugins_json_names_failures_with_distribution(site, cli_registry, capsys):
    install_plugin(site, "graphopt-broken", "broken_json", "raise RuntimeError('boom')\n")
    install_plugin(site, "graphopt-toy", "toy_json", THIRD_PARTY)
    cli_registry()
    with pytest.warns(PluginWarning):
        assert main(["plugins", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["failures"] == [
        {
            "plugin": "broken_json",
            "distribution": "graphopt-broken",
            "version": "1.2.3",
            "error": "RuntimeError: boom",
        }
    ]
    toy = next(e for e in data["entries"] if e["name"] == "toy")
    assert toy == {
        "kind": "method",
        "name": "toy",
        "plugin": "toy_json",
        "distribution": "graphopt-toy",
        "version": "1.2.3",
        "object": "toy_json:ToyMethod",
    }
    lora = next(e for e in data["entries"] if e["name"] == "lora")
    assert lora["object"] == "graphopt.plugins.lora:Lora"


def test_plugins_table_lists_failed_and_disabled_plugins(site, cli_registry, capsys, monkeypatch):
    install_plugin(site, "graphopt-broken", "broken_table", "raise RuntimeError('boom')\n")
    monkeypatch.setenv("GRAPHOPT_DISABLE_PLUGINS", "pca_ggm")
    cli_registry()
    with pytest.warns(PluginWarning):
        assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert (
        "failed plugin 'broken_table' (distribution graphopt-broken 1.2.3): RuntimeError: boom"
        in out
    )
    assert "disabled plugin 'pca_ggm' (distribution graphopt" in out
    assert "pca_ggm" not in out.split("failed plugin")[0].split("\n", 1)[1]


def test_plugins_check_imports_everything_and_reports_broken_references(site, cli_registry, capsys):
    install_plugin(site, "graphopt-toy", "toy_check", LAZY)
    (site / "toy_heavy_impl.py").write_text("def build(features):\n    return 'built'\n")
    cli_registry()
    assert main(["plugins", "--check"]) == 1
    out = capsys.readouterr().out
    assert "cannot import: graph 'toy_missing' of graphopt plugin 'toy_check'" in out
    assert out.count("cannot import") == 1
    assert main(["plugins", "--check", "--kind", "method"]) == 0
    assert "all 4 registered objects import" in capsys.readouterr().out


def test_plugins_unknown_kind_is_a_clean_error(cli_registry, capsys):
    cli_registry()
    assert main(["plugins", "--kind", "methods"]) == 2
    assert "graphopt: error: --kind: unknown kind 'methods'" in capsys.readouterr().err
