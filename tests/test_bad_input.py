"""Bad input to every command: exit code 2, a short message naming the problem, no traceback, nothing written.

Parse-time cases run in-process (`stealbench.cli.main`), so each costs milliseconds, not a training run: `fit`
must reject them before it loads data or trains. End-to-end runtime failures live in their own test file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from stealbench.cli import main

#: a message longer than this many lines drowns the problem (jsonargparse's usage dump is ~60)
MAX_LINES = 5


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


def call(argv: list[str], tmp_path: Path, capsys) -> tuple[int, str, str]:
    """Run the CLI in tmp_path; return (exit code, stdout, stderr). Only --help may leave by SystemExit(0): an
    error must come back as a return value, or an in-process grid would stop at its first bad run."""
    repo_before = set(os.listdir(REPO))
    results_before = set(tmp_path.rglob("results.json"))
    try:
        code = main(argv)
    except SystemExit as exc:
        out, err = capsys.readouterr()
        assert exc.code in (0, None), f"sys.exit({exc.code!r}) instead of a return value: {err}"
        code = 0
    else:
        out, err = capsys.readouterr()
    assert set(os.listdir(REPO)) == repo_before, "wrote into the repository (outside the output folder)"
    if code != 0:
        assert set(tmp_path.rglob("results.json")) == results_before, "an error run left a results.json"
    return code, out, err


def assert_short_error(code: int, out: str, err: str, *expected: str) -> None:
    assert code == 2, (code, out, err)
    assert "Traceback" not in out + err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert 1 <= len(lines) <= MAX_LINES, err
    assert lines[0].startswith("error:"), err
    for text in expected:
        assert text.lower() in err.lower(), (text, err)


# ----------------------------------------------------------------------------------------------------- fit

FIT_CASES = [
    # (id, arguments, texts the message must hold)
    ("victim-epochs-negative", ["--victim.epochs", "-1"], ["--victim.epochs", ">= 1", "-1"]),
    ("victim-epochs-zero", ["--victim.epochs", "0"], ["--victim.epochs", ">= 1", "got 0"]),
    ("victim-epochs-not-a-number", ["--victim.epochs", "x"], ["--victim.epochs", "integer", "'x'"]),
    ("victim-epochs-float", ["--victim.epochs", "2.5"], ["--victim.epochs", "integer", "2.5"]),
    ("victim-batch-size-zero", ["--victim.batch_size", "0"], ["--victim.batch_size", ">= 1"]),
    ("victim-lr-negative", ["--victim.lr", "-0.1"], ["--victim.lr", "> 0", "-0.1"]),
    ("victim-lr-zero", ["--victim.lr", "0"], ["--victim.lr", "> 0"]),
    ("victim-lr-nan", ["--victim.lr", "nan"], ["--victim.lr", "nan"]),
    ("victim-lr-inf", ["--victim.lr", "inf"], ["--victim.lr", "inf"]),
    ("victim-weight-decay-negative", ["--victim.weight_decay", "-1"], ["--victim.weight_decay", ">= 0"]),
    ("victim-seed-negative", ["--victim.seed", "-1"], ["--victim.seed", "2**32"]),
    ("victim-seed-not-a-number", ["--victim.seed", "abc"], ["--victim.seed", "integer", "'abc'"]),
    ("victim-checkpoint-missing", ["--victim.checkpoint", "no/such/victim.pt"], ["--victim.checkpoint",
                                                                                 "no/such/victim.pt"]),
    ("victim-batch-size-huge", ["--victim.batch_size", "1000000"], ["--victim.batch_size", "<= 16384", "1000000"]),
    ("surrogate-batch-size-huge", ["--surrogate.batch_size", "99999"], ["--surrogate.batch_size", "<= 16384"]),
    ("data-image-size-huge", ["--data", "imagefolder", "--data.root", ".", "--data.image_size", "100000"],
     ["--data.image_size", "1024", "100000"]),
    ("surrogate-batch-size-zero", ["--surrogate.batch_size", "0"], ["--surrogate.batch_size", ">= 1"]),
    ("surrogate-lr-negative", ["--surrogate.lr", "-1"], ["--surrogate.lr", "> 0"]),
    ("surrogate-weight-decay-negative", ["--surrogate.weight_decay", "-0.5"], ["--surrogate.weight_decay"]),
    ("seed-negative", ["--seed", "-1"], ["--seed", "0 <= seed < 2**32", "-1"]),
    ("seed-2-to-the-32", ["--seed", str(2**32)], ["--seed", "2**32", str(2**32)]),
    ("seed-beyond-64-bits", ["--seed", str(2**64 + 1)], ["--seed", "2**32"]),
    ("seed-float", ["--seed", "1.5"], ["--seed", "integer", "1.5"]),
    ("budget-zero", ["--budget", "0"], ["--budget", ">= 1", "got 0"]),
    ("budget-negative", ["--budget", "-5"], ["--budget", ">= 1", "-5"]),
    ("budget-not-a-number", ["--budget", "abc"], ["--budget", "integer", "'abc'", "stealbench fit --help"]),
    ("budget-without-value", ["--budget"], ["--budget"]),
    ("data-root-without-value", ["--data", "mnist", "--data.root"], ["--data.root", "value"]),
    ("label-mode-unknown", ["--label_mode", "sharp"], ["--label_mode", "sharp", "soft"]),
    ("label-options-samples-zero", ["--label_mode", "smooth", "--label_options.samples", "0"],
     ["--label_options.samples", ">= 1"]),
    ("label-options-samples-text", ["--label_mode", "smooth", "--label_options.samples", "many"],
     ["--label_options.samples", "integer", "'many'"]),
    ("label-options-average-unknown", ["--label_mode", "smooth", "--label_options.average", "median"],
     ["--label_options.average", "median", "log"]),
    ("wandb-mode-unknown", ["--wandb.mode", "sometimes"], ["--wandb.mode", "sometimes", "offline"]),
    ("progress-bar-not-a-bool", ["--progress_bar", "maybe"], ["--progress_bar", "'maybe'", "true"]),
    ("unknown-option", ["--budgett", "10"], ["--budgett", "--budget"]),
    ("trainer-max-epochs-is-per-phase", ["--trainer.max_epochs", "5"], ["--trainer.max_epochs", "--victim.epochs"]),
    ("defense-unknown", ["--defense", "decepitve"], ["--defense", "deceptive"]),
    ("defense-option-not-a-number", ["--defense", "deceptive", "--defense.beta", "abc"],
     ["--defense.beta", "'abc'", "number"]),
    ("defense-option-out-of-range", ["--defense", "deceptive", "--defense.beta", "-1"], ["defense.beta", "> 0"]),
    ("defense-option-unknown", ["--defense", "deceptive", "--defense.bogus", "1"], ["--defense.bogus", "deceptive"]),
    ("defense-option-of-default-defense", ["--defense.beta", "0.5"], ["--defense.beta", "none"]),
    # an option given before a later choice of its component belongs to the chosen one, or fails there
    ("attack-option-before-another-attack", ["--attack.rounds", "3", "--attack", "random"],
     ["--attack.rounds", "not an option of random"]),
    ("defense-option-before-another-defense", ["--defense", "deceptive", "--defense.beta", "0.3", "--defense", "topk"],
     ["--defense.beta", "not an option of topk"]),
    ("attack-option-before-a-config-choosing-the-attack", ["--attack.rounds", "3", "--config", "{attack: random}"],
     ["--attack.rounds", "before --config", "after --config"]),
    ("attack-rounds-not-a-number", ["--attack.rounds", "abc"], ["--attack.rounds", "integer", "'abc'"]),
    ("attack-rounds-zero", ["--attack.rounds", "0"], ["attack.rounds", "1"]),
    ("data-pool-fraction-out-of-range", ["--data.pool_fraction", "1.5"], ["data.pool_fraction", "(0, 1)"]),
    ("data-pool-fraction-text", ["--data.pool_fraction", "half"], ["--data.pool_fraction", "number", "'half'"]),
    ("data-victim-train-size-zero", ["--data.victim_train_size", "0"], ["data.victim_train_size"]),
    ("data-split-seed-negative", ["--data.split_seed", "-3"], ["--data.split_seed", "-3"]),
    ("victim-arch-unknown", ["--victim.arch", "resnet18x"], ["--victim.arch", "resnet18x"]),
    ("surrogate-arch-unknown", ["--surrogate.arch", "cnnn"], ["--surrogate.arch", "cnn"]),
    ("trainer-accelerator-unknown", ["--trainer.accelerator", "foo"], ["--trainer", "foo"]),
    ("trainer-devices-zero", ["--trainer.devices", "0"], ["--trainer", "devices"]),
    ("trainer-devices-text", ["--trainer.devices", "abc"], ["--trainer", "devices"]),
    ("name-escapes-output-dir", ["--name", "../escaped"], ["--name", "../escaped"]),
    ("name-with-separator", ["--name", "a/b"], ["--name", "a/b"]),
    ("config-missing", ["--config", "no_such_config.yaml"], ["--config", "no_such_config.yaml"]),
    ("config-holds-a-list", ["--config", "[1, 2]"], ["--config", "mapping"]),
    ("config-with-bad-budget", ["--config", "{budget: 0}"], ["--budget", ">= 1"]),
    ("config-with-bad-victim-epochs", ["--config", "{victim: {epochs: -1}}"], ["--victim.epochs", ">= 1"]),
    ("config-unknown-key", ["--config", "{budgte: 10}"], ["budgte", "did you mean budget"]),
]


@pytest.mark.parametrize("args,expected", [pytest.param(a, e, id=i) for i, a, e in FIT_CASES])
def test_fit_rejects_bad_input_at_parse_time(tmp_path, capsys, monkeypatch, args, expected):
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    code, out, err = call(["fit", "--output_dir", str(tmp_path / "runs"), *args], tmp_path, capsys)
    assert_short_error(code, out, err, *expected)
    assert snapshot(tmp_path) == before, "a parse error wrote files"


PRINT_CONFIG_CASES = ["victim-epochs-zero", "victim-batch-size-zero", "budget-zero", "seed-negative",
                      "defense-option-out-of-range", "victim-arch-unknown", "trainer-devices-zero",
                      "name-escapes-output-dir", "config-with-bad-victim-epochs", "attack-option-before-another-attack"]


@pytest.mark.parametrize("args,expected", [pytest.param(a, e, id=i) for i, a, e in FIT_CASES
                                           if i in PRINT_CONFIG_CASES])
def test_print_config_validates_like_fit(tmp_path, capsys, monkeypatch, args, expected):
    """--print_config used to print whatever parsed; it must refuse what `fit` refuses, in the same words."""
    monkeypatch.chdir(tmp_path)
    code, out, err = call(["fit", "--output_dir", str(tmp_path / "runs"), *args, "--print_config"], tmp_path, capsys)
    assert_short_error(code, out, err, *expected)
    assert out == "", "printed a configuration that fit would refuse"


@pytest.mark.parametrize("option,below", [("--output_dir", ""), ("--output_dir", "sub/dir"),
                                          ("--victim.cache_dir", "")],
                         ids=["output-dir-is-a-file", "output-dir-below-a-file", "cache-dir-is-a-file"])
def test_fit_folder_options_where_a_file_stands(tmp_path, capsys, monkeypatch, option, below):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "taken").write_text("not a folder")
    args = ["--output_dir", str(tmp_path / "runs")] if option != "--output_dir" else []
    code, out, err = call(["fit", *args, option, str(tmp_path / "taken" / below)], tmp_path, capsys)
    assert_short_error(code, out, err, option, "not a folder")


def test_fit_help_names_types_not_lambdas(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = call(["fit", "--help"], tmp_path, capsys)
    assert code == 0 and "lambda" not in out and "<function" not in out
    assert "--label_mode" in out and "2**32" in out


@pytest.mark.parametrize("option,key,shown", [
    ("--defense.help", "deceptive", "--defense.beta"),
    ("--attack.help", "jbda", "--attack.rounds"),
    ("--data.help", "digits", "--data.pool_fraction"),
    ("--pool_data.help", "digits", "--pool_data.pool_fraction"),
], ids=["defense", "attack", "data", "pool_data"])
def test_component_help_takes_registry_keys(tmp_path, capsys, monkeypatch, option, key, shown):
    monkeypatch.chdir(tmp_path)
    code, out, err = call(["fit", f"{option}={key}"] if option == "--pool_data.help" else ["fit", option, key],
                          tmp_path, capsys)
    assert code == 0, err
    assert shown in out


def test_component_help_with_an_unknown_key(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = call(["fit", "--defense.help", "decepitve"], tmp_path, capsys)
    assert_short_error(code, out, err, "deceptive")


# ----------------------------------------------------------------------------------------------------- grid

GRID = {"data": ["digits"], "defenses": ["none"], "attacks": [{"name": "random", "epochs": 1}],
        "budgets": [100], "seeds": [0, 1]}


def write_grid(tmp_path: Path, spec: dict | None = None, text: str | None = None, name: str = "grid") -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text if text is not None else yaml.safe_dump(spec or GRID))
    return str(path)


GRID_CASES = [
    ("missing-file", ["no_such_grid.yaml"], ["no_such_grid.yaml"]),
    ("not-yaml", ["{text}"], ["not valid YAML"]),
    ("file-is-a-folder", ["{folder}"], ["cannot be read", "directory"]),
    ("limit-negative", ["{grid}", "--limit", "-1"], ["--limit", ">= 1", "-1"]),
    ("limit-zero", ["{grid}", "--limit", "0"], ["--limit", ">= 1"]),
    ("limit-not-a-number", ["{grid}", "--limit", "abc"], ["--limit", "integer", "'abc'"]),
    ("unknown-option", ["{grid}", "--bogus"], ["--bogus", "stealbench grid --help"]),
    ("no-file", [], ["file"]),
    ("unknown-run", ["{grid}", "--grid_run", "nope"], ["nope"]),
    ("bad-common-option", ["{bad_common}"], ["--victim.epochs", ">= 1"]),
    ("bad-seed", ["{bad_seed}"], ["seed", "2**32"]),
    ("sweep-file-below-a-file", ["{grid}", "--sweep", "--sweep_file", "{grid}/sweep.yaml"], ["--sweep_file",
                                                                                           "is a file"]),
    ("sweep-file-is-a-folder", ["{grid}", "--sweep", "--sweep_file", "{folder}"], ["--sweep_file", "folder"]),
]


@pytest.mark.parametrize("args,expected", [pytest.param(a, e, id=i) for i, a, e in GRID_CASES])
def test_grid_rejects_bad_input(tmp_path, capsys, monkeypatch, args, expected):
    monkeypatch.chdir(tmp_path)
    files = {"grid": write_grid(tmp_path), "text": write_grid(tmp_path, text="a: [b\n", name="text"),
             "bad_common": write_grid(tmp_path, {**GRID, "common": {"victim": {"epochs": -1}}}, name="common"),
             "bad_seed": write_grid(tmp_path, {**GRID, "seeds": [-1]}, name="seed")}
    (tmp_path / "folder").mkdir()
    files["folder"] = str(tmp_path / "folder")
    argv = ["grid", *(a.format(**files) for a in args), "--output_dir", str(tmp_path / "runs")]
    if not args:
        argv = ["grid"]
    code, out, err = call(argv, tmp_path, capsys)
    assert_short_error(code, out, err, *expected)
    assert not (tmp_path / "runs").exists()


def test_grid_output_dir_that_is_a_file(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "taken").write_text("not a folder")
    code, out, err = call(["grid", write_grid(tmp_path), "--output_dir", str(tmp_path / "taken")], tmp_path, capsys)
    assert_short_error(code, out, err, "--output_dir", "not a folder")


@pytest.mark.parametrize("spelling", ["--output_dir", "--output-dir"])
def test_grid_output_dir_has_one_spelling_and_a_dashed_alias(tmp_path, capsys, monkeypatch, spelling):
    monkeypatch.chdir(tmp_path)
    code, out, err = call(["grid", write_grid(tmp_path), "--dry_run", spelling, str(tmp_path / "elsewhere")],
                          tmp_path, capsys)
    assert code == 0, err
    assert f"output {tmp_path / 'elsewhere'}" in out


def test_grid_help_shows_underscore_spellings_only(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = call(["grid", "--help"], tmp_path, capsys)
    assert code == 0
    assert "--output_dir" in out and "--dry_run" in out and "--output-dir" not in out and "--dry-run" not in out


# ----------------------------------------------------------------------------------------------------- leaderboard

def write_run(root: Path, name: str, *, identity: dict | None = None, config: dict | None = None) -> Path:
    """A minimal complete run folder, as the runner writes it."""
    folder = root / name
    folder.mkdir(parents=True)
    payload = {
        "status": "complete",
        "identity": {"data": "digits", "defense": "none", "attack": "jbda", "victim_arch": "cnn",
                     "surrogate_arch": "cnn", "budget": 200, "seed": 0, "label_mode": "soft", **(identity or {})},
        "metrics": {"victim/acc": 0.9, "victim/acc_defended": 0.9, "defense/top1_changed": 0.0,
                    "defense/kl_nats": 0.0, "defense/kl_nats_rev": 0.0, "defense/l1": 0.0, "surrogate/acc": 0.5,
                    "surrogate/fidelity": 0.5, "queries": 200},
        "curve": [{"queries": 100, "round": 1, "surrogate/acc": 0.4, "surrogate/fidelity": 0.4},
                  {"queries": 200, "round": 2, "surrogate/acc": 0.5, "surrogate/fidelity": 0.5}],
        "config": config or {},
    }
    (folder / "results.json").write_text(json.dumps(payload))
    return folder


LEADERBOARD_CASES = [
    ("missing-folder", ["no_such_runs"], ["no_such_runs", "does not exist"]),
    ("no-arguments", [], ["DIR"]),
    ("no-complete-runs", ["{empty}"], ["no complete runs"]),
    ("out-is-a-file", ["{runs}", "--output_dir", "{file}"], ["--output_dir", "not a folder"]),
    ("out-below-a-file", ["{runs}", "--out", "{file}/lb"], ["--output_dir", "is a file"]),
    ("unknown-option", ["{runs}", "--bogus"], ["--bogus", "stealbench leaderboard --help"]),
]


@pytest.mark.parametrize("args,expected", [pytest.param(a, e, id=i) for i, a, e in LEADERBOARD_CASES])
def test_leaderboard_rejects_bad_input(tmp_path, capsys, monkeypatch, args, expected):
    monkeypatch.chdir(tmp_path)
    write_run(tmp_path / "runs", "one")
    (tmp_path / "empty").mkdir()
    (tmp_path / "a_file").write_text("taken")
    paths = {"runs": str(tmp_path / "runs"), "empty": str(tmp_path / "empty"), "file": str(tmp_path / "a_file")}
    argv = ["leaderboard", *(a.format(**paths) for a in args)]
    before = snapshot(tmp_path)
    code, out, err = call(argv, tmp_path, capsys)
    assert_short_error(code, out, err, *expected)
    assert snapshot(tmp_path) == before


def many_settings(i: int) -> dict:
    """A config that differs from its neighbours in a dozen settings: long labels, long figure names."""
    return {"victim": {"epochs": 3 + i, "batch_size": 32 + i, "lr": 0.001 * (i + 1), "weight_decay": 0.01 * i},
            "surrogate": {"batch_size": 16 + i, "lr": 0.002 * (i + 1), "weight_decay": 0.02 * i},
            "data": {"init_args": {"pool_fraction": 0.3 + 0.1 * i, "split_seed": i, "victim_train_size": 500 + i,
                                   "holdout_fraction": 0.05 + 0.01 * i}},
            "label_options": {"samples": 3 + i, "beta": 0.5 + i, "gamma": 0.1 * (i + 1)},
            "tags": [f"tag-{i}", "very-long-tag-" * 5]}


def test_leaderboard_survives_runs_that_differ_in_many_settings(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for i in range(3):
        write_run(tmp_path / "runs", f"run{i}", config=many_settings(i))
    code, out, err = call(["leaderboard", str(tmp_path / "runs"), "--output_dir", str(tmp_path / "lb")],
                          tmp_path, capsys)
    assert code == 0, err
    pngs = sorted(p.name for p in (tmp_path / "lb").glob("*.png"))
    assert len(pngs) == 6 and len(set(pngs)) == 6  # curves + utility for three settings, none overwritten
    assert all(len(name) <= 100 for name in pngs), pngs


def test_leaderboard_survives_a_very_long_data_name(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_run(tmp_path / "runs", "long", identity={"data": "a-plugin-data-set-" * 20})
    code, out, err = call(["leaderboard", str(tmp_path / "runs"), "--output_dir", str(tmp_path / "lb")],
                          tmp_path, capsys)
    assert code == 0, err
    assert all(len(p.name) <= 100 for p in (tmp_path / "lb").glob("*.png"))


def test_leaderboard_takes_identity_values_that_are_lists(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_run(tmp_path / "runs", "listy", identity={"victim_arch": ["cnn", "mlp"], "data": ["digits"]})
    write_run(tmp_path / "runs", "plain")
    code, out, err = call(["leaderboard", str(tmp_path / "runs"), "--out", str(tmp_path / "lb"), "--no_plots"],
                          tmp_path, capsys)
    assert code == 0, err
    assert "Traceback" not in out + err
    assert (tmp_path / "lb" / "leaderboard.csv").exists()


def test_leaderboard_takes_mapping_identities_and_huge_seeds(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_run(tmp_path / "runs", "odd", identity={"defense": {"nested": 1}, "seed": 2**70})
    write_run(tmp_path / "runs", "bad", identity={"seed": "zero"})  # not an integer: skipped, named
    write_run(tmp_path / "runs", "plain")
    code, out, err = call(["leaderboard", str(tmp_path / "runs"), "--output_dir", str(tmp_path / "lb"),
                           "--no-plots"], tmp_path, capsys)
    assert code == 0, err
    assert "skipped 1 run" in out and "bad" in out and '{"nested": 1}' in out


def test_leaderboard_prints_bracketed_paths_verbatim(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_run(tmp_path / "runs", "plain", identity={"defense": "[bold]none"})
    (tmp_path / "runs" / "odd[" / "x]").mkdir(parents=True)  # `[/x]` would be a rich closing tag
    (tmp_path / "runs" / "odd[" / "x]" / "error.txt").write_text("boom")
    code, out, err = call(["leaderboard", str(tmp_path / "runs"), "--output_dir", str(tmp_path / "lb"),
                           "--no_plots"], tmp_path, capsys)
    assert code == 0, err
    assert "odd[/x]" in out and "[bold]none" in out


# ----------------------------------------------------------------------------------------------------- plugins, list

OTHER_CASES = [
    ("plugins-unknown-option", ["plugins", "--bogus"], ["--bogus", "stealbench plugins --help"]),
    ("plugins-extra-argument", ["plugins", "extra"], ["extra"]),
    ("list-unknown-kind", ["list", "defences"], ["defences", "defenses"]),
    ("list-unknown-option", ["list", "--bogus"], ["--bogus", "stealbench list --help"]),
    ("list-two-kinds", ["list", "defenses", "attacks"], ["attacks"]),
    ("list-filter-without-value", ["list", "--filter"], ["--filter"]),
    ("unknown-command", ["fitt"], ["fitt", "fit"]),
]


@pytest.mark.parametrize("args,expected", [pytest.param(a, e, id=i) for i, a, e in OTHER_CASES])
def test_plugins_and_list_reject_bad_input(tmp_path, capsys, monkeypatch, args, expected):
    monkeypatch.chdir(tmp_path)
    code, out, err = call(args, tmp_path, capsys)
    assert_short_error(code, out, err, *expected)
    assert snapshot(tmp_path) == set()
