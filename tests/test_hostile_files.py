"""Hostile files and input: alias bombs, huge, binary or non-UTF-8 files, repeated keys, markup in names.

Each must end in one `error:` line that names the limit, quickly, with no traceback and nothing written; all run
in-process and before any data is loaded, so the whole file takes seconds.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from stealbench import safe_yaml
from stealbench.errors import ConfigError
from test_bad_input import assert_short_error, call

#: "billion laughs": 9 ** 7 (4.8 million) strings from about 300 bytes
BOMB = "\n".join(
    [f'a: &a [{", ".join(["lol"] * 9)}]']
    + [f"{cur}: &{cur} [{', '.join([f'*{prev}'] * 9)}]" for prev, cur in zip("abcdef", "bcdefg")]) + "\n"


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


HOSTILE = [
    # (id, file content, texts the message must hold)
    ("alias-bomb", BOMB, ["alias bomb", "100,000 values"]),
    ("too-large", "budget: 100\n" + "#" * 1_100_000 + "\n", ["larger than 1 MB"]),
    ("many-aliases", "a: &a 1\nb: [" + ", ".join(["*a"] * 150) + "]\n", ["more than 100 aliases"]),
    ("deep-nesting", "budget: " + "[" * 200 + "]" * 200 + "\n", ["nested deeper than 50"]),
    ("duplicate-key", "budget: 100\nseed: 1\nbudget: 200\n", ["'budget' appears twice", "lines 1 and 3"]),
    ("duplicate-nested-key", "victim:\n  epochs: 1\n  epochs: 2\n", ["'epochs' appears twice", "lines 2 and 3"]),
    ("binary", b"\x7fELF\x02\x01\x01\x00\x00\x00" + bytes(range(256)), ["binary file"]),
    ("latin-1", "name: caf\xe9\n".encode("latin-1"), ["not UTF-8", "0xe9"]),
]


@pytest.mark.parametrize("content,expected", [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_fit_config_refuses_hostile_files(tmp_path, capsys, content, expected):
    import stealbench.lightning_cli  # noqa: F401 - Lightning's import time is not the reader's

    path = write(tmp_path, "hostile.yaml", content)
    started = time.perf_counter()
    code, out, err = call(["fit", "--config", str(path), "--output_dir", str(tmp_path / "runs")], tmp_path, capsys)
    assert_short_error(code, out, err, "--config", *expected)
    assert time.perf_counter() - started < 20, "a hostile file must be refused quickly, not parsed for minutes"
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("content,expected", [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_grid_refuses_hostile_files(tmp_path, capsys, content, expected):
    path = write(tmp_path, "grid.yaml", content)
    code, out, err = call(["grid", str(path), "--dry_run"], tmp_path, capsys)
    assert_short_error(code, out, err, "grid file", *expected)


@pytest.mark.parametrize("content,expected", [c[1:] for c in HOSTILE if c[0] in ("alias-bomb", "binary",
                                                                                 "duplicate-key")],
                         ids=["alias-bomb", "binary", "duplicate-key"])
def test_trainer_file_read_by_jsonargparse_has_the_same_limits(tmp_path, capsys, content, expected):
    path = write(tmp_path, "trainer.yaml", content)
    code, out, err = call(["fit", "--trainer", str(path), "--print_config"], tmp_path, capsys)
    assert_short_error(code, out, err, "--trainer", *expected)


def test_a_trainer_file_works(tmp_path, capsys):
    """`--trainer FILE` used to fail on the `__path__` key jsonargparse adds."""
    import yaml

    path = write(tmp_path, "trainer.yaml", "accelerator: cpu\nprecision: 32-true\n")
    code, out, err = call(["fit", "--trainer", str(path), "--print_config"], tmp_path, capsys)
    assert code == 0, err
    assert yaml.safe_load(out)["trainer"]["precision"] == "32-true"


@pytest.mark.parametrize("command", [["reproduce"], ["leaderboard", "runs", "--claims"]])
def test_reproduction_and_claims_files_use_the_same_reader(tmp_path, capsys, command):
    path = write(tmp_path, "spec.yaml", BOMB)
    code, out, err = call([*command, str(path)], tmp_path, capsys)
    assert_short_error(code, out, err, "alias bomb")


def test_a_bomb_in_an_option_value_is_refused_too(tmp_path, capsys):
    """jsonargparse parses option values as YAML itself: its loader is behind the same limits."""
    inline = "{" + ", ".join(BOMB.strip().splitlines()) + "}"
    code, out, err = call(["fit", "--label_options", inline, "--print_config"], tmp_path, capsys)
    assert_short_error(code, out, err, "alias bomb")


def test_inline_config_with_repeated_keys_is_refused(tmp_path, capsys):
    code, out, err = call(["fit", "--config", "{budget: 1, budget: 2}", "--print_config"], tmp_path, capsys)
    assert_short_error(code, out, err, "'budget' appears twice")


def test_non_utf8_name_is_one_line(tmp_path, capsys):
    name = b"run\xff".decode("utf-8", "surrogateescape")  # what Python makes of undecodable argv bytes
    code, out, err = call(["fit", "--name", name, "--output_dir", str(tmp_path)], tmp_path, capsys)
    assert_short_error(code, out, err, "--name", "not valid UTF-8", r"run\xff")


def test_reasonable_yaml_still_loads():
    """Anchors for sharing a block, merge keys overriding merged ones, and a few thousand values are fine."""
    text = "base: &b {epochs: 1, batch_size: 8}\nvictim:\n  <<: *b\n  epochs: 2\nsurrogate: *b\n" + "".join(
        f"k{i}: {i}\n" for i in range(5000))
    loaded = safe_yaml.loads(text)
    assert loaded["victim"] == {"epochs": 2, "batch_size": 8} and loaded["surrogate"]["epochs"] == 1
    assert loaded["k4999"] == 4999


def test_reader_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"^grid file .*missing.yaml' does not exist$"):
        safe_yaml.read_mapping(tmp_path / "missing.yaml", "grid file")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        safe_yaml.read_mapping(write(tmp_path, "list.yaml", "- 1\n"), "grid file")


def printed_config(tmp_path, capsys, *args) -> dict:
    import yaml

    code, out, err = call(["fit", "--output_dir", str(tmp_path / "runs"), *args, "--print_config"], tmp_path, capsys)
    assert code == 0, err
    return yaml.safe_load(out)


def test_options_before_a_later_choice_apply_to_the_chosen_component(tmp_path, capsys):
    """`--attack.rounds 3 --attack activethief`: jsonargparse used to drop the 3 (activethief's default 5 ran)."""
    cfg = printed_config(tmp_path, capsys, "--attack.rounds", "3", "--attack", "activethief")
    assert cfg["attack"]["class_path"].endswith("ActiveThief") and cfg["attack"]["init_args"]["rounds"] == 3


def test_repeating_a_defense_keeps_its_options(tmp_path, capsys):
    """Decided: choosing the same defense again keeps the options given so far (it used to reset beta)."""
    cfg = printed_config(tmp_path, capsys, "--defense", "deceptive", "--defense.beta", "0.3", "--defense", "deceptive")
    assert cfg["defense"]["init_args"]["beta"] == 0.3
    # options after a --config apply to the component the file chose
    cfg = printed_config(tmp_path, capsys, "--config", "{defense: deceptive}", "--defense.beta", "0.3")
    assert cfg["defense"]["init_args"]["beta"] == 0.3


def test_victim_train_size_beyond_the_data_is_an_error(tmp_path, capsys):
    """It used to be accepted and recorded in results.json as if the victim had trained on that many images."""
    code, out, err = call(["fit", "--data", "digits", "--data.victim_train_size", "100000", "--output_dir",
                           str(tmp_path / "runs"), "--progress_bar", "false"], tmp_path, capsys)
    assert_short_error(code, out, err, "--data.victim_train_size 100000", "training images", "use at most")
    assert not list(tmp_path.rglob("results.json"))


def test_victim_train_size_within_the_data_is_used():
    from stealbench.data.digits import Digits

    assert len(Digits(victim_train_size=100).splits().victim_y) == 100


def test_oversized_images_are_refused_before_decoding(tmp_path, capsys):
    from PIL import Image

    for split in ("train", "test"):
        (tmp_path / "set" / split / "a").mkdir(parents=True)
        Image.new("L", (1100, 8)).save(tmp_path / "set" / split / "a" / "big.png")
    code, out, err = call(["fit", "--data", "imagefolder", "--data.root", str(tmp_path / "set"), "--output_dir",
                           str(tmp_path / "runs"), "--progress_bar", "false"], tmp_path, capsys)
    assert_short_error(code, out, err, "8x1100", "--data.image_size")


# ----------------------------------------------------------------------------------------- console markup

def test_markup_in_names_and_plugin_text_prints_as_typed(capsys):
    """`--name '[red]x'` printed a wrong path and `[/]` raised MarkupError; plugin text is plain text too."""
    from stealbench import console

    path = "runs/[red]x[/][/]"
    console.header({"output": path, "defense": "[bold]fake[/]"})
    console.metrics_table({"defense/[red]k[/]": 0.5}, title="results")
    console.info(f"results: {console.escape(path + '/results.json')}")
    out = capsys.readouterr().out
    assert f"output   {path}" in out and f"results: {path}/results.json" in out
    assert "[bold]fake[/]" in out and "defense/[red]k[/]" in out


def test_a_claims_file_title_with_markup_prints_as_written(capsys):
    from stealbench.analysis.report import print_claims

    print_claims([], "[/]paper [red]x")  # a `paper: title` from a user's claims file; `[/]` raised MarkupError
    assert "claims: [/]paper [red]x" in capsys.readouterr().out


def test_attacker_lines_are_attributed_and_plain(tmp_path):
    """An attack's log lines cannot pass for round lines: each line behind `attack:`, markup and control
    characters shown, not interpreted."""
    from adversaries import ImpersonatingAttack
    from stealbench import console
    from stealbench.config import SurrogateConfig, VictimConfig, WandbConfig
    from stealbench.data.digits import Digits
    from stealbench.defenses.none import NoDefense
    from stealbench.runner import Experiment, run_experiment

    with console.console.capture() as captured:
        run_experiment(Experiment(data=Digits(), defense=NoDefense(), attack=ImpersonatingAttack(),
                                  keys={"data": "digits", "defense": "none", "attack": "impersonating"}, budget=80,
                                  victim=VictimConfig(epochs=1), surrogate=SurrogateConfig(),
                                  wandb=WandbConfig(mode="disabled"), output_dir=str(tmp_path / "[b]o"),
                                  name="[bold]run[red]"))
    out = captured.get()
    relayed = [line for line in out.splitlines() if "all stolen" in line or "3200/3200" in line]
    assert len(relayed) == 2 and all(line.startswith("attack: ") for line in relayed), out
    assert "[bold green]results[/]: all stolen [/]" in out
    assert "\x1b" not in out and "\r" not in out and "\\x1b[2K" in out
    assert not [line for line in out.splitlines() if line.startswith("round") and "3200" in line]
    assert "[b]o/[bold]run[red]/results.json" in out.replace("\n", "")  # the run folder, named with markup, printed as named


# ----------------------------------------------------------------------------------------------- test data

def test_tests_needing_the_shared_data_skip_without_it(tmp_path):
    from conftest import require_shared_data

    (tmp_path / "MNIST" / "raw").mkdir(parents=True)
    with pytest.raises(pytest.skip.Exception, match="FashionMNIST not found under .*STEALBENCH_SHARED_DATA"):
        require_shared_data(tmp_path)
    (tmp_path / "FashionMNIST" / "raw").mkdir(parents=True)
    assert require_shared_data(tmp_path) == tmp_path
