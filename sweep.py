"""Grids of replicas (Higgins et al., ICLR 2017, A.4 and Sec. 4.2, Fig. 6 right): the A.4
protocol, every β × seed, and the sweep of Fig. 6 (right), every normalised β (A.6) × latent
size M × seed. Each replica is an ordinary train.py checkpoint in one folder, which metric.py,
traverse.py and --resume read as any other.

The grid's order is fixed: β (or β_norm) outermost, then M, then the seed. So replica I is the
same model whether the whole grid trains in one command, one replica after another, or each
replica is task I of a cluster's job array (--replica-index I; sweep.sbatch runs the grid under
Slurm). A replica's file is named by what varies in its grid: b<β>_s<seed>.pt for the protocol,
bn<β_norm>_m<M>_s<seed>.pt for the sweep. This file imports nothing of the project; train.py
reads its flags through it:

    python train.py --beta 1 4 --seeds 0-9 --out runs/fig6                       # A.4: 20 replicas
    python train.py --beta-norm 0.001 0.01 --latents 5 10 --seeds 0-1 --out runs/m --list
    python train.py --beta-norm 0.001 0.01 --latents 5 10 --seeds 0-1 --out runs/m --replica-index 5
    sbatch --array=0-7 sweep.sbatch --beta-norm 0.001 0.01 --latents 5 10 --seeds 0-1 --out runs/m
"""

import argparse
from pathlib import Path

MAX_REPLICAS = 10_000  # a guard against a typo such as --seeds 0-99999999
GRID_FLAGS = {"beta", "beta_norm", "latents", "seed", "seeds", "stack", "replica_index", "list"}


def seeds_arg(text: str) -> list[int]:
    """--seeds: "0-9", "0,3,5" or "4"."""
    try:
        ranges = [(int(first), int(last or first))
                  for first, _, last in (p.partition("-") for p in text.split(","))]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seeds such as 0-9 or 0,3,5, "
                                         f"got {text!r}") from None
    # counted before any list is built
    if sum(max(0, last - first + 1) for first, last in ranges) > MAX_REPLICAS:
        raise argparse.ArgumentTypeError(f"--seeds {text}: more than {MAX_REPLICAS:,} replicas")
    seeds = [seed for first, last in ranges for seed in range(first, last + 1)]
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct seeds ≥ 0 such as 0-9, got {text!r}")
    return seeds


def index_arg(text: str) -> int:
    """--replica-index: a whole number ≥ 0."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a replica index ≥ 0, got {text!r}")
    return int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The grid's own flags; --beta, --beta-norm and --latents, each taking several values, are
    train.py's."""
    grid = parser.add_argument_group(
        "grids of replicas (A.4; Fig. 6 right): every --beta (or --beta-norm) × --latents × "
        "--seeds replica, each an ordinary checkpoint in the folder --out")
    grid.add_argument("--seeds", type=seeds_arg, help="replica seeds, such as 0-9 or 0,3,5")
    grid.add_argument("--replica-index", type=index_arg, metavar="I",
                      help="train replica I of the grid alone (a job array's task; --list "
                           "numbers them)")
    grid.add_argument("--list", action="store_true",
                      help="print the grid's replicas, numbered, and exit")
    grid.add_argument("--stack", choices=("auto", "yes", "no"), default="auto",
                      help="step the replicas together as one stacked model (auto: on CUDA) "
                           "or one after another")


def is_grid(args: argparse.Namespace) -> bool:
    """Whether the flags ask for a grid rather than one run."""
    several = any(len(getattr(args, k) or []) > 1 for k in ("beta", "beta_norm", "latents"))
    return bool(several or args.seeds or args.list or args.replica_index is not None)


def replicas(args: argparse.Namespace) -> list[dict]:
    """The grid in its fixed order: per replica, the flags it sets ({beta or beta_norm, latents,
    seed}); latents None leaves the dataset's default."""
    if args.beta and args.beta_norm:
        raise ValueError("give --beta or --beta-norm, not both")
    if args.beta_norm:
        strengths = [("beta_norm", b) for b in args.beta_norm]
    else:
        strengths = [("beta", b) for b in args.beta or [4.0]]
    grid = [{key: value, "latents": latents, "seed": seed}
            for key, value in strengths for latents in args.latents or [None]
            for seed in args.seeds or [args.seed]]
    if len(grid) > MAX_REPLICAS:
        raise ValueError(f"the grid has {len(grid):,} replicas, more than {MAX_REPLICAS:,}")
    return grid


def replica_path(folder: str, replica: dict, grid: list[dict]) -> str:
    """Where the grid writes `replica`: an ordinary checkpoint, its CSV beside it, named by
    what varies in its grid (b4_s0.pt in the protocol, bn0.01_m10_s0.pt in the sweep)."""
    if "beta_norm" in replica:
        name = f"bn{replica['beta_norm']:g}"
    else:
        name = f"b{replica['beta']:g}"
    several_m = len({r["latents"] for r in grid}) > 1
    if replica["latents"] is not None and ("beta_norm" in replica or several_m):
        name += f"_m{replica['latents']}"
    return str(Path(folder) / f"{name}_s{replica['seed']}.pt")


def chosen(grid: list[dict], index: int | None) -> list[int]:
    """The replicas this command trains: all, or --replica-index alone."""
    if index is None:
        return list(range(len(grid)))
    if index >= len(grid):
        raise ValueError(f"--replica-index {index}: the grid has replicas 0 to {len(grid) - 1}")
    return [index]


def describe(replica: dict) -> str:
    """One replica's settings, as --list prints them."""
    strength = (f"β_norm {replica['beta_norm']:g}" if "beta_norm" in replica
                else f"β {replica['beta']:g}")
    latents = "M default" if replica["latents"] is None else f"M {replica['latents']}"
    return f"{strength}, {latents}, seed {replica['seed']}"
