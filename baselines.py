"""Baselines of the β-VAE disentanglement metric (Higgins et al., ICLR 2017, Sec. 4.2, Fig. 6 left,
A.2, A.3).

Fig. 6 (left) scores, with the metric of Sec. 3, representations that need no β-VAE beside the
trained models: the ground-truth factors, the raw pixels, PCA (the top 10 components of the
whitened pixels, A.3), ICA (FastICA on those 10 whitened components, one model per pair of
shapes as in A.3), the Table 1 VAE at its random initialisation, and two trained competitors:
DC-IGN (Kulkarni et al. 2015, semi-supervised: each batch varies one factor, and every latent
but that factor's is clamped to its batch mean) and InfoGAN (Chen et al. 2016, unsupervised: a
GAN whose recognition head Q recovers 5 continuous codes). A row of the table is a label and
the codes of one or more replicas (metric.Codes: a table with a row per image in DeepMind's
order, or a function of the image index); every row is scored the same way, and the table puts
our mean ± std beside the paper's figure. A checkpoint's codes are cached beside it as
<stem>.codes.pt by metric.checkpoint_codes (--no-cache: encode afresh). Needs shapes.py,
model.py, loss.py, metric.py, runs.py, train.py and traverse.py beside it.

    python baselines.py --table  # every row (a quarter of an hour on 2 cores)
    python baselines.py --table --rows pca,ica --markdown   # some rows, as markdown for the README
    python baselines.py --train dcign --steps 2000 --out dcign.pt  # train DC-IGN (train.py's loop)
    python baselines.py --train infogan --steps 2000 --out infogan.pt  # and InfoGAN, + infogan_samples.png
    python baselines.py --train dcign --benchmark --bf16   # DC-IGN's training samples/s
    python baselines.py --table b4.pt b1.pt dcign.pt infogan.pt "β-VAE (β = 4)=b4_seed2.pt"

The file, top to bottom:
  the training-free rows   ground truth, raw pixels, the untrained VAE (Sec. 4.2)
  PCA and ICA (A.3)        the whitened top 10 components; FastICA on them, one model per pair
                           of shapes
  DC-IGN (Table 1)         the network, its clamp, its batches and its trainer
  InfoGAN (A.2)            the networks, the mutual-information term, the trainer, the check that a
                           sample looks like the world's (shape_like), G with fresh batch-norm
                           statistics for sampling (sampling_generator), the sample figure
  the Fig. 6 table         the row names, the registry TRAINED of DC-IGN and InfoGAN, scoring,
                           the table
  Table 2 (A.5)            each factor's linear-classifier accuracy beside the paper's
  the CLI                  --train (DC-IGN, InfoGAN) and --table
"""

import argparse
import copy
import functools
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

# Ctrl-C while torch loads (it may be in C++: exit at once), not a traceback
if __name__ == "__main__":
    signal.signal(signal.SIGINT,
                  lambda signum, frame: (os.write(2, b"interrupted while starting\n"),
                                         os._exit(130)))

import torch
from torch import nn

import shapes
import loss as objective
import metric
import runs
import train
import traverse
from metric import PAPER  # Fig. 6 (left), which metric.py prints beside a score
from model import BetaVAE, read_checkpoint
from runs import (UsageError, cli_errors, non_negative_float, pick_device, positive_float,
                  positive_int, seed_arg, set_threads)


# ---------------------------------------------------------------- the training-free rows (Sec. 4.2,
# Fig. 6 left)

def ground_truth_codes() -> torch.Tensor:
    """The factor classes themselves (737280, 5): the ideal representation."""
    return shapes.index_to_classes(torch.arange(shapes.N_IMAGES)).float()


def pixel_codes(index: torch.Tensor) -> torch.Tensor:
    """Raw pixels (B, 4096), rendered when asked: the whole table would be 12 GB of floats."""
    return shapes.render(shapes.index_to_classes(index)).flatten(1)


def untrained_vae(seed: int) -> BetaVAE:
    """The Table 1 fc model as train.py initialises it with --seed `seed`, before any step."""
    return runs.seeded_init(seed, lambda: BetaVAE("fc"), torch.device("cpu"))[0].eval()


# ---------------------------------------------------------------- PCA and ICA (A.3)

PCA_COMPONENTS = 10  # A.3
PAPER_PCA_EXPLAINED = 0.608  # variance explained by the top 10 components (A.3)
# The covariance of every image, though that is minutes of 4096² matmuls on a CPU: the components
# come in pairs of near-equal variance, each pair's rotation follows the sample, and the metric
# reads single components: the PCA of a random 100,000 images scored from 81 to 88 % by the
# sample, all images 88 %.
DEFAULT_PCA_IMAGES = shapes.N_IMAGES
SHAPE_PAIRS = ((0, 1), (0, 2), (1, 2))  # {square, ellipse}, {square, heart}, {ellipse, heart} (A.3)
ICA_POINTS = 100_000  # whitened points FastICA is fitted on
ICA_MAX_ITER = 200  # and the tolerance: scikit-learn's defaults
ICA_TOL = 1e-4


def covariance(chunks: Iterable[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and covariance (D, D), float64 on the CPU, of rows streamed in chunks (B, D).

    Each chunk's X^T X is one matmul in the chunk's own dtype, summed in float64: for binary
    images in float32 every entry is a count below 2^24, so the sum is exact.
    """
    n, total, xtx = 0, 0.0, 0.0
    for x in chunks:
        n += len(x)
        total = total + x.sum(0).double().cpu()
        xtx = xtx + (x.T @ x).double().cpu()
    mean = total / n
    return mean, xtx / n - torch.outer(mean, mean)


def pixel_chunks(n_images: int, device: torch.device, batch_size: int = 8192,
                 seed: int = 0) -> Iterator[torch.Tensor]:
    """Flattened images (B, 4096): the whole set, or n_images of it drawn without replacement.

    The chunks share one buffer: use each before asking for the next.
    """
    if n_images >= shapes.N_IMAGES:
        index = torch.arange(shapes.N_IMAGES)
    else:
        index = torch.randperm(shapes.N_IMAGES,
                               generator=torch.Generator().manual_seed(seed))[:n_images]
    buffer = torch.empty(batch_size, 1, 64, 64, device=device)  # reused: no page faults per chunk
    for start in range(0, len(index), batch_size):
        i = index[start:start + batch_size].to(device)
        yield shapes.render(shapes.index_to_classes(i), out=buffer[:len(i)]).flatten(1)  # (B, 4096)


@dataclass
class PCA:
    """The top k principal components; calling it gives the whitened codes (B, k) of images or
    rows."""

    mean: torch.Tensor  # (D,)
    components: torch.Tensor  # (k, D) unit eigenvectors of the covariance, largest eigenvalue first
    variances: torch.Tensor  # (k,) their eigenvalues
    explained: float  # fraction of the total variance in the k components

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)  # (B, D)
        # (k, D): unit variance per code
        w = (self.components / self.variances.sqrt()[:, None]).to(x)
        # Centring after the projection: a (k,) shift instead of a (B, D) copy.
        return x @ w.T - self.mean.to(x) @ w.T


def fit_pca(mean: torch.Tensor, cov: torch.Tensor, k: int = PCA_COMPONENTS) -> PCA:
    """The top k eigenvectors of a covariance (D, D), D ≥ 3k.

    LOBPCG finds only those k, where a full eigh of a 4096 × 4096 covariance finds all 4096.
    """
    start = torch.randn(len(cov), k, dtype=cov.dtype, generator=torch.Generator().manual_seed(0))
    variances, vectors = torch.lobpcg(cov, X=start, largest=True)  # (k,), (D, k)
    order = variances.argsort(descending=True)
    return PCA(mean, vectors[:, order].T.contiguous(), variances[order],
               (variances.sum() / cov.trace()).item())


def counted(chunks: Iterable[torch.Tensor], n: int, what: str,
            log: metric.Progress) -> Iterator[torch.Tensor]:
    """The chunks as they come, with a line to `log` every runs.PROGRESS_SECONDS: images done of
    n."""
    ticker, done = runs.Every(), 0
    for chunk in chunks:
        yield chunk
        done += len(chunk)
        if log is not None and ticker.due():
            log(f"{what}: {done:,} of {n:,} images ({ticker.elapsed():.0f} s)")


def image_pca_codes(n_images: int, device: torch.device, batch_size: int,
                    log: Callable[[str], None]) -> tuple[torch.Tensor, str]:
    """The PCA of n_images random images, and the whitened codes (737280, 10) of all; and the
    table's note."""
    t = time.perf_counter()
    log(f"PCA: covariance of {n_images:,} images, then the codes of all {shapes.N_IMAGES:,}")
    pca = fit_pca(*covariance(counted(pixel_chunks(n_images, device, batch_size), n_images,
                                      "PCA covariance", log)))
    codes = metric.encode_all(pca, device, batch_size, log)  # (737280, 10)
    note = (f"PCA: covariance of {n_images:,} images; the top {PCA_COMPONENTS} components explain "
            f"{pca.explained:.1%} of the pixel variance (paper {PAPER_PCA_EXPLAINED:.1%})")
    log(f"{note} ({time.perf_counter() - t:.0f} s)")
    return codes, note


@dataclass
class ICA:
    """An unmixing; calling it gives the estimated sources (B, d) of rows x (B, d)."""

    mean: torch.Tensor  # (d,)
    unmixing: torch.Tensor  # (d, d): sources = (x − mean) @ unmixing^T
    iterations: int
    converged: bool

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x)) @ self.unmixing.T.to(x)


def symmetric_decorrelation(W: torch.Tensor) -> torch.Tensor:
    """W ← (W W^T)^{-1/2} W: orthonormal rows, no row favoured over another."""
    s, u = torch.linalg.eigh(W @ W.T)
    return (u * s.rsqrt()) @ u.T @ W


def fast_ica(x: torch.Tensor, max_iter: int = ICA_MAX_ITER, tol: float = ICA_TOL,
             seed: int = 0) -> ICA:
    """FastICA (Hyvärinen 1999) with the logcosh contrast and symmetric (parallel) updates.

    x (n, d) is centred and whitened first. Each step moves every row w of W to the fixed
    point w ← E[x g(wᵀx)] − E[g'(wᵀx)] w with g(u) = tanh(u), g'(u) = 1 − tanh²(u), then
    decorrelates the rows together; it stops when no row turns by more than `tol`
    (1 − |⟨w_new, w⟩|), as scikit-learn does.
    """
    x = x.double()
    n, d = x.shape
    mean = x.mean(0)
    x = x - mean
    variances, vectors = torch.linalg.eigh(x.T @ x / n)
    K = vectors.T / variances.sqrt()[:, None]  # (d, d) whitening: cov(x Kᵀ) = I
    x = x @ K.T  # (n, d)
    W = symmetric_decorrelation(torch.randn(d, d, dtype=x.dtype,
                                            generator=torch.Generator().manual_seed(seed)))
    for iteration in range(1, max_iter + 1):
        g = torch.tanh(x @ W.T)  # (n, d): g(wᵀx) for every row w
        W_new = symmetric_decorrelation(g.T @ x / n - (1 - g * g).mean(0)[:, None] * W)
        change = ((W_new * W).sum(1).abs() - 1).abs().max().item()
        W = W_new
        if change < tol:
            break
    return ICA(mean, W @ K, iteration, change < tol)


def in_pair(index: torch.Tensor, pair: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """Indices (B,) of the same factors with the shape drawn uniformly from `pair`.

    Sampling uniformly over the grid and then this is sampling uniformly over the pair's
    images. In the metric the two images of a pair draw their shapes independently, which
    holds because the fixed factor y is never shape (the paper's four factors).
    """
    classes = shapes.index_to_classes(index)  # (B, 5)
    classes[:, 0] = torch.tensor(pair)[torch.randint(2, (len(index),), generator=generator)]
    return shapes.classes_to_index(classes)


def ica_codes(pca_codes: torch.Tensor, pair: tuple[int, int] | None, seed: int = 0,
              on_pair: bool = True, max_iter: int = ICA_MAX_ITER) -> tuple[metric.Codes, ICA]:
    """FastICA on ICA_POINTS whitened PCA codes (737280, 10) of one pair of shapes (or all images).

    For a pair, the codes are a function that reads any index as the image of its factors
    with one of the pair's shapes, so the metric sees only that pair's images; with `on_pair`
    False, the table of every image's sources, so the metric also shows it the third shape.
    """
    g = torch.Generator().manual_seed(seed)
    index = torch.randint(shapes.N_IMAGES, (ICA_POINTS,), generator=g)
    if pair is not None:
        index = in_pair(index, pair, g)
    ica = fast_ica(pca_codes[index], max_iter, seed=seed)
    sources = ica(pca_codes.double()).float()  # (737280, 10)
    if pair is None or not on_pair:
        return sources, ica
    return (lambda index: sources[in_pair(index, pair, g)]), ica


def ica_replicas(pca_codes: torch.Tensor, how: str, log: Callable[[str], None],
                 max_iter: int = ICA_MAX_ITER) -> tuple[list[metric.Codes], str]:
    """The ICA row's replicas, fitted now: one per pair of shapes (how = "pairs", A.3; each
    scored on its pair's images, or with "pairs-on-all" on every image) or one on all shapes
    ("all"); and the table's note, which counts the models that converged."""
    pairs = (None,) if how == "all" else SHAPE_PAIRS
    replicas, converged = [], 0
    for pair in pairs:
        codes, ica = ica_codes(pca_codes, pair, on_pair=how == "pairs", max_iter=max_iter)
        replicas.append(codes)
        converged += ica.converged
        which = ("all shapes" if pair is None
                 else "{" + ", ".join(shapes.SHAPE_NAMES[s] for s in pair) + "}")
        log(f"  ICA on {which}: {'converged' if ica.converged else 'NOT converged'} "
            f"after {ica.iterations} iterations")
    models = {"pairs": "one model per pair of shapes, each scored on its pair's images (as A.3)",
              "pairs-on-all": "one model per pair of shapes, each scored on all three shapes",
              "all": "one model on all shapes (the paper fits one per pair)"}[how]
    note = (f"ICA: FastICA (logcosh, symmetric) on {ICA_POINTS:,} whitened PCA codes, {models}; "
            f"{converged} of {len(pairs)} met the tolerance {ICA_TOL:g} in {max_iter:,} "
            "iterations")
    return replicas, note


# ---------------------------------------------------------------- DC-IGN (Kulkarni et al. 2015;
# Table 1)

# The latents each factor's batches train: z1–z4 for posX, posY, scale and rotation, the other six
# together for shape, which no single number describes. Keys are indices of shapes.FACTOR_NAMES.
DCIGN_LATENTS = {3: (0,), 4: (1,), 1: (2,), 2: (3,), 0: (4, 5, 6, 7, 8, 9)}
DCIGN_LR = 5e-4  # RMSprop (Table 1); the rate is Kulkarni et al.'s
# images per forward pass when encoding for the metric (InfoGAN's too): fast, and bounded memory
ENCODE_SLICE = 256


class UnpoolConv2d(nn.Conv2d):
    """DC-IGN's unpooling then a 3×3 convolution (padding 1): each input value fills its 2×2 block
    (nearest-neighbour 2× upsampling), then the convolution. The same function and weights as
    nn.Upsample(scale_factor=2) followed by nn.Conv2d(c_in, c_out, 3, padding=1), computed as one
    transposed convolution, without the upsampled image.

    Why it is the same: an output row 2i + a sees only input rows i − 1 and i (a = 0) or i and
    i + 1 (a = 1), because neighbouring upsampled rows repeat an input row; for a = 0 the 3×3
    kernel's rows add up to (w0, w1 + w2) on them, for a = 1 to (w0 + w1, w2). A transposed
    convolution of stride 2, padding 1 and kernel 4 reaches exactly those rows, with its taps
    (w2, w1 + w2, w0 + w1, w0) (`TAPS`); columns alike. 16 multiply-adds per input pixel and
    channel pair make its four outputs, where the upsampled 3×3 takes 36.
    """

    # TAPS (4, 3): the transposed kernel's 4 taps from the 3 of the convolution's kernel
    TAPS = torch.tensor([[0., 0., 1.], [0., 1., 1.], [1., 1., 0.], [1., 0., 0.]])

    def __init__(self, c_in: int, c_out: int):
        super().__init__(c_in, c_out, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C_in, H, W) -> (B, C_out, 2H, 2W)."""
        T = self.TAPS.to(self.weight)
        kernel = torch.einsum("pk,oikl,ql->iopq", T, self.weight, T)  # (C_in, C_out, 4, 4)
        return nn.functional.conv_transpose2d(x, kernel, self.bias, stride=2, padding=1)


class DCIGN(nn.Module):
    """Table 1's DC-IGN: a conv encoder to 10 Gaussian latents and an unpooling conv decoder."""

    def __init__(self, latents: int = 10):
        super().__init__()
        self.latents = latents
        # ReLU after the pooling: max and ReLU commute, and the ReLU then sees a quarter of the
        # values
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 96, 3, padding=1), nn.MaxPool2d(2), nn.ReLU(),  # (B, 96, 32, 32)
            nn.Conv2d(96, 48, 3, padding=1), nn.MaxPool2d(2), nn.ReLU(),  # (B, 48, 16, 16)
            nn.Conv2d(48, 48, 3, padding=1), nn.MaxPool2d(2), nn.ReLU(),  # (B, 48, 8, 8)
            nn.Flatten(), nn.Linear(48 * 8 * 8, 2 * latents),
        )
        self.decoder = nn.Sequential(
            nn.Linear(latents, 48 * 8 * 8), nn.ReLU(), nn.Unflatten(1, (48, 8, 8)),
            UnpoolConv2d(48, 48), nn.ReLU(),  # (B, 48, 16, 16)
            UnpoolConv2d(48, 96), nn.ReLU(),  # (B, 96, 32, 32)
            UnpoolConv2d(96, 1),  # (B, 1, 64, 64) logits: the sigmoid is in the loss
        )
        # the CPU's convolutions are faster in this layout
        self.to(memory_format=torch.channels_last)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, 1, 64, 64) -> mu, logvar (B, M); mu is the representation the metric reads.

        In slices of ENCODE_SLICE images: the first layer's output is 1.5 MB an image.
        """
        parts = [self.encoder(part.contiguous(memory_format=torch.channels_last)).chunk(2, dim=1)
                 for part in x.split(ENCODE_SLICE)]
        mu, logvar = (torch.cat(halves) for halves in zip(*parts))
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, M) -> logits (B, 1, 64, 64)."""
        return self.decoder(z)


class Clamp(torch.autograd.Function):
    """DC-IGN's clamp of latents z (B, M) to their batch mean, but for the `active` ones (M,) bool.

    Forward: an active latent passes; any other is replaced by its mean over the batch, so the
    decoder sees one value for each factor that this batch holds fixed.
    Backward: an active latent gets the gradient from above; a clamped one's gradient is
    replaced by its deviation from the batch mean, (z − z̄) / B, the gradient of the invariance
    penalty mean_b ½‖z_b − z̄‖² with z̄ held fixed, which pulls these images' codes together.
    """

    @staticmethod
    def forward(ctx, z: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        z_mean = z.mean(0, keepdim=True)  # (1, M)
        ctx.save_for_backward(z - z_mean, active)
        return torch.where(active, z, z_mean)  # (B, M)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        z_diff, active = ctx.saved_tensors
        return torch.where(active, grad, z_diff / len(z_diff)), None


def clamped_batch(n: int, generator: torch.Generator) -> tuple[int, torch.Tensor]:
    """DC-IGN's batch: one factor (returned) drawn per image, the others at one random setting
    (n, 5)."""
    factor = int(torch.randint(len(shapes.FACTOR_SIZES), (1,), generator=generator))
    classes = shapes.sample_factors(1, generator).repeat(n, 1)  # (n, 5)
    classes[:, factor] = torch.randint(shapes.FACTOR_SIZES[factor], (n,), generator=generator)
    return factor, classes


def dcign_network(config: dict) -> DCIGN:
    """The DC-IGN a run's config describes."""
    return DCIGN(config.get("latents", 10))


class DCIGNTrainer(train.Trainer):
    """Kulkarni et al.'s clamped training: each batch varies one factor and trains its latents
    alone."""

    def make_model(self) -> nn.Module:
        return dcign_network(self.config)

    def step(self) -> dict[str, torch.Tensor]:
        factor, classes = clamped_batch(self.config["batch_size"], self.data_generator)
        x = self.source.render(classes)  # (B, 1, 64, 64)
        active = torch.zeros(self.config["latents"], dtype=torch.bool, device=self.device)
        active[list(DCIGN_LATENTS[factor])] = True
        with self.autocast:
            mu, logvar = self.model.encode(x)
            mu, logvar = Clamp.apply(mu.float(), active), Clamp.apply(logvar.float(), active)
            # (B, M) ~ N(0, I)
            eps = torch.randn(mu.shape, generator=self.noise, dtype=mu.dtype, device=mu.device)
            z = mu + eps * (0.5 * logvar).exp()  # z = mu + sigma * eps
            output = self.model.decode(z)
        # The VAE's terms at β = 1 on the clamped codes: the clamped latents' KL gradient is
        # replaced too.
        parts = objective.beta_vae_loss(output.float(), x, mu, logvar, beta=1.0)
        self.optimizer.zero_grad(set_to_none=True)
        parts["loss"].backward()
        self.optimizer.step()
        self.step_count += 1
        return {k: v.detach() for k, v in parts.items()}


def plain_unpooling(model: DCIGN) -> None:
    """Each UnpoolConv2d of `model`'s decoder replaced by the nn.Upsample + nn.Conv2d it computes,
    on the same parameters: --benchmark's reference."""
    for k, layer in enumerate(model.decoder):
        if isinstance(layer, UnpoolConv2d):
            conv = nn.Conv2d(layer.in_channels, layer.out_channels, 3, padding=1)
            conv.weight, conv.bias = layer.weight, layer.bias
            model.decoder[k] = nn.Sequential(nn.Upsample(scale_factor=2), conv)
    model.to(memory_format=torch.channels_last)


def benchmark_dcign(config: dict, device: torch.device, rounds: int = 4, steps: int = 5) -> None:
    """--benchmark: DC-IGN's training samples/s, rendering included, with UnpoolConv2d and with
    the plain unpooling it replaces, timed in turns in one run so that both see the same
    machine."""
    trainers = {"UnpoolConv2d": DCIGNTrainer(config, device),
                "nn.Upsample + nn.Conv2d": DCIGNTrainer(config, device)}
    plain_unpooling(trainers["nn.Upsample + nn.Conv2d"].model)
    print(f"baselines.py --benchmark: DC-IGN training steps at batch {config['batch_size']} on "
          f"{device} ({runs.device_name(device)}), {torch.get_num_threads()} CPU threads, "
          f"{'bf16 autocast' if config['bf16'] else 'fp32'}; {rounds} rounds of {steps} steps "
          f"each", flush=True)
    seconds = dict.fromkeys(trainers, 0.0)
    for trainer in trainers.values():
        trainer.step()  # warm-up
    for _ in range(rounds):
        for name, trainer in trainers.items():
            t = time.perf_counter()
            for _ in range(steps):
                trainer.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds[name] += time.perf_counter() - t
    rate = {name: rounds * steps * config["batch_size"] / s for name, s in seconds.items()}
    for name, r in rate.items():
        print(f"  {name:<24} {r:8,.0f} samples/s")
    ratio = seconds["nn.Upsample + nn.Conv2d"] / seconds["UnpoolConv2d"]
    print(f"  the transposed unpooling is {ratio:.2f}x the plain one")


# ---------------------------------------------------------------- InfoGAN (Chen et al. 2016; A.2)

INFOGAN_CODES = 5  # continuous codes c ~ U(−1, 1)
INFOGAN_NOISE = 5  # noise variables, N(0, 1)
INFOGAN_LAMBDA = 1.0  # weight λ of the mutual-information term (Chen et al., App. C)
# Q's Gaussian over the codes: "learned" σ (Chen et al., App. C) or "fixed" σ = 1 (their released
# code's continuous codes), a flag
Q_STD = ("learned", "fixed")
INFOGAN_LR_G = 1e-3  # Adam (A.2)
INFOGAN_LR_D = 2e-4  # D and Q's (A.2); --lr-d, as a spectral-norm D needs a faster one
INFOGAN_BETAS = (0.5, 0.999)  # Adam's β1 of DCGAN, which InfoGAN builds on
# std of the Gaussian noise on D's inputs (Sønderby et al. 2016), a departure: binary real images
# against G's continuous ones would let D win on grey edge pixels alone
INSTANCE_NOISE = 0.2
# D's normalisation: batch norm (A.2) or, a departure, spectral norm on every layer of D and no
# batch norm in D's body (Miyato et al. 2018), which bounds how fast D can pull ahead of G
D_NORM = ("batch", "spectral")
# values of an optional categorical code (Chen et al.'s code for MNIST's ten digits), a departure
# from A.2's continuous codes: 3 for the three shapes, 0 for none
INFOGAN_CATEGORIES = 0
# the networks: A.2's, or, a departure, Lin et al. 2020's dSprites InfoGAN (their released
# InfoGAN-CR code): G the Table 1 conv decoder's shape (FC 128, FC 4·4·64, four up-convolutions)
# with batch norm, D and Q four 32-32-64-64 convolutions and FC 128 without batch norm: the
# networks of a published dSprites InfoGAN recipe, at a fifth of A.2's weights.
NETWORKS = ("a2", "lin2020")
# G's normalisation: batch norm (A.2, and Lin et al.'s) or, a departure, none: told the factors,
# G without it draws the corners that G with it rounds off (docs/baselines.md)
G_NORM = ("batch", "none")
# the weights' initialisation: PyTorch's defaults or, a departure, DCGAN's (Radford et al. 2016),
# which Lin et al.'s code uses: N(0, 0.02) (truncated at 2σ in convolutions), biases 0
INIT = ("torch", "dcgan")
# generator steps per discriminator step: 1 (A.2) or, a departure, Lin et al.'s code's 2, both on
# the D step's codes and noise
G_STEPS = 1
# the pixels D sees: "signed", in [−1, 1] from G's tanh (DCGAN's), or, a departure, "unit", in [0, 1]
# from G's sigmoid, as in Lin et al.'s code, where the background is 0 like the zero padding
PIXELS = ("signed", "unit")
# weight γ of the R1 penalty (γ/2)·E‖∇ D(x)‖² on real images (Mescheder et al. 2018), a departure:
# it keeps D smooth where the data is without spectral norm's global bound; 0: none (A.2)
R1_GAMMA = 0.0


class HalfTanh(nn.Module):
    """tanh(a / 2) = 2·sigmoid(a) − 1: a sigmoid's output, written in [−1, 1]."""

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return torch.tanh(a / 2)


class InfoGAN(nn.Module):
    """Generator G(c, noise), discriminator D(x) and recognition head Q(c|x) sharing D's body.

    Images are in [−1, 1]; D gives a logit (the sigmoid is in the loss); Q gives the mean and
    log-variance of a Gaussian over the continuous codes and, with `categories`, logits over a
    categorical code, which G reads one-hot between the codes and the noise. `networks` "a2":
    batch norm everywhere but in G's last layer and D's first; with d_norm "spectral", D's body
    and head have spectral norm instead. "lin2020": Lin et al.'s smaller networks, batch norm in
    G alone, spectral norm on every layer of D and Q with d_norm "spectral". g_norm "none" takes
    the batch norm out of G. init "dcgan" draws the weights as DCGAN's code does (`dcgan_init`).
    pixels "unit": G ends in a sigmoid and D reads (x + 1) / 2; images outside stay in [−1, 1].
    """

    def __init__(self, codes: int = INFOGAN_CODES, noise: int = INFOGAN_NOISE,
                 d_norm: str = D_NORM[0], categories: int = INFOGAN_CATEGORIES,
                 networks: str = NETWORKS[0], g_norm: str = G_NORM[0], init: str = INIT[0],
                 pixels: str = PIXELS[0]):
        super().__init__()
        if networks not in NETWORKS:
            raise ValueError(f"unknown networks {networks!r} ({' or '.join(NETWORKS)})")
        if g_norm not in G_NORM:
            raise ValueError(f"unknown g_norm {g_norm!r} ({' or '.join(G_NORM)})")
        if init not in INIT:
            raise ValueError(f"unknown init {init!r} ({' or '.join(INIT)})")
        if pixels not in PIXELS:
            raise ValueError(f"unknown pixels {pixels!r} ({' or '.join(PIXELS)})")
        self.unit_pixels = pixels == "unit"
        out = HalfTanh() if self.unit_pixels else nn.Tanh()  # G's last activation
        self.codes, self.noise, self.categories = codes, noise, categories
        inputs = codes + categories + noise
        spectral = d_norm == "spectral"
        norm = nn.utils.parametrizations.spectral_norm if spectral else (lambda layer: layer)

        def g_batch_norm(layer: nn.Module) -> list[nn.Module]:
            return [layer] if g_norm == "batch" else []

        if networks == "a2":
            self.generator = nn.Sequential(
                nn.Linear(inputs, 256), *g_batch_norm(nn.BatchNorm1d(256)), nn.ReLU(),
                nn.Linear(256, 128 * 8 * 8), *g_batch_norm(nn.BatchNorm1d(128 * 8 * 8)), nn.ReLU(),
                nn.Unflatten(1, (128, 8, 8)),
                nn.ConvTranspose2d(128, 128, 4, 2, 1), *g_batch_norm(nn.BatchNorm2d(128)),
                nn.ReLU(),  # (B, 128, 16, 16)
                nn.ConvTranspose2d(128, 64, 4, 2, 1), *g_batch_norm(nn.BatchNorm2d(64)),
                nn.ReLU(),  # (B, 64, 32, 32)
                nn.ConvTranspose2d(64, 1, 4, 2, 1), out,  # (B, 1, 64, 64) in [−1, 1]
            )

            def batch_norm(layer: nn.Module) -> list[nn.Module]:
                return [] if spectral else [layer]

            self.body = nn.Sequential(
                norm(nn.Conv2d(1, 64, 4, 2, 1)), nn.LeakyReLU(0.2),  # (B, 64, 32, 32)
                norm(nn.Conv2d(64, 128, 4, 2, 1)), *batch_norm(nn.BatchNorm2d(128)),
                nn.LeakyReLU(0.2),  # (B, 128, 16, 16)
                norm(nn.Conv2d(128, 128, 4, 2, 1)), *batch_norm(nn.BatchNorm2d(128)),
                nn.LeakyReLU(0.2),  # (B, 128, 8, 8)
                nn.Flatten(), norm(nn.Linear(128 * 8 * 8, 256)), *batch_norm(nn.BatchNorm1d(256)),
                nn.LeakyReLU(0.2),  # (B, 256)
            )
            self.d_head = norm(nn.Linear(256, 1))
            self.q_head = nn.Sequential(nn.Linear(256, 128), nn.BatchNorm1d(128), nn.LeakyReLU(0.2),
                                        nn.Linear(128, 2 * codes + categories))
        else:  # lin2020
            self.generator = nn.Sequential(
                nn.Linear(inputs, 128), nn.ReLU(), *g_batch_norm(nn.BatchNorm1d(128)),
                nn.Linear(128, 64 * 4 * 4), nn.ReLU(), *g_batch_norm(nn.BatchNorm1d(64 * 4 * 4)),
                nn.Unflatten(1, (64, 4, 4)),
                nn.ConvTranspose2d(64, 64, 4, 2, 1), nn.LeakyReLU(0.2),
                *g_batch_norm(nn.BatchNorm2d(64)),  # (B, 64, 8, 8)
                nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.LeakyReLU(0.2),
                *g_batch_norm(nn.BatchNorm2d(32)),  # (B, 32, 16, 16)
                nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.LeakyReLU(0.2),
                *g_batch_norm(nn.BatchNorm2d(32)),  # (B, 32, 32, 32)
                nn.ConvTranspose2d(32, 1, 4, 2, 1), out,  # (B, 1, 64, 64) in [−1, 1]
            )
            self.body = nn.Sequential(
                norm(nn.Conv2d(1, 32, 4, 2, 1)), nn.LeakyReLU(0.2),  # (B, 32, 32, 32)
                norm(nn.Conv2d(32, 32, 4, 2, 1)), nn.LeakyReLU(0.2),  # (B, 32, 16, 16)
                norm(nn.Conv2d(32, 64, 4, 2, 1)), nn.LeakyReLU(0.2),  # (B, 64, 8, 8)
                norm(nn.Conv2d(64, 64, 4, 2, 1)), nn.LeakyReLU(0.2),  # (B, 64, 4, 4)
                nn.Flatten(), norm(nn.Linear(64 * 4 * 4, 128)), nn.LeakyReLU(0.2),  # (B, 128)
            )
            self.d_head = norm(nn.Linear(128, 1))
            self.q_head = nn.Sequential(norm(nn.Linear(128, 128)), nn.LeakyReLU(0.2),
                                        norm(nn.Linear(128, 2 * codes + categories)))
        if init == "dcgan":
            dcgan_init(self)

    def discriminate(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """x (B, 1, 64, 64) in [−1, 1] -> D's logit (B,), Q's mean and log-variance (B, codes),
        Q's logits over the categorical code (B, categories)."""
        h = self.body((x + 1) / 2 if self.unit_pixels else x)  # (B, 256), (B, 128) with lin2020
        q = self.q_head(h)  # (B, 2 · codes + categories)
        mu, logvar = q[:, :2 * self.codes].chunk(2, dim=1)
        return self.d_head(h)[:, 0], mu, logvar, q[:, 2 * self.codes:]

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The representation the metric reads of real images x in {0, 1}: Q's mean (B, codes),
        then its probabilities of the categorical code (B, categories); and the log-variance
        (0 where a column is a probability)."""
        parts = []
        for part in x.split(ENCODE_SLICE):
            _, mu, logvar, logits = self.discriminate(2 * part - 1)
            parts.append((torch.cat([mu, logits.softmax(1)], 1),
                          torch.cat([logvar, torch.zeros_like(logits)], 1)))
        mu, logvar = (torch.cat(halves) for halves in zip(*parts))
        return mu, logvar


def dcgan_init(model: nn.Module) -> None:
    """DCGAN's initialisation, as in Lin et al.'s TensorFlow code: every weight N(0, 0.02),
    truncated at ±2σ in convolutions, every bias 0. Spectral norm is taken off and put back
    around each layer it wraps, so that its power iteration starts from the new weight."""
    parametrize = nn.utils.parametrize
    layers = [m for m in model.modules()
              if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d))]
    for layer in layers:
        spectral = parametrize.is_parametrized(layer, "weight")
        if spectral:
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=False)
        with torch.no_grad():
            if isinstance(layer, nn.Conv2d):
                nn.init.trunc_normal_(layer.weight, 0.0, 0.02, -0.04, 0.04)
            else:
                nn.init.normal_(layer.weight, 0.0, 0.02)
            nn.init.zeros_(layer.bias)
        if spectral:
            nn.utils.parametrizations.spectral_norm(layer)


def info_nll(c: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """−E log Q(c|x) for a Gaussian Q, summed over the codes, averaged over the batch.

    Minimising it maximises InfoGAN's lower bound L_I = E log Q(c|G(c, noise)) + H(c) on the
    mutual information I(c; G(c, noise)); H(c) is a constant.
    """
    return 0.5 * (math.log(2 * math.pi) + logvar + (c - mu).pow(2) * (-logvar).exp()).sum(1).mean()


def nearest_world(images: torch.Tensor, candidates: torch.Tensor | None = None,
                  chunk: int = 32768) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image's (B, 1, 64, 64) in [0, 1] best match among the world's images (`candidates`,
    indices; all 737,280 by default) by intersection over union above 0.5: the IoU (B,) and the
    index (B,). Does G draw the world's shapes, or blobs of their size? (docs/baselines.md sets it
    beside world images matched against the other two shapes only.)"""
    x = (images.float() > 0.5).flatten(1).float()  # (B, 4096)
    candidates = torch.arange(shapes.N_IMAGES) if candidates is None else candidates
    best = torch.full((len(x),), -1.0)
    match = torch.zeros(len(x), dtype=torch.long)
    for part in candidates.split(chunk):
        world = shapes.render(shapes.index_to_classes(part)).flatten(1)  # (C, 4096)
        both = x @ world.t()  # (B, C) pixels on in both
        iou = both / (x.sum(1, keepdim=True) + world.sum(1) - both).clamp(min=1)
        value, at = iou.max(1)
        better = value > best
        best[better], match[better] = value[better], part[at[better]]
    return best, match


def r1_penalty(d_real: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """E‖∇_x D(x)‖² over real images x (B, 1, 64, 64), D's logits d_real (B,) computed from x with
    x.requires_grad: R1's squared gradient norm (Mescheder et al. 2018, eq. 9), kept in the graph
    so that D's step descends it."""
    grad, = torch.autograd.grad(d_real.float().sum(), real, create_graph=True)  # (B, 1, 64, 64)
    return grad.float().pow(2).sum((1, 2, 3)).mean()


def infogan_inputs(model: InfoGAN, n: int, generator: torch.Generator,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """G's input (n, codes + categories + noise), drawn from `generator` on `device`: the codes
    c ~ U(−1, 1) in the first `model.codes` columns, a uniform category one-hot, then the noise
    ~ N(0, 1)."""
    c = torch.rand(n, model.codes, generator=generator, device=device) * 2 - 1
    parts = [c]
    if model.categories:  # drawn only then, so that runs without one draw as before
        k = torch.randint(model.categories, (n,), generator=generator, device=device)
        parts.append(nn.functional.one_hot(k, model.categories).float())
    parts.append(torch.randn(n, model.noise, generator=generator, device=device))
    return torch.cat(parts, 1)


def infogan_network(config: dict) -> InfoGAN:
    """The InfoGAN a run's config describes (runs from before --d-norm, --categories, --networks,
    --g-norm, --init and --pixels have batch norm, no categorical code, A.2's networks and PyTorch's
    initialisation, and D reads pixels in [−1, 1])."""
    return InfoGAN(d_norm=config.get("d_norm", D_NORM[0]),
                   categories=config.get("categories", INFOGAN_CATEGORIES),
                   networks=config.get("networks", NETWORKS[0]),
                   g_norm=config.get("g_norm", G_NORM[0]), init=config.get("init", INIT[0]),
                   pixels=config.get("pixels", PIXELS[0]))


class InfoGANTrainer(train.Trainer):
    """One discriminator-and-Q step, then one generator step (config's g_steps of them), per
    batch; Adam for each side. config's info_lambda is λ, its q_std "learned" or "fixed"
    (σ = 1), and its r1 the weight γ of an R1 penalty in D's step (0: none)."""

    def __init__(self, config: dict, device: torch.device):
        super().__init__(config, device)
        m = self.model
        self.info_lambda = config.get("info_lambda", INFOGAN_LAMBDA)
        self.fixed_std = config.get("q_std", Q_STD[0]) == "fixed"
        self.instance_noise = config.get("instance_noise", INSTANCE_NOISE)
        self.noise_steps = config.get("instance_noise_steps")
        self.g_steps = config.get("g_steps", G_STEPS)
        self.r1_gamma = config.get("r1", R1_GAMMA)
        # self.optimizer (saved by Trainer.state) moves D and Q; G has its own.
        self.optimizer = torch.optim.Adam([*m.body.parameters(), *m.d_head.parameters(),
                                           *m.q_head.parameters()],
                                          lr=config["lr"], betas=INFOGAN_BETAS)
        self.optimizer_g = torch.optim.Adam(m.generator.parameters(), lr=INFOGAN_LR_G,
                                            betas=INFOGAN_BETAS)

    def make_model(self) -> nn.Module:
        return infogan_network(self.config)

    def state(self) -> dict:
        return {**super().state(), "optimizer_g": self.optimizer_g.state_dict()}

    def load_state(self, ckpt: dict) -> None:
        super().load_state(ckpt)
        self.optimizer_g.load_state_dict(ckpt["optimizer_g"])

    def step(self) -> dict[str, torch.Tensor]:
        m, n = self.model, self.config["batch_size"]
        x, _ = self.source.sample(n, self.data_generator)  # (B, 1, 64, 64) in {0, 1}
        real = 2 * x - 1
        inputs = infogan_inputs(m, n, self.noise, self.device)  # (B, 10 + categories)
        c = inputs[:, :m.codes]  # (B, 5) ~ U(−1, 1)
        # (B,) the category, with a categorical code
        k = inputs[:, m.codes:m.codes + m.categories].argmax(1) if m.categories else None
        bce = nn.functional.binary_cross_entropy_with_logits

        def noisy(images: torch.Tensor) -> torch.Tensor:
            return images + self.noise_std() * torch.randn(images.shape, generator=self.noise,
                                                         dtype=images.dtype, device=images.device)

        d_in = noisy(real).requires_grad_(self.r1_gamma > 0)  # (B, 1, 64, 64) what D reads
        with self.autocast:
            fake = m.generator(inputs)  # (B, 1, 64, 64)
            d_real, *_ = m.discriminate(d_in)
            d_fake, mu, logvar, logits = m.discriminate(noisy(fake.detach()))
        is_real, is_fake = torch.ones(n, device=self.device), torch.zeros(n, device=self.device)
        d_loss = bce(d_real.float(), is_real) + bce(d_fake.float(), is_fake)
        q_loss = self.q_nll(c, k, mu, logvar, logits)
        r1 = self.r1_gamma / 2 * r1_penalty(d_real, d_in) if self.r1_gamma else 0.0
        self.optimizer.zero_grad(set_to_none=True)
        (d_loss + self.info_lambda * q_loss + r1).backward()
        self.optimizer.step()

        for i in range(self.g_steps):
            with self.autocast:
                if i:  # G has moved: draw the same inputs again
                    fake = m.generator(inputs)
                d_fake_g, mu, logvar, logits = m.discriminate(noisy(fake))
            g_loss = bce(d_fake_g.float(), is_real)  # non-saturating: −log D(G(c, noise))
            mi = self.q_nll(c, k, mu, logvar, logits)
            self.optimizer_g.zero_grad(set_to_none=True)
            (g_loss + self.info_lambda * mi).backward()
            self.optimizer_g.step()
        self.step_count += 1
        self.fake = fake.detach()  # the last batch drawn, for report's shape_like
        return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach(), "info_nll": mi.detach(),
                "d_real": torch.sigmoid(d_real).mean().detach(),
                "d_fake": torch.sigmoid(d_fake).mean().detach()}

    def noise_std(self) -> float:
        """The instance noise's std at this step: constant, or with config's instance_noise_steps
        falling linearly to 0 over that many steps (Sønderby et al. 2016's annealing)."""
        if not self.noise_steps:
            return self.instance_noise
        return self.instance_noise * max(0.0, 1 - self.step_count / self.noise_steps)

    def q_nll(self, c: torch.Tensor, k: torch.Tensor | None, mu: torch.Tensor,
              logvar: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """−E log Q(c, k|x): the Gaussian's over the continuous codes c (B, codes), plus, with a
        categorical code, the cross-entropy of Q's logits (B, categories) at the category k (B,)."""
        nll = info_nll(c, *self.q_gaussian(mu, logvar))
        if self.model.categories:
            nll = nll + nn.functional.cross_entropy(logits.float(), k)
        return nll

    def q_gaussian(self, mu: torch.Tensor,
                   logvar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Q's mean and log-variance (B, codes) in fp32; log σ² = 0 where σ is fixed."""
        mu = mu.float()
        return mu, torch.zeros_like(mu) if self.fixed_std else logvar.float()

    def report(self, mean: dict[str, torch.Tensor]) -> tuple[str, dict[str, float]]:
        """The means of the steps since the last report, and the share of the last batch of
        samples that look like the world's (`shape_like`)."""
        fields = {k: v.item() for k, v in mean.items()}
        fields["shape_like"] = shape_like((self.fake + 1) / 2).float().mean().item()
        text = (f"D {fields['d_loss']:.3f} G {fields['g_loss']:.3f} "
                f"−log Q(c|x) {fields['info_nll']:.3f} | "
                f"D(real) {fields['d_real']:.2f} D(fake) {fields['d_fake']:.2f} | "
                f"shape-like {fields['shape_like']:.0%}")
        return text, fields


# A sample "looks like the world" when it is nearly binary and holds one object of a world object's
# area: the checks that separate drawn shapes from textures and speckle.
GREY_SHARE = 0.03  # at most this share of pixels between 0.1 and 0.9
AREA_MARGIN = 0.2  # the object's area within the world's smallest and largest, ±20 %


@functools.cache
def world_areas() -> tuple[float, float]:
    """The smallest and largest object area in pixels over the world's shapes, scales and
    orientations, at the centre (position moves an area by rounding only)."""
    classes = torch.cartesian_prod(torch.arange(3), torch.arange(6), torch.arange(40),
                                   torch.tensor([16]), torch.tensor([16]))  # (720, 5)
    area = shapes.render(classes).sum((1, 2, 3))  # (720,)
    return area.min().item(), area.max().item()


def objects(mask: torch.Tensor) -> torch.Tensor:
    """The number of 8-connected objects in each mask (B, H, W) bool: (B,). Each pixel takes the
    largest label in its 3×3 neighbourhood until nothing changes; an object's largest pixel index
    is then its label, held by that pixel alone of its object. 8-connected, because a rendered
    heart's thin tip can touch its body at a corner only."""
    B, H, W = mask.shape
    on = mask[:, None].float()  # (B, 1, H, W)
    own = torch.arange(1, H * W + 1, dtype=torch.float32).view(1, 1, H, W) * on  # 0 off; exact
    labels = own
    while True:
        grown = nn.functional.max_pool2d(labels, 3, stride=1, padding=1) * on
        if torch.equal(grown, labels):
            return ((labels == own) & (on > 0)).sum((1, 2, 3))
        labels = grown


def shape_like(images: torch.Tensor) -> torch.Tensor:
    """Which images (B, 1, 64, 64) in [0, 1] look like the world's: nearly binary (GREY_SHARE),
    one object above 0.5 (`objects`) and its area within the world's (`world_areas`, AREA_MARGIN
    either side). (B,) bool: a generator that draws textures or speckle fails it, the world's own
    images pass."""
    x = images.float()[:, 0]  # (B, 64, 64)
    grey = ((x > 0.1) & (x < 0.9)).float().mean((1, 2))
    mask = x > 0.5
    smallest, largest = world_areas()
    area = mask.sum((1, 2))
    return ((grey <= GREY_SHARE) & (objects(mask) == 1)
            & (area >= (1 - AREA_MARGIN) * smallest) & (area <= (1 + AREA_MARGIN) * largest))


def precise_batch_norm(module: nn.Module, batches: Iterable[torch.Tensor]) -> nn.Module:
    """A copy of `module` in eval mode whose batch norms hold the mean of the statistics of
    `batches` (each fed through it in train mode), the module itself untouched.

    Why: training keeps running averages with momentum 0.1, the last ~10 steps, and InfoGAN's G
    moves enough in that many steps that eval-mode samples drawn with them are worse than the
    batches it was trained on; statistics measured on the weights as they are fix that.
    """
    fresh = copy.deepcopy(module).train()
    for norm in fresh.modules():
        if isinstance(norm, nn.modules.batchnorm._BatchNorm):
            norm.reset_running_stats()
            norm.momentum = None  # a plain mean over the batches
    with torch.no_grad():
        for x in batches:
            fresh(x)
    return fresh.eval()


def sampling_generator(model: InfoGAN, batches: int = 8, batch_size: int = 64,
                       seed: int = 0) -> nn.Module:
    """G in eval mode with batch-norm statistics of `batches` batches of its own samples
    (`precise_batch_norm`): the generator the sample figure and `shape_like` shares read."""
    g = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    return precise_batch_norm(model.generator, (infogan_inputs(model, batch_size, g).to(device)
                                                for _ in range(batches)))


def draw_infogan(model: InfoGAN, path: str, columns: int = 8, seed: int = 0) -> None:
    """Each code swept over [−1, 1] with the rest fixed (and, with a categorical code, a row per
    category: the columns' other inputs shared down the rows), beside random samples and how
    many of them look like the world's (`shape_like`): did G learn the shapes?"""
    g = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    generator = sampling_generator(model, seed=seed)
    codes, categories = model.codes, model.categories
    rows = codes + categories
    with torch.no_grad():
        first = torch.zeros(1, categories)
        first[:, :1] = 1  # the first category, if there is a categorical code
        base = torch.cat([torch.zeros(1, codes), first,
                          torch.randn(1, model.noise, generator=g)], 1)  # (1, inputs)
        inputs = base.repeat(rows, columns, 1)  # (rows, columns, inputs)
        for i in range(codes):
            inputs[i, :, i] = torch.linspace(-1, 1, columns)
        if categories:
            others = infogan_inputs(model, columns, g)  # (columns, inputs)
            for j in range(categories):
                inputs[codes + j] = others
                inputs[codes + j, :, codes:codes + categories] = torch.eye(categories)[j]
        sweeps = generator(inputs.flatten(0, 1).to(device))  # (rows · columns, 1, 64, 64)
        samples = generator(infogan_inputs(model, rows * columns, g).to(device))
    labels = [f"c{i + 1}" for i in range(codes)] + [f"k={j + 1}" for j in range(categories)]
    sweep_title = "each code from -1 to 1" + (", each category" if categories else "")
    grids = [traverse.labelled_grid(((images + 1) / 2).view(rows, columns, 1, 64, 64),
                                    row_labels, title=title)
             for images, row_labels, title in (
                 (sweeps, labels, sweep_title),
                 (samples, None, f"random samples, {shape_like((samples + 1) / 2).sum()} of "
                                 f"{len(samples)} shape-like"))]
    traverse.side_by_side(grids).save(path)


# ---------------------------------------------------------------- the Fig. 6 table (Sec. 4.2,
# Fig. 6 left)

ROWS = {"gt": "ground truth", "pixels": "raw pixels", "pca": "PCA", "ica": "ICA",
        "untrained": "VAE untrained"}


@dataclass(frozen=True)
class Baseline:
    """A trained competitor of Fig. 6: its row label, network and trainer, and the optimiser its
    config names."""

    label: str
    model: Callable[[dict], nn.Module]  # the network a run's config describes
    trainer: type[train.Trainer]
    optimizer: str
    lr: float
    # a figure of what it learned, drawn after training
    samples: Callable[[nn.Module, str], None] | None = None


TRAINED = {
    "dcign": Baseline("DC-IGN", dcign_network, DCIGNTrainer, "rmsprop", DCIGN_LR),
    "infogan": Baseline("InfoGAN", infogan_network, InfoGANTrainer, "adam", INFOGAN_LR_D,
                        draw_infogan),
}


@dataclass
class Row:
    """One line of the table: a label (a key of PAPER where the paper has the row) and a function
    giving the codes of each replica, called only when the row is scored."""

    label: str
    codes: Callable[[], Iterable[metric.Codes]]


def score_row(row: Row, seeds: int = 3, first_seed: int = 0, table2: bool = False,
              **settings) -> tuple[list[float], list[dict[str, float]]]:
    """The metric for every replica and classifier seed (len = replicas × seeds), and with
    `table2` the A.5 factor accuracies of every replica at the first seed."""
    scores, accuracies = [], []
    for codes in row.codes():
        scores += [metric.disentanglement_score(codes, seed=first_seed + s, **settings)
                   for s in range(seeds)]
        if table2:
            accuracies.append(metric.factor_classification(
                codes, seed=first_seed,
                **{k: v for k, v in settings.items() if k not in ("L", "factors", "progress")}))
    return scores, accuracies


def table_text(lines: list[tuple[str, ...]], markdown: bool) -> str:
    """Rows of cells, the header first, as markdown or as columns aligned with spaces."""
    if markdown:
        lines = [lines[0], ("---",) * len(lines[0]), *lines[1:]]
        return "\n".join("| " + " | ".join(line) + " |" for line in lines)
    widths = [max(len(line[c]) for line in lines) for c in range(len(lines[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()
                     for line in lines)


def format_table(results: list[tuple[str, list[float]]], markdown: bool = False) -> str:
    """Our mean ± std beside the paper's figure and the difference, in percentage points."""
    lines = [("representation", "ours (%)", "paper (%)", "ours − paper")]
    for label, scores in results:
        mean, std = metric.mean_std(scores)
        ours, paper = f"{100 * mean:.2f} ± {100 * std:.2f}", PAPER.get(label)
        if paper is None:
            lines.append((label, ours, "—", "—"))
        else:
            paper_text = f"{paper[0]:g}" + ("" if paper[1] is None else f" ± {paper[1]:g}")
            lines.append((label, ours, paper_text, f"{100 * mean - paper[0]:+.2f}"))
    return table_text(lines, markdown)


def checkpoint_label(config: dict) -> str:
    """The row of a β-VAE checkpoint: Fig. 6's label for its β."""
    beta = config.get("beta", 1.0)
    return "VAE (β = 1)" if beta == 1 else f"β-VAE (β = {beta:g})"


def load_representation(path: str, device: torch.device) -> tuple[nn.Module, str]:
    """A trained model of 2D shapes (β-VAE, DC-IGN or InfoGAN) and its row label."""
    ckpt = read_checkpoint(path)
    config = ckpt["config"]
    name = config.get("baseline")
    if name is None:
        return metric.load_shapes_model(path, device), checkpoint_label(config)
    if name not in TRAINED:
        raise UsageError(f"{path}: unknown baseline {name!r}")
    model = TRAINED[name].model(config)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise UsageError(f"{path}: model does not match its config "
                         f"({str(e).splitlines()[0]})") from None
    return model.to(device).eval(), TRAINED[name].label


def checkpoint_rows(specs: list[str], device: torch.device, batch_size: int, cache: bool = True,
                    log: metric.Progress = None) -> list[Row]:
    """One row per label; checkpoints sharing a label are replicas. Loads every one now, to fail
    early.

    The codes come from metric.checkpoint_codes: cached beside each checkpoint unless `cache` is
    False.
    """
    groups: dict[str, list[tuple[str, nn.Module]]] = {}
    for spec in specs:
        label, path = traverse.split_checkpoint(spec)
        net, own_label = load_representation(path, device)
        groups.setdefault(label or own_label, []).append((path, net))
    return [Row(label, lambda nets=nets: (metric.checkpoint_codes(path, net, device, cache,
                                                                  batch_size, log)
                                          for path, net in nets))
            for label, nets in groups.items()]


def baseline_rows(names: list[str], args: argparse.Namespace, device: torch.device,
                  log: Callable[[str], None]) -> tuple[list[Row], list[str]]:
    """The rows named (keys of ROWS), in the paper's order, and the notes for under the table.

    Fits the PCA now when PCA or ICA is asked for (both read its codes), and the ICA models.
    """
    rows, notes = [], []
    if "gt" in names:
        rows.append(Row(ROWS["gt"], lambda: [ground_truth_codes()]))
    if "pixels" in names:
        rows.append(Row(ROWS["pixels"], lambda: [pixel_codes]))
    if "pca" in names or "ica" in names:
        pca_codes, note = image_pca_codes(min(args.pca_images, shapes.N_IMAGES), device,
                                          args.batch_size, log)
        notes.append(note)
        if "pca" in names:
            rows.append(Row(ROWS["pca"], lambda: [pca_codes]))
        if "ica" in names:
            replicas, note = ica_replicas(pca_codes, args.ica, log, args.ica_max_iter)
            rows.append(Row(ROWS["ica"], lambda: replicas))
            notes.append(note)
    if "untrained" in names:
        rows.append(Row(ROWS["untrained"], lambda: (
            metric.encode_all(untrained_vae(seed).to(device), device, args.batch_size, log)
            for seed in range(args.untrained_inits))))
        inits = ("seed 0" if args.untrained_inits == 1
                 else f"seeds 0–{args.untrained_inits - 1}, one replica each")
        notes.append(f"VAE untrained: the Table 1 fc model as initialised with torch {inits}")
    return rows, notes


# ---------------------------------------------------------------- Table 2 (A.5)

# A linear classifier's accuracy (%) at each factor's value from the codes, in the order of
# shapes.FACTOR_NAMES: shape ("id" in the paper), scale, rotation, posX, posY.
PAPER_TABLE2 = {
    "β-VAE (β = 4)": (50.08, 43.03, 20.36, 52.25, 49.5),
    "VAE (β = 1)": (41.55, 24.07, 8.0, 16.5, 18.72),
    "PCA": (43.38, 36.08, 5.96, 60.66, 60.15),
}


def format_table2(results: list[tuple[str, list[dict[str, float]]]], markdown: bool = False) -> str:
    """A.5 / Table 2: mean accuracy over replicas per factor, the paper's figure in brackets."""
    lines = [("representation", *(f"{name} (%)" for name in shapes.FACTOR_NAMES))]
    for label, accuracies in results:
        paper = PAPER_TABLE2.get(label)
        cells = []
        for k, name in enumerate(shapes.FACTOR_NAMES):
            ours = 100 * sum(a[name] for a in accuracies) / len(accuracies)
            cells.append(f"{ours:.2f}" + ("" if paper is None else f" ({paper[k]:g})"))
        lines.append((label, *cells))
    return table_text(lines, markdown)


# ---------------------------------------------------------------- the CLI: --train and --table

def categories_arg(text: str) -> int:
    """argparse type of --categories: 0 (no categorical code) or a count of at least 2."""
    value = runs.positive_number(text, int, zero=True)
    if value == 1:
        raise argparse.ArgumentTypeError("1: a categorical code needs 0 (none) or 2 or more values")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__)
    p.add_argument("checkpoints", nargs="*",
                   help="trained 2D-shapes models to add, as path or label=path; "
                        "the same label = replicas")
    p.add_argument("--table", action="store_true",
                   help="score the rows and print the Fig. 6 (left) table")
    p.add_argument("--rows", default=",".join(ROWS),
                   help=f"baseline rows, comma-separated, from {', '.join(ROWS)} (default: all)")
    p.add_argument("--markdown", action="store_true", help="print the table as markdown")
    p.add_argument("--a4", action="store_true",
                   help="A.4: drop the bottom half of each row's scores (replicas × seeds) "
                        "before mean ± std")
    p.add_argument("--table2", action="store_true",
                   help="also Table 2 (A.5): each factor's linear-classifier accuracy, "
                        "mean over replicas")
    p.add_argument("--L", type=positive_int, nargs="+", default=[metric.DEFAULT_L],
                   help=f"pairs averaged per point (default {metric.DEFAULT_L}); "
                        "several: one table each")
    p.add_argument("--n-train", type=positive_int, default=metric.DEFAULT_N_TRAIN,
                   help=f"classifier training points (default {metric.DEFAULT_N_TRAIN})")
    p.add_argument("--n-test", type=positive_int, default=metric.DEFAULT_N_TEST,
                   help=f"held-out points (default {metric.DEFAULT_N_TEST})")
    p.add_argument("--classifier", choices=("lbfgs", "adagrad"), default=metric.CLASSIFIER,
                   help=f"optimizer of the linear classifier (default {metric.CLASSIFIER}; "
                        "adagrad is the paper's)")
    p.add_argument("--classifier-steps", type=positive_int, default=metric.CLASSIFIER_STEPS,
                   help="L-BFGS iterations at most, or Adagrad steps "
                        f"(default {metric.CLASSIFIER_STEPS})")
    p.add_argument("--classifier-lr", type=positive_float, default=metric.CLASSIFIER_LR,
                   help=f"Adagrad learning rate (default {metric.CLASSIFIER_LR}, as the paper)")
    p.add_argument("--seeds", type=positive_int, default=3,
                   help="classifier seeds per replica (default 3, as A.4)")
    p.add_argument("--seed", type=seed_arg, default=0, help="first classifier seed (default 0)")
    p.add_argument("--pca-images", type=positive_int, default=DEFAULT_PCA_IMAGES,
                   help=f"images the PCA covariance is computed on, drawn at random (default all "
                        f"{shapes.N_IMAGES:,}; fewer is faster but moves the PCA and ICA scores)")
    p.add_argument("--ica", choices=("pairs", "pairs-on-all", "all"), default="pairs",
                   help="one FastICA model per pair of shapes, each scored on its pair's images "
                        "(default, as A.3) or on all images, or one model on all shapes")
    p.add_argument("--ica-max-iter", type=positive_int, default=ICA_MAX_ITER,
                   help=f"FastICA iterations at most (default {ICA_MAX_ITER}, scikit-learn's; "
                        "a model that has not met the tolerance by then is scored as it is)")
    p.add_argument("--untrained-inits", type=positive_int, default=1,
                   help="random initialisations of the untrained VAE, one replica each (default 1)")
    t = p.add_argument_group("training DC-IGN and InfoGAN "
                             "(checkpoints, logs and --resume as train.py)")
    t.add_argument("--benchmark", action="store_true",
                   help="with --train dcign: training samples/s with UnpoolConv2d and with "
                        "nn.Upsample + nn.Conv2d, timed in turns; trains nothing")
    t.add_argument("--train", choices=sorted(TRAINED),
                   help="train this baseline instead of a table")
    t.add_argument("--steps", type=positive_int, default=20_000,
                   help="training steps (default 20,000; with --resume, the new total)")
    t.add_argument("--out",
                   help="checkpoint path; the CSV log goes beside it "
                        "(default dcign.pt / infogan.pt)")
    t.add_argument("--resume", action="store_true", help="continue the run saved at --out")
    t.add_argument("--overwrite", action="store_true",
                   help="start again at an --out that holds a run")
    t.add_argument("--train-batch-size", type=positive_int, default=64,
                   help="images per training step (default 64)")
    t.add_argument("--train-seed", type=seed_arg, default=0,
                   help="seed of the weights, noise and batches (default 0)")
    t.add_argument("--log-every", type=positive_int, default=100,
                   help="steps between progress lines and CSV rows")
    t.add_argument("--save-every", type=positive_int, default=1000,
                   help="steps between checkpoints")
    t.add_argument("--save-minutes", type=positive_float, default=runs.SAVE_MINUTES,
                   help="minutes of training between checkpoints, whichever comes first "
                        f"(default {runs.SAVE_MINUTES:g})")
    t.add_argument("--eval-every", type=positive_int,
                   help="steps between learning-curve scores in the CSV: the Sec. 3 score at "
                        "L = 16, 2,000 train / 1,000 test points, on the 96,000 images they "
                        "need (run --table on a checkpoint for the full score)")
    t.add_argument("--bf16", action="store_true", help="departure: bfloat16 autocast for speed")
    t.add_argument("--info-lambda", type=positive_float, default=INFOGAN_LAMBDA,
                   help=f"InfoGAN: weight λ of the mutual-information term "
                        f"(default {INFOGAN_LAMBDA:g}, Chen et al.'s)")
    t.add_argument("--instance-noise", type=non_negative_float, default=INSTANCE_NOISE,
                   help=f"InfoGAN: std of the Gaussian noise on D's inputs in [−1, 1] "
                        f"(default {INSTANCE_NOISE:g}; 0: none)")
    t.add_argument("--instance-noise-steps", type=positive_int,
                   help="InfoGAN: anneal the instance noise linearly to 0 over this many steps "
                        "(default: constant)")
    t.add_argument("--d-norm", choices=D_NORM, default=D_NORM[0],
                   help="InfoGAN: D's normalisation, batch norm (default, A.2) or spectral norm "
                        "on every layer of D (departure: Miyato et al. 2018)")
    t.add_argument("--lr-d", type=positive_float, default=INFOGAN_LR_D,
                   help=f"InfoGAN: Adam's learning rate for D and Q (default {INFOGAN_LR_D:g}, A.2; "
                        "departure: 2e-3 with --d-norm spectral, Lin et al. 2020's on dSprites)")
    t.add_argument("--categories", type=categories_arg, default=INFOGAN_CATEGORIES,
                   help="InfoGAN: values of a categorical code beside the continuous ones "
                        "(departure: Chen et al.'s digit code; 3 for the three shapes; default 0, "
                        "none, as A.2)")
    t.add_argument("--networks", choices=NETWORKS, default=NETWORKS[0],
                   help="InfoGAN: A.2's networks (default) or Lin et al. 2020's smaller dSprites "
                        "ones (departure: their published recipe's)")
    t.add_argument("--g-norm", choices=G_NORM, default=G_NORM[0],
                   help="InfoGAN: G's normalisation, batch norm (default, A.2) or none "
                        "(departure: G learns the shapes' corners sooner without it)")
    t.add_argument("--init", choices=INIT, default=INIT[0],
                   help="InfoGAN: the weights' initialisation, PyTorch's (default) or DCGAN's "
                        "N(0, 0.02) with zero biases (departure: Lin et al. 2020's code)")
    t.add_argument("--g-steps", type=positive_int, default=G_STEPS,
                   help=f"InfoGAN: generator steps per discriminator step (default {G_STEPS}, "
                        "A.2; departure: 2 in Lin et al. 2020's code)")
    t.add_argument("--pixels", choices=PIXELS, default=PIXELS[0],
                   help="InfoGAN: D reads pixels in [−1, 1] from G's tanh (default) or in [0, 1] "
                        "from G's sigmoid (departure: Lin et al. 2020's code)")
    t.add_argument("--r1", type=non_negative_float, default=R1_GAMMA,
                   help="InfoGAN: weight γ of an R1 penalty on D's gradient at real images "
                        "(departure: Mescheder et al. 2018; default 0, none, as A.2)")
    t.add_argument("--q-std", choices=Q_STD, default=Q_STD[0],
                   help="InfoGAN: Q's σ over the codes, learned (default, Chen et al.'s appendix) "
                        "or fixed at 1 (their released code's)")
    p.add_argument("--no-cache", action="store_true",
                   help="encode the checkpoints afresh; neither read nor write their "
                        "<stem>.codes.pt")
    p.add_argument("--device",
                   help="device for rendering and encoding (default: cuda, then mps, then cpu)")
    p.add_argument("--threads", type=positive_int,
                   help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--batch-size", type=positive_int, default=8192,
                   help="images per rendering batch (default 8192)")
    return p


# --eval-every's learning-curve score: reduced settings on images rendered on demand, as encoding
# all 737,280 images through a conv net at every point would cost more than the training between
CURVE_SCORE = {"L": 16, "n_train": 2000, "n_test": 1000}

# flags whose config key has another name
CONFIG_OF = {"train_batch_size": "batch_size", "train_seed": "seed", "lr_d": "lr"}
# a --resume refuses any of these that differs from the checkpoint's
TRAINING_FLAGS = {"steps", "train_batch_size", "train_seed", "log_every", "save_every",
                  "save_minutes", "eval_every", "bf16", "info_lambda", "q_std", "instance_noise",
                  "instance_noise_steps", "d_norm", "categories", "lr_d", "networks",
                  "g_norm", "init", "g_steps", "pixels", "r1"}


def baseline_config(args: argparse.Namespace, out: str, device: torch.device) -> dict:
    """The run's train.py-style config: with --resume the checkpoint's own, given the new --steps;
    else the paper's network and optimiser with the flags' settings."""
    # as train.py's: the checkpoint's settings, a new total if --steps is given, others refused
    if args.resume:
        config = runs.read_resume_checkpoint(out)["config"]
        if config.get("baseline") != args.train:
            raise UsageError(f"--resume: {out} is not a {args.train} checkpoint")
        given = {flag: value for flag, value in runs.flags_given(build_parser()).items()
                 if flag in TRAINING_FLAGS}
        as_flags = config | {flag: config.get(key) for flag, key in CONFIG_OF.items()}
        runs.check_same_settings(out, as_flags, given, {"steps"})
        return {**config, "steps": given.get("steps", config["steps"])}
    baseline = TRAINED[args.train]
    config = {"baseline": args.train, "dataset": "shapes", "channels": 1, "latents": 10,
              "optimizer": baseline.optimizer, "lr": baseline.lr,
              "batch_size": args.train_batch_size, "steps": args.steps, "seed": args.train_seed,
              "bf16": args.bf16, "log_every": args.log_every, "save_every": args.save_every,
              "save_minutes": args.save_minutes, "eval_every": args.eval_every}
    if args.train == "infogan":
        config |= {"info_lambda": args.info_lambda, "q_std": args.q_std,
                   "instance_noise": args.instance_noise,
                   "instance_noise_steps": args.instance_noise_steps, "d_norm": args.d_norm,
                   "categories": args.categories, "lr": args.lr_d, "networks": args.networks,
                   "g_norm": args.g_norm, "init": args.init, "g_steps": args.g_steps,
                   "pixels": args.pixels, "r1": args.r1}
    runs.settle_bf16(config, device)
    return config


def train_baseline(args: argparse.Namespace) -> None:
    """--train dcign|infogan: train.py's loop, logs and checkpoints with the baseline's trainer."""
    baseline = TRAINED[args.train]
    out = args.out if args.out is not None else f"{args.train}.pt"
    train.check_eval_every(args.eval_every, args.log_every)
    device = pick_device(args.device)
    if args.benchmark:
        benchmark_dcign(baseline_config(args, out, device), device)
        return
    with runs.claim_out(out, args.resume, args.overwrite):
        config = baseline_config(args, out, device)
        trainer = baseline.trainer(config, device)
        train.train(config, out, device, resume=args.resume, trainer=trainer,
                    score=functools.partial(metric.training_score, device=device, rendered=True,
                                            **CURVE_SCORE))
    if baseline.samples is not None:
        samples = str(Path(out).with_suffix("")) + "_samples.png"
        baseline.samples(trainer.model, samples)
        print(f"wrote {samples}")


def progress(line: str) -> None:
    """--table's progress: on stderr, so that stdout holds the tables alone."""
    print(line, file=sys.stderr, flush=True)


def row_names(rows: str) -> list[str]:
    """The keys of ROWS that --rows names, comma-separated; UsageError for any other."""
    names = [name.strip() for name in rows.split(",") if name.strip()]
    unknown = [name for name in names if name not in ROWS]
    if unknown:
        raise UsageError(f"unknown row {unknown[0]!r} in --rows (choose from {', '.join(ROWS)})")
    return names


def score_replicas(label: str, replicas: list[metric.Codes], L: int, table2: bool,
                   args: argparse.Namespace) -> tuple[list[float], list[dict[str, float]]]:
    """score_row at one L with the flags' classifier, a progress line before and after."""
    t = time.perf_counter()
    progress(f"{label}, L = {L}: scoring {len(replicas)} replica(s) × {args.seeds} seed(s)")
    scores, accuracies = score_row(Row(label, lambda: replicas), args.seeds, args.seed, table2, L=L,
                                   progress=progress, n_train=args.n_train, n_test=args.n_test,
                                   steps=args.classifier_steps, lr=args.classifier_lr,
                                   optimizer=args.classifier)
    mean, std = metric.mean_std(scores)
    progress(f"{label}, L = {L}: {100 * mean:.2f} ± {100 * std:.2f} % over {len(scores)} score(s): "
             f"{', '.join(f'{100 * s:.2f}' for s in scores)} ({time.perf_counter() - t:.0f} s)")
    return scores, accuracies


def score_rows(rows: list[Row], args: argparse.Namespace
               ) -> tuple[dict[int, list[tuple[str, list[float]]]],
                          list[tuple[str, list[dict[str, float]]]]]:
    """Each row's scores at every --L (with --a4 the kept half), by L; with --table2 its A.5
    accuracies, at the first L."""
    results: dict[int, list[tuple[str, list[float]]]] = {L: [] for L in args.L}
    table2 = []
    for row in rows:
        replicas = list(row.codes())  # encoded once, scored at every L
        for k, L in enumerate(args.L):
            scores, accuracies = score_replicas(row.label, replicas, L, args.table2 and k == 0,
                                                args)
            results[L].append((row.label, metric.a4_protocol(scores)[2] if args.a4 else scores))
            if accuracies:
                table2.append((row.label, accuracies))
    return results, table2


def print_tables(results: dict[int, list[tuple[str, list[float]]]],
                 table2: list[tuple[str, list[dict[str, float]]]], notes: list[str],
                 args: argparse.Namespace) -> None:
    """On stdout: the Fig. 6 table of each L under its settings, Table 2 with --table2, then the
    rows' notes."""
    classifier = metric.classifier_description(args.classifier, args.classifier_steps,
                                               args.classifier_lr)
    for L in args.L:
        print(format_table(results[L], args.markdown))
        print()
        print(f"Metric: L = {L}, {args.n_train:,} train / {args.n_test:,} test points, factors "
              f"{', '.join(shapes.FACTOR_NAMES[f] for f in metric.PAPER_FACTORS)}; "
              f"linear softmax, {classifier}; "
              f"{args.seeds} classifier seed(s) per replica, std over seeds and replicas"
              + (", the bottom half of each row's scores dropped (A.4)." if args.a4 else "."))
        print()
    if args.table2:
        print(format_table2(table2, args.markdown))
        print()
        print(f"Table 2 (A.5): {args.n_train:,} train / {args.n_test:,} test codes per factor, "
              f"classifier seed {args.seed}, mean over replicas; the paper's figure in brackets.")
    for note in notes:
        print(f"{note}.")


def fig6_table(args: argparse.Namespace) -> None:
    """--table: the rows of --rows and of the checkpoints, scored at every --L and printed."""
    names = row_names(args.rows)
    device = pick_device(args.device)
    # fail before any work
    extra = checkpoint_rows(args.checkpoints, device, args.batch_size, not args.no_cache, progress)
    progress(f"baselines.py: the Fig. 6 table on {device}, {torch.get_num_threads()} CPU threads: "
             f"rows {', '.join([ROWS[n] for n in names] + args.checkpoints)} "
             f"at L = {', '.join(map(str, args.L))}; "
             f"progress here on stderr, the table on stdout"
             + ("" if not args.checkpoints or args.no_cache
                else "; checkpoint codes cached as <stem>.codes.pt"))
    rows, notes = baseline_rows(names, args, device, progress)
    results, table2 = score_rows(rows + extra, args)
    print_tables(results, table2, notes, args)


def main() -> None:
    p = build_parser()
    args = p.parse_args()
    if args.benchmark and args.train != "dcign":
        p.error("--benchmark times DC-IGN's training: give --train dcign")
    if not (args.train or args.table):
        p.error("nothing to do: give --table or --train")
    with cli_errors("baselines.py"):
        set_threads(args.threads)
        if args.train:
            train_baseline(args)
        else:
            fig6_table(args)


if __name__ == "__main__":
    main()
