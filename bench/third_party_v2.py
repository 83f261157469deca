"""A steal through a third-party V2 server: MLServer (Seldon) serving a small PyTorch digits classifier, attacked
end to end by `stealbench fit --oracle.url` (JBDA by default), all on 127.0.0.1.

    python bench/third_party_v2.py --mlserver-python .venv-mlserver/bin/python
    python bench/third_party_v2.py --budget 300 --attack.rounds 2          # unknown options go to `fit`

MLServer lives in a Python of its own (its pins, e.g. fastapi 0.115 / starlette 0.46, clash with stealbench's):

    bash .ci/mlserver.sh        # builds .venv-mlserver (.ci/mlserver-requirements.txt), prints its python

The Python with mlserver: --mlserver-python, else $STEALBENCH_MLSERVER_PYTHON, else this one if it imports
mlserver. Steps: (1) the victim: stealbench trains (or loads from its cache) the digits victim `fit --seed S`
would train, as `stealbench serve` does (defender.victim_phase.serving_side), and saves it as TorchScript; or
--torchscript takes a saved one. (2) An MLServer model folder: the runtime bench/third_party_v2_runtime.py (softmax
probabilities, no defense), model.pt, settings.json (127.0.0.1, free HTTP and gRPC ports, no metrics server, no
worker pool) and model-settings.json (inputs [-1, 1, 8, 8] FP32, outputs [-1, 10] FP32). (3) `mlserver start` in
a subprocess; /v2/health/ready and /v2/models/NAME/ready polled at most --ready-seconds. (4) `stealbench fit
--data digits --attack jbda --oracle.url http://127.0.0.1:PORT --oracle.model_name NAME --seed S ...` with a
bounded run time. (5) The run's figures, printed; the server stopped (SIGTERM, then SIGKILL after 15 s).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUNTIME = Path(__file__).resolve().parent / "third_party_v2_runtime.py"
INPUT_SHAPE, NUM_CLASSES = (1, 8, 8), 10  # digits


def has_mlserver(python: str) -> bool:
    try:
        done = subprocess.run([python, "-c", "import mlserver, torch"], capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def find_mlserver_python(explicit: str | None = None) -> str | None:
    """The Python to run MLServer with: `explicit` (must have mlserver), else $STEALBENCH_MLSERVER_PYTHON, else
    this interpreter if it imports mlserver; None when there is none."""
    if explicit:
        return explicit if has_mlserver(explicit) else None
    env = os.environ.get("STEALBENCH_MLSERVER_PYTHON")
    if env:
        return env if has_mlserver(env) else None
    try:
        import mlserver  # noqa: F401
    except ImportError:
        return None
    return sys.executable


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def export_victim(path: Path, seed: int, epochs: int, cache_dir: Path) -> float:
    """The digits victim of `fit --seed seed --victim.epochs epochs` (trained or from the cache) as TorchScript at
    `path`; its clean accuracy on the evaluation set."""
    import torch

    from stealbench.defender.victim_phase import serving_side
    from stealbench.lightning_cli import StealbenchCLI

    exp = StealbenchCLI(["--data", "digits", "--victim.epochs", str(epochs), "--victim.cache_dir", str(cache_dir),
                         "--defense", "none", "--seed", str(seed), "--progress_bar", "false"]).experiment()
    _, defended, _ = serving_side(exp)
    net = defended.victim_net.cpu().eval()
    example = torch.rand(4, *INPUT_SHAPE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch 2.14 deprecates TorchScript; MLServer's torch loads it
        traced = torch.jit.trace(net, example)
        if not torch.allclose(traced(example), net(example), atol=1e-5):
            raise SystemExit("the traced victim does not answer as the victim does")
        torch.jit.save(traced, str(path))
    return float(defended.metrics["victim/acc"])


def model_folder(root: Path, torchscript: Path, name: str, http_port: int, grpc_port: int, max_batch: int) -> Path:
    """An MLServer model repository at `root`: settings.json and one model folder `name`."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "http_port": http_port, "grpc_port": grpc_port, "metrics_endpoint": None,
        "parallel_workers": 0, "load_models_at_startup": True, "debug": False}, indent=2))
    folder = root / name
    folder.mkdir(exist_ok=True)
    shutil.copy(RUNTIME, folder / "torch_probs.py")
    shutil.copy(torchscript, folder / "model.pt")
    (folder / "model-settings.json").write_text(json.dumps({
        "name": name, "implementation": "torch_probs.TorchProbs", "platform": "pytorch-torchscript",
        "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, *INPUT_SHAPE]}],
        "outputs": [{"name": "probs", "datatype": "FP32", "shape": [-1, NUM_CLASSES]}],
        "parameters": {"uri": "./model.pt", "extra": {"max_batch": max_batch}}}, indent=2))
    return root


class MLServer:
    """`mlserver start ROOT` in a subprocess of its own session (its output in ROOT/mlserver.log)."""

    def __init__(self, python: str, root: Path, http_port: int) -> None:
        self.url = f"http://127.0.0.1:{http_port}"
        self.log_path = root / "mlserver.log"
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("MLSERVER")}
        env["OMP_NUM_THREADS"] = "1"
        with open(self.log_path, "w") as log:
            self.popen = subprocess.Popen(
                [python, "-c", "import sys; from mlserver.cli import main; sys.argv[0] = 'mlserver'; sys.exit(main())",
                 "start", str(root)], cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_ready(self, name: str, seconds: float) -> float:
        """Seconds until the server and model `name` answer ready; SystemExit (with the log) if not in `seconds`."""
        import httpx

        start = time.monotonic()
        with httpx.Client(base_url=self.url, timeout=2.0, trust_env=False) as http:
            while time.monotonic() - start < seconds:
                if self.popen.poll() is not None:
                    raise SystemExit(f"MLServer exited with {self.popen.returncode}:\n{self.log_tail()}")
                try:
                    if (http.get("/v2/health/ready").status_code == 200
                            and http.get(f"/v2/models/{name}/ready").status_code == 200):
                        return time.monotonic() - start
                except httpx.TransportError:
                    pass
                time.sleep(0.5)
        raise SystemExit(f"MLServer was not ready within {seconds:g}s:\n{self.log_tail()}")

    def stop(self) -> int | None:
        """SIGTERM to its session, SIGKILL after 15 s; its exit status."""
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)
            except ProcessLookupError:
                pass
        return self.popen.returncode


def run_fit(url: str, name: str, args: argparse.Namespace, extra: list[str], out: Path) -> tuple[int, str, dict]:
    """`stealbench fit` against the endpoint: (exit status, its output, results.json or {})."""
    command = [sys.executable, "-m", "stealbench", "fit", "--data", "digits", "--attack", args.attack,
               "--oracle.url", url, "--oracle.model_name", name, "--oracle.binary", str(args.binary).lower(),
               "--budget", str(args.budget), "--seed", str(args.seed), "--output_dir", str(out), "--name", "steal",
               "--progress_bar", "false", *extra]
    print("$ stealbench " + " ".join(command[3:]), flush=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "WANDB_MODE": "disabled", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    try:
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=args.fit_seconds)
    except subprocess.TimeoutExpired as exc:
        output = (exc.stdout or "") + (exc.stderr or "") if isinstance(exc.stdout, str) else ""
        return 124, output + f"\n(fit ran past {args.fit_seconds:g}s)", {}
    results = out / "steal" / "results.json"
    return done.returncode, done.stdout + done.stderr, json.loads(results.read_text()) if results.exists() else {}


def summary(results: dict, victim_acc: float | None) -> str:
    m, e = results.get("metrics", {}), results.get("endpoint", {})
    rows = [("victim acc (clean, stealbench's own check)", victim_acc),
            ("endpoint acc (MLServer's answers on the evaluation set)", m.get("victim/acc")),
            ("queries", m.get("queries")), ("surrogate acc", m.get("surrogate/acc")),
            ("surrogate fidelity (agreement with the endpoint)", m.get("surrogate/fidelity")),
            ("binary tensors used", e.get("binary")), ("binary fallback", e.get("binary_fallback")),
            ("batch size", e.get("batch_size"))]
    return "\n".join(f"  {k:<55} {v:.4f}" if isinstance(v, float) else f"  {k:<55} {v}" for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mlserver-python", default=None, help="a Python with mlserver and torch installed")
    parser.add_argument("--torchscript", type=Path, default=None, help="serve this TorchScript digits classifier "
                        "(input [B, 1, 8, 8] in [0, 1], logits [B, 10]) instead of training stealbench's victim")
    parser.add_argument("--victim-epochs", type=int, default=10)
    parser.add_argument("--attack", default="jbda")
    parser.add_argument("--budget", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--binary", action=argparse.BooleanOptionalAction, default=True,
                        help="--oracle.binary of the fit run (MLServer has no binary extension: the client falls "
                             "back to JSON)")
    parser.add_argument("--model-name", default="digits-victim")
    parser.add_argument("--max-batch", type=int, default=512)
    parser.add_argument("--ready-seconds", type=float, default=120.0)
    parser.add_argument("--fit-seconds", type=float, default=1200.0)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the files here (default: a temp folder)")
    args, extra = parser.parse_known_args(argv)
    python = find_mlserver_python(args.mlserver_python)
    if python is None:
        print("no Python with mlserver: pass --mlserver-python or set STEALBENCH_MLSERVER_PYTHON (see the "
              "docstring for the separate venv)", file=sys.stderr)
        return 2
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("WANDB_MODE", "disabled")
    with tempfile.TemporaryDirectory(prefix="third-party-v2-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        victim_acc = None
        if args.torchscript is None:
            t0 = time.perf_counter()
            torchscript = work / "victim.pt"
            victim_acc = export_victim(torchscript, args.seed, args.victim_epochs, work / "victims")
            print(f"victim: stealbench's digits victim (seed {args.seed}, {args.victim_epochs} epochs), clean acc "
                  f"{victim_acc:.4f}, TorchScript in {time.perf_counter() - t0:.1f}s", flush=True)
        else:
            torchscript = args.torchscript
        http_port, grpc_port = free_port(), free_port()
        root = model_folder(work / "mlserver", torchscript, args.model_name, http_port, grpc_port, args.max_batch)
        version = subprocess.run([python, "-c", "import mlserver, torch; print(mlserver.__version__, torch.__version__)"],
                                 capture_output=True, text=True, timeout=120).stdout.split()
        server = MLServer(python, root, http_port)
        try:
            took = server.wait_ready(args.model_name, args.ready_seconds)
            print(f"MLServer {version[0]} (torch {version[1]}, {python}) ready on {server.url} in {took:.1f}s",
                  flush=True)
            status, output, results = run_fit(server.url, args.model_name, args, extra, work / "runs")
        finally:
            code = server.stop()
        keep = [line for line in output.splitlines() if line.strip()][-25:]
        print("\n".join(keep))
        print(f"MLServer stopped (exit status {code})")
        if status != 0 or results.get("status") != "complete":
            print(f"fit failed (exit status {status}); MLServer's log:\n{server.log_tail()}", file=sys.stderr)
            return 1
        print(f"results ({results.get('identity', {}).get('attack')}, budget {args.budget}, seed {args.seed}):")
        print(summary(results, victim_acc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
