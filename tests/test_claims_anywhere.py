"""Claims beyond `reproduce`: a plugin ships its own reproduction, a grid file carries claims, the leaderboard
checks them, and the built-in reproductions ship inside the installed package."""

from __future__ import annotations

import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest

from stealbench.cli import main
from stealbench.plugins import get_catalog
from stealbench.testing import ConformanceError, check_reproduction, stealbench_distribution  # noqa: F401

from test_leaderboard import write_run

ROOT = Path(__file__).resolve().parents[1]

GRID = """\
name: toy2024
paper: {title: "Toy paper", reference: "arXiv:0000.00000"}
data: [digits]
defenses: [none, {name: deceptive, label: rs, beta: 1.0, gamma: 0.2}]
attacks: [{name: jbda, rounds: 2, epochs_per_round: 1}]
budgets: [200]
fixed: {date: 2026-12-03, commit: 58109f7}
claims:
  - id: drop
    text: The defense lowers the stolen model's accuracy by 0.1
    paper: "0.1"
    parts:
      - {primary: {attack: jbda, defense: deceptive, SELECT}, metric: acc_drop, at_least: 0.1}
"""

PLUGIN = '''
    from pathlib import Path
    import stealbench

    @stealbench.hookimpl
    def register_reproductions(register):
        register("toy2024", Path(__file__).parent / "toy2024.yaml", "a toy paper")
'''


@pytest.fixture
def toy_plugin(stealbench_distribution):
    def install(select: str = "gamma: 0.2", quick: bool = True) -> Path:
        root = stealbench_distribution("stealbench-toy", {"sbt_toy": PLUGIN}, entry_points={"toy": "sbt_toy"})
        (root / "toy2024.yaml").write_text(GRID.replace("SELECT", select))
        if quick:
            (root / "toy2024_quick.yaml").write_text(GRID.replace("SELECT", select).replace("[200]", "[100]"))
        return root
    return install


def test_builtin_reproductions_ship_as_package_data():
    """An installed (not editable) stealbench must carry its reproduction files: they sat outside the package."""
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    entries = get_catalog().reproductions
    builtin = [key for key in entries if entries.source(key) == "stealbench.reproductions"]
    assert "lee2018" in builtin
    for key in builtin:
        path = Path(entries.get(key)).resolve()
        for file in [path, path.with_name(f"{path.stem}_quick{path.suffix}")]:
            if not file.exists():
                continue
            rel = file.relative_to(ROOT / "stealbench")  # inside the package, not in a source-tree folder
            package, name = ".".join(("stealbench", *rel.parent.parts)), rel.name
            assert any(fnmatch(name, glob) for glob in package_data.get(package, [])), (key, file)


def test_every_builtin_reproduction_passes_the_static_check():
    for key in get_catalog().reproductions:
        check_reproduction(key)


def test_a_plugin_ships_a_reproduction_that_reproduce_lists_and_runs(toy_plugin, capsys):
    toy_plugin()
    entry = get_catalog().reproductions.entry("toy2024")
    assert entry.source == "toy (stealbench-toy 0.1.0)"
    check_reproduction("toy2024")
    assert main(["list", "reproductions"]) == 0
    assert "toy2024" in capsys.readouterr().out
    assert main(["reproduce", "toy2024", "--quick", "--dry_run", "--output_dir", "x"]) == 0
    out = capsys.readouterr().out
    assert "--budget 100" in out and "# 2 runs; output x" in out


def test_the_static_check_names_a_misspelt_selection_field(toy_plugin):
    toy_plugin(select="gama: 0.2")
    with pytest.raises(ConformanceError) as err:
        check_reproduction("toy2024")
    assert err.value.rules == ["reproduction-select"] * 2  # the file and its quick version
    message = str(err.value)
    assert "toy2024.yaml: claim 'drop' part 0 selects on ['gama'], which runs records lack" in message
    assert "toy2024_quick.yaml" in message and "gamma" in message


def test_a_reproduction_without_its_quick_file_says_so(toy_plugin, capsys):
    toy_plugin(quick=False)
    assert main(["reproduce", "toy2024", "--quick"]) == 2
    assert "reproduction 'toy2024' (plugin toy (stealbench-toy 0.1.0)) has no quick version" in capsys.readouterr().err


def test_a_grid_file_with_claims_runs_as_a_grid_and_points_at_the_check(tmp_path, capsys):
    path = tmp_path / "toy.yaml"
    path.write_text(GRID.replace("SELECT", "gamma: 0.2"))
    assert main(["grid", str(path), "--dry_run", "--output_dir", str(tmp_path / "runs")]) == 0
    assert "# 2 of 2 runs" in capsys.readouterr().out


def _toy_runs(root: Path) -> None:
    curves = {("none", 0): [(100, 0.6), (200, 0.8)], ("none", 1): [(100, 0.5), (200, 0.7)],
              ("none", 2): [(100, 0.55), (200, 0.75)],
              ("deceptive", 0): [(100, 0.4), (200, 0.6)], ("deceptive", 1): [(100, 0.31), (200, 0.49)],
              ("deceptive", 2): [(100, 0.34), (200, 0.56)]}
    for (defense, seed), curve in curves.items():
        write_run(root, defense=defense, seed=seed, budget=200, curve=curve,
                  defense_args={"beta": 1.0, "gamma": 0.2} if defense != "none" else None)


def test_the_leaderboard_checks_the_claims_of_a_grid_file(tmp_path, capsys):
    _toy_runs(tmp_path / "runs")
    path = tmp_path / "toy.yaml"
    path.write_text(GRID.replace("SELECT", "gamma: 0.2"))
    out = tmp_path / "lb"
    assert main(["leaderboard", str(tmp_path / "runs"), "--output_dir", str(out), "--no_plots",
                 "--claims", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "claims: Toy paper" in printed and "reproduced" in printed
    claims_md = (out / "claims.md").read_text()
    # paired by seed: drops 0.2, 0.19, 0.21 at 100 and 0.2, 0.21, 0.19 at 200; mean 0.2, sd 0.01: the 95% t
    # intervals lie above 0.1 at both budgets (Holm over the two), so the primary setting reproduces
    assert "| 1 | The defense lowers the stolen model's accuracy by 0.1 | 0.1 |" in claims_md
    assert "✅ reproduced" in claims_md and "0.200 ± 0.010" in claims_md and "reproduced 2/2" in claims_md
    assert "Claims fixed on 2026-12-03 at commit 58109f7" in claims_md

    # a selection nothing matches is "not checked", and the report says which field found nothing
    path.write_text(GRID.replace("SELECT", "gamma: 0.5"))
    assert main(["leaderboard", str(tmp_path / "runs"), "--output_dir", str(out), "--no_plots",
                 "--claims", str(path)]) == 0
    claims_md = (out / "claims.md").read_text()
    assert "⚪ not checked" in claims_md and "no runs record with gamma 0.5; values measured: 0.2" in claims_md


def test_leaderboard_claims_errors_are_one_line(tmp_path, capsys):
    _toy_runs(tmp_path / "runs")
    args = ["leaderboard", str(tmp_path / "runs"), "--output_dir", str(tmp_path / "lb"), "--no_plots", "--claims"]
    assert main([*args, "lee2081"]) == 2
    assert "no reproduction 'lee2081'. Did you mean 'lee2018'?" in capsys.readouterr().err
    plain = tmp_path / "plain.yaml"
    plain.write_text("data: [digits]\ndefenses: [none]\nattacks: [random]\nbudgets: [100]\n")
    assert main([*args, str(plain)]) == 2
    assert "has no `claims:` section to check" in capsys.readouterr().err
    assert not (tmp_path / "lb").exists()  # refused before anything was written
