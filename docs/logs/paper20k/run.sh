#!/usr/bin/env bash
# The paper's recipe (defaults: Adagrad 1e-2, batch 64, fp32), β = 4, seeds 1-3, to 20,000 steps (1.28 M images):
# is seed 0's 54 % at 20k (flat to 107k) the recipe's or the seed's?
# Run from the repository root of a checkout of commit 94216ad (here: the worktree of the long runs).
for s in 1 2 3; do
  nice -n 5 python train.py --beta 4 --seed $s --steps 20000 --eval-every 20000 --out runs/paper20k/b4_s$s.pt --threads 1
done
