#!/usr/bin/env bash
# MNIST, default JBDA settings (10 seeds/class, lambda 0.1, 6 rounds x 10 epochs, budget 3200), against
# `none` and `deceptive` (beta 1, gamma 0.1), soft and hard labels. The four runs share one cached victim
# (LeNet-5, 5 epochs, batch 128, seed 0). Run from the repository root; prints one line per run.
# Usage: bash bench/core_mnist.sh [OUTPUT_DIR]
set -euo pipefail
out=${1:-runs/core_mnist}
mkdir -p "$out"
for defense in none deceptive; do
  for mode in soft hard; do
    start=$(date +%s)
    stealbench fit --data mnist --data.root ../shared/data --victim.arch lenet5 --victim.epochs 5 \
      --victim.batch_size 128 --defense "$defense" --attack jbda --label_mode "$mode" --wandb.mode disabled \
      --output_dir "$out" --name "mnist_${defense}_${mode}" --progress_bar false > "$out.${defense}_${mode}.log" 2>&1 \
      || { echo "$defense $mode failed: see $out.${defense}_${mode}.log"; continue; }
    python - "$out/mnist_${defense}_${mode}/results.json" "$(( $(date +%s) - start ))" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); m = r["metrics"]; i = r["identity"]
print(f"{i['defense']:<10} {i['label_mode']:<5} victim/acc {m['victim/acc']:.4f}  surrogate/acc {m['surrogate/acc']:.4f}"
      f"  surrogate/fidelity {m['surrogate/fidelity']:.4f}  queries {m['queries']}  ({sys.argv[2]} s)")
PY
  done
done
