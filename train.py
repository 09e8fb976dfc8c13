"""Train a β-VAE (Higgins et al., ICLR 2017): maximise Eq. 4 with the Table 1 networks.

    python train.py --beta 4 --dataset shapes                    # the paper's 2D-shapes recipe
    python train.py --beta 4 --steps 2000 --out quick.pt          # a few CPU minutes
    python train.py --dataset folder --data DIR --beta 4          # CelebA, chairs, faces (conv)
    python train.py --out quick.pt --resume                       # continue a stopped run
    python train.py --beta 1 4 --seeds 0-9 --out runs/fig6        # the A.4 protocol: 20 replicas
    python train.py --beta-norm 0.001 0.01 --latents 5 10 --out runs/m   # Fig. 6 (right), a grid
    python train.py --benchmark                                   # training samples/s

Defaults are the paper's (A.1, Table 1): on shapes the FC network, 10 latents, Bernoulli
likelihood, Adagrad lr 1e-2, batch 64; on image folders the conv network, 32 latents,
Adam lr 1e-4. Shapes are rendered on the fly by shapes.py, so every batch is fresh and
memory stays flat.

The file, top to bottom: the paper's defaults; `Trainer.step`, one gradient step of Eq. 4; `train`,
the loop; the CLI; grids of replicas (the A.4 protocol, Fig. 6 right), whose order and names are
sweep.py's. The speed path (replicas stacked on CUDA, --benchmark) is stacked.py. The run's
machinery is runs.py: progress lines and a CSV row per --log-every steps; atomic checkpoints on a
schedule and on Ctrl-C or SIGTERM; --resume continues as an unbroken run would; a run is never
replaced unasked. Needs shapes, model, loss, metric, runs, sweep and stacked (.py) beside it.
"""

import argparse
import functools
import math
import os
import signal
from collections.abc import Callable
from contextlib import ExitStack, nullcontext
from pathlib import Path

# Ctrl-C while torch loads (it may be in C++: exit at once), not a traceback
if __name__ == "__main__":
    signal.signal(signal.SIGINT,
                  lambda signum, frame: (os.write(2, b"interrupted while starting\n"),
                                         os._exit(130)))

import torch
from torch import nn

import loss as objective
import metric
import runs
import shapes
import sweep
from model import BetaVAE, check_architecture
from runs import UsageError, positive_float, positive_int, seed_arg

DATASET_DEFAULTS = {  # Table 1 and A.1
    "shapes": {"arch": "fc", "latents": 10, "optimizer": "adagrad", "lr": 1e-2,
               "likelihood": "bernoulli"},
    "dsprites": {"arch": "fc", "latents": 10, "optimizer": "adagrad", "lr": 1e-2,
                 "likelihood": "bernoulli"},
    "folder": {"arch": "conv", "latents": 32, "optimizer": "adam", "lr": 1e-4,
               "likelihood": "bernoulli"},
}
DEFAULT_STEPS = 300_000
RESUME_FLAGS = {"steps", "resume", "out", "device", "threads", "time_limit"}  # the rest: as saved
CPU_RECIPE = "python train.py --optimizer adam --lr 1e-3 --batch-size 256 --bf16 --steps 3000"


class Trainer:
    """The model, its optimizer and the batch source of one run; `step` is one gradient
    step of Eq. 4.

    baselines.py subclasses it for DC-IGN and InfoGAN, to share the seeding, the checkpoint
    state and `train`'s loop.
    """

    def __init__(self, config: dict, device: torch.device):
        self.device = device
        self.source = shapes.make_source(config, device)
        self.config = {**config,
                       "channels": getattr(self.source, "channels", config.get("channels"))}
        self.data_generator = torch.Generator().manual_seed(config["seed"])
        self.model, self.noise, self.cpu_state = runs.seeded_init(config["seed"],
                                                                  self.make_model, device)
        self.optimizer = make_optimizer(config["optimizer"], self.model.parameters(), config["lr"])
        self.step_count = 0
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=config["bf16"])

    def step(self) -> dict[str, torch.Tensor]:
        """One gradient step on a fresh batch; returns the loss parts, detached."""
        c = self.config
        x, _ = self.source.sample(c["batch_size"], self.data_generator)  # (B, C, 64, 64)
        with self.autocast:
            output, mu, logvar = self.model(x, self.noise)  # z = mu + sigma * eps, decoded
        parts = objective.beta_vae_loss(output.float(), x, mu.float(), logvar.float(), c["beta"],
                                        c["likelihood"])  # Eq. 4
        if c["capacity_max"] is not None:  # a departure: Burgess et al.'s capacity
            capacity = objective.capacity_at(self.step_count, c["capacity_max"],
                                             c["capacity_steps"])
            parts["loss"] = objective.capacity_loss(parts, c["gamma"], capacity)
        self.optimizer.zero_grad(set_to_none=True)
        parts["loss"].backward()
        self.optimizer.step()
        self.step_count += 1
        return {k: v.detach() for k, v in parts.items()}

    def make_model(self) -> nn.Module:
        """The network this trainer fits; baselines.py's trainers give theirs."""
        return BetaVAE(self.config["arch"], self.config["latents"], self.config["channels"])

    def report(self, mean: dict[str, torch.Tensor]) -> tuple[str, dict[str, float]]:
        return vae_report(mean)

    def state(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "step": self.step_count,
                "rng": runs.rng_state(self.noise, self.data_generator, self.cpu_state),
                "config": self.config}

    def load_state(self, ckpt: dict) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.step_count = ckpt["step"]
        runs.set_rng_state(ckpt["rng"], self.noise, self.data_generator)


def train(config: dict, out: str, device: torch.device, resume: bool = False,
          trainer: Trainer | None = None, time_limit: float | None = None,
          stop: runs.Stop | None = None,
          score: Callable[[nn.Module], float] | None = None) -> None:
    """Step `trainer` (a Trainer by default) to config["steps"]: the training loop.

    runs.Stop notes Ctrl-C, SIGTERM and the time limit, and the loop stops between two steps (the
    protocol passes one `stop` for all its replicas); runs.Run writes the log rows, the --eval-every
    scores (metric.training_score unless `score` is given) and the checkpoints as they fall due, and
    a last checkpoint on leaving. With `resume` the run continues from the checkpoint at `out`.
    """
    print(f"training {out} to step {config['steps']:,} on {device} "
          f"({torch.get_num_threads()} CPU threads), "
          f"batch {config['batch_size']}; the log goes to {runs.log_path(out)}", flush=True)
    trainer = trainer or Trainer(config, device)
    score = score or functools.partial(metric.training_score, device=device)
    with (nullcontext(stop) if stop else runs.Stop(time_limit) as stop,
          runs.Run(stop, trainer, config, out, resume, score) as run):
        while trainer.step_count < config["steps"] and not stop.requested():
            parts = trainer.step()  # Eq. 4
            run.record(parts)  # the log row, score and checkpoint that fall on this step


def make_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr)
    # The fused kernels update each tensor in one pass, which speeds up a CPU step
    # (README, "Speed").
    optimizer = {"adagrad": torch.optim.Adagrad, "adam": torch.optim.Adam}[name]
    return optimizer(params, lr=lr, fused=True)


def vae_report(mean: dict[str, torch.Tensor]) -> tuple[str, dict[str, float]]:
    """The progress line's numbers and the CSV fields, from the mean of a β-VAE step's parts."""
    kl_latent = mean["kl_per_latent"].cpu()
    active = int((kl_latent > objective.ACTIVE_KL).sum())
    text = (f"loss {mean['loss']:.2f} recon {mean['recon']:.2f} kl {mean['kl']:.2f} | "
            f"active {active}/{len(kl_latent)}")
    fields = {"loss": mean["loss"].item(), "recon": mean["recon"].item(), "kl": mean["kl"].item(),
              "active": active, **{f"kl_{i}": k for i, k in enumerate(kl_latent.tolist())}}
    return text, fields


# ---------------------------------------------------------------- the command line

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__)
    p.add_argument("--dataset", default="shapes", choices=sorted(DATASET_DEFAULTS),
                   help="shapes: rendered on the fly; dsprites: a real npz (--data); "
                        "folder: images (--data)")
    p.add_argument("--data", help="path of the dsprites npz or the image folder")
    p.add_argument("--beta", type=float, nargs="+", help="β of Eq. 4 (default 4); several: a grid")
    p.add_argument("--beta-norm", type=float, nargs="+",
                   help="normalised β of A.6, β·M/N; instead of --beta; several: a grid")
    p.add_argument("--arch", choices=("fc", "conv"),
                   help="Table 1 network (default: fc on shapes, conv on folders)")
    p.add_argument("--latents", type=positive_int, nargs="+",
                   help="number of latents M (default: 10 on shapes, 32 on folders); "
                        "several: a grid")
    p.add_argument("--likelihood", choices=("bernoulli", "gaussian"),
                   help="p(x|z) (default bernoulli; the paper uses gaussian for CelebA)")
    p.add_argument("--channels", type=int, choices=(1, 3),
                   help="folder images: 1 grey or 3 RGB (default: as the first image)")
    p.add_argument("--optimizer", choices=("adagrad", "adam", "rmsprop"),
                   help="default: adagrad on shapes, adam on folders")
    p.add_argument("--lr", type=positive_float,
                   help="learning rate (default: 1e-2 adagrad on shapes, 1e-4 adam on folders)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="batch size (default 64)")
    p.add_argument("--steps", type=positive_int,
                   help=f"training steps (default {DEFAULT_STEPS:,}; with --resume, the new total)")
    p.add_argument("--capacity-max", type=runs.non_negative_float,
                   help="departure: Burgess et al. 2018 capacity C_max in nats; "
                        "loss recon + γ|KL − C|")
    p.add_argument("--capacity-steps", type=positive_int, default=100_000,
                   help="steps over which C rises to C_max")
    p.add_argument("--gamma", type=runs.non_negative_float, default=1000.0,
                   help="γ of the capacity loss (default 1000)")
    p.add_argument("--subsample", nargs="+", metavar="FACTOR=SLICE",
                   help="A.8: train on part of the world, e.g. posX=::2 (every 2nd value) posX=:18")
    p.add_argument("--bf16", action="store_true",
                   help="departure: bfloat16 autocast for speed (fp32 by default)")
    p.add_argument("--seed", type=seed_arg, default=0,
                   help="seed of the weights, noise and batches (default 0)")
    p.add_argument("--device", help="cuda, mps or cpu (default: cuda, then mps, then cpu)")
    p.add_argument("--out", help="checkpoint path, the CSV log beside it (default ckpt.pt); "
                                 "for the protocol a folder (default runs)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run saved at --out, with its settings "
                        "(only --steps may change)")
    p.add_argument("--overwrite", action="store_true", help="start again at an --out holding a run")
    p.add_argument("--log-every", type=positive_int, default=500,
                   help="steps between progress lines and CSV rows")
    p.add_argument("--save-every", type=positive_int, default=5000,
                   help="steps between checkpoints (default 5,000)")
    p.add_argument("--save-minutes", type=positive_float, default=runs.SAVE_MINUTES,
                   help=f"minutes of training between checkpoints, whichever of the two comes "
                        f"first (default {runs.SAVE_MINUTES:g})")
    p.add_argument("--eval-every", type=positive_int,
                   help="steps between disentanglement scores (metric.py defaults) in the CSV; "
                        "each encodes the whole set")
    p.add_argument("--threads", type=positive_int,
                   help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--time-limit", type=positive_float, metavar="SECONDS",
                   help="stop (and save, as on Ctrl-C) after this long; --resume continues")
    p.add_argument("--benchmark", action="store_true",
                   help="print training samples/s at batch 64 and 256")
    sweep.add_arguments(p)
    return p


def check_eval_every(eval_every: int | None, log_every: int) -> None:
    """--eval-every's scores go into the log's rows, so it must fall on them."""
    if eval_every and eval_every % log_every:
        raise UsageError("--eval-every must be a multiple of --log-every: "
                         "scores go into the log's rows")


def make_config(args: argparse.Namespace) -> dict:
    """The full run config from the flags, with the paper's defaults for the dataset."""
    args = argparse.Namespace(**{**vars(args), **one_value_each(vars(args))})
    defaults = DATASET_DEFAULTS[args.dataset]
    config = {k: getattr(args, k) if getattr(args, k) is not None else v
              for k, v in defaults.items()}
    if args.beta is not None and args.beta_norm is not None:
        raise UsageError("give --beta or --beta-norm, not both")
    channels = 1 if args.dataset != "folder" else args.channels  # None: as the folder's first image
    if args.beta_norm is not None:
        beta = objective.beta_from_normalised(args.beta_norm, config["latents"],
                                              (channels or 3) * 64 * 64)
    else:
        beta = 4.0 if args.beta is None else args.beta
    if beta < 0 or not math.isfinite(beta):
        raise UsageError(f"β must be a finite number ≥ 0, got {beta}")
    if args.eval_every and args.dataset == "folder":
        raise UsageError("--eval-every needs the 2D shapes: the metric fixes their factors")
    check_eval_every(args.eval_every, args.log_every)
    config.update(dataset=args.dataset, data=args.data, beta=beta, beta_norm=args.beta_norm,
                  channels=channels, batch_size=args.batch_size,
                  steps=args.steps or DEFAULT_STEPS, seed=args.seed,
                  capacity_max=args.capacity_max, capacity_steps=args.capacity_steps,
                  gamma=args.gamma, bf16=args.bf16, subsample=args.subsample,
                  log_every=args.log_every,
                  save_every=args.save_every, save_minutes=args.save_minutes,
                  eval_every=args.eval_every)
    return config


def one_value_each(flags: dict) -> dict:
    """--beta, --beta-norm and --latents as one number each, as a run's config holds them;
    UsageError for several, which train a grid (train_protocol) whose replicas take one each."""
    one = {}
    for key in ("beta", "beta_norm", "latents"):
        if isinstance(flags.get(key), list):
            if len(flags[key]) > 1:
                raise UsageError(f"one --{key.replace('_', '-')} per run; several train a grid")
            one[key] = flags[key][0]
    return one


def flags_given(argv: list[str] | None = None) -> dict:
    """The flags typed on the command line, by dest; a grid flag of one value as a number, as the
    config holds it."""
    given = runs.flags_given(build_parser(), argv)
    return {k: v[0] if k in sweep.GRID_FLAGS and isinstance(v, list) and len(v) == 1 else v
            for k, v in given.items()}


def resumed_config(out: str, given: dict) -> dict:
    """The config of the run at `out`, with a new --steps; UsageError for a flag that would
    change it."""
    config = runs.read_resume_checkpoint(out)["config"]
    if "baseline" in config:
        raise UsageError(f"--resume: {out} is baselines.py's {config['baseline']} checkpoint: "
                         f"continue it with python baselines.py --train {config['baseline']} "
                         f"--out {out} --resume")
    check_architecture(config, out)
    runs.check_same_settings(out, config, given, RESUME_FLAGS)
    if given.get("steps"):
        config["steps"] = given["steps"]
    return config


def train_one(args: argparse.Namespace, device: torch.device) -> None:
    """One run into --out (ckpt.pt by default): started, continued (--resume) or started again
    (--overwrite)."""
    out = args.out if args.out is not None else "ckpt.pt"
    with runs.claim_out(out, args.resume, args.overwrite):
        if args.resume:
            config = resumed_config(out, flags_given())
        else:
            config = make_config(args)
            runs.settle_bf16(config, device)
            if (device.type == "cpu" and config["steps"] == DEFAULT_STEPS
                    and config["dataset"] != "folder"):
                print(f"the paper's {DEFAULT_STEPS:,} steps take hours on a CPU "
                      f"(the ETA below is this machine's); "
                      f"a disentangled model in minutes, the CPU recipe: {CPU_RECIPE}", flush=True)
        train(config, out, device, resume=args.resume, time_limit=args.time_limit)


def main() -> None:
    args = build_parser().parse_args()
    with runs.cli_errors("train.py",
                         interrupted="interrupted before the first step; nothing saved"):
        runs.set_threads(args.threads)
        device = runs.pick_device(args.device)
        if args.benchmark:
            import stacked  # the speed path has a file of its own
            stacked.benchmark(make_config(args), device, Trainer)
        elif sweep.is_grid(args):
            train_protocol(args, device)
        else:
            train_one(args, device)


# ---------------------------------------------------------- grids: the protocol (A.4), the sweep

def train_protocol(args: argparse.Namespace, device: torch.device) -> None:
    """Every replica of the grid (sweep.py) into the folder --out, or --replica-index's alone:
    stacked on CUDA, one after another on a CPU. A replica whose checkpoint exists is continued
    under --resume; one without starts."""
    grid = sweep.replicas(args)
    folder = Path(args.out if args.out is not None else "runs")
    if args.list:
        for i, replica in enumerate(grid):
            print(f"{i:>4}  {sweep.replica_path(str(folder), replica, grid)}  "
                  f"{sweep.describe(replica)}")
        return
    if folder.suffix == ".pt" or (folder.exists() and not folder.is_dir()):
        raise UsageError(f"--out {folder}: "
                         f"the protocol writes a checkpoint per replica into a folder")
    folder.mkdir(parents=True, exist_ok=True)
    todo = [grid[i] for i in sweep.chosen(grid, args.replica_index)]
    outs = [sweep.replica_path(str(folder), replica, grid) for replica in todo]
    given = {k: v for k, v in flags_given().items() if k not in sweep.GRID_FLAGS}
    stack = args.stack == "yes" or (args.stack == "auto" and device.type == "cuda")
    with ExitStack() as locks:
        configs, resumes = [], []
        for replica, out in zip(todo, outs):
            locks.enter_context(runs.claim_out(out, args.resume, args.overwrite))
            resume = args.resume and Path(out).exists()
            configs.append(resumed_config(out, given) if resume else make_config(
                argparse.Namespace(**{**vars(args), "beta": None, "beta_norm": None, **replica})))
            resumes.append(resume)
        fresh = [c for c, resume in zip(configs, resumes) if not resume]
        if fresh:
            runs.settle_bf16(fresh[0], device)
            for c in fresh[1:]:
                c.update(bf16=fresh[0]["bf16"])
        print(f"protocol: {len(outs)} replicas ({grid_axes(todo)}) into {folder}/, "
              f"{'stacked' if stack else 'one after another'} on {device}", flush=True)
        if stack:
            if len(set(resumes)) > 1:
                raise UsageError("--resume of stacked replicas needs a checkpoint for every "
                                 "replica or for none; give --stack no")
            import stacked
            stacked.train_stacked([Trainer(c, device) for c in configs], outs, resumes[0],
                                  args.time_limit)
            return
        # one for every replica: a stop ends the protocol, not a replica
        with runs.Stop(args.time_limit) as stop:
            for config, out, resume in zip(configs, outs, resumes):
                if stop.requested():
                    print("the replicas not started yet start with --resume")
                    break
                train(config, out, device, resume=resume, stop=stop)


def grid_axes(todo: list[dict]) -> str:
    """The values each axis of the grid takes, as "β 1, 4 × seeds 0, 1"."""
    axes = [("beta", "β"), ("beta_norm", "β_norm"), ("latents", "M"), ("seed", "seeds")]
    return " × ".join(f"{label} " + ", ".join(f"{v:g}" for v in dict.fromkeys(values))
                      for key, label in axes
                      if None not in (values := [r.get(key) for r in todo]))


if __name__ == "__main__":
    main()
