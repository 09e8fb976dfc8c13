"""The β-VAE networks of Table 1 (Higgins et al., ICLR 2017, A.1): encoder q(z|x), decoder p(x|z).

Two architectures:
  fc    2D shapes: encoder FC 1200-1200 ReLU -> 10 Gaussian latents;
        decoder FC 1200-1200-1200-4096 Tanh -> Bernoulli logits.
  conv  chairs, CelebA, 3D faces: Conv 32x4x4 s2, 32x4x4 s2, 64x4x4 s2, 64x4x4 s2, FC 256,
        ReLU -> 32 latents; the decoder is the transposed-convolution mirror of the encoder.

The encoder gives the mean `mu` and log-variance `logvar` of q(z|x); the representation that
the metrics read is `mu` (Sec. 3). `load_checkpoint` rebuilds a trained model from the one
dict that train.py saves, and refuses one whose weights are not finite. Below it, what every CLI
shares: `UsageError` (bad user input), `cli_errors` (which reports it in one line), and the checks of
--device, --threads, --seed and counts. This file imports nothing from the project:

    python -c "import model; print(model.BetaVAE('fc'))"
"""

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

IMAGE_SIZE = 64


class BetaVAE(nn.Module):
    """q(z|x) = N(mu, diag(exp(logvar))), p(z) = N(0, I), p(x|z) from `decode`'s logits."""

    def __init__(self, arch: str = "fc", latents: int | None = None, channels: int = 1):
        super().__init__()
        if arch not in ("fc", "conv"):
            raise ValueError(f"unknown architecture {arch!r} (fc or conv)")
        latents = latents or (10 if arch == "fc" else 32)  # Table 1
        self.config = {"arch": arch, "latents": latents, "channels": channels}
        self.latents = latents
        pixels = channels * IMAGE_SIZE * IMAGE_SIZE
        if arch == "fc":
            self.encoder = nn.Sequential(
                nn.Flatten(),
                nn.Linear(pixels, 1200), nn.ReLU(),
                nn.Linear(1200, 1200), nn.ReLU(),
                nn.Linear(1200, 2 * latents),
            )
            self.decoder = nn.Sequential(
                nn.Linear(latents, 1200), nn.Tanh(),
                nn.Linear(1200, 1200), nn.Tanh(),
                nn.Linear(1200, 1200), nn.Tanh(),
                nn.Linear(1200, pixels),
                nn.Unflatten(1, (channels, IMAGE_SIZE, IMAGE_SIZE)),
            )
        else:
            self.encoder = nn.Sequential(
                nn.Conv2d(channels, 32, 4, 2, 1), nn.ReLU(),  # (B, 32, 32, 32)
                nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(),  # (B, 32, 16, 16)
                nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(),  # (B, 64, 8, 8)
                nn.Conv2d(64, 64, 4, 2, 1), nn.ReLU(),  # (B, 64, 4, 4)
                nn.Flatten(),
                nn.Linear(64 * 4 * 4, 256), nn.ReLU(),
                nn.Linear(256, 2 * latents),
            )
            self.decoder = nn.Sequential(
                nn.Linear(latents, 256), nn.ReLU(),
                nn.Linear(256, 64 * 4 * 4), nn.ReLU(),
                nn.Unflatten(1, (64, 4, 4)),
                nn.ConvTranspose2d(64, 64, 4, 2, 1), nn.ReLU(),  # (B, 64, 8, 8)
                nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(),  # (B, 32, 16, 16)
                nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.ReLU(),  # (B, 32, 32, 32)
                nn.ConvTranspose2d(32, channels, 4, 2, 1),  # (B, C, 64, 64)
            )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, C, 64, 64) in [0, 1] -> mu, logvar (B, M)."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar

    def encode_mu(self, x: torch.Tensor, binary: bool = False) -> torch.Tensor:
        """mu (B, M) alone; fast on the fc net for images the caller knows are binary.

        A binary image's first layer is the sum of the weight columns of its on pixels
        (4 % of them on 2D shapes), so an embedding-bag sum replaces the dense 4096×1200
        matmul: 2x faster on a CPU. Equal to encode(x)[0] up to float rounding.
        """
        if self.config["arch"] != "fc" or not binary:
            return self.encode(x)[0]
        first = self.encoder[1]
        rows, cols = x.flatten(1).nonzero(as_tuple=True)  # the on pixels
        offsets = torch.zeros(len(x), dtype=torch.long, device=x.device)
        offsets[1:] = torch.bincount(rows, minlength=len(x))[:-1].cumsum(0)
        table = first.weight.t().contiguous()  # (4096, 1200): a strided table is 20x slower
        h = nn.functional.embedding_bag(cols, table, offsets, mode="sum") + first.bias  # (B, 1200)
        return self.encoder[2:](h).chunk(2, dim=1)[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, M) -> logits (B, C, 64, 64); sigmoid(logits) is the Bernoulli mean."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor, noise: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        """One pass of the reparameterisation trick: logits, mu, logvar; eps drawn from `noise`
        (torch's global generator by default)."""
        mu, logvar = self.encode(x)
        eps = torch.randn(mu.shape, generator=noise, dtype=mu.dtype, device=mu.device)  # (B, M) ~ N(0, I)
        z = mu + eps * (0.5 * logvar).exp()  # z = mu + sigma * eps
        return self.decode(z), mu, logvar


class UsageError(ValueError):
    """Bad user input (a missing or corrupt checkpoint, a device this machine lacks, a wrong flag):
    every CLI prints its message as one line on stderr and exits 1 (`cli_errors`)."""


def read_checkpoint(path: str) -> dict:
    """The raw checkpoint dict that train.py saved; UsageError with a clear reason if not.

    Reads with weights_only=True: a checkpoint from a stranger cannot run code.
    """
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UsageError(f"no such checkpoint: {path}") from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a folder, not a checkpoint") from None
    except Exception as e:  # torch raises many types for a corrupt or foreign file
        raise UsageError(f"{path} is not a readable checkpoint ({e.__class__.__name__})") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict) or "config" not in ckpt:
        raise UsageError(f"{path} is not a checkpoint of this project (no model and config)")
    # A diverged run's weights give NaN codes and figures: say so here, before any work is done on them.
    bad = next((k for k, v in ckpt["model"].items()
                if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise UsageError(f"{path} holds NaN or infinite weights ({bad}): its run diverged; "
                         f"train again with a smaller --lr")
    return ckpt


def load_checkpoint(path: str, device: torch.device | str | None = None) -> tuple[BetaVAE, dict]:
    """Rebuild a trained model from a train.py checkpoint: (model in eval mode, config)."""
    ckpt = read_checkpoint(path)
    config = ckpt["config"]
    if "baseline" in config:
        raise UsageError(f"{path} is a {config['baseline']} model, not a β-VAE: "
                         f"score it with python baselines.py --table {path}")
    try:
        model = BetaVAE(config["arch"], config["latents"], config.get("channels", 1))
        model.load_state_dict(ckpt["model"])
    except (KeyError, RuntimeError, ValueError) as e:
        raise UsageError(f"{path}: model does not match its config ({str(e).splitlines()[0]})") from None
    return model.to(device or "cpu").eval(), config


def pick_device(name: str | None = None) -> torch.device:
    """The --device of every CLI: as given, else cuda, then mps, then cpu; UsageError if absent."""
    if name:
        return check_device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def check_device(name: str) -> torch.device:
    """The device called `name`, if this machine has it; else UsageError saying what it has."""
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cuda", "mps", "cpu"):
        raise UsageError(f"--device {name!r}: unknown device (use cuda, mps or cpu)")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UsageError(f"--device {name}: this machine has no CUDA GPU (use cpu)")
        if device.index is not None and device.index >= count:
            raise UsageError(f"--device {name}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {name}: MPS is not available on this machine (use cpu)")
    return device


def set_threads(threads: int | None) -> None:
    """The --threads of every CLI: torch's CPU threads, when given; UsageError unless positive."""
    if threads is not None:
        if threads <= 0:
            raise UsageError(f"--threads {threads}: it must be positive")
        torch.set_num_threads(threads)


def seed_arg(text: str) -> int:
    """argparse type of every --seed: a whole number that torch.manual_seed accepts."""
    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid seed {text!r}: give a whole number such as 0") from None
    if not 0 <= seed < 2 ** 64:
        raise argparse.ArgumentTypeError(f"invalid seed {text}: it must be from 0 to 2**64 - 1")
    return seed


def positive_number(text: str, kind: type = int) -> int | float:
    """A count or rate from the command line: a finite number above 0 of `kind`; else argparse's error."""
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid {'whole ' if kind is int else ''}number {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text}: it must be positive" + ("" if kind is int else " and finite"))
    return value


def positive_int(text: str) -> int:
    """argparse type of every count (--steps, --batch-size, --L, ...)."""
    return positive_number(text, int)


def positive_float(text: str) -> float:
    """argparse type of every rate and length (--lr, --time-limit)."""
    return positive_number(text, float)


@contextmanager
def cli_errors(prog: str, interrupted: str = "interrupted") -> Iterator[None]:
    """Every CLI's main() runs in this: bad input, a full disk or a torch failure ends as one line on
    stderr and exit 1, Ctrl-C before any work is saved as one line and exit 130; never a traceback."""
    try:
        yield
    except (ValueError, OSError, RuntimeError) as e:  # ValueError includes UsageError
        print(f"{prog}: error: {str(e).splitlines()[0]}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"\n{prog}: {interrupted}", file=sys.stderr)
        sys.exit(130)
