"""The β-VAE objective (Higgins et al., ICLR 2017, Eq. 4) and its variants.

    L(θ, φ; x, z, β) = E_q(z|x)[log p(x|z)] − β · KL(q(z|x) || p(z))          (Eq. 4)

We minimise its negative, averaged over the batch: recon + β·KL, where recon is the
negative log-likelihood of the image under the decoder (Bernoulli for binary images,
fixed-variance Gaussian otherwise) summed over pixels, and KL is in closed form for a
diagonal Gaussian posterior and a unit Gaussian prior. Also here: the normalised β of
A.6 and the capacity-controlled variant of Burgess et al. (2018). This file imports
nothing from the project; train.py uses it:

    python train.py --beta 4 --dataset shapes
"""

import torch
import torch.nn.functional as F

ACTIVE_KL = 0.1  # nats: a latent whose mean KL is above this carries information


def kl_per_latent(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) for each latent: (B, M) -> (B, M), in nats."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def reconstruction_nll(output: torch.Tensor, x: torch.Tensor, likelihood: str = "bernoulli",
                       sigma2: float = 0.5) -> torch.Tensor:
    """−log p(x|z) summed over pixels, per image: (B, C, H, W) -> (B,).

    bernoulli: `output` are logits; this is the binary cross-entropy.
    gaussian: the mean is sigmoid(output) and the variance is fixed at sigma2; constants
    dropped. sigma2 = 0.5 makes it the summed squared error that peers use.
    """
    if likelihood == "bernoulli":
        nll = F.binary_cross_entropy_with_logits(output, x, reduction="none")
    elif likelihood == "gaussian":
        nll = (torch.sigmoid(output) - x).pow(2) / (2 * sigma2)
    else:
        raise ValueError(f"unknown likelihood {likelihood!r} (bernoulli or gaussian)")
    return nll.flatten(1).sum(1)


def beta_vae_loss(output: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
                  beta: float, likelihood: str = "bernoulli") -> dict[str, torch.Tensor]:
    """Negative Eq. 4 averaged over the batch, with its parts.

    Returns loss (scalar), recon (scalar), kl (scalar) and kl_per_latent (M,).
    """
    recon = reconstruction_nll(output, x, likelihood).mean()
    kl_latent = kl_per_latent(mu, logvar).mean(0)  # (M,)
    kl = kl_latent.sum()
    # Eq. 4
    return {"loss": recon + beta * kl, "recon": recon, "kl": kl, "kl_per_latent": kl_latent}


def capacity_loss(parts: dict[str, torch.Tensor], gamma: float, capacity: float) -> torch.Tensor:
    """Burgess et al. (2018), Eq. 8: recon + γ·|KL − C|: the KL is pulled to a target C nats."""
    return parts["recon"] + gamma * (parts["kl"] - capacity).abs()


def capacity_at(step: int, c_max: float, c_steps: int) -> float:
    """C raised linearly from 0 to c_max over c_steps training steps, then held."""
    return c_max * min(1.0, step / max(c_steps, 1))


def normalised_beta(beta: float, latents: int, input_size: int) -> float:
    """A.6: β_norm = β·M/N, with M latents and N input dimensions (4096 for 64×64×1)."""
    return beta * latents / input_size


def beta_from_normalised(beta_norm: float, latents: int, input_size: int) -> float:
    """The inverse of `normalised_beta`: β = β_norm·N/M."""
    return beta_norm * input_size / latents
