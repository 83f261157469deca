"""Third-party plugin loading: env switches, tracing, and clear errors naming the distribution.

Each test installs throwaway distributions (a module + a .dist-info with `stealbench` entry points) on sys.path
with the `stealbench_distribution` fixture of the conformance kit.
"""

from __future__ import annotations

import pytest

from stealbench.cli import main
from stealbench.errors import DuplicateKeyError, PluginError, StealbenchError
from stealbench.plugins import get_catalog
from stealbench.testing import stealbench_distribution  # noqa: F401  (fixture)

GOOD = '''
    import stealbench
    from stealbench.defenses import Defense

    class Good(Defense):
        """A defense from a third-party distribution."""
        preserves_argmax = True

        def forward(self, x, probs):
            return probs

    @stealbench.hookimpl
    def register_defenses(register):
        register("good", Good)
'''


@pytest.fixture(autouse=True)
def _no_plugin_switches(monkeypatch):
    """The developer's own switches must not leak into these tests."""
    for var in ("STEALBENCH_PLUGINS", "STEALBENCH_BLOCK_PLUGINS", "STEALBENCH_TRACE_HOOKS"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def good(stealbench_distribution):
    stealbench_distribution("stealbench-good", {"sbt_good": GOOD}, entry_points={"good": "sbt_good"},
                            version="1.2.3")


def keys(kind="defenses"):
    return set(get_catalog().registry(kind))


def test_an_installed_distribution_is_loaded_and_named(good):
    catalog = get_catalog()
    assert "good" in catalog.defenses
    assert catalog.defenses.source("good") == "good (stealbench-good 1.2.3)"
    (info,) = [p for p in catalog.plugins if p.name == "good"]
    assert (info.distribution, info.version, info.registered) == ("stealbench-good", "1.2.3", {"defenses": ["good"]})
    assert catalog.versions()["good"] == "1.2.3"


@pytest.mark.parametrize("value, loaded", [
    ("", False), ("good", True), ("stealbench-good", True), ("Stealbench_Good", True), ("other", False),
])
def test_stealbench_plugins_loads_only_named_plugins(good, monkeypatch, value, loaded):
    monkeypatch.setenv("STEALBENCH_PLUGINS", value)
    assert ("good" in keys()) is loaded
    assert {"none", "deceptive"} <= keys()  # built-ins always load


def test_an_unknown_name_in_stealbench_plugins_is_reported(good, monkeypatch, capsys):
    monkeypatch.setenv("STEALBENCH_PLUGINS", "goood")
    assert "good" not in keys()
    err = capsys.readouterr().err
    assert "STEALBENCH_PLUGINS names goood" in err and "good" in err


@pytest.mark.parametrize("blocked", ["good", "stealbench-good"])
def test_block_plugins(good, monkeypatch, blocked):
    monkeypatch.setenv("STEALBENCH_BLOCK_PLUGINS", f"nothing, {blocked}")
    assert "good" not in keys()


def test_a_builtin_can_be_blocked(monkeypatch, stealbench_distribution):
    stealbench_distribution("stealbench-nothing", {})  # clears the cached catalogue
    monkeypatch.setenv("STEALBENCH_BLOCK_PLUGINS", "stealbench.defenses.deceptive")
    assert "deceptive" not in keys() and "none" in keys()


def test_trace_hooks(good, monkeypatch, capsys):
    monkeypatch.setenv("STEALBENCH_TRACE_HOOKS", "1")
    get_catalog()
    err = capsys.readouterr().err
    assert "loading plugin 'good' = 'sbt_good' from distribution 'stealbench-good'" in err
    assert "calling good.register_defenses" in err
    assert "registered defense 'good'" in err
    assert "calling stealbench.defenses.deceptive.register_defenses" in err


def test_no_trace_by_default(good, capsys):
    get_catalog()
    assert "[stealbench trace]" not in capsys.readouterr().err


def test_a_plugin_that_fails_to_import_names_its_distribution(stealbench_distribution, monkeypatch, capsys):
    stealbench_distribution("stealbench-crash", {"sbt_crash": "import not_a_module_anywhere\n"},
                            entry_points={"crash": "sbt_crash"})
    with pytest.raises(PluginError) as err:
        get_catalog()
    message = str(err.value)
    assert "'crash'" in message and "'stealbench-crash'" in message and "ModuleNotFoundError" in message
    assert "STEALBENCH_BLOCK_PLUGINS=crash" in message and "pip uninstall stealbench-crash" in message
    # at startup, the CLI prints it as one line and exits non-zero
    assert main(["list", "defenses"]) == 2
    assert "stealbench-crash" in capsys.readouterr().err
    monkeypatch.setenv("STEALBENCH_BLOCK_PLUGINS", "crash")
    get_catalog.cache_clear()
    assert "none" in keys()


def test_a_taken_key_names_both_sources(stealbench_distribution):
    stealbench_distribution("stealbench-taken", {"sbt_taken": GOOD.replace('"good"', '"deceptive"')},
                            entry_points={"taken": "sbt_taken"}, version="0.3")
    with pytest.raises(DuplicateKeyError) as err:
        get_catalog()
    message = str(err.value)
    assert "'deceptive' is registered twice" in message
    assert "stealbench.defenses.deceptive" in message and "taken (stealbench-taken 0.3)" in message


def test_two_plugins_taking_one_key(stealbench_distribution):
    stealbench_distribution("stealbench-good", {"sbt_good": GOOD}, entry_points={"good": "sbt_good"})
    stealbench_distribution("stealbench-again", {"sbt_again": GOOD}, entry_points={"again": "sbt_again"})
    with pytest.raises(DuplicateKeyError, match=r"stealbench-good.*stealbench-again|stealbench-again.*stealbench-good"):
        get_catalog()


def test_a_misspelled_hook_is_reported(stealbench_distribution):
    source = GOOD.replace("def register_defenses", "def register_defences")
    stealbench_distribution("stealbench-typo", {"sbt_typo": source}, entry_points={"typo": "sbt_typo"})
    with pytest.raises(PluginError) as err:
        get_catalog()
    message = str(err.value)
    assert "'typo'" in message and "'stealbench-typo'" in message and "register_defences" in message
    assert "register_defenses, register_attacks" in message  # the valid names


def test_a_hook_with_a_wrong_argument_is_reported(stealbench_distribution):
    source = GOOD.replace("def register_defenses(register)", "def register_defenses(reg)")
    stealbench_distribution("stealbench-args", {"sbt_args": source}, entry_points={"args": "sbt_args"})
    with pytest.raises(PluginError, match="stealbench-args.*reg"):
        get_catalog()


def test_a_hook_that_raises_names_the_distribution(stealbench_distribution):
    source = GOOD.replace('register("good", Good)', 'raise RuntimeError("boom")')
    stealbench_distribution("stealbench-boom", {"sbt_boom": source}, entry_points={"boom": "sbt_boom"})
    with pytest.raises(PluginError, match=r"boom \(stealbench-boom 0.1.0\) failed in register_defenses.*boom"):
        get_catalog()


def test_a_bad_key_names_the_distribution(stealbench_distribution):
    source = GOOD.replace('"good"', '"Good Defense"')
    stealbench_distribution("stealbench-badkey", {"sbt_badkey": source}, entry_points={"badkey": "sbt_badkey"})
    with pytest.raises(StealbenchError, match=r"stealbench-badkey.*'Good Defense'"):
        get_catalog()


def test_a_plugin_with_no_hooks_is_warned_about(stealbench_distribution, capsys):
    stealbench_distribution("stealbench-empty", {"sbt_empty": "X = 1\n"}, entry_points={"empty": "sbt_empty"})
    get_catalog()
    assert "'stealbench-empty' implements no stealbench hook" in capsys.readouterr().err


def test_plugins_command_shows_versions_and_registrations(good, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "stealbench-good" in out and "1.2.3" in out and "defenses: good" in out
    assert "(built-in)" in out and "defenses: deceptive" in out
    assert main(["plugins", "--requirements"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("stealbench==") and "stealbench-good==1.2.3" in lines
