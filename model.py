"""The β-VAE networks of Table 1 (Higgins et al., ICLR 2017, A.1): encoder q(z|x), decoder p(x|z).

Two architectures:
  fc    2D shapes: encoder FC 1200-1200 ReLU -> 10 Gaussian latents;
        decoder FC 1200-1200-1200-4096 Tanh -> Bernoulli logits.
  conv  chairs, CelebA, 3D faces: Conv 32x4x4 s2, 32x4x4 s2, 64x4x4 s2, 64x4x4 s2, FC 256,
        ReLU -> 32 latents; the decoder is the transposed-convolution mirror of the encoder.

The encoder gives the mean `mu` and log-variance `logvar` of q(z|x); the representation that
the metrics read is `mu` (Sec. 3). `forward` is one pass of the reparameterisation trick.
`load_checkpoint` rebuilds a trained model from the one dict that train.py saves. Imports only
runs.py of the project (for its checkpoint reader and error type):

    python -c "import model; print(model.BetaVAE('fc'))"
"""

import torch
from torch import nn

from runs import UsageError, read_checkpoint

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


def load_checkpoint(path: str, device: torch.device | str | None = None) -> tuple[BetaVAE, dict]:
    """Rebuild a trained model from a train.py checkpoint: (model in eval mode, config)."""
    ckpt = read_checkpoint(path)
    config = ckpt["config"]
    if "baseline" in config:
        raise UsageError(f"{path} is not a β-VAE but baselines.py's {config['baseline']} model: "
                         f"score it with python baselines.py --table {path}")
    check_architecture(config, path)
    model = BetaVAE(config["arch"], config["latents"], config.get("channels", 1))
    try:
        model.load_state_dict(ckpt["model"])
    except (KeyError, RuntimeError, ValueError) as e:
        raise UsageError(f"{path}: model does not match its config ({str(e).splitlines()[0]})") from None
    return model.to(device or "cpu").eval(), config


def check_architecture(config: dict, path: str) -> None:
    """A checkpoint's config must name a Table 1 network: UsageError, not a traceback, for one that does not."""
    latents, channels = config.get("latents"), config.get("channels", 1)
    if (config.get("arch") not in ("fc", "conv") or type(latents) is not int or latents <= 0
            or channels not in (1, 3)):
        raise UsageError(f"{path}: its config names no Table 1 network (arch {config.get('arch')!r}, "
                         f"latents {latents!r}, channels {channels!r})")
