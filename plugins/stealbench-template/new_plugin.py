#!/usr/bin/env python
"""Create a new stealbench plugin from this template.

    python new_plugin.py NAME [--dest DIR]

writes DIR/stealbench-NAME (default DIR: the current directory): distribution ``stealbench-NAME``, module
``stealbench_NAME`` (hyphens become underscores), entry point and registry key ``NAME``, class ``<Name>Defense``,
with the template's defense, tests and a README. Then::

    cd stealbench-NAME && pip install . && stealbench plugins && pytest

Standard library only; it never touches stealbench itself.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent
COPIED = ("pyproject.toml", "src", "tests")
SKIPPED = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist", ".pytest_cache", "*.pyc", "test_new_plugin.py")
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")

README = """# stealbench-{name}

A [stealbench](https://github.com/) plugin: registers the defense `{name}` ({cls}).

    pip install .                  # then:
    stealbench plugins             # lists `{name}` (distribution stealbench-{name})
    stealbench fit --defense {name} --attack jbda
    pytest                         # unit tests + the stealbench conformance kit

Edit `src/{module}/__init__.py`; see stealbench's CONTRIBUTING.md for the hooks and the Defense/Attack interfaces.
"""


def camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("-"))


def rename(text: str, name: str) -> str:
    module = name.replace("-", "_")
    for old, new in (("stealbench-template", f"stealbench-{name}"), ("stealbench_template", f"stealbench_{module}"),
                     ("TemplateDefense", f"{camel(name)}Defense"), ("template", name)):
        text = text.replace(old, new)
    return text


def create(name: str, dest: Path) -> Path:
    if not NAME_PATTERN.match(name):
        raise SystemExit(f"error: plugin name {name!r} must be lowercase letters and digits, words joined by '-' "
                         "(e.g. 'mydefense' or 'my-defense'); it becomes the registry key and entry point")
    if name == "template":
        raise SystemExit("error: choose a name of your own, not 'template'")
    target = dest / f"stealbench-{name}"
    if target.exists():
        raise SystemExit(f"error: {target} already exists")
    target.mkdir(parents=True)
    for item in COPIED:
        source = TEMPLATE / item
        if source.is_dir():
            shutil.copytree(source, target / item, ignore=SKIPPED)
        else:
            shutil.copy2(source, target / item)
    module = name.replace("-", "_")
    (target / "src" / "stealbench_template").rename(target / "src" / f"stealbench_{module}")
    (target / "tests" / "test_template.py").rename(target / "tests" / f"test_{module}.py")
    for path in target.rglob("*"):
        if path.is_file() and path.suffix in (".py", ".toml"):
            path.write_text(rename(path.read_text(), name))
    (target / "README.md").write_text(README.format(name=name, module=f"stealbench_{module}",
                                                    cls=f"{camel(name)}Defense"))
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", help="plugin name: registry key and entry point, e.g. 'mydefense'")
    parser.add_argument("--dest", type=Path, default=Path.cwd(), help="parent folder (default: current directory)")
    args = parser.parse_args(argv)
    target = create(args.name, args.dest)
    print(f"created {target}\nnext: cd {target} && pip install . && stealbench plugins && pytest")
    return 0


if __name__ == "__main__":
    sys.exit(main())
