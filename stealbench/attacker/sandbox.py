"""The attacker's process in an operating-system sandbox (bubblewrap), and the choice of `--sandbox auto|bwrap|off`.

Without it the attacker's process is sealed only in memory (a fresh interpreter image, see launch.py): an attack
plugin could still read the victim cache, the data root, /proc of the defender, write into the run folder or
leave a daemon behind. Under bwrap it runs with

- its own PID, network, IPC and UTS namespaces (`--unshare-all`): no network, no /proc of the defender, and every
  process it starts ends with it (the namespace's init dies with the attacker, and with bwrap, and with us);
- a read-only view of the file system, in which the sensitive folders (the victim cache with its seal key, the
  data roots, the run output folder, W&B's folders, /run and the host's /tmp) are empty, read-only tmpfs;
- a private writable /tmp as scratch, a fresh /proc and a minimal /dev;
- an environment of a few whitelisted variables (threads, locale, PATH): never WANDB_* or STEALBENCH_CACHE_DIR.

Only the socket to the defender (one inherited file descriptor) links it to the outside.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

from ..errors import ConfigError

MODES = ("auto", "bwrap", "off")
#: what results.json's `sealed` says for the mode a run used
SEALED = {"bwrap": "os-sandbox", "off": "memory-only"}
#: the environment the sandboxed attacker gets (if set here); HOME and TMPDIR point at its scratch
ENV_WHITELIST = ("PATH", "PYTHONPATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "PYTHONHASHSEED",
                 "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "CUBLAS_WORKSPACE_CONFIG",
                 "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "STEALBENCH_PLUGINS", "STEALBENCH_BLOCK_PLUGINS",
                 "STEALBENCH_WEIGHTS_DIR")
INSTALL_HINT = "install bubblewrap (`apt-get install bubblewrap`) or run with --sandbox off"


@lru_cache(maxsize=1)
def bwrap_problem() -> str | None:
    """None when bubblewrap can start a sandbox here, else why not (probed once per process)."""
    exe = shutil.which("bwrap")
    if exe is None:
        return "bubblewrap (bwrap) is not installed"
    try:
        probe = subprocess.run([exe, "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "--proc", "/proc",
                                "--dev", "/dev", "true"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap cannot start ({exc})"
    if probe.returncode != 0:
        lines = (probe.stderr.decode(errors="replace").strip() or f"exit code {probe.returncode}").splitlines()
        return f"bwrap cannot start a sandbox here ({lines[-1]})"
    return None


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ConfigError(f"--sandbox {mode!r}: expected one of {', '.join(MODES)}")
    return mode


def resolve(mode: str, notice=None) -> str:
    """'bwrap' or 'off' for --sandbox `mode`; `auto` falls back to 'off' with a one-line notice."""
    check_mode(mode)
    if mode == "off":
        return "off"
    problem = bwrap_problem()
    if problem is None:
        return "bwrap"
    if mode == "bwrap":
        raise ConfigError(f"--sandbox bwrap: {problem}; {INSTALL_HINT}")
    if notice is not None:
        notice(f"[yellow]notice[/]: {problem}: the attacker runs sealed in memory only (results say "
               f"sealed: memory-only); {INSTALL_HINT.replace(' or run with --sandbox off', '')} to seal it")
    return "off"


def sandbox_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    environ = os.environ if environ is None else environ
    env = {k: environ[k] for k in ENV_WHITELIST if k in environ}
    # pretrained surrogate weights stay where the user keeps them (read-only), although HOME moves to the scratch
    home = Path.home()
    env.update(HOME="/tmp", TMPDIR="/tmp", HF_HUB_OFFLINE="1",
               TORCH_HOME=environ.get("TORCH_HOME") or str(home / ".cache" / "torch"),
               HF_HOME=environ.get("HF_HOME") or str(home / ".cache" / "huggingface"))
    return env


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def bwrap_command(hide: Iterable[str | Path], keep: Iterable[str | Path], fd: int, device: str,
                  module: str = "stealbench.attacker.entry") -> list[str]:
    """The bwrap command line that starts `python -m MODULE --fd FD` sealed (the attacker's entry, or the
    surrogate evaluator's).

    `hide`: folders (or files) the attack must not see; `keep`: folders it needs to read (the code on sys.path),
    bound back where a hidden folder holds them.
    """
    exe = shutil.which("bwrap")
    if exe is None:
        raise ConfigError(f"--sandbox bwrap: bubblewrap (bwrap) is not installed; {INSTALL_HINT}")
    hidden = {Path("/tmp"), Path("/run")}
    hidden.update(Path(p).resolve() for p in hide if p)
    hidden = {p for p in hidden if p.exists() and p != Path("/")}
    kept = {Path(p).resolve() for p in keep if p}
    kept = {k for k in kept if k.exists() and any(_inside(k, h) and k != h for h in hidden)}
    args = [exe, "--unshare-all", "--die-with-parent", "--new-session", "--ro-bind", "/", "/",
            "--proc", "/proc", "--dev", "/dev"]
    if device.startswith("cuda"):  # the GPU's device nodes; the rest of /dev stays minimal
        for node in sorted(glob.glob("/dev/nvidia*")):
            args += ["--dev-bind", node, node]
    # outer folders first, so that a kept folder inside a hidden one is bound over the hiding tmpfs
    for path in sorted(hidden | kept, key=lambda p: (len(p.parts), str(p))):
        if path in kept:
            args += ["--ro-bind", str(path), str(path)]
        elif path.is_dir():
            args += ["--tmpfs", str(path)]
        else:
            args += ["--ro-bind", "/dev/null", str(path)]  # a secret file (e.g. ~/.netrc): an empty one
    for path in sorted(hidden):  # read-only, except the scratch /tmp: writes there stay in the sandbox
        if path.is_dir() and path != Path("/tmp"):
            args += ["--remount-ro", str(path)]
    args += ["--chdir", "/tmp", "--clearenv"]
    for name, value in sandbox_env().items():
        args += ["--setenv", name, value]
    return args + ["--", sys.executable, "-m", module, "--fd", str(fd)]


def secret_paths(extra: Iterable[str | Path] = ()) -> list[Path]:
    """The folders and files that the sandboxed attacker never sees, besides the run's own (`extra`)."""
    home = Path.home()
    env = os.environ
    paths = [Path(p) for p in extra if p]
    paths += [home / ".cache" / "stealbench", home / ".config" / "wandb", home / ".netrc", Path.cwd() / "wandb"]
    paths += [Path(env[v]) for v in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR",
                                     "STEALBENCH_CACHE_DIR", "NETRC") if env.get(v)]
    return paths


def run_secret_paths(cache: Path, cache_used: bool, output_dir: Path, roots: Iterable[Any]) -> list[Path]:
    """What a run hides from its attacker: the victim cache (created now when the run uses it: a folder that does
    not exist yet cannot be hidden, and would show later), the run output folder and every data root, besides
    secret_paths' own."""
    if cache_used:
        try:
            cache.mkdir(parents=True, exist_ok=True)
        except OSError:
            pass  # obtain_victim says what is wrong with it
    return secret_paths([cache, output_dir, *(Path(r) for r in roots if isinstance(r, (str, Path)))])


__all__ = ["ENV_WHITELIST", "MODES", "SEALED", "bwrap_command", "bwrap_problem", "check_mode", "resolve",
           "run_secret_paths", "sandbox_env", "secret_paths"]
