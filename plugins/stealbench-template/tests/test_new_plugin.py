"""new_plugin.py generates a plugin that installs and is listed (not copied into generated plugins)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_generated_plugin_installs_is_listed_and_conforms(tmp_path):
    subprocess.run([sys.executable, str(HERE / "new_plugin.py"), "my-def", "--dest", str(tmp_path)], check=True)
    plugin = tmp_path / "stealbench-my-def"
    assert (plugin / "src" / "stealbench_my_def" / "__init__.py").is_file()
    text = (plugin / "src" / "stealbench_my_def" / "__init__.py").read_text()
    assert "MyDefDefense" in text and 'register("my-def", MyDefDefense)' in text
    assert not (plugin / "tests" / "test_new_plugin.py").exists()

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(plugin)], check=True)
    env = {**os.environ, "PYTHONPATH": str(target), "COLUMNS": "200"}
    listed = subprocess.run([str(BIN / "stealbench"), "plugins"], env=env, capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    assert "stealbench-my-def" in listed.stdout and "defenses: my-def" in listed.stdout
    requirements = subprocess.run([str(BIN / "stealbench"), "plugins", "--requirements"], env=env,
                                  capture_output=True, text=True, check=True).stdout
    assert "stealbench-my-def==0.1.0" in requirements.splitlines()
    # the generated plugin's own tests pass against the installed copy
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(plugin / "tests")],
                           env=env, cwd=plugin, capture_output=True, text=True)
    assert tests.returncode == 0, tests.stdout + tests.stderr


@pytest.mark.parametrize("bad", ["Bad", "my_def", "-x", "template"])
def test_bad_names_are_refused(tmp_path, bad):
    result = subprocess.run([sys.executable, str(HERE / "new_plugin.py"), bad, "--dest", str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode != 0 and "error" in result.stderr
