"""Train a β-VAE (Higgins et al., ICLR 2017): maximise Eq. 4 with the Table 1 networks.

    python train.py --beta 4 --dataset shapes                    # the paper's 2D-shapes recipe
    python train.py --beta 4 --steps 2000 --out quick.pt          # a few CPU minutes
    python train.py --dataset folder --data DIR --beta 4          # CelebA, chairs, faces (conv)
    python train.py --out quick.pt --resume                       # continue a stopped run
    python train.py --beta 1 4 --seeds 0-9 --out runs/fig6        # the A.4 protocol: 20 replicas
    python train.py --benchmark                                   # training samples/s

Defaults are the paper's (A.1, Table 1): on shapes the FC network, 10 latents, Bernoulli
likelihood, Adagrad lr 1e-2, batch 64; on image folders the conv network, 32 latents,
Adam lr 1e-4. Shapes are rendered on the fly by shapes.py, so every batch is fresh and
memory stays flat. One progress line per --log-every steps; the same numbers, with the KL of
every latent, go to a CSV beside the checkpoint. Checkpoints are one dict (model, optimizer,
step, RNG states, config), written atomically every --save-every steps, on Ctrl-C or SIGTERM
and at the end; --resume continues with the same batches, numbers and log rows as an unbroken
run. An existing --out is continued (--resume) or started again (--overwrite), never
replaced silently; a lock file beside it keeps a second run off it. Several --beta values or
--seeds train every (β, seed) replica of the protocol (A.4), each an ordinary checkpoint:
stepped together as one stacked model on CUDA, one after another on a CPU.
"""

import argparse
import collections
import csv
import glob
import io
import math
import os
import platform
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import loss as objective
import metric
import shapes
from model import (BetaVAE, UsageError, cli_errors, pick_device, positive_float, positive_int, read_checkpoint,
                   seed_arg, set_threads)

DATASET_DEFAULTS = {  # Table 1 and A.1
    "shapes": {"arch": "fc", "latents": 10, "optimizer": "adagrad", "lr": 1e-2, "likelihood": "bernoulli"},
    "dsprites": {"arch": "fc", "latents": 10, "optimizer": "adagrad", "lr": 1e-2, "likelihood": "bernoulli"},
    "folder": {"arch": "conv", "latents": 32, "optimizer": "adam", "lr": 1e-4, "likelihood": "bernoulli"},
}
DEFAULT_STEPS = 300_000
BENCH_REPLICAS = 20  # the protocol's models (2 βs × 10 replicas, A.4), for --benchmark
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
ACTIVE_KL = 0.1  # nats: a latent whose mean KL is above this carries information
BF16_SLOWER = 0.9  # --bf16 falls back to fp32 below this speed-up: timing noise must not flip it
RESUME_FLAGS = {"steps", "resume", "out", "device", "threads", "time_limit"}  # all others come from the checkpoint
PROTOCOL_FLAGS = {"beta", "seed", "seeds", "stack"}  # each replica's own, or the protocol's
CPU_RECIPE = "python train.py --optimizer adam --lr 1e-3 --batch-size 256 --bf16 --steps 3000"  # ~10 CPU minutes


def open_image(path: Path):
    """pillow's image at `path`, opened lazily; UsageError for a file it cannot or will not read."""
    try:
        return Image.open(path)
    except Image.DecompressionBombError:  # pillow refuses images far larger than any data set's
        raise UsageError(f"image {path} is too large to read (over {2 * Image.MAX_IMAGE_PIXELS:,} pixels)") from None
    except (OSError, UnidentifiedImageError):
        raise UsageError(f"cannot read image {path}") from None


class ImageFolder:
    """Every image under a folder, resized to 64×64 with pillow, held as uint8 in memory."""

    def __init__(self, root: str, device: torch.device | str = "cpu", channels: int | None = None):
        if not Path(root).is_dir():
            raise UsageError(f"--data {root} is not a folder")
        files = sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise UsageError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {root}")
        if channels is None:  # grey folders (chairs, faces) stay one channel
            with open_image(files[0]) as first:
                channels = 1 if first.mode in ("1", "L", "I;16", "I") else 3
        mode = "L" if channels == 1 else "RGB"
        images = np.empty((len(files), 64, 64, channels), dtype=np.uint8)
        for i, f in enumerate(files):
            with open_image(f) as im:
                try:
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
        return dsprites_source(config["data"], device)
    return ImageFolder(config["data"], device, config.get("channels"))


def dsprites_source(path: str, device: torch.device) -> shapes.DSpritesNpz:
    """A dSprites npz as a batch source; UsageError unless it holds 0/1 images as DeepMind's."""
    try:
        return shapes.DSpritesNpz(path, device)
    except ValueError as e:
        raise UsageError(str(e)) from None


def make_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr)
    # The fused kernels update each tensor in one pass: 1.25x training speed on CPU at batch 64.
    optimizer = {"adagrad": torch.optim.Adagrad, "adam": torch.optim.Adam}[name]
    return optimizer(params, lr=lr, fused=True)


def seeded_init(seed: int, make_model, device: torch.device) -> tuple[nn.Module, torch.Generator, torch.Tensor]:
    """A run's model initialised from its seed, and the generator of its noise ε; the caller's
    random state is left as it was. On a CPU ε continues torch's CPU stream after the init, on CUDA
    it is the CUDA stream of the seed: the draws of `torch.manual_seed(seed)` then training with
    torch's global generators. Also the CPU stream's state after the init, which checkpoints keep."""
    with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
        torch.manual_seed(seed)
        model = make_model()
        cpu_state = torch.get_rng_state()
    noise = torch.Generator(device)
    if device.type == "cpu":
        noise.set_state(cpu_state)
    else:
        noise.manual_seed(seed)
    return model.to(device), noise, cpu_state


def rng_state(noise: torch.Generator, data: torch.Generator, cpu_state: torch.Tensor) -> dict:
    """The random state a checkpoint keeps: ε's generator and the batches'."""
    if noise.device.type == "cpu":
        return {"torch": noise.get_state(), "data": data.get_state()}
    return {"torch": cpu_state, "data": data.get_state(), "cuda": [noise.get_state()]}


def set_rng_state(state: dict, noise: torch.Generator, data: torch.Generator) -> None:
    noise.set_state(state["torch"] if noise.device.type == "cpu" else state["cuda"][noise.device.index or 0])
    data.set_state(state["data"])


def save_checkpoint(path: str, state: dict) -> None:
    """torch.save, atomically: a crash mid-save never leaves a broken checkpoint."""
    shapes.write_atomically(path, lambda f: torch.save(state, f))


def log_path(out: str) -> Path:
    """The CSV log beside a checkpoint."""
    return Path(out).with_suffix(".csv")


def check_out(out: str, resume: bool, overwrite: bool) -> None:
    """--out must be a checkpoint file path with room for the log beside it."""
    if not out:
        raise UsageError("--out is empty: give a checkpoint path such as ckpt.pt")
    if resume and overwrite:
        raise UsageError("give --resume (continue the run) or --overwrite (start again), not both")
    if Path(out).is_dir():
        raise UsageError(f"--out {out} is a folder: give a checkpoint file path such as {Path(out) / 'ckpt.pt'}")
    if log_path(out) == Path(out):
        raise UsageError(f"--out {out} would be overwritten by the CSV log: "
                         f"give the checkpoint another suffix, such as .pt")
    if not Path(out).parent.is_dir():
        raise UsageError(f"--out {out}: folder {Path(out).parent} does not exist")


def check_existing_run(out: str, resume: bool, overwrite: bool) -> None:
    """An existing run is continued or started again only when asked: never replaced by mistake."""
    found = [str(p) for p in (Path(out), log_path(out)) if p.exists()]
    if found and not (resume or overwrite):
        raise UsageError(f"--out {out} holds a run ({' and '.join(found)}): add --resume to continue it, "
                         f"or --overwrite to start again")


def lock_holder(lock: Path) -> str | None:
    """Who holds a lock file: 'PID n' (on host h) while that process lives, None if it is gone."""
    try:
        pid_text, _, host = lock.read_text().partition(" ")
        pid = int(pid_text)
    except (OSError, ValueError):  # being written this instant, or garbage
        return f"PID unknown; delete {lock} if no run uses it"
    host = host.strip()
    if host != socket.gethostname():  # its process cannot be checked from here
        return f"PID {pid} on {host}"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, another user's
        pass
    return f"PID {pid}"


@contextmanager
def out_lock(out: str) -> Iterator[None]:
    """Hold `<out>.lock` (PID and host) while training into `out`; a dead process's lock is taken over."""
    lock = Path(f"{out}.lock")
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            holder = lock_holder(lock)
            if holder is not None:
                raise UsageError(f"another run ({holder}) is training into {out}") from None
            lock.unlink(missing_ok=True)  # stale: its run was killed
    else:
        raise UsageError(f"cannot take the lock {lock}: other runs keep starting on {out}")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()} {socket.gethostname()}\n")
        # Temp files of a killed save; holding the lock, no other run is writing one.
        for path in (Path(out), log_path(out)):
            for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
                tmp.unlink(missing_ok=True)
        yield
    finally:
        lock.unlink(missing_ok=True)


def keep_log_rows(path: Path, last_step: int) -> None:
    """Drop the log's rows past `last_step`: a run killed after its last save wrote them, and the
    resumed run writes them again. A row cut short by the kill goes too."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    kept = rows[:1]
    for row in rows[1:]:
        if len(row) != len(rows[0]) or not row[0].isdigit() or int(row[0]) > last_step:
            break
        kept.append(row)
    if kept != rows:
        text = io.StringIO()
        csv.writer(text).writerows(kept)
        shapes.write_atomically(str(path), lambda f: f.write(text.getvalue().encode()))


def read_resume_checkpoint(path: str) -> dict:
    """The checkpoint dict to continue from; UsageError if it is missing or not a train.py one."""
    try:
        ckpt = read_checkpoint(path)
    except UsageError as e:
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
        self.device = device
        self.source = make_source(config, device)
        self.config = {**config, "channels": getattr(self.source, "channels", config.get("channels"))}
        self.data_generator = torch.Generator().manual_seed(config["seed"])
        self.model, self.noise, self.cpu_state = seeded_init(config["seed"], self.make_model, device)
        self.optimizer = make_optimizer(config["optimizer"], self.model.parameters(), config["lr"])
        self.step_count = 0
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=config["bf16"])

    def make_model(self) -> torch.nn.Module:
        """The network this trainer fits; baselines.py's trainers give theirs."""
        return BetaVAE(self.config["arch"], self.config["latents"], self.config["channels"])

    def state(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "step": self.step_count, "rng": rng_state(self.noise, self.data_generator, self.cpu_state),
                "config": self.config}

    def load_state(self, ckpt: dict) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.step_count = ckpt["step"]
        set_rng_state(ckpt["rng"], self.noise, self.data_generator)

    def step(self) -> dict[str, torch.Tensor]:
        """One gradient step on a fresh batch; returns the loss parts, detached."""
        c = self.config
        x, _ = self.source.sample(c["batch_size"], self.data_generator)  # (B, C, 64, 64)
        with self.autocast:
            output, mu, logvar = self.model(x, self.noise)
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
        return vae_report(mean)


def vae_report(mean: dict[str, torch.Tensor]) -> tuple[str, dict[str, float]]:
    """The progress line's numbers and the CSV fields, from the mean of a β-VAE step's parts."""
    kl_latent = mean["kl_per_latent"].cpu()
    active = int((kl_latent > ACTIVE_KL).sum())
    text = (f"loss {mean['loss']:.2f} recon {mean['recon']:.2f} kl {mean['kl']:.2f} | "
            f"active {active}/{len(kl_latent)}")
    fields = {"loss": mean["loss"].item(), "recon": mean["recon"].item(), "kl": mean["kl"].item(),
              "active": active, **{f"kl_{i}": k for i, k in enumerate(kl_latent.tolist())}}
    return text, fields


class StopRequests:
    """SIGINT and SIGTERM while training: the handler only notes the signal, and the loop reads
    it between two steps, so the checkpoint saved then is a state an unbroken run passes through.

    A second Ctrl-C stops at once, for a step that hangs; nothing is saved then.
    """

    def __init__(self):
        self.signum: int | None = None
        self.previous: dict[int, object] = {}

    def __enter__(self) -> "StopRequests":
        # Only the main thread may set handlers. Setting them also undoes the SIG_IGN that a shell
        # gives a background job (`nohup ... &`), so that `kill -INT` still saves.
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self.previous[signum] = signal.signal(signum, self.note)
        return self

    def note(self, signum: int, frame) -> None:
        if signum == signal.SIGINT and self.signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            if handler is not None:
                signal.signal(signum, handler)


def all_finite(tensors) -> bool:
    return all(torch.isfinite(t).all() for t in tensors if t.is_floating_point())


class Tally:
    """The sums of step()'s parts since the log's last row, at step `since`.

    Saved in every checkpoint, so that after --resume the next row averages the same steps,
    to the bit, as an unbroken run's.
    """

    def __init__(self, since: int, sums: dict[str, torch.Tensor] | None = None):
        self.since = since
        self.sums = sums or {}

    def add(self, parts: dict[str, torch.Tensor]) -> None:
        for k, v in parts.items():
            self.sums[k] = self.sums[k] + v if k in self.sums else v

    def mean(self, step: int) -> dict[str, torch.Tensor]:
        return {k: v / (step - self.since) for k, v in self.sums.items()}

    def state(self) -> dict:
        return {"since": self.since, "sums": self.sums}

    @classmethod
    def from_state(cls, state: dict | None, step: int, device: torch.device) -> "Tally":
        """The checkpoint's tally; an empty one at its step for a checkpoint written before tallies were saved."""
        if state is None:
            return cls(step)
        return cls(state["since"], {k: v.to(device) for k, v in state["sums"].items()})


class Run:
    """One run's bookkeeping around its trainer: log rows and scores, the NaN guard, checkpoints."""

    def __init__(self, trainer, config: dict, out: str, device: torch.device, log_file,
                 tally: Tally, seconds_before: float, resumed: bool, quiet: bool = False):
        self.trainer, self.config, self.out, self.device = trainer, config, out, device
        self.quiet = quiet  # the log rows without the progress lines: the protocol prints one line for all
        self.log_file, self.log = log_file, csv.writer(log_file)
        self.tally = tally
        self.last_good = trainer.step_count if resumed else None  # the step of the checkpoint at `out`
        self.seconds_before = seconds_before
        self.eval_seconds = 0.0  # time spent scoring, left out of the training time in the log
        self.start = self.interval_start = self.last_line = time.perf_counter()

    def seconds(self) -> float:
        """Training seconds of the whole run, earlier sessions included."""
        return self.seconds_before + time.perf_counter() - self.start - self.eval_seconds

    def kept(self) -> str:
        if self.last_good is None:
            return "no checkpoint was written"
        return f"the last checkpoint with finite weights (step {self.last_good:,}) is kept"

    def step(self) -> None:
        """One training step, then the log row and the checkpoint that fall on it."""
        self.record(self.trainer.step())

    def record(self, parts: dict[str, torch.Tensor]) -> None:
        """The loss parts of the step just taken; the log row and the checkpoint that fall on it."""
        self.tally.add(parts)
        step, c = self.trainer.step_count, self.config
        if step % c["log_every"] == 0 or step == c["steps"]:
            self.log_row(step)
        elif not self.quiet and time.perf_counter() - self.last_line >= shapes.PROGRESS_SECONDS:
            self.progress_line(step, self.trainer.report(self.tally.mean(step))[0])
        if step % c["save_every"] == 0 and step < c["steps"]:
            self.save()

    def progress_line(self, step: int, text: str) -> None:
        """The progress line of the steps since the log's last row, on stdout: at each row, and between
        rows often enough that no stretch of training is silent."""
        now, total, batch = time.perf_counter(), self.config["steps"], self.config["batch_size"]
        rate = (step - self.tally.since) * batch / (now - self.interval_start)
        print(f"step {step:,}/{total:,} | {rate:,.0f} samples/s | {text} | "
              f"ETA {format_seconds((total - step) * batch / rate)}", flush=True)
        self.last_line = now

    def log_row(self, step: int) -> None:
        """The progress line and the CSV row (with its score, under --eval-every) of the steps since the last."""
        c, total = self.config, self.config["steps"]
        mean = self.tally.mean(step)
        if not all_finite(mean.values()):
            raise UsageError(f"loss became NaN between steps {self.tally.since:,} and {step:,}; "
                             f"{self.kept()}; try a smaller --lr")
        text, fields = self.trainer.report(mean)
        if not self.quiet:
            self.progress_line(step, text)
        self.last_mean = mean  # for the protocol's one progress line
        if self.log_file.tell() == 0:
            self.log.writerow(["step", "samples", "seconds", *fields] + (["score"] if c.get("eval_every") else []))
        row = [step, step * c["batch_size"], f"{self.seconds():.1f}"]
        row += [f"{v:.4f}" if isinstance(v, float) else v for v in fields.values()]
        if c.get("eval_every"):
            row.append(self.score(step) if step % c["eval_every"] == 0 or step == total else "")
        self.log.writerow(row)
        self.log_file.flush()
        self.tally, self.interval_start = Tally(step), time.perf_counter()

    def score(self, step: int) -> str:
        t = time.perf_counter()
        score = disentanglement(self.trainer.model, self.device)
        self.eval_seconds += time.perf_counter() - t
        print(f"step {step:,}: disentanglement score {score:.2%} ({time.perf_counter() - t:.0f} s)", flush=True)
        return f"{score:.4f}"

    def save(self) -> None:
        """Checkpoint the state after the last whole step, if its weights are finite."""
        step, state = self.trainer.step_count, self.trainer.state()
        if not all_finite(state["model"].values()) or not all_finite(self.tally.sums.values()):
            raise UsageError(f"the weights or loss became NaN or infinite by step {step:,}; {self.kept()}; "
                             f"try a smaller --lr")
        try:
            save_checkpoint(self.out, {**state, "tally": self.tally.state(), "seconds": self.seconds()})
        except (OSError, RuntimeError) as e:
            kept = f"step {self.last_good:,} kept" if self.last_good is not None else "no checkpoint kept"
            raise UsageError(f"cannot write checkpoint (disk full?); {kept} ({str(e).splitlines()[0]})") from None
        self.last_good = step


def train(config: dict, out: str, device: torch.device, resume: bool = False, trainer=None,
          time_limit: float | None = None) -> None:
    """Step `trainer` (a Trainer by default) to config["steps"], logging, scoring and checkpointing.

    Without `resume` the run starts again: a checkpoint and log at `out` go once the trainer
    is ready. Any object with step() -> dict of scalar tensors, report(mean) -> (text, CSV
    fields), state(), load_state(ckpt), a `model` with encode_mu and `step_count` can be
    trained here: baselines.py trains DC-IGN and InfoGAN through this loop. After `time_limit`
    seconds the run stops and saves as if asked to, and returns.
    """
    deadline = time.perf_counter() + (math.inf if time_limit is None else time_limit)
    print(f"training {out} to step {config['steps']:,} on {device} ({torch.get_num_threads()} CPU threads), "
          f"batch {config['batch_size']}; the log goes to {log_path(out)}", flush=True)
    trainer = trainer or Trainer(config, device)
    with StopRequests() as stop, open_run(trainer, config, out, device, resume) as run:
        try:
            while trainer.step_count < config["steps"] and stop.signum is None and time.perf_counter() < deadline:
                run.step()
            if run.last_good != trainer.step_count:
                run.save()
        except KeyboardInterrupt:  # the second Ctrl-C: maybe mid-step, so nothing more is saved
            print(f"\nstopped at once: {run.kept()}", file=sys.stderr)
            sys.exit(130)
    end_of_training(stop, trainer.step_count, config["steps"], [out])


@contextmanager
def open_run(trainer, config: dict, out: str, device: torch.device, resume: bool,
             quiet: bool = False) -> Iterator[Run]:
    """The Run of `trainer` into `out` with its log open: continued from the checkpoint at `out`
    under `resume`, else started again (a checkpoint and log at `out` go)."""
    log = log_path(out)
    tally, seconds_before = Tally(trainer.step_count), 0.0
    if resume:
        ckpt = read_resume_checkpoint(out)
        trainer.load_state(ckpt)
        tally = Tally.from_state(ckpt.get("tally"), trainer.step_count, device)
        seconds_before = ckpt.get("seconds", 0.0)
        keep_log_rows(log, trainer.step_count)
        print(f"resumed {out} at step {trainer.step_count:,}", flush=True)
    else:
        Path(out).unlink(missing_ok=True)
        log.unlink(missing_ok=True)
    with open(log, "a", newline="") as log_file:
        yield Run(trainer, config, out, device, log_file, tally, seconds_before, resume, quiet)


def end_of_training(stop: StopRequests, step: int, total: int, outs: list[str]) -> None:
    """The last word of a run: exit 130 or 143 after a stop request, else what was written."""
    written = outs[0] if len(outs) == 1 else f"{len(outs)} checkpoints ({outs[0]} ...)"
    if stop.signum is not None and step < total:
        what = "interrupted" if stop.signum == signal.SIGINT else f"stopped by {signal.Signals(stop.signum).name}"
        print(f"\n{what} at step {step:,}: saved {written}; continue with --resume", file=sys.stderr)
        sys.exit(128 + stop.signum)
    if step < total:
        print(f"time limit: stopped at step {step:,}; continue with --resume")
    print(f"wrote {written} (step {step:,}) and the CSV log beside each")


# ---------------------------------------------------------------- the protocol (A.4): replicas

def seeds_arg(text: str) -> list[int]:
    """--seeds: "0-9", "0,3,5" or "4"."""
    try:
        seeds = []
        for part in text.split(","):
            first, _, last = part.partition("-")
            seeds += range(int(first), int(last or first) + 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seeds such as 0-9 or 0,3,5, got {text!r}") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct seeds ≥ 0 such as 0-9, got {text!r}")
    return seeds


def replica_path(folder: str, beta: float, seed: int) -> str:
    """Where the protocol writes the replica (β, seed): an ordinary checkpoint, its CSV beside it."""
    return str(Path(folder) / f"b{beta:g}_s{seed}.pt")


class StackedVAE(nn.Module):
    """R Table 1 fc β-VAEs as one module: each Linear's weight (out, in) and bias become one
    parameter of shape (R, out, in) and (R, 1, out), in the order of BetaVAE.parameters().

    On a GPU one fc model at batch 64 is bound by kernel launches; R stacked models run each
    layer as one batched matmul and cost little more than one. On a CPU it is slower than R
    separate models (the README's measurements), so the protocol stacks only on CUDA.
    """

    def __init__(self, models: list[BetaVAE]):
        super().__init__()
        self.latents = models[0].latents
        self.names = [name for name, _ in models[0].named_parameters()]  # encoder.1.weight, encoder.1.bias, ...
        self.shapes = [p.shape for p in models[0].parameters()]
        stacked = [torch.stack([p.detach() for p in ps]) for ps in zip(*(m.parameters() for m in models))]
        self.params = nn.ParameterList([p if p.dim() == 3 else p[:, None, :] for p in stacked])
        self.encoder_layers = sum(name.startswith("encoder") for name in self.names) // 2

    def layers(self, h: torch.Tensor, first: int, last: int, activation) -> torch.Tensor:
        for k in range(first, last):
            weight, bias = self.params[2 * k], self.params[2 * k + 1]
            h = torch.baddbmm(bias, h, weight.transpose(1, 2))  # (R, B, out) = b + h W^T for each replica
            if k < last - 1:
                h = activation(h)
        return h

    def forward(self, x: torch.Tensor, noise: list[torch.Generator]) -> tuple[torch.Tensor, ...]:
        """x (R, B, 4096) -> logits (R, B, 4096), mu, logvar (R, B, M); replica r's ε from noise[r]."""
        mu, logvar = self.layers(x, 0, self.encoder_layers, torch.relu).chunk(2, dim=-1)
        eps = torch.stack([torch.randn(mu.shape[1:], generator=g, dtype=mu.dtype, device=mu.device) for g in noise])
        z = mu + eps * (0.5 * logvar).exp()  # z = mu + sigma * eps, as BetaVAE.forward
        return self.layers(z, self.encoder_layers, len(self.params) // 2, torch.tanh), mu, logvar

    def replica_state(self, r: int) -> dict[str, torch.Tensor]:
        """Replica r's weights as a BetaVAE state_dict."""
        return {name: p[r].detach().reshape(shape).clone() for name, shape, p in zip(self.names, self.shapes, self.params)}


class StackedTrainer:
    """The replicas of the protocol, one recipe with its own β and seed each, stepped together.

    Each replica starts as `Trainer` would start it alone (the same initial weights, batches and
    noise from its seed) and its gradient is its own loss's, so R stacked replicas follow R
    separate runs up to float rounding (tested). Its optimizer state is its slice of the stacked
    optimizer's: Adagrad and Adam work element by element. On CUDA the whole set is rendered
    once into device memory (3 GB) and batches are looked up by index.
    """

    def __init__(self, configs: list[dict], device: torch.device):
        c = self.config = configs[0]
        if c["dataset"] != "shapes" or c["arch"] != "fc" or c["capacity_max"] is not None:
            raise UsageError("stacked replicas train the fc model on --dataset shapes without --capacity-max; "
                             "give --stack no")
        self.configs, self.device = configs, device
        # Each replica as Trainer starts it alone: the same initial weights and noise from its seed.
        models, self.noise, self.cpu_state = zip(*(seeded_init(config["seed"], lambda: BetaVAE(c["arch"], c["latents"]),
                                                               device) for config in configs))
        self.data = [torch.Generator().manual_seed(config["seed"]) for config in configs]
        self.model = StackedVAE(list(models)).to(device)
        self.optimizer = make_optimizer(c["optimizer"], self.model.parameters(), c["lr"])
        self.beta = torch.tensor([config["beta"] for config in configs], device=device)  # (R,)
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=c["bf16"])
        self.step_count = 0
        self.images = None
        if device.type == "cuda":
            print(f"rendering the {shapes.N_IMAGES:,} images into {device} memory once (3 GB)", flush=True)
            self.images = torch.empty(shapes.N_IMAGES, 1, 64, 64, dtype=torch.uint8, device=device)
            for start in range(0, shapes.N_IMAGES, 65536):
                index = torch.arange(start, min(start + 65536, shapes.N_IMAGES), device=device)
                shapes.render(shapes.index_to_classes(index), out=self.images[start:start + len(index)])

    def batch(self) -> torch.Tensor:
        """Each replica's batch, drawn from its own generator as Shapes.sample draws it: (R, B, 4096)."""
        B = self.config["batch_size"]
        index = torch.stack([torch.randint(shapes.N_IMAGES, (B,), generator=g) for g in self.data])  # (R, B)
        if self.images is not None:
            return self.images[index.to(self.device)].flatten(2).float()
        x = shapes.render(shapes.index_to_classes(index.flatten()).to(self.device))  # (R·B, 1, 64, 64)
        return x.view(len(self.configs), B, -1)

    def step(self) -> list[dict[str, torch.Tensor]]:
        """One gradient step of every replica; each replica's loss parts, detached."""
        x = self.batch()  # (R, B, 4096)
        with self.autocast:
            logits, mu, logvar = self.model(x, self.noise)
        recon = objective.reconstruction_nll(logits.float().flatten(0, 1), x.flatten(0, 1),
                                             self.config["likelihood"]).view(x.shape[:2]).mean(1)  # (R,)
        kl_latent = objective.kl_per_latent(mu.float(), logvar.float()).mean(1)  # (R, M)
        loss = recon + self.beta * kl_latent.sum(1)  # (R,) Eq. 4, each replica with its own β
        self.optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()  # replica r's parameters get the gradient of its own loss alone
        self.optimizer.step()
        self.step_count += 1
        return [{"loss": loss[r].detach(), "recon": recon[r].detach(), "kl": kl_latent[r].sum().detach(),
                 "kl_per_latent": kl_latent[r].detach()} for r in range(len(self.configs))]


class Replica:
    """Replica r of a StackedTrainer as `Run` sees a trainer: its own checkpoint, in the format of a
    lone train.py run, so metric.py, traverse.py, baselines.py and --resume read it unchanged."""

    def __init__(self, stacked: StackedTrainer, r: int):
        self.stacked, self.r, self.config = stacked, r, stacked.configs[r]

    @property
    def step_count(self) -> int:
        return self.stacked.step_count

    @property
    def model(self) -> BetaVAE:
        net = BetaVAE(self.config["arch"], self.config["latents"], 1).to(self.stacked.device)
        net.load_state_dict(self.stacked.model.replica_state(self.r))
        return net

    def report(self, mean: dict[str, torch.Tensor]) -> tuple[str, dict[str, float]]:
        return vae_report(mean)

    def state(self) -> dict:
        s, r = self.stacked, self.r
        stacked = s.optimizer.state_dict()
        optimizer = {"param_groups": stacked["param_groups"],
                     "state": {i: {k: v[r].reshape(s.model.shapes[i]) if v.dim() else v for k, v in state.items()}
                               for i, state in stacked["state"].items()}}
        return {"model": s.model.replica_state(r), "optimizer": optimizer, "step": s.step_count,
                "rng": rng_state(s.noise[r], s.data[r], s.cpu_state[r]), "config": self.config}

    def load_state(self, ckpt: dict) -> None:
        s, r = self.stacked, self.r
        with torch.no_grad():
            for p, name in zip(s.model.params, s.model.names):
                p[r] = ckpt["model"][name].reshape(p.shape[1:])
        stacked = s.optimizer.state_dict()
        for i, state in ckpt["optimizer"]["state"].items():
            into = stacked["state"].setdefault(i, {})
            for k, v in state.items():
                if v.dim():
                    into.setdefault(k, torch.zeros((len(s.configs), *s.model.params[i].shape[1:]), dtype=v.dtype))
                    into[k][r] = v.reshape(s.model.params[i].shape[1:])
                else:
                    into[k] = v
        s.optimizer.load_state_dict(stacked)
        s.step_count = ckpt["step"]
        set_rng_state(ckpt["rng"], s.noise[r], s.data[r])


def train_stacked(configs: list[dict], outs: list[str], device: torch.device, resume: bool,
                  time_limit: float | None = None) -> None:
    """train() for R replicas stepped together: a log and checkpoint each, one progress line for all."""
    deadline = time.perf_counter() + (math.inf if time_limit is None else time_limit)
    stacked = StackedTrainer(configs, device)
    total, log_every = configs[0]["steps"], configs[0]["log_every"]
    with StopRequests() as stop, ExitStack() as runs_open:  # every replica's log open, saved on any stop
        runs = [runs_open.enter_context(open_run(Replica(stacked, r), config, out, device, resume, quiet=True))
                for r, (config, out) in enumerate(zip(configs, outs))]
        if len({run.trainer.step_count for run in runs}) > 1:
            raise UsageError("--resume of stacked replicas needs every checkpoint at one step; give --stack no")
        interval = (time.perf_counter(), stacked.step_count)
        try:
            while stacked.step_count < total and stop.signum is None and time.perf_counter() < deadline:
                for run, parts in zip(runs, stacked.step()):
                    run.record(parts)
                if stacked.step_count % log_every == 0 or stacked.step_count == total:
                    interval = protocol_line(runs, interval)
            for run in runs:
                if run.last_good != stacked.step_count:
                    run.save()
        except KeyboardInterrupt:
            print("\nstopped at once: the last checkpoints with finite weights are kept", file=sys.stderr)
            sys.exit(130)
    end_of_training(stop, stacked.step_count, total, outs)


def protocol_line(runs: list[Run], interval: tuple[float, int]) -> tuple[float, int]:
    """The stacked replicas' one progress line: samples/s in all and the mean loss of each β, since
    `interval` (time, step); returns the next interval's start."""
    step, total = runs[0].trainer.step_count, runs[0].config["steps"]
    samples = len(runs) * runs[0].config["batch_size"]
    rate = (step - interval[1]) * samples / (time.perf_counter() - interval[0])
    by_beta = collections.defaultdict(list)
    for run in runs:
        by_beta[run.config["beta"]].append(run.last_mean["loss"].item())
    losses = ", ".join(f"β = {b:g}: loss {sum(v) / len(v):.2f}" for b, v in by_beta.items())
    print(f"step {step:,}/{total:,} | {len(runs)} replicas, {rate:,.0f} samples/s in all | {losses} | "
          f"ETA {format_seconds((total - step) * samples / rate)}", flush=True)
    return time.perf_counter(), step


def disentanglement(model: torch.nn.Module, device: torch.device) -> float:
    """The Sec. 3 score at metric.py's defaults, for --eval-every; the model in eval mode meanwhile,
    and the random state of training as it was."""
    model.eval()
    # Scoring draws random numbers (the classifier's init) from torch's global generators; training
    # draws from its own, and the fork leaves the global state to the caller as it was.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        try:
            codes = metric.encode_all(metric.model_encoder(model), device,
                                      progress=lambda line: print(f"  scoring: {line}", flush=True))
            return metric.disentanglement_score(codes)
        finally:
            model.train()


def format_seconds(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def benchmark(config: dict, device: torch.device, seconds: float = 4.0) -> None:
    """Training samples/s, data included, beside the machine's matmul rate: one model at batch 64 and
    256, the protocol's stacked replicas, and the renderer."""

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
    print(f"device {device} ({device_name(device)}), {torch.get_num_threads()} CPU threads, torch {torch.__version__}, "
          f"{config['arch']} model, {'bf16 autocast' if config['bf16'] else 'fp32'}; "
          f"2048² matmul: {matmul:,.0f} GFLOP/s", flush=True)
    rates = {}
    for batch_size in (64, 256):
        trainer = Trainer({**config, "batch_size": batch_size}, device)
        with FlopCounterMode(display=False) as counter:
            trainer.step()
        rates[batch_size] = rate(trainer.step, batch_size)
        achieved = rates[batch_size] * counter.get_total_flops() / batch_size / 1e9
        print(f"batch {batch_size}: {rates[batch_size]:,.0f} samples/s with rendering | {achieved:,.0f} GFLOP/s = "
              f"{achieved / matmul:.0%} of matmul", flush=True)
    if config["arch"] == "fc":  # the protocol's stacked replicas, at the paper's batch
        stacked = StackedTrainer([{**config, "batch_size": 64, "seed": r} for r in range(BENCH_REPLICAS)], device)
        together = rate(stacked.step, 64 * BENCH_REPLICAS)
        print(f"{BENCH_REPLICAS} stacked replicas, batch 64: {together:,.0f} samples/s in all, "
              f"{together / BENCH_REPLICAS:,.0f} per replica; {together / rates[64]:.1f}x one model's samples/s at batch 64", flush=True)
    classes = shapes.index_to_classes(torch.arange(4 * 65536, device=device))
    buffer = torch.empty(65536, 1, 64, 64, dtype=torch.uint8, device=device)
    images = rate(lambda: [shapes.render(c, out=buffer) for c in classes.split(65536)], 4 * 65536)
    print(f"renderer: {images:,.0f} images/s on {device} (all {shapes.N_IMAGES:,} in {shapes.N_IMAGES / images:.1f} s)")


def device_name(device: torch.device) -> str:
    """The GPU's or the CPU's name, for every speed figure."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--dataset", default="shapes", choices=sorted(DATASET_DEFAULTS),
                   help="shapes: rendered on the fly; dsprites: a real npz (--data); folder: images (--data)")
    p.add_argument("--data", help="path of the dsprites npz or the image folder")
    p.add_argument("--beta", type=float, nargs="+", help="β of Eq. 4 (default 4); several: the protocol, below")
    p.add_argument("--beta-norm", type=float, help="normalised β of A.6, β·M/N; instead of --beta")
    p.add_argument("--arch", choices=("fc", "conv"), help="Table 1 network (default: fc on shapes, conv on folders)")
    p.add_argument("--latents", type=positive_int, help="number of latents M (default: 10 on shapes, 32 on folders)")
    p.add_argument("--likelihood", choices=("bernoulli", "gaussian"),
                   help="p(x|z) (default bernoulli; the paper uses gaussian for CelebA)")
    p.add_argument("--channels", type=int, choices=(1, 3), help="folder images: 1 grey or 3 RGB (default: as the first image)")
    p.add_argument("--optimizer", choices=("adagrad", "adam", "rmsprop"),
                   help="default: adagrad on shapes, adam on folders")
    p.add_argument("--lr", type=positive_float, help="learning rate (default: 1e-2 adagrad on shapes, 1e-4 adam on folders)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per step (default 64)")
    p.add_argument("--steps", type=positive_int, help=f"training steps (default {DEFAULT_STEPS:,}; with --resume, the new total)")
    p.add_argument("--capacity-max", type=float,
                   help="departure: Burgess et al. 2018 capacity C_max in nats; loss recon + γ|KL − C|")
    p.add_argument("--capacity-steps", type=positive_int, default=100_000, help="steps over which C rises to C_max")
    p.add_argument("--gamma", type=float, default=1000.0, help="γ of the capacity loss (default 1000)")
    p.add_argument("--bf16", action="store_true", help="departure: bfloat16 autocast for speed (fp32 by default)")
    p.add_argument("--seed", type=seed_arg, default=0, help="seed of the weights, noise and batches (default 0)")
    p.add_argument("--device", help="cuda, mps or cpu (default: cuda, then mps, then cpu)")
    p.add_argument("--out", help="checkpoint path, the CSV log beside it (default ckpt.pt); "
                                 "for the protocol a folder (default runs)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run saved at --out, with its settings (only --steps may change)")
    p.add_argument("--overwrite", action="store_true", help="start again at an --out that holds a run")
    p.add_argument("--log-every", type=positive_int, default=500, help="steps between progress lines and CSV rows")
    p.add_argument("--save-every", type=positive_int, default=5000, help="steps between checkpoints")
    p.add_argument("--eval-every", type=positive_int,
                   help="steps between disentanglement scores (metric.py defaults) in the CSV; ~30 s each on a CPU")
    p.add_argument("--threads", type=positive_int, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--time-limit", type=positive_float, metavar="SECONDS",
                   help="stop (and save, as on Ctrl-C) after this long; --resume continues")
    p.add_argument("--benchmark", action="store_true", help="print training samples/s at batch 64 and 256")
    a4 = p.add_argument_group("the protocol (A.4): every --beta × --seeds replica, each an ordinary checkpoint "
                              "<out>/b<β>_s<seed>.pt")
    a4.add_argument("--seeds", type=seeds_arg, help="replica seeds, such as 0-9 or 0,3,5")
    a4.add_argument("--stack", choices=("auto", "yes", "no"), default="auto",
                    help="step the replicas together as one stacked model (auto: on CUDA) or one after another")
    return p


def check_eval_every(eval_every: int | None, log_every: int) -> None:
    """--eval-every's scores go into the log's rows, so it must fall on them."""
    if eval_every and eval_every % log_every:
        raise UsageError("--eval-every must be a multiple of --log-every: scores go into the log's rows")


def make_config(args: argparse.Namespace) -> dict:
    """The full run config from the flags, with the paper's defaults for the dataset."""
    if isinstance(args.beta, list):  # one --beta: several are the protocol's, each replica's config made alone
        if len(args.beta) > 1:
            raise UsageError("one --beta per run; several train the protocol, with --seeds")
        args = argparse.Namespace(**{**vars(args), "beta": args.beta[0]})
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
    if args.eval_every and args.dataset == "folder":
        raise UsageError("--eval-every needs the 2D shapes: the metric fixes their factors")
    check_eval_every(args.eval_every, args.log_every)
    config.update(dataset=args.dataset, data=args.data, beta=beta, beta_norm=args.beta_norm, channels=channels,
                  batch_size=args.batch_size, steps=args.steps or DEFAULT_STEPS, seed=args.seed,
                  capacity_max=args.capacity_max, capacity_steps=args.capacity_steps, gamma=args.gamma,
                  bf16=args.bf16, log_every=args.log_every, save_every=args.save_every,
                  eval_every=args.eval_every)
    return config


def flags_given(argv: list[str] | None = None) -> dict:
    """The flags typed on the command line, by dest: the arguments parsed again with no defaults."""
    bare = build_parser()
    for action in bare._actions:  # argparse has no public switch for "no defaults"
        action.default = argparse.SUPPRESS
    given = vars(bare.parse_args(argv))
    if len(given.get("beta", [])) == 1:
        given["beta"] = given["beta"][0]
    return given


def resumed_config(out: str, given: dict) -> dict:
    """The config of the run at `out`, with a new --steps; UsageError for a flag that would change it."""
    config = read_resume_checkpoint(out)["config"]
    if "baseline" in config:
        raise UsageError(f"--resume: {out} is a {config['baseline']} checkpoint: continue it with "
                         f"python baselines.py --train {config['baseline']} --out {out} --resume")
    for flag, value in given.items():
        if flag in RESUME_FLAGS or config.get(flag) == value or (flag == "bf16" and "bf16_slower" in config):
            continue
        name = f"--{flag.replace('_', '-')}"
        raise UsageError(f"--resume continues {out} with its own settings, and {name} {value} differs from its "
                         f"{config.get(flag, 'unset')}: leave {name} out (only --steps may change), "
                         f"or start again with --overwrite")
    if given.get("steps"):
        config["steps"] = given["steps"]
    return config


def bf16_speedup(device: torch.device) -> float:
    """fp32 time / bf16 time of the fc network's widest matmul at batch 64 (a few ms): > 1 when bf16 is faster."""
    a, b = torch.randn(64, 1200, device=device), torch.randn(1200, 1200, device=device)

    def best(x: torch.Tensor, y: torch.Tensor) -> float:
        x @ y  # the first call sets up the kernel
        times = []
        for _ in range(5):
            t = time.perf_counter()
            x @ y
            times.append(time.perf_counter() - t)
        return min(times)

    return best(a, b) / best(a.bfloat16(), b.bfloat16())


def settle_bf16(config: dict, device: torch.device) -> None:
    """--bf16 on a CPU without native bfloat16 makes training slower, not faster: train in fp32
    there, say so, and record it in the config."""
    if not config["bf16"] or device.type != "cpu":
        return
    speedup = bf16_speedup(device)
    if speedup < BF16_SLOWER:
        config.update(bf16=False, bf16_slower=round(1 / speedup, 2))
        print(f"--bf16: bfloat16 matmuls run {1 / speedup:.1f}x slower than fp32 on this CPU "
              f"(no native bfloat16); training in fp32", flush=True)


def train_one(args: argparse.Namespace, device: torch.device) -> None:
    """One run into --out (ckpt.pt by default): started, continued (--resume) or started again (--overwrite)."""
    out = args.out if args.out is not None else "ckpt.pt"
    check_out(out, args.resume, args.overwrite)
    with out_lock(out):
        check_existing_run(out, args.resume, args.overwrite)
        if args.resume:
            config = resumed_config(out, flags_given())
        else:
            config = make_config(args)
            settle_bf16(config, device)
            if device.type == "cpu" and config["steps"] == DEFAULT_STEPS and config["dataset"] != "folder":
                print(f"the paper's {DEFAULT_STEPS:,} steps take hours on a CPU (about 4.4 h on a quiet 2-core AMD "
                      f"EPYC; the ETA below is this machine's); a disentangled model in about 10 minutes, the CPU "
                      f"recipe: {CPU_RECIPE}", flush=True)
        train(config, out, device, resume=args.resume, time_limit=args.time_limit)


def train_protocol(args: argparse.Namespace, device: torch.device) -> None:
    """Every (β, seed) replica into the folder --out: stacked on CUDA, one after another on a CPU.

    A replica whose checkpoint exists is continued under --resume; one without starts.
    """
    betas, seeds = args.beta or [4.0], args.seeds or [args.seed]
    folder = Path(args.out if args.out is not None else "runs")
    if folder.suffix == ".pt" or (folder.exists() and not folder.is_dir()):
        raise UsageError(f"--out {folder}: the protocol writes a checkpoint per replica into a folder")
    folder.mkdir(parents=True, exist_ok=True)
    replicas = [(beta, seed) for beta in betas for seed in seeds]
    outs = [replica_path(str(folder), beta, seed) for beta, seed in replicas]
    given = {k: v for k, v in flags_given().items() if k not in PROTOCOL_FLAGS}
    stack = args.stack == "yes" or (args.stack == "auto" and device.type == "cuda")
    with ExitStack() as locks:
        configs, resumes = [], []
        for (beta, seed), out in zip(replicas, outs):
            check_out(out, args.resume, args.overwrite)
            locks.enter_context(out_lock(out))
            check_existing_run(out, args.resume, args.overwrite)
            resume = args.resume and Path(out).exists()
            configs.append(resumed_config(out, given) if resume else
                           make_config(argparse.Namespace(**{**vars(args), "beta": beta, "seed": seed})))
            resumes.append(resume)
        fresh = [c for c, resume in zip(configs, resumes) if not resume]
        if fresh:
            settle_bf16(fresh[0], device)
            for c in fresh[1:]:
                c.update(bf16=fresh[0]["bf16"])
        print(f"protocol: {len(outs)} replicas (β {', '.join(f'{b:g}' for b in betas)} × seeds "
              f"{', '.join(map(str, seeds))}) into {folder}/, "
              f"{'stacked' if stack else 'one after another'} on {device}", flush=True)
        if stack:
            if len(set(resumes)) > 1:
                raise UsageError("--resume of stacked replicas needs a checkpoint for every replica or for none; "
                                 "give --stack no")
            train_stacked(configs, outs, device, resumes[0], args.time_limit)
            return
        deadline = time.perf_counter() + (math.inf if args.time_limit is None else args.time_limit)
        for config, out, resume in zip(configs, outs, resumes):
            left = deadline - time.perf_counter()
            if left <= 0:
                print("time limit: the replicas not started yet start with --resume")
                return
            train(config, out, device, resume=resume, time_limit=left)


def main() -> None:
    args = build_parser().parse_args()
    with cli_errors("train.py", interrupted="interrupted before the first step; nothing saved"):
        set_threads(args.threads)
        device = pick_device(args.device)
        if args.benchmark:
            benchmark(make_config(args), device)
        elif args.seeds or len(args.beta or []) > 1:
            train_protocol(args, device)
        else:
            train_one(args, device)


if __name__ == "__main__":
    main()
