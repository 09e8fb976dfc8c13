"""The β-VAE networks of Table 1 (Higgins et al., ICLR 2017, A.1): encoder q(z|x), decoder p(x|z).

Two architectures:
  fc    2D shapes: encoder FC 1200-1200 ReLU -> 10 Gaussian latents;
        decoder FC 1200-1200-1200-4096 Tanh -> Bernoulli logits.
  conv  chairs, CelebA, 3D faces: Conv 32x4x4 s2, 32x4x4 s2, 64x4x4 s2, 64x4x4 s2, FC 256,
        ReLU -> 32 latents; the decoder is the transposed-convolution mirror of the encoder.

The encoder gives the mean `mu` and log-variance `logvar` of q(z|x); the representation that
the metrics read is `mu` (Sec. 3). `forward` is one pass of the reparameterisation trick.
`load_checkpoint` rebuilds a trained model from the one dict that train.py saves, reading it
without running code (`torch.load(..., weights_only=True)`); a bad file raises CheckpointError,
a ValueError whose message is one line. Needs torch alone: it copies into any project.

    python -c "import model; print(model.BetaVAE('fc'))"
"""

import torch
from torch import nn

IMAGE_SIZE = 64


class CheckpointError(ValueError):
    """A file that is not a readable checkpoint of a Table 1 network: missing, corrupt, foreign,
    diverged or of another network. Its message is one line, fit for a CLI's stderr."""


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

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, M) -> logits (B, C, 64, 64); sigmoid(logits) is the Bernoulli mean."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor,
                noise: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        """One pass of the reparameterisation trick: logits, mu, logvar; eps drawn from `noise`
        (torch's global generator by default)."""
        mu, logvar = self.encode(x)
        # (B, M) ~ N(0, I)
        eps = torch.randn(mu.shape, generator=noise, dtype=mu.dtype, device=mu.device)
        z = mu + eps * (0.5 * logvar).exp()  # z = mu + sigma * eps
        return self.decode(z), mu, logvar


def read_checkpoint(path: str) -> dict:
    """The raw checkpoint dict that train.py saved; CheckpointError with a clear reason if not.

    Reads with weights_only=True: a checkpoint from a stranger cannot run code.
    """
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"no such checkpoint: {path}") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path} is a folder, not a checkpoint") from None
    except Exception as e:  # torch raises many types for a corrupt or foreign file
        raise CheckpointError(f"{path} is not a readable checkpoint "
                              f"({e.__class__.__name__})") from None
    if (not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict)
            or not isinstance(ckpt.get("config"), dict)):
        raise CheckpointError(f"{path} is not a checkpoint of this project (no model and config)")
    # A diverged run's weights give NaN codes and figures: say so here,
    # before any work is done on them.
    bad = next((k for k, v in ckpt["model"].items()
                if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()),
               None)
    if bad is not None:
        raise CheckpointError(f"{path} holds NaN or infinite weights ({bad}): its run diverged; "
                              f"train again with a smaller --lr")
    return ckpt


def load_checkpoint(path: str, device: torch.device | str | None = None) -> tuple[BetaVAE, dict]:
    """Rebuild a trained model from a train.py checkpoint: (model in eval mode, config)."""
    ckpt = read_checkpoint(path)
    config = ckpt["config"]
    if "baseline" in config:
        raise CheckpointError(f"{path} is not a β-VAE but baselines.py's "
                              f"{config['baseline']} model: "
                              f"score it with python baselines.py --table {path}")
    check_architecture(config, path)
    model = BetaVAE(config["arch"], config["latents"], config.get("channels", 1))
    try:
        model.load_state_dict(ckpt["model"])
    except (KeyError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"{path}: model does not match its config "
                              f"({str(e).splitlines()[0]})") from None
    return model.to(device or "cpu").eval(), config


def check_architecture(config: dict, path: str) -> None:
    """A checkpoint's config must name a Table 1 network: CheckpointError, not a traceback, for one
    that does not."""
    latents, channels = config.get("latents"), config.get("channels", 1)
    if (config.get("arch") not in ("fc", "conv") or type(latents) is not int or latents <= 0
            or channels not in (1, 3)):
        raise CheckpointError(f"{path}: its config names no Table 1 network "
                              f"(arch {config.get('arch')!r}, "
                              f"latents {latents!r}, channels {channels!r})")
