#!/usr/bin/env bash
# The device check (README, "The protocol on a GPU"): on one GPU, within a time budget, run the CUDA
# tests, the training benchmark, then the paper's protocol (A.4: β = 1 and β = 4, 10 replicas each,
# Adagrad 1e-2, batch 64, up to 300,000 steps or as many as the budget leaves), score every replica
# at L = 16 and L = 64 with A.4, and draw the best and the worst β = 4 replica. Everything it writes
# goes under OUT; it installs nothing and reads nothing outside the repository. Runs already in
# OUT/fig6 are never replaced: train.py refuses them (give a new OUT).
#
#     bash gpu_check.sh OUT                       # on a GPU: cuda, 480 s in all
#     DEVICE=cpu BETAS=4 SEEDS=0 STEPS=2 SCORE_SECONDS=0 bash gpu_check.sh OUT   # the dry run test_all.py makes
#
# Settings (environment): DEVICE (cuda), BUDGET seconds for everything (480), STEPS (300000),
# BETAS ("1 4"), SEEDS (0-9), SCORE_SECONDS kept back from training for scoring and figures (150).
set -uo pipefail
cd "$(dirname "$0")"
OUT=${1:?usage: bash gpu_check.sh OUT}
DEVICE=${DEVICE:-cuda}
BUDGET=${BUDGET:-480}
STEPS=${STEPS:-300000}
SEEDS=${SEEDS:-0-9}
BETAS=${BETAS:-1 4}
SCORE_SECONDS=${SCORE_SECONDS:-150}
START=$(date +%s)
left() { echo $((BUDGET - ($(date +%s) - START))); }
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1

echo "== device ($(left) s left)"
python -c "import torch, platform; print('torch', torch.__version__, '| python', platform.python_version(), '| cuda',
torch.cuda.is_available() and torch.cuda.get_device_name())"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true

if [ "$DEVICE" != cpu ]; then
  echo "== the CUDA tests ($(left) s left)"
  timeout 120 python -m pytest test_all.py -q -k "cuda" -p no:cacheprovider 2>&1 | tail -n 3
  echo "== python train.py --benchmark ($(left) s left)"
  timeout 150 python train.py --benchmark --device "$DEVICE" | tee "$OUT/benchmark.txt"
fi

echo "== the protocol: β = $BETAS, seeds $SEEDS, up to $STEPS steps ($(left) s left)"
TRAIN_SECONDS=$(( $(left) - SCORE_SECONDS ))
# shellcheck disable=SC2086 # BETAS is a list of words
python train.py --beta $BETAS --seeds "$SEEDS" --steps "$STEPS" --device "$DEVICE" --out "$OUT/fig6" \
  --log-every 5000 --save-every 50000 --time-limit $(( TRAIN_SECONDS > 1 ? TRAIN_SECONDS : 1 ))
[ -n "$(ls "$OUT"/fig6/b4_s*.pt 2>/dev/null)" ] || { echo "no β = 4 checkpoint written"; exit 1; }

echo "== scores, A.4 ($(left) s left)"
python - "$OUT" "$DEVICE" <<'EOF'
import sys
from pathlib import Path

import torch

import metric
import runs

out, device = Path(sys.argv[1]), runs.pick_device(sys.argv[2])
Ls, seeds = (16, 64), range(3)  # A.4: 3 classifier seeds per replica
scores = {}  # path -> {L: [score per seed]}
for path in sorted((out / "fig6").glob("b*_s*[0-9].pt")):
    net = metric.load_shapes_model(str(path), device)
    codes = metric.checkpoint_codes(str(path), net, device)  # cached beside it: traverse.py reads it again
    scores[path] = {L: [metric.disentanglement_score(codes, L=L, seed=s) for s in seeds] for L in Ls}
    print(f"{path.name}: " + "; ".join(f"L = {L}: " + ", ".join(f"{100 * s:.2f}" for s in v)
                                       for L, v in scores[path].items()), flush=True)
steps = torch.load(next(iter(scores)), map_location="cpu", weights_only=True)["step"]
lines = [f"| model | replicas | steps | L = 16 (A.4) | L = 64 (A.4) | paper |", "| --- | --- | --- | --- | --- | --- |"]
paper = {"1": "61.58 ± 0.5", "4": "99.23 ± 0.1"}
for beta in sorted({p.name.split("_")[0][1:] for p in scores}, key=float):
    mine = [p for p in scores if p.name.startswith(f"b{beta}_")]
    cells = []
    for L in Ls:
        mean, std, kept = metric.a4_protocol([s for p in mine for s in scores[p][L]])
        cells.append(f"{100 * mean:.2f} ± {100 * std:.2f}")
    lines.append(f"| β = {beta} | {len(mine)} | {steps:,} | {cells[0]} | {cells[1]} | {paper.get(beta, '—')} |")
(out / "table.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
b4 = sorted((p for p in scores if p.name.startswith("b4_")), key=lambda p: sum(scores[p][16]))
(out / "best_worst.txt").write_text(f"{b4[-1]}\n{b4[0]}\n")
EOF

echo "== figures of the best and the worst β = 4 replica ($(left) s left)"
read -r BEST < <(sed -n 1p "$OUT/best_worst.txt")
read -r WORST < <(sed -n 2p "$OUT/best_worst.txt")
python traverse.py "$BEST" --device "$DEVICE" --out "$OUT/figures_best_$(basename "$BEST" .pt)"
if [ "$WORST" != "$BEST" ]; then
  python traverse.py "$WORST" --device "$DEVICE" --out "$OUT/figures_worst_$(basename "$WORST" .pt)"
fi
cp "$OUT"/fig6/*.csv "$OUT/" 2>/dev/null
echo "== done in $(( $(date +%s) - START )) s: $OUT/table.md"
