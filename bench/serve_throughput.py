"""Queries (images) per second through the oracle a normal `fit` run uses (a pipe between the attacker's process
and the defender's) against `stealbench serve` over HTTP, in JSON and in the binary tensor data extension.

    python bench/serve_throughput.py                     # digits (1x8x8) and MNIST (1x28x28), batches 1, 64, 512
    python bench/serve_throughput.py --data digits --seconds 1

The pipe: this process is the defender (`Referee.serve` over a real `Oracle`, as in `fit`); a child process is the
attacker, sending `PipeChannel.call("query")` as the attacker's `RemoteOracle` does: encode, pipe, schema check,
the oracle (budget, validation, defense statistics, recovery audit), the reply back. What it leaves out of a run:
the fork server (the child here is a spawned interpreter) and the sandbox (`--sandbox off`, as `fit` allows).
HTTP: a real `stealbench serve` subprocess on 127.0.0.1 with the same victim (the same victim cache), and the
client `fit --oracle.url` uses (`V2Client`, `binary=False` and `binary=True`). Defense `none` everywhere, one torch
thread on each side. Every cell sends one untimed request, then at most --requests requests and stops after
--seconds (bounded in count and in time); each cell runs --repeats times, the transports taking turns, and the
table shows each cell's best images/s (load from other processes only ever slows a cell down).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("STEALBENCH_SHARED_DATA", REPO.parent / "shared" / "data"))
BATCHES = (1, 64, 512)
BUDGET = 10 ** 9
DATA = {  # fit options of each data set: a small victim (throughput does not depend on its accuracy)
    "digits": ["--data", "digits", "--victim.epochs", "2"],
    "mnist": ["--data", "mnist", "--data.root", str(SHARED_DATA), "--data.victim_train_size", "2000",
              "--victim.epochs", "1"],
}


def timed_loop(send, seconds: float, requests: int) -> tuple[int, float]:
    """One untimed call, then calls until `requests` are done or `seconds` have passed: (calls, seconds)."""
    send()
    done, start = 0, time.perf_counter()
    while done < requests and (done == 0 or time.perf_counter() - start < seconds):
        send()
        done += 1
    return done, time.perf_counter() - start


# ------------------------------------------------------------------------------------------------ the pipe
def attacker(conn, input_shape, num_classes, batches, seconds, requests) -> None:
    """The attacker's side of the pipe (a child process): the attacker's RemoteOracle over a PipeChannel."""
    import torch

    from stealbench.attacker.remote import RemoteOracle
    from stealbench.transport import PipeChannel, error_payload

    torch.set_num_threads(1)
    channel = PipeChannel(conn)
    try:
        oracle = RemoteOracle(channel, budget=BUDGET, input_shape=input_shape, num_classes=num_classes)
        figures = {}
        for batch in batches:
            x = torch.rand(batch, *input_shape, generator=torch.Generator().manual_seed(batch))
            n, took = timed_loop(lambda: oracle.query(x), seconds, requests)
            figures[f"{batch}/requests"], figures[f"{batch}/seconds"] = float(n), took
        channel.send_final("done", {"label_mode": figures, "environment": {}})
    except BaseException as exc:  # noqa: BLE001 - reported to the defender's side, which raises it
        channel.send_final("failed", error_payload(exc))
    finally:
        conn.close()


def pipe_cells(victim_net, defense, data, batches, seconds, requests) -> dict[int, tuple[int, float]]:
    import torch

    from stealbench.defender.oracle import Oracle
    from stealbench.defender.referee import Referee, stop

    oracle = Oracle(victim_net, defense, budget=BUDGET, input_shape=tuple(data.input_shape),
                    num_classes=data.num_classes, device="cpu", defense_name="none")
    empty = torch.empty(0, *data.input_shape)
    referee = Referee(oracle=oracle, pool_x=empty, pool_truth=torch.empty(0, dtype=torch.long), pool_labels=None,
                      evaluate=lambda state: {}, seed_generator=torch.Generator(), on_point=lambda point: None,
                      on_log=lambda metrics, step: None, say=print)
    ctx = mp.get_context("spawn")
    ours, theirs = ctx.Pipe()
    process = ctx.Process(target=attacker, args=(theirs, tuple(data.input_shape), data.num_classes, batches,
                                                 seconds, requests), daemon=True)
    process.start()
    theirs.close()
    try:
        report = referee.serve(ours, process, timeout=60 + 4 * len(batches) * seconds)["label_mode"]
    finally:
        stop(process, ours)
    return {b: (int(report[f"{b}/requests"]), report[f"{b}/seconds"]) for b in batches}


# ------------------------------------------------------------------------------------------------ HTTP
class Server:
    """`stealbench serve` in a subprocess; its URL from the line it prints (a bounded wait)."""

    def __init__(self, options: list[str], env: dict[str, str], seconds: float = 600) -> None:
        self.popen = subprocess.Popen([sys.executable, "-m", "stealbench", "serve", *options, "--port", "0"],
                                      cwd=REPO, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in self.popen.stdout], daemon=True).start()
        seen, ends = [], time.monotonic() + seconds
        while time.monotonic() < ends and self.popen.poll() is None:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                continue
            seen.append(line)
            if "serving victim on http://" in line:
                self.url = line.split(" on ", 1)[1].strip()
                return
        self.stop()
        raise SystemExit("stealbench serve did not start:\n" + "".join(seen[-20:]))

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)


def http_cells(url, data, batches, seconds, requests, binary: bool) -> dict[int, tuple[int, float]]:
    import torch

    from stealbench.serve.client import V2Client

    out = {}
    with V2Client(url, account=f"bench-{'binary' if binary else 'json'}", retries=0, binary=binary,
                  timeout=120) as client:
        for batch in batches:
            x = torch.rand(batch, *data.input_shape, generator=torch.Generator().manual_seed(batch))
            out[batch] = timed_loop(lambda: client.infer(x), seconds, requests)
        if client.binary != binary:
            raise SystemExit(f"the client left binary mode: {client.fallback}")
    return out


# ------------------------------------------------------------------------------------------------ the table
def measure(name: str, batches, seconds: float, requests: int, repeats: int, tmp: Path) -> list[dict]:
    import torch

    from stealbench.lightning_cli import StealbenchCLI
    from stealbench.defender.victim_phase import serving_side

    options = [*DATA[name], "--victim.cache_dir", str(tmp / "victims"), "--defense", "none",
               "--budget", str(BUDGET), "--progress_bar", "false"]
    exp = StealbenchCLI(options).experiment()
    _, defended, _ = serving_side(exp)  # trains (or loads) the victim into the cache the server then loads
    torch.set_num_threads(1)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "STEALBENCH_CACHE_DIR": str(tmp / "cache")}
    transports = {
        "pipe": lambda: pipe_cells(defended.victim_net, exp.defense, exp.data, batches, seconds, requests),
        "json": lambda: http_cells(server.url, exp.data, batches, seconds, requests, binary=False),
        "binary": lambda: http_cells(server.url, exp.data, batches, seconds, requests, binary=True)}
    cells: dict[str, dict[int, list[tuple[int, float]]]] = {k: {b: [] for b in batches} for k in transports}
    server = Server([*options, "--max_batch", str(max(batches))], env)
    try:
        for r in range(repeats):  # the order turns each repeat: a load that drifts falls on each transport alike
            names = list(transports)[r % 3:] + list(transports)[:r % 3]
            for name_ in names:
                for b, cell in transports[name_]().items():
                    cells[name_][b].append(cell)
    finally:
        server.stop()
    shape = "x".join(map(str, exp.data.input_shape))
    return [{"data": name, "shape": shape, "batch": b, **{k: cells[k][b] for k in transports}} for b in batches]


def best(runs: list[tuple[int, float]], batch: int) -> float:
    """The best images/s of a cell's repeats (a loaded machine only ever slows a cell down)."""
    return max(n * batch / seconds for n, seconds in runs if seconds > 0)


def table(rows: list[dict]) -> str:
    head = (f"{'data':<7} {'input':<8} {'batch':>5}  {'pipe img/s':>11}  {'HTTP JSON img/s':>16} {'/pipe':>6}"
            f"  {'HTTP binary img/s':>18} {'/pipe':>6}  {'binary/JSON':>11}  requests (pipe/json/binary, all repeats)")
    lines = [head, "-" * len(head)]
    for row in rows:
        b = row["batch"]
        pipe, js, bi = (best(row[k], b) for k in ("pipe", "json", "binary"))
        lines.append(f"{row['data']:<7} {row['shape']:<8} {b:>5}  {pipe:>11.0f}  {js:>16.0f} {js / pipe:>6.2f}"
                     f"  {bi:>18.0f} {bi / pipe:>6.2f}  {bi / js:>11.2f}  "
                     + "/".join(str(sum(n for n, _ in row[k])) for k in ("pipe", "json", "binary")))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", choices=sorted(DATA), default=["digits", "mnist"])
    parser.add_argument("--batches", type=int, nargs="+", default=list(BATCHES))
    parser.add_argument("--seconds", type=float, default=3.0, help="most seconds of timed requests per cell")
    parser.add_argument("--requests", type=int, default=300, help="most timed requests per cell")
    parser.add_argument("--repeats", type=int, default=3, help="times each cell is measured (the best counts)")
    args = parser.parse_args()
    if args.seconds <= 0 or args.requests < 1 or args.repeats < 1 or min(args.batches) < 1:
        parser.error("--seconds must be > 0, --requests, --repeats and --batches >= 1")
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("WANDB_MODE", "disabled")
    load = os.getloadavg()
    print(f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the start; defense "
          f"none, one torch thread per side; each cell: 1 untimed + at most {args.requests} requests or "
          f"{args.seconds:g}s, {args.repeats} repeats (transports in turn), the best shown", flush=True)
    with tempfile.TemporaryDirectory(prefix="serve-throughput-") as tmp:
        os.environ["STEALBENCH_CACHE_DIR"] = str(Path(tmp) / "cache")
        rows = [row for name in args.data
                for row in measure(name, args.batches, args.seconds, args.requests, args.repeats, Path(tmp))]
    print(table(rows))
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
