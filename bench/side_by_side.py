"""The same steal three ways: stealbench, a hand-written PyTorch loop, and ART's CopycatCNN; wall times and ratios.

The steal: MNIST (torchvision layout under --data-root), natural samples from the attacker pool (`random`), 5,000
queries, reverse sigmoid (beta 1, gamma 0.2) on the victim's probabilities, the surrogate trained on the soft answers
for 10 epochs (Adam 1e-3, batch 64, soft cross-entropy), the `cnn` victim and surrogate. All three steal the same
cached victim with the same pool and evaluation set (stealbench's splits and net constructor; everything timed after
that is plain PyTorch or ART). The hand loop is the lower bound: in-memory tensors, one randperm per epoch, slices.

    python bench/side_by_side.py                           # full settings, CPU
    python bench/side_by_side.py --epochs 2                # shorter
    python bench/side_by_side.py --device cuda             # the same on a GPU

Each row is timed twice: as a whole process (interpreter start, imports, data, victim load, steal, evaluation) and
in-process (this process, imports done: data, victim load, steal, evaluation). One warm-up stealbench run first
trains and caches the victim (not timed). ART is optional (`pip install -e ".[bench]"`); without it its row says so.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


# -- the steal in stealbench ----------------------------------------------------------------------------------------
def stealbench_args(a: argparse.Namespace, out: Path) -> list[str]:
    args = ["fit", "--data", "mnist", "--data.root", str(a.data_root), "--victim.arch", a.arch,
            "--victim.epochs", str(a.victim_epochs), "--surrogate.arch", a.arch, "--defense", "deceptive",
            "--defense.beta", "1.0", "--defense.gamma", "0.2", "--label_mode", "soft", "--attack", "random",
            "--attack.num_checkpoints", "1", "--attack.epochs", str(a.epochs), "--budget", str(a.queries),
            "--seed", str(a.seed), "--wandb.mode", "disabled", "--progress_bar", "false", "--output_dir", str(out)]
    if a.device.startswith("cuda"):
        args += ["--trainer.accelerator", "gpu", "--trainer.devices", "1"]
    else:
        args += ["--trainer.accelerator", "cpu"]
    return args


def read_run(out: Path) -> dict:
    (run,) = [p for p in out.iterdir() if (p / "results.json").exists()]
    results = json.loads((run / "results.json").read_text())
    return {"acc": results["metrics"]["surrogate/acc"], "fidelity": results["metrics"]["surrogate/fidelity"],
            "victim_path": results["victim"]["path"]}


def stealbench_in_process(a: argparse.Namespace, out: Path) -> dict:
    from stealbench.cli import main

    start = time.perf_counter()
    with open(os.devnull, "w") as sink:
        stdout, sys.stdout = sys.stdout, sink
        try:
            code = main(stealbench_args(a, out))
        finally:
            sys.stdout = stdout
    seconds = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"stealbench fit failed (exit {code})")
    return {**read_run(out), "seconds": seconds}


# -- shared set-up of the other two (same data, same nets, same victim) ---------------------------------------------
def setup(a: argparse.Namespace, victim_path: str):
    import torch
    from torch import nn

    from stealbench.data.torchvision_sets import MNIST
    from stealbench.models.builtin import cnn, lenet5, mlp
    from stealbench.models.factory import Normalize

    data = MNIST(root=str(a.data_root))
    splits = data.splits()
    arch = {"cnn": cnn, "lenet5": lenet5, "mlp": mlp}[a.arch]

    def make_net() -> nn.Module:
        return nn.Sequential(Normalize(data.mean, data.std), arch(10, 1, 28))

    victim = make_net()
    victim.load_state_dict(torch.load(victim_path, map_location="cpu", weights_only=True)["state_dict"])
    device = torch.device(a.device)
    victim = victim.to(device).eval()
    torch.manual_seed(a.seed)
    return splits, make_net, victim, device


def reverse_sigmoid(probs, beta: float = 1.0, gamma: float = 0.2):
    import torch

    y = probs.double().clamp(1e-9, 1 - 1e-9)
    released = (y - beta * (torch.sigmoid(gamma * torch.logit(y)) - 0.5)).clamp(0.0, 1.0)
    return (released / released.sum(-1, keepdim=True)).float()


def evaluate(net, victim, splits, device) -> dict:
    import torch

    with torch.no_grad():
        x = splits.eval_x.to(device)
        pred = torch.cat([net(xb).argmax(-1) for xb in x.split(1024)]).cpu()
        ref = torch.cat([victim(xb).argmax(-1) for xb in x.split(1024)]).cpu()
    return {"acc": float((pred == splits.eval_y).float().mean()), "fidelity": float((pred == ref).float().mean())}


# -- the steal by hand ----------------------------------------------------------------------------------------------
def steal_by_hand(a: argparse.Namespace, victim_path: str) -> dict:
    import torch
    import torch.nn.functional as F

    start = time.perf_counter()
    splits, make_net, victim, device = setup(a, victim_path)
    g = torch.Generator().manual_seed(a.seed)
    chosen = torch.randperm(len(splits.pool_x), generator=g)[: a.queries]
    queries = splits.pool_x[chosen].to(device)
    with torch.no_grad():
        answers = torch.cat([reverse_sigmoid(torch.softmax(victim(xb), -1)) for xb in queries.split(1024)])
    net = make_net().to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    for _ in range(a.epochs):
        perm = torch.randperm(len(queries), generator=g).to(device)
        for xb, yb in zip(queries[perm].split(a.batch_size), answers[perm].split(a.batch_size)):
            loss = -(yb * F.log_softmax(net(xb), -1)).sum(-1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    net.eval()
    return {**evaluate(net, victim, splits, device), "seconds": time.perf_counter() - start}


# -- the steal with ART ---------------------------------------------------------------------------------------------
def art_version() -> str | None:
    try:
        import art
    except ImportError:
        return None
    return art.__version__


def steal_with_art(a: argparse.Namespace, victim_path: str) -> dict:
    import numpy as np
    import torch
    from art.attacks.extraction import CopycatCNN
    from art.defences.postprocessor import ReverseSigmoid
    from art.estimators.classification import PyTorchClassifier
    from torch import nn

    class SoftCrossEntropy(nn.Module):
        # a loss ART does not recognise keeps the soft answers (with CrossEntropyLoss it trains on their argmax)
        def forward(self, logits, targets):
            return -(targets * torch.log_softmax(logits, -1)).sum(-1).mean()

    start = time.perf_counter()
    splits, make_net, victim, device = setup(a, victim_path)
    device_type = "gpu" if device.type == "cuda" else "cpu"
    common = {"input_shape": (1, 28, 28), "nb_classes": 10, "clip_values": (0.0, 1.0), "device_type": device_type}
    # ReverseSigmoid post-processes probabilities: the victim's outputs go through a softmax first
    victim_art = PyTorchClassifier(model=nn.Sequential(victim, nn.Softmax(-1)), loss=nn.CrossEntropyLoss(),
                                   postprocessing_defences=[ReverseSigmoid(beta=1.0, gamma=0.2)], **common)
    net = make_net()
    thief = PyTorchClassifier(model=net, loss=SoftCrossEntropy(), optimizer=torch.optim.Adam(net.parameters(), lr=1e-3),
                              **common)
    np.random.seed(a.seed)
    attack = CopycatCNN(victim_art, batch_size_fit=a.batch_size, batch_size_query=1024, nb_epochs=a.epochs,
                        nb_stolen=a.queries, use_probability=True)
    stolen = attack.extract(splits.pool_x.numpy(), thieved_classifier=thief)
    surrogate = stolen.model.to(device).eval()
    return {**evaluate(surrogate, victim, splits, device), "seconds": time.perf_counter() - start}


# -- harness --------------------------------------------------------------------------------------------------------
def worker_args(a: argparse.Namespace) -> list[str]:
    return ["--data-root", str(a.data_root), "--epochs", str(a.epochs), "--queries", str(a.queries), "--device",
            a.device, "--arch", a.arch, "--seed", str(a.seed), "--batch-size", str(a.batch_size)]


def timed_process(cmd: list[str], env: dict) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return seconds, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (stealbench gets --trainer.accelerator gpu)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--queries", type=int, default=5000)
    parser.add_argument("--victim-epochs", type=int, default=2, help="for the warm-up run that caches the victim")
    parser.add_argument("--arch", default="cnn", choices=["cnn", "lenet5", "mlp"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--modes", nargs="+", default=["process", "in-process"], choices=["process", "in-process"])
    parser.add_argument("--victim-path", help=argparse.SUPPRESS)
    parser.add_argument("--worker", choices=["hand", "art"], help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.batch_size != 64:
        parser.error("--batch-size must stay 64: stealbench's surrogate batch size is the default here")

    if a.worker:  # one whole-process row: print the result as JSON
        result = (steal_by_hand if a.worker == "hand" else steal_with_art)(a, a.victim_path)
        print(json.dumps(result))
        return

    tmp = Path(tempfile.mkdtemp(prefix="side-by-side-"))
    os.environ.update({"STEALBENCH_CACHE_DIR": str(tmp / "cache"), "WANDB_MODE": "disabled"})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    print(f"steal: MNIST, {a.arch} victim and surrogate, random natural samples, {a.queries} queries, reverse sigmoid "
          f"beta 1 gamma 0.2, soft labels, {a.epochs} epochs, batch {a.batch_size}, device {a.device}")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "stealbench.cli", *stealbench_args(a, tmp / "warm-up")], env=env,
                   check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    victim_path = read_run(tmp / "warm-up")["victim_path"]
    print(f"warm-up (victim trained and cached, not timed): {time.perf_counter() - t0:.1f}s")

    art = art_version()
    rows = ["stealbench", "hand loop"] + (["ART CopycatCNN"] if art else [])
    results: dict[tuple[str, str], dict] = {}
    if "process" in a.modes:
        seconds, _ = timed_process([sys.executable, "-m", "stealbench.cli", *stealbench_args(a, tmp / "p-sb")], env)
        results[("stealbench", "process")] = {**read_run(tmp / "p-sb"), "seconds": seconds}
        for name, worker in (("hand loop", "hand"), ("ART CopycatCNN", "art")):
            if name in rows:
                seconds, out = timed_process([sys.executable, __file__, "--worker", worker, "--victim-path",
                                              victim_path, *worker_args(a)], env)
                results[(name, "process")] = {**json.loads(out.strip().splitlines()[-1]), "seconds": seconds}
    if "in-process" in a.modes:
        import importlib

        for module in ["stealbench.cli"] + (["art.attacks.extraction"] if art else []):
            importlib.import_module(module)  # imports are not timed in-process
        from stealbench.attacker.launch import warm_up

        warm_up()
        results[("stealbench", "in-process")] = stealbench_in_process(a, tmp / "i-sb")
        results[("hand loop", "in-process")] = steal_by_hand(a, victim_path)
        if art:
            results[("ART CopycatCNN", "in-process")] = steal_with_art(a, victim_path)

    print(f"\n{'':<16}" + "".join(f"{m + ' s':>14}{'ratio':>8}" for m in a.modes) + f"{'acc':>8}{'fidelity':>10}")
    for row in rows + ([] if art else ["ART CopycatCNN"]):
        if row not in rows:
            print(f"{row:<16}  skipped: adversarial-robustness-toolbox is not installed (pip install -e \".[bench]\")")
            continue
        line = f"{row:<16}"
        for mode in a.modes:
            r, base = results[(row, mode)], results[("hand loop", mode)]
            line += f"{r['seconds']:>14.1f}{r['seconds'] / base['seconds']:>8.2f}"
        last = results[(row, a.modes[-1])]
        print(line + f"{last['acc']:>8.4f}{last['fidelity']:>10.4f}")
    print("ratio: wall time / the hand loop's, same mode" + (f"; ART {art}" if art else ""))


if __name__ == "__main__":
    main()
