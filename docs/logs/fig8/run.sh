#!/bin/bash
# Fig. 8 (A.8) on the CPU recipe: β = 4, seed 0, on the world and on parts of it; from the repository root.
cd "$(dirname "$0")/../.."
R="--beta 4 --seed 0 --optimizer adam --lr 1e-3 --batch-size 256 --bf16 --steps 3000 --threads 1"
while read name spec; do
  if [ -f runs/fig8/$name.pt ]; then again=--resume; else again=; fi
  python train.py $R $again --out runs/fig8/$name.pt ${spec:+--subsample $spec} --time-limit ${LIMIT:-7200}
done <<'LIST'
full
pos2 posX=::2 posY=::2
rot4 orientation=::4
pos4 posX=::4 posY=::4
ctrl posX=:24 posY=:24
rot2 orientation=::2
pos8 posX=::8 posY=::8
rot8 orientation=::8
LIST
