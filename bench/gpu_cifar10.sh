#!/usr/bin/env bash
# One command for a GPU machine: a CIFAR-10 ResNet victim trained with its recipe, JBDA and Knockoff against the
# `none` and `deceptive` defenses, the side-by-side harness on the GPU, and one table of the results.
#
#   bash bench/gpu_cifar10.sh                        # GPU, full settings (DEVICES=2 for two GPUs under DDP)
#   bash bench/gpu_cifar10.sh --smoke                # CPU, everything shrunk: checks the script end to end
#   options: --data-root DIR (default ../shared/data)  --out DIR (default runs/gpu_cifar10)  --arch resnet20
#
# Needs: the `resnet20` / `resnet18-cifar` architectures, the `cifar10` data set and the `cifar-sgd` /
# `cifar-onecycle` recipes (`stealbench list`), and MNIST under --data-root for the side-by-side harness.
# Where CIFAR-10 is missing (<root>/cifar-10-batches-py), Fashion-MNIST resized to 32x32 in three channels stands
# in (bench/standins.py, used by class path): same shapes, nets and costs, not CIFAR-10's numbers.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

SMOKE=0
ROOT=../shared/data
OUT=runs/gpu_cifar10
ARCH=resnet20
DEVICES=${DEVICES:-1}
while [[ $# -gt 0 ]]; do
    case $1 in
        --smoke) SMOKE=1 ;;
        --data-root) ROOT=$2; shift ;;
        --out) OUT=$2; shift ;;
        --arch) ARCH=$2; shift ;;
        *) echo "unknown option $1 (see the head of $0)" >&2; exit 2 ;;
    esac
    shift
done
PY=${PYTHON:-python}
export PYTHONPATH="$REPO:$REPO/bench${PYTHONPATH:+:$PYTHONPATH}"

if [[ -f $ROOT/cifar-10-batches-py/data_batch_1 ]]; then
    DATA=(--data cifar10 --data.root "$ROOT")
    echo "data: CIFAR-10 under $ROOT"
else
    DATA=(--data standins.FashionMNIST32RGB --data.root "$ROOT")
    echo "data: CIFAR-10 not found under $ROOT (no cifar-10-batches-py/): using Fashion-MNIST at 32x32 RGB as a" \
         "stand-in (bench/standins.py); fetch CIFAR-10 with --data.download true elsewhere and copy it there"
fi

if [[ $SMOKE == 1 ]]; then
    TRAINER=(--trainer.accelerator cpu)
    DEVICE=cpu
    VICTIM=(--victim.arch "$ARCH" --victim.recipe cifar-sgd --victim.epochs 1 --victim.batch_size 128
            --data.victim_train_size 512)
    SURROGATE=(--surrogate.arch "$ARCH" --surrogate.recipe cifar-onecycle --surrogate.batch_size 128)
    JBDA=(--attack jbda --attack.seed_per_class 2 --attack.rounds 2 --attack.epochs_per_round 1 --budget 40)
    KNOCKOFF=(--attack knockoff --attack.num_checkpoints 1 --attack.epochs 1 --budget 200)
    SIDE=(--device cpu --epochs 1 --queries 500 --victim-epochs 1 --modes in-process)
else
    TRAINER=(--trainer.accelerator gpu --trainer.devices "$DEVICES" --trainer.precision bf16-mixed)
    [[ $DEVICES != 1 ]] && TRAINER+=(--trainer.strategy ddp)  # one experiment, each phase data parallel
    DEVICE=cuda
    VICTIM=(--victim.arch "$ARCH" --victim.recipe cifar-sgd --victim.epochs 200 --victim.batch_size 128)
    SURROGATE=(--surrogate.arch "$ARCH" --surrogate.recipe cifar-onecycle --surrogate.batch_size 128)
    JBDA=(--attack jbda --attack.rounds 6 --attack.epochs_per_round 20 --budget 6400)
    KNOCKOFF=(--attack knockoff --attack.num_checkpoints 5 --attack.epochs 30 --budget 5000)
    SIDE=(--device cuda)
fi
COMMON=("${DATA[@]}" "${TRAINER[@]}" "${VICTIM[@]}" "${SURROGATE[@]}" --label_mode soft --seed 0
        --output_dir "$OUT" --progress_bar false)

mkdir -p "$OUT"
for attack in jbda knockoff; do
    for defense in none deceptive; do
        name=${attack}_${defense}
        if [[ -f $OUT/$name/results.json ]]; then echo "$name: done before, kept"; continue; fi
        rm -rf "${OUT:?}/$name"
        if [[ $attack == jbda ]]; then attack_args=("${JBDA[@]}"); else attack_args=("${KNOCKOFF[@]}"); fi
        echo "== $name"
        # the first run trains the victim and caches it; the other three load it
        $PY -m stealbench.cli fit "${COMMON[@]}" "${attack_args[@]}" --defense "$defense" --name "$name" \
            | tail -n 4
    done
done

echo "== side by side (MNIST steal: stealbench vs hand loop vs ART) on $DEVICE"
$PY bench/side_by_side.py "${SIDE[@]}" --data-root "$ROOT" | tee "$OUT/side_by_side.txt"

echo "== results ($OUT)"
$PY - "$OUT" <<'EOF'
import json, sys
from pathlib import Path

rows = []
for path in sorted(Path(sys.argv[1]).glob("*/results.json")):
    r = json.loads(path.read_text())
    m, i = r["metrics"], r["identity"]
    rows.append((i["attack"], i["defense"], i["victim_arch"], m["victim/acc"], m["victim/acc_defended"],
                 m["surrogate/acc"], m["surrogate/fidelity"], m["queries"], r["wall_seconds"]))
head = ("attack", "defense", "victim", "victim acc", "defended", "surr. acc", "fidelity", "queries", "wall s")
print("  ".join(f"{h:>10}" for h in head))
for row in rows:
    print("  ".join(f"{v:>10.4f}" if isinstance(v, float) and j < 7 else f"{v:>10}" for j, v in enumerate(row)))
EOF
