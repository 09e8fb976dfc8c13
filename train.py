"""Train a β-VAE (Higgins et al., ICLR 2017): maximise Eq. 4 with the Table 1 networks.

    python train.py --beta 4 --dataset shapes                    # the paper's 2D-shapes recipe
    python train.py --beta 4 --steps 2000 --out quick.pt          # a few CPU minutes
    python train.py --dataset folder --data DIR --beta 4          # CelebA, chairs, faces (conv)
    python train.py --out quick.pt --resume                       # continue a stopped run
    python train.py --benchmark                                   # training samples/s

Defaults are the paper's (A.1, Table 1): on shapes the FC network, 10 latents, Bernoulli
likelihood, Adagrad lr 1e-2, batch 64; on image folders the conv network, 32 latents,
Adam lr 1e-4. Shapes are rendered on the fly by shapes.py, so every batch is fresh and
memory stays flat. One progress line per --log-every steps; the same numbers, with the KL of
every latent, go to a CSV beside the checkpoint. Checkpoints are one dict (model, optimizer,
step, RNG states, config), written atomically every --save-every steps, on Ctrl-C and at
the end; --resume continues with the same batches and numbers as an unbroken run.
"""

import argparse
import csv
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

import loss as objective
import shapes
from model import BetaVAE, CheckpointError, pick_device, read_checkpoint

DATASET_DEFAULTS = {  # Table 1 and A.1
    "shapes": {"arch": "fc", "latents": 10, "optimizer": "adagrad", "lr": 1e-2, "likelihood": "bernoulli"},
    "dsprites": {"arch": "fc", "latents": 10, "optimizer": "adagrad", "lr": 1e-2, "likelihood": "bernoulli"},
    "folder": {"arch": "conv", "latents": 32, "optimizer": "adam", "lr": 1e-4, "likelihood": "bernoulli"},
}
DEFAULT_STEPS = 300_000
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
ACTIVE_KL = 0.1  # nats: a latent whose mean KL is above this carries information


class UsageError(Exception):
    """Bad input from the user: reported as one line, never a traceback."""


class ImageFolder:
    """Every image under a folder, resized to 64×64 with pillow, held as uint8 in memory."""

    def __init__(self, root: str, device: torch.device | str = "cpu", channels: int | None = None):
        from PIL import Image, UnidentifiedImageError

        if not Path(root).is_dir():
            raise UsageError(f"--data {root} is not a folder")
        files = sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise UsageError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {root}")
        if channels is None:  # grey folders (chairs, faces) stay one channel
            with Image.open(files[0]) as first:
                channels = 1 if first.mode in ("1", "L", "I;16", "I") else 3
        mode = "L" if channels == 1 else "RGB"
        images = np.empty((len(files), 64, 64, channels), dtype=np.uint8)
        for i, f in enumerate(files):
            try:
                with Image.open(f) as im:
                    im = im.convert(mode).resize((64, 64), Image.BILINEAR)
            except (OSError, UnidentifiedImageError):
                raise UsageError(f"cannot read image {f}") from None
            images[i] = np.asarray(im).reshape(64, 64, channels)
        self.images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # (N, C, 64, 64)
        self.channels = channels
        self.device = torch.device(device)

    def images_at(self, rows: torch.Tensor) -> torch.Tensor:
        """The images of these rows as floats in [0, 1] on the device: (n, C, 64, 64)."""
        return self.images[rows].to(self.device).float().div_(255)

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, None]:
        return self.images_at(torch.randint(len(self.images), (n,), generator=generator)), None


def make_source(config: dict, device: torch.device):
    """The batch source for a config: anything with sample(n, generator) -> (x, classes)."""
    if config["dataset"] == "shapes":
        return shapes.Shapes(device)
    if not config.get("data"):
        raise UsageError(f"--dataset {config['dataset']} needs --data PATH")
    if config["dataset"] == "dsprites":
        try:
            return shapes.DSpritesNpz(config["data"], device)
        except ValueError as e:
            raise UsageError(str(e)) from None
    return ImageFolder(config["data"], device, config.get("channels"))


def make_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr)
    # The fused kernels update each tensor in one pass: 1.25x training speed on CPU at batch 64.
    optimizer = {"adagrad": torch.optim.Adagrad, "adam": torch.optim.Adam}[name]
    return optimizer(params, lr=lr, fused=True)


def rng_state(data_generator: torch.Generator) -> dict:
    state = {"torch": torch.get_rng_state(), "data": data_generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, data_generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    data_generator.set_state(state["data"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str, state: dict) -> None:
    """Write to a temp file, then rename: a crash mid-save never leaves a broken checkpoint."""
    tmp = f"{path}.tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def read_resume_checkpoint(path: str) -> dict:
    """The checkpoint dict to continue from; UsageError if it is missing or not a train.py one."""
    try:
        ckpt = read_checkpoint(path)
    except CheckpointError as e:
        raise UsageError(f"--resume: {e}") from None
    if not {"optimizer", "step", "rng"} <= ckpt.keys():
        raise UsageError(f"--resume: {path} is not a train.py checkpoint")
    return ckpt


class Trainer:
    """The model, its optimizer and the batch source of one run, stepped by `step`.

    baselines.py subclasses it for DC-IGN and InfoGAN, to share the seeding, the checkpoint
    state and `train`'s loop.
    """

    def __init__(self, config: dict, device: torch.device):
        self.config = config
        self.device = device
        self.source = make_source(config, device)
        if hasattr(self.source, "channels"):
            config["channels"] = self.source.channels
        torch.manual_seed(config["seed"])
        self.data_generator = torch.Generator().manual_seed(config["seed"])
        self.model = self.make_model().to(device)
        self.optimizer = make_optimizer(config["optimizer"], self.model.parameters(), config["lr"])
        self.step_count = 0
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=config["bf16"])

    def make_model(self) -> torch.nn.Module:
        """The network this trainer fits; baselines.py's trainers give theirs."""
        return BetaVAE(self.config["arch"], self.config["latents"], self.config["channels"])

    def state(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "step": self.step_count, "rng": rng_state(self.data_generator), "config": self.config}

    def load_state(self, ckpt: dict) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.step_count = ckpt["step"]
        set_rng_state(ckpt["rng"], self.data_generator)

    def step(self) -> dict[str, torch.Tensor]:
        """One gradient step on a fresh batch; returns the loss parts, detached."""
        c = self.config
        x, _ = self.source.sample(c["batch_size"], self.data_generator)  # (B, C, 64, 64)
        with self.autocast:
            output, mu, logvar = self.model(x)
        parts = objective.beta_vae_loss(output.float(), x, mu.float(), logvar.float(), c["beta"], c["likelihood"])
        if c["capacity_max"] is not None:
            capacity = objective.capacity_at(self.step_count, c["capacity_max"], c["capacity_steps"])
            parts["loss"] = objective.capacity_loss(parts, c["gamma"], capacity)
        self.optimizer.zero_grad(set_to_none=True)
        parts["loss"].backward()
        self.optimizer.step()
        self.step_count += 1
        return {k: v.detach() for k, v in parts.items()}

    def report(self, mean: dict[str, torch.Tensor]) -> tuple[str, dict[str, float]]:
        """The progress line's numbers and the CSV fields, from the mean of step()'s parts."""
        kl_latent = mean["kl_per_latent"].cpu()
        active = int((kl_latent > ACTIVE_KL).sum())
        text = (f"loss {mean['loss']:.2f} recon {mean['recon']:.2f} kl {mean['kl']:.2f} | "
                f"active {active}/{len(kl_latent)}")
        fields = {"loss": mean["loss"].item(), "recon": mean["recon"].item(), "kl": mean["kl"].item(),
                  "active": active, **{f"kl_{i}": k for i, k in enumerate(kl_latent.tolist())}}
        return text, fields


def train(config: dict, out: str, device: torch.device, resume: bool = False, trainer=None) -> None:
    """Step `trainer` (a Trainer by default) to config["steps"], logging, scoring and checkpointing.

    Any object with step() -> dict of scalar tensors, report(mean) -> (text, CSV fields),
    state(), load_state(ckpt), a `model` with encode_mu and `step_count` can be trained here:
    baselines.py trains DC-IGN and InfoGAN through this loop.
    """
    trainer = trainer or Trainer(config, device)
    if threading.current_thread() is threading.main_thread():
        # A shell that starts a job in the background (`nohup ... &`) makes it ignore SIGINT,
        # and then Python never raises KeyboardInterrupt: restore it, so that Ctrl-C or
        # `kill -INT` always saves a checkpoint.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if resume:
        ckpt = read_resume_checkpoint(out)
        trainer.load_state(ckpt)
        print(f"resumed {out} at step {trainer.step_count:,}", flush=True)
    total = config["steps"]
    log_path = str(Path(out).with_suffix(".csv"))
    eval_every = config.get("eval_every")
    seconds_before = ckpt.get("seconds", 0.0) if resume else 0.0
    new_log = not (resume and Path(log_path).exists() and Path(log_path).stat().st_size > 0)
    last_good = trainer.step_count if resume else None
    eval_seconds = 0.0  # time spent scoring, left out of the training time in the log

    def train_seconds() -> float:
        return seconds_before + time.perf_counter() - start - eval_seconds

    def save() -> None:
        nonlocal last_good
        save_checkpoint(out, {**trainer.state(), "seconds": train_seconds()})
        last_good = trainer.step_count

    with open(log_path, "w" if new_log else "a", newline="") as log_file:
        log = csv.writer(log_file)
        start = time.perf_counter()
        interval_start, interval_step = start, trainer.step_count
        sums: dict[str, torch.Tensor] = {}
        try:
            while trainer.step_count < total:
                parts = trainer.step()
                for k, v in parts.items():
                    sums[k] = sums[k] + v if k in sums else v
                step = trainer.step_count
                if step % config["log_every"] == 0 or step == total:
                    n = step - interval_step
                    mean = {k: v / n for k, v in sums.items()}
                    if not all(torch.isfinite(v).all() for v in mean.values()):
                        kept = f"the last good checkpoint (step {last_good:,}) is kept" if last_good is not None \
                            else "no checkpoint was written"
                        raise UsageError(f"loss became NaN between steps {interval_step:,} and {step:,}; "
                                         f"{kept}; try a smaller --lr")
                    now = time.perf_counter()
                    rate = n * config["batch_size"] / (now - interval_start)
                    eta = (total - step) * config["batch_size"] / rate
                    text, fields = trainer.report(mean)
                    print(f"step {step:,}/{total:,} | {rate:,.0f} samples/s | {text} | ETA {format_seconds(eta)}",
                          flush=True)
                    if new_log:
                        log.writerow(["step", "samples", "seconds", *fields] + (["score"] if eval_every else []))
                        new_log = False
                    row = [step, step * config["batch_size"], f"{train_seconds():.1f}"]
                    row += [f"{v:.4f}" if isinstance(v, float) else v for v in fields.values()]
                    if eval_every:
                        score = ""
                        if step % eval_every == 0 or step == total:
                            t = time.perf_counter()
                            score = f"{disentanglement(trainer.model, device):.4f}"
                            eval_seconds += time.perf_counter() - t
                            print(f"step {step:,}: disentanglement score {float(score):.2%} "
                                  f"({time.perf_counter() - t:.0f} s)", flush=True)
                        row.append(score)
                    log.writerow(row)
                    log_file.flush()
                    sums, interval_start, interval_step = {}, time.perf_counter(), step
                    if step % config["save_every"] == 0 and step < total:
                        save()
        except KeyboardInterrupt:
            if sums and not all(torch.isfinite(v).all() for v in sums.values()):
                raise UsageError("interrupted after the loss became NaN; the last good checkpoint is kept")
            save()
            print(f"\ninterrupted at step {trainer.step_count:,}: saved {out}; "
                  f"continue with the same command and --resume", file=sys.stderr)
            sys.exit(130)
        save()
    print(f"wrote {out} (step {trainer.step_count:,}) and {log_path}")


def disentanglement(model: torch.nn.Module, device: torch.device) -> float:
    """The Sec. 3 score at metric.py's defaults, for --eval-every; the model in eval mode meanwhile,
    and the random state of training as it was.

    Imported here, not at the top, so that train.py needs metric.py only when scoring.
    """
    import metric

    model.eval()
    # Scoring draws random numbers (the classifier's init): without the fork, a run with
    # --eval-every would train on other noise than the same run without it.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        try:
            return metric.disentanglement_score(metric.encode_all(metric.model_encoder(model), device))
        finally:
            model.train()


def format_seconds(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def benchmark(config: dict, device: torch.device, seconds: float = 4.0) -> None:
    """Training samples/s with data, vs the machine's matmul rate and a plain DataLoader loop."""
    from torch.utils.data import DataLoader, TensorDataset
    from torch.utils.flop_counter import FlopCounterMode

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def rate(step_fn, batch_size: int) -> float:
        for _ in range(3):
            step_fn()
        sync()
        n, t = 0, time.perf_counter()
        while time.perf_counter() - t < seconds:
            step_fn()
            n += batch_size
        sync()
        return n / (time.perf_counter() - t)

    dtype = torch.bfloat16 if config["bf16"] else torch.float32
    a = torch.randn(2048, 2048, device=device, dtype=dtype)
    matmul = rate(lambda: a @ a, 1) * 2 * 2048 ** 3 / 1e9  # GFLOP/s
    print(f"device {device}, {torch.get_num_threads()} threads, {config['arch']} model, "
          f"{'bf16 autocast' if config['bf16'] else 'fp32'}; 2048² matmul: {matmul:,.0f} GFLOP/s")
    # The plain loop's data: images rendered once into memory, as peers load dSprites.
    pool = shapes.render(shapes.sample_factors(20000, torch.Generator().manual_seed(0)), dtype=torch.uint8)
    for batch_size in (64, 256):
        trainer = Trainer({**config, "batch_size": batch_size}, device)
        with FlopCounterMode(display=False) as counter:
            trainer.step()
        flops = counter.get_total_flops() / batch_size
        ours = rate(trainer.step, batch_size)

        plain = Trainer({**config, "batch_size": batch_size}, device)
        batches = iter(())
        loader = DataLoader(TensorDataset(pool), batch_size=batch_size, shuffle=True, drop_last=True)

        def plain_step() -> None:
            nonlocal batches
            try:
                (x,) = next(batches)
            except StopIteration:
                batches = iter(loader)
                (x,) = next(batches)
            x = x.to(device).float()
            output, mu, logvar = plain.model(x)
            parts = objective.beta_vae_loss(output, x, mu, logvar, config["beta"], config["likelihood"])
            plain.optimizer.zero_grad()
            parts["loss"].backward()
            plain.optimizer.step()

        baseline = rate(plain_step, batch_size)
        achieved = ours * flops / 1e9
        print(f"batch {batch_size}: {ours:,.0f} samples/s with rendering | {achieved:,.0f} GFLOP/s = "
              f"{achieved / matmul:.0%} of matmul | plain DataLoader loop {baseline:,.0f} samples/s, "
              f"ours {ours / baseline:.2f}x")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--dataset", default="shapes", choices=sorted(DATASET_DEFAULTS),
                   help="shapes: rendered on the fly; dsprites: a real npz (--data); folder: images (--data)")
    p.add_argument("--data", help="path of the dsprites npz or the image folder")
    p.add_argument("--beta", type=float, help="β of Eq. 4 (default 4)")
    p.add_argument("--beta-norm", type=float, help="normalised β of A.6, β·M/N; instead of --beta")
    p.add_argument("--arch", choices=("fc", "conv"), help="Table 1 network (default: fc on shapes, conv on folders)")
    p.add_argument("--latents", type=int, help="number of latents M (default: 10 on shapes, 32 on folders)")
    p.add_argument("--likelihood", choices=("bernoulli", "gaussian"),
                   help="p(x|z) (default bernoulli; the paper uses gaussian for CelebA)")
    p.add_argument("--channels", type=int, choices=(1, 3), help="folder images: 1 grey or 3 RGB (default: as the first image)")
    p.add_argument("--optimizer", choices=("adagrad", "adam", "rmsprop"),
                   help="default: adagrad on shapes, adam on folders")
    p.add_argument("--lr", type=float, help="learning rate (default: 1e-2 adagrad on shapes, 1e-4 adam on folders)")
    p.add_argument("--batch-size", type=int, default=64, help="images per step (default 64)")
    p.add_argument("--steps", type=int, help=f"training steps (default {DEFAULT_STEPS:,}; with --resume, the new total)")
    p.add_argument("--capacity-max", type=float,
                   help="departure: Burgess et al. 2018 capacity C_max in nats; loss recon + γ|KL − C|")
    p.add_argument("--capacity-steps", type=int, default=100_000, help="steps over which C rises to C_max")
    p.add_argument("--gamma", type=float, default=1000.0, help="γ of the capacity loss (default 1000)")
    p.add_argument("--bf16", action="store_true", help="departure: bfloat16 autocast for speed (fp32 by default)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights, noise and batches (default 0)")
    p.add_argument("--device", help="cuda, mps or cpu (default: cuda, then mps, then cpu)")
    p.add_argument("--out", default="ckpt.pt", help="checkpoint path; the CSV log goes beside it (default ckpt.pt)")
    p.add_argument("--resume", action="store_true", help="continue the run saved at --out")
    p.add_argument("--log-every", type=int, default=500, help="steps between progress lines and CSV rows")
    p.add_argument("--save-every", type=int, default=5000, help="steps between checkpoints")
    p.add_argument("--eval-every", type=int,
                   help="steps between disentanglement scores (metric.py defaults) in the CSV; ~30 s each on a CPU")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--benchmark", action="store_true", help="print training samples/s at batch 64 and 256")
    return p


def check_eval_every(eval_every: int | None, log_every: int) -> None:
    """--eval-every's scores go into the log's rows, so it must fall on them."""
    if eval_every and eval_every % log_every:
        raise UsageError("--eval-every must be a multiple of --log-every: scores go into the log's rows")


def make_config(args: argparse.Namespace) -> dict:
    """The full run config from the flags, with the paper's defaults for the dataset."""
    defaults = DATASET_DEFAULTS[args.dataset]
    config = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in defaults.items()}
    if args.beta is not None and args.beta_norm is not None:
        raise UsageError("give --beta or --beta-norm, not both")
    channels = 1 if args.dataset != "folder" else args.channels  # None: as the folder's first image
    if args.beta_norm is not None:
        beta = objective.beta_from_normalised(args.beta_norm, config["latents"], (channels or 3) * 64 * 64)
    else:
        beta = 4.0 if args.beta is None else args.beta
    if beta < 0 or not math.isfinite(beta):
        raise UsageError(f"β must be a finite number ≥ 0, got {beta}")
    for flag in ("latents", "batch_size", "steps", "log_every", "save_every", "eval_every"):
        if getattr(args, flag) is not None and getattr(args, flag) <= 0:
            raise UsageError(f"--{flag.replace('_', '-')} must be positive")
    if config["lr"] <= 0:
        raise UsageError("--lr must be positive")
    if args.eval_every and args.dataset == "folder":
        raise UsageError("--eval-every needs the 2D shapes: the metric fixes their factors")
    check_eval_every(args.eval_every, args.log_every)
    config.update(dataset=args.dataset, data=args.data, beta=beta, channels=channels,
                  batch_size=args.batch_size, steps=args.steps or DEFAULT_STEPS, seed=args.seed,
                  capacity_max=args.capacity_max, capacity_steps=args.capacity_steps, gamma=args.gamma,
                  bf16=args.bf16, log_every=args.log_every, save_every=args.save_every,
                  eval_every=args.eval_every)
    return config


def main() -> None:
    args = build_parser().parse_args()
    try:
        if args.threads:
            torch.set_num_threads(args.threads)
        device = pick_device(args.device)
        if args.resume:
            config = read_resume_checkpoint(args.out)["config"]
            if args.steps:
                config["steps"] = args.steps
        else:
            config = make_config(args)
        if args.benchmark:
            benchmark(config, device)
            return
        train(config, args.out, device, resume=args.resume)
    except UsageError as e:
        print(f"train.py: error: {e}", file=sys.stderr)
        sys.exit(1)
    except (OSError, RuntimeError) as e:
        print(f"train.py: error: {str(e).splitlines()[0]}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
