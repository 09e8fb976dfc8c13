"""The disentanglement metric of β-VAE (Higgins et al., ICLR 2017, Sec. 3, Eq. 5, A.4).

For each point (Sec. 3):
  1. choose a factor y uniformly (posX, posY, scale, rotation; --include-shape adds shape);
  2. draw L pairs of factor vectors v1, v2 that agree on y and are independent elsewhere;
  3. take the representations z1, z2 of the images: the encoder mean μ;
  4. average z_diff = |z1 − z2| over the L pairs                              (Eq. 5)
then train a linear softmax classifier (NLL, until convergence) to predict y from that average.
The score is its accuracy on held-out points. Also here: the A.4 protocol, the factor
classification of A.5 (Table 2), MIG (Chen et al. 2018) and the FactorVAE metric (Kim & Mnih 2018).

What it scores, `codes`: either a table (737280, D) whose row i is the representation of image i
in DeepMind's index order, or a function from such indices to codes. `encode_all(encoder)` makes
the table from an encoder, which is anything a researcher has: a callable images (B, 1, 64, 64)
in {0, 1} -> mu (B, D), or a module with `encode(x) -> (mu, logvar)`.

Copied into another project it needs torch and shapes.py beside it: shapes.py's factor grid draws
the pairs of Sec. 3, and its renderer draws the images an encoder is given. The cache of a
checkpoint's codes (<stem>.codes.pt beside it) also uses model.py and runs.py; the command line
uses those, and for --latents and --rotate replicas.py and loss.py (neither imports this file).

    python metric.py ckpt.pt                  # the score, its settings and seconds taken
    python metric.py ckpt.pt --table2 --all   # plus A.5 accuracies, MIG and FactorVAE
    python metric.py a.pt b.pt c.pt           # A.4: 3 classifier seeds each, bottom half dropped
    python metric.py ckpt.pt --dlib           # disentanglement_lib's settings
    python metric.py ckpt.pt --latents        # each latent's KL, factor and purity; position angle
    python metric.py ckpt.pt --rotate         # the position pair turned 0-90°: Eq. 4 and the score
    python metric.py ckpt.pt --best-angle     # the score with the position pair turned to its best
    python metric.py ckpt.pt --subsample posY=:16 --latents   # on the part of the world it learnt
"""

import argparse
import hashlib
import math
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

# Ctrl-C while torch loads (it may be in C++: exit at once), not a traceback
if __name__ == "__main__":
    signal.signal(signal.SIGINT,
                  lambda signum, frame: (os.write(2, b"interrupted while starting\n"),
                                         os._exit(130)))

import torch
from torch import nn

import shapes

PAPER_FACTORS = (1, 2, 3, 4)  # scale, orientation, posX, posY (Sec. 3 leaves out shape)
# Our settings where the paper is silent (README, "The metric's settings").
DEFAULT_L = 16  # matches the training-free rows best (README); disentanglement_lib uses 64
DEFAULT_N_TRAIN = 10000
DEFAULT_N_TEST = 5000
CLASSIFIER = "lbfgs"  # converges; "adagrad" is the paper's optimizer, far slower to converge
CLASSIFIER_STEPS = 1000  # L-BFGS iterations at most, or Adagrad steps
CLASSIFIER_LR = 1e-2  # Adagrad's, as the paper
PROGRESS_SECONDS = 10.0  # a long phase reports at least this often, where asked to

Codes = torch.Tensor | Callable[[torch.Tensor], torch.Tensor]
Encoder = nn.Module | Callable[[torch.Tensor], torch.Tensor]
Progress = Callable[[str], None] | None  # where a long phase reports, one whole line at a time


def disentanglement_score(codes: Codes, *, L: int = DEFAULT_L, n_train: int = DEFAULT_N_TRAIN,
                          n_test: int = DEFAULT_N_TEST, factors: tuple[int, ...] = PAPER_FACTORS,
                          seed: int = 0, steps: int = CLASSIFIER_STEPS, lr: float = CLASSIFIER_LR,
                          optimizer: str = CLASSIFIER, progress: Progress = None,
                          subset: dict[int, slice] | None = None) -> float:
    """The β-VAE metric (Sec. 3, A.4): accuracy of a linear classifier predicting y from z_diff;
    the pairs drawn from the whole world, or from a part of it (shapes.parse_subset)."""
    g = torch.Generator().manual_seed(seed)
    x_train, y_train = z_diff_points(codes, n_train, L, factors, g, progress=progress,
                                     subset=subset)
    x_test, y_test = z_diff_points(codes, n_test, L, factors, g, progress=progress, subset=subset)
    label = {f: k for k, f in enumerate(factors)}  # factor id -> class of the classifier
    relabel = lambda y: torch.tensor([label[int(f)] for f in y])  # noqa: E731
    return fit_linear_classifier(x_train, relabel(y_train), x_test, relabel(y_test), len(factors),
                                 steps, lr, seed, optimizer)


def z_diff_points(codes: Codes, n: int, L: int, factors: tuple[int, ...],
                  generator: torch.Generator, batch: int = 1000,
                  progress: Progress = None,
                  subset: dict[int, slice] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """n points of Sec. 3: the mean over L pairs of |z1 − z2| (n, D), and the fixed
    factor y (n,); the factor vectors uniform over the grid, or over part of it (`subset`)."""
    if subset:
        values = shapes.subset_values(subset)
        draw = lambda m: shapes.sample_subset(values, m, generator)  # noqa: E731
    else:
        draw = lambda m: shapes.sample_factors(m, generator)  # noqa: E731
    y = torch.tensor(factors)[torch.randint(len(factors), (n,), generator=generator)]  # (n,)
    v1 = draw(n * L).view(n, L, 5)
    v2 = draw(n * L).view(n, L, 5)
    fixed = torch.nn.functional.one_hot(y, 5).bool()[:, None, :].expand(n, L, 5)
    v2 = torch.where(fixed, v1, v2)  # the pair agrees on factor y
    i1, i2 = shapes.classes_to_index(v1), shapes.classes_to_index(v2)  # (n, L)
    z_diff, start = [], time.perf_counter()
    last = start
    for s in range(0, n, batch):  # bounded memory for wide codes such as raw pixels
        z1 = lookup(codes, i1[s:s + batch].reshape(-1)).float()  # (b·L, D)
        z2 = lookup(codes, i2[s:s + batch].reshape(-1)).float()
        z_diff.append((z1 - z2).abs().view(-1, L, z1.shape[1]).mean(1))  # Eq. 5: (b, D)
        # codes rendered on demand are slow
        if progress is not None and time.perf_counter() - last >= PROGRESS_SECONDS:
            last = time.perf_counter()
            progress(f"  z_diff of {min(s + batch, n):,} of {n:,} points ({last - start:.0f} s)")
    return torch.cat(z_diff), y


def lookup(codes: Codes, index: torch.Tensor) -> torch.Tensor:
    """Codes of images by DeepMind index: a table row, or a function called on the index."""
    return codes[index] if isinstance(codes, torch.Tensor) else codes(index)


def fit_linear_classifier(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor,
                          y_test: torch.Tensor, classes: int, steps: int = CLASSIFIER_STEPS,
                          lr: float = CLASSIFIER_LR, seed: int = 0,
                          optimizer: str = CLASSIFIER) -> float:
    """Linear softmax classifier trained to convergence on the NLL: accuracy on the test set.

    The paper trains it with Adagrad lr 1e-2 "until convergence". Full-batch L-BFGS reaches
    the same minimum in a few hundred iterations; Adagrad at 1e-2 is still gaining after
    10,000 full-batch steps (README, "The metric's settings"), so L-BFGS is the default and
    `optimizer="adagrad"` runs the paper's optimizer for `steps` steps at `lr`. Inputs are
    standardised with the training set's mean and std, so one setting suits codes of any scale.
    """
    mean, std = x_train.mean(0), x_train.std(0)
    std = torch.where(std > 1e-8, std, torch.ones_like(std))  # a constant input stays 0
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    g = torch.Generator().manual_seed(seed)
    linear = torch.nn.Linear(x_train.shape[1], classes)
    with torch.no_grad():
        linear.weight.normal_(0, 0.01, generator=g)
        linear.bias.zero_()

    def nll() -> torch.Tensor:
        return torch.nn.functional.cross_entropy(linear(x_train), y_train)

    with torch.enable_grad():
        if optimizer == "lbfgs":
            lbfgs = torch.optim.LBFGS(linear.parameters(), lr=1, max_iter=steps, history_size=20,
                                      tolerance_grad=1e-7, tolerance_change=1e-10,
                                      line_search_fn="strong_wolfe")

            def closure() -> torch.Tensor:
                lbfgs.zero_grad(set_to_none=True)
                loss = nll()
                loss.backward()
                return loss

            lbfgs.step(closure)
        elif optimizer == "adagrad":
            adagrad = torch.optim.Adagrad(linear.parameters(), lr=lr)
            for _ in range(steps):
                adagrad.zero_grad(set_to_none=True)
                nll().backward()
                adagrad.step()
        else:
            raise ValueError(f"unknown classifier optimizer {optimizer!r} (lbfgs or adagrad)")
    with torch.no_grad():
        return (linear(x_test).argmax(1) == y_test).float().mean().item()


# ---------------------------------------------------------------- the representation of an encoder:
# its mean μ for every image

def encode_all(encoder: Encoder, device: torch.device | str | None = None, batch_size: int = 8192,
               progress: Progress = None) -> torch.Tensor:
    """Render and encode the whole set once: (737280, D) float32 on the CPU, row i = image i.

    `encoder` is a module with `encode(x) -> (mu, logvar)`, or a callable from images
    (B, 1, 64, 64) on `device` to codes (B, D) (`model_encoder`). With `progress`, a line
    "encoded N of 737,280 images (T s)" goes to it every PROGRESS_SECONDS.
    """
    encode, device = model_encoder(encoder), torch.device(device or "cpu")
    buffer = torch.empty(batch_size, 1, 64, 64, device=device)
    chunks, started = [], time.perf_counter()
    last = started
    with torch.inference_mode():
        for start in range(0, shapes.N_IMAGES, batch_size):
            index = torch.arange(start, min(start + batch_size, shapes.N_IMAGES), device=device)
            # (B, 1, 64, 64)
            x = shapes.render(shapes.index_to_classes(index), out=buffer[:len(index)])
            chunks.append(encode(x).float().cpu())
            if progress is not None and time.perf_counter() - last >= PROGRESS_SECONDS:
                last = time.perf_counter()
                progress(f"encoded {start + len(index):,} of {shapes.N_IMAGES:,} images "
                         f"({last - started:.0f} s)")
    return torch.cat(chunks)


def rendered_codes(encoder: Encoder, device: torch.device | str | None = None) -> Codes:
    """Codes by index that render and encode only the images asked for: the metric of a model on
    reduced settings without encoding all 737,280 images, e.g.
    `disentanglement_score(rendered_codes(my_encoder), n_train=1000, n_test=500)`."""
    encode, device = model_encoder(encoder), torch.device(device or "cpu")

    def codes(index: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            # (N, D)
            return encode(shapes.render(shapes.index_to_classes(index.to(device)))).float().cpu()
    return codes


def model_encoder(encoder: Encoder) -> Callable[[torch.Tensor], torch.Tensor]:
    """The representation the metrics read (Sec. 3), as a function images (B, 1, 64, 64) -> (B, D).

    The contract: a module with `encode(x) -> (mu, logvar)` gives its mean mu, the encoder mean
    of a VAE (model.py's fc β-VAE through `binary_mu`: the same numbers, faster); any other
    callable is taken as images -> mu itself.
    """
    if is_fc_vae(encoder):
        return lambda x: binary_mu(encoder, x)
    if callable(getattr(encoder, "encode", None)):
        return lambda x: encoder.encode(x)[0]
    if callable(encoder):
        return encoder
    raise TypeError(f"an encoder is a callable images -> mu or a module with "
                    f"encode(x) -> (mu, logvar), not {type(encoder).__name__}")


def flip_noise(encoder: Encoder, p: float, seed: int = 0) -> Callable[[torch.Tensor], torch.Tensor]:
    """The encoder of images under test-time noise (A.8, Fig. 8): each pixel flipped with
    probability p before encoding, salt and pepper on binary images; p = 0 changes nothing."""
    encode, g = model_encoder(encoder), torch.Generator().manual_seed(seed)

    def noisy(x: torch.Tensor) -> torch.Tensor:
        flip = torch.rand(x.shape, generator=g) < p  # drawn on the CPU: the same on any device
        return encode(torch.where(flip.to(x.device), 1 - x, x))
    return noisy


def is_fc_vae(model) -> bool:
    """Whether `model` is model.py's fc β-VAE, known by its parts (not by importing its class,
    which a project's own model.py may name too): config arch "fc", encoder Flatten,
    Linear(4096, ·), ..."""
    config, layers = getattr(model, "config", None), getattr(model, "encoder", None)
    return (isinstance(config, dict) and config.get("arch") == "fc"
            and isinstance(layers, nn.Sequential) and len(layers) > 2
            and isinstance(layers[0], nn.Flatten) and isinstance(layers[1], nn.Linear)
            and layers[1].in_features == 64 * 64)


def binary_mu(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """mu (B, M) of the fc encoder for binary images x (B, 1, 64, 64), equal to model.encode(x)[0]
    up to rounding.

    A binary image's first layer is the sum of the weight columns of its on pixels (4 % of them
    on 2D shapes), so an embedding-bag sum replaces the dense 4096×1200 matmul.
    """
    first = model.encoder[1]
    rows, cols = x.flatten(1).nonzero(as_tuple=True)  # the on pixels
    offsets = torch.zeros(len(x), dtype=torch.long, device=x.device)
    offsets[1:] = torch.bincount(rows, minlength=len(x))[:-1].cumsum(0)
    table = first.weight.t().contiguous()  # (4096, 1200): a strided table is far slower
    h = nn.functional.embedding_bag(cols, table, offsets, mode="sum") + first.bias  # (B, 1200)
    return model.encoder[2:](h).chunk(2, dim=1)[0]


def training_score(model: nn.Module, device: torch.device, rendered: bool = False,
                   **settings) -> float:
    """The Sec. 3 score for train.py --eval-every: the model in eval mode meanwhile, and the
    caller's random state as it was. At the defaults on all 737,280 images encoded; with
    `rendered`, on codes rendered on demand (`rendered_codes`), which pays at reduced `settings`
    (disentanglement_score's)."""
    model.eval()
    # Scoring draws random numbers (the classifier's init) from torch's global generators; training
    # draws from its own, and the fork leaves the global state to the caller as it was.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        try:
            report = lambda line: say(f"  scoring: {line.strip()}")  # noqa: E731
            if rendered:  # the rendering happens inside z_diff_points, which reports it
                say(f"  scoring: rendering and encoding the images of {settings} as asked")
                return disentanglement_score(rendered_codes(model, device), progress=report,
                                             **settings)
            return disentanglement_score(encode_all(model, device, progress=report), **settings)
        finally:
            model.train()


def say(line: str) -> None:
    """metric.py's output: whole lines at once, so that a log file shows each as it comes."""
    print(line, flush=True)


# ---------------------------------------------------------------- A.4: replicas and classifier
# seeds; A.5: each factor from z

def mean_std(scores: list[float]) -> tuple[float, float]:
    """Mean and (population) standard deviation: the ± of every table."""
    mean = sum(scores) / len(scores)
    return mean, math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores))


def a4_protocol(scores: list[float]) -> tuple[float, float, list[float]]:
    """A.4: drop the bottom half of the scores; mean and std of the rest (and the kept scores)."""
    kept = sorted(scores, reverse=True)[:max(1, math.ceil(len(scores) / 2))]
    return *mean_std(kept), kept


def factor_classification(codes: Codes, *, n_train: int = DEFAULT_N_TRAIN,
                          n_test: int = DEFAULT_N_TEST,
                          seed: int = 0, steps: int = CLASSIFIER_STEPS, lr: float = CLASSIFIER_LR,
                          optimizer: str = CLASSIFIER) -> dict[str, float]:
    """A.5 / Table 2: for each factor, a linear classifier's accuracy at predicting its
    value from z."""
    g = torch.Generator().manual_seed(seed)
    index = torch.randint(shapes.N_IMAGES, (n_train + n_test,), generator=g)
    z = lookup(codes, index).float()  # (n, D)
    classes = shapes.index_to_classes(index)  # (n, 5)
    return {name: fit_linear_classifier(z[:n_train], classes[:n_train, f], z[n_train:],
                                        classes[n_train:, f], shapes.FACTOR_SIZES[f], steps, lr,
                                        seed, optimizer)
            for f, name in enumerate(shapes.FACTOR_NAMES)}


# ---------------------------------------------------------------- other metrics:
# MIG (Chen et al. 2018), the FactorVAE metric (Kim & Mnih 2018)

# disentanglement_lib's settings (--dlib): MIG and FactorVAE's pruning read 10,000 images.
DLIB_IMAGES = 10000


def mig(codes: torch.Tensor, bins: int = 20, n_images: int | None = None, seed: int = 0) -> float:
    """Mutual Information Gap (Chen et al. 2018) over all five factors: on the whole set, or on
    `n_images` drawn at random (disentanglement_lib: 10,000).

    Each code dimension is discretised into `bins` equal-width bins over its range in the
    images used (`mutual_information`); H(v_k) is the entropy of the factor over those images
    (log |v_k| on the whole set).
    """
    index = torch.arange(shapes.N_IMAGES) if n_images is None else \
        torch.randint(shapes.N_IMAGES, (n_images,), generator=torch.Generator().manual_seed(seed))
    classes = shapes.index_to_classes(index)  # (N, 5)
    return information_gap(mutual_information(codes[index], classes, bins)
                           / factor_entropy(classes))


def information_gap(normalised: torch.Tensor) -> float:
    """MIG from the normalised mutual information I(z_d; v_k) / H(v_k) (D, 5): the gap between
    each factor's two most informative dimensions, averaged over the factors."""
    # (2, 5): the two most informative dimensions
    top = normalised.topk(2, dim=0).values if len(normalised) > 1 else \
        torch.cat([normalised, torch.zeros_like(normalised)])
    return (top[0] - top[1]).mean().item()


def mutual_information(codes: torch.Tensor, classes: torch.Tensor, bins: int = 20) -> torch.Tensor:
    """I(z_d; v_k) in nats of each code dimension d with each factor k, over the N images coded:
    (D, 5) float64, from codes (N, D) and the images' factor classes (N, 5).

    Each dimension is discretised into `bins` equal-width bins over its range, as Chen et al.
    (2018) and disentanglement_lib do for MIG.
    """
    codes = codes.float()
    lo, hi = codes.min(0).values, codes.max(0).values
    width = torch.where(hi > lo, (hi - lo) / bins, torch.ones_like(hi))
    binned = ((codes - lo) / width).long().clamp_(0, bins - 1)  # (N, D)
    N, D = binned.shape
    mi = torch.empty(D, len(shapes.FACTOR_SIZES), dtype=torch.float64)
    for f, size in enumerate(shapes.FACTOR_SIZES):
        for d in range(D):
            joint = torch.bincount(binned[:, d] * size + classes[:, f], minlength=bins * size)
            p = joint.view(bins, size).double() / N  # p(z_d bin, v_f)
            outer = p.sum(1, keepdim=True) * p.sum(0, keepdim=True)
            mi[d, f] = torch.where(p > 0, p * (p / outer).log(), torch.zeros_like(p)).sum()
    return mi.clamp_min_(0)  # rounding leaves about -1e-17 where there is none


def factor_entropy(classes: torch.Tensor) -> torch.Tensor:
    """H(v_k) in nats of each factor over the images of `classes` (N, 5): (5,) float64."""
    entropy = []
    for f, size in enumerate(shapes.FACTOR_SIZES):
        p_v = torch.bincount(classes[:, f], minlength=size).double() / len(classes)
        entropy.append(-torch.where(p_v > 0, p_v * p_v.log(), torch.zeros_like(p_v)).sum())
    return torch.stack(entropy)


def factor_vae_score(codes: torch.Tensor, *, L: int = 64, n_train: int = 10000, n_test: int = 5000,
                     seed: int = 0, dlib: bool = False) -> float:
    """The FactorVAE metric (Kim & Mnih 2018), over all five factors.

    Each vote: fix one factor at a random value, draw L images, normalise every code
    dimension by its std over the set, and take the dimension of least variance; a
    majority-vote classifier maps that dimension to the factor. Dimensions whose std
    is below 0.05 of the largest are ignored; with none left the vote is at chance.
    With `dlib`, disentanglement_lib's pruning: the std is estimated on 10,000 random
    images and a dimension is ignored below an absolute std of 0.05.
    """
    g = torch.Generator().manual_seed(seed)
    codes = codes.float()
    if dlib:
        std = codes[torch.randint(shapes.N_IMAGES, (DLIB_IMAGES,), generator=g)].std(0)  # (D,)
        active = std >= 0.05
    else:
        std = codes.std(0)  # (D,)
        active = (std > 0.05 * std.max() if std.max() > 0
                  else torch.zeros_like(std, dtype=torch.bool))
    normalised = codes[:, active] / std[active]  # (N, D_active)

    def votes(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        k = torch.randint(5, (n,), generator=g)  # the fixed factor
        v = shapes.sample_factors(n * L, g).view(n, L, 5)
        # (n, 5): the fixed value is the same across the L images
        value = shapes.sample_factors(n, g)
        fixed = torch.nn.functional.one_hot(k, 5).bool()[:, None, :].expand(n, L, 5)
        v = torch.where(fixed, value[:, None, :].expand(n, L, 5), v)
        if normalised.shape[1] == 0:
            return torch.zeros(n, dtype=torch.long), k
        z = normalised[shapes.classes_to_index(v)]  # (n, L, D_active)
        return z.var(1).argmin(1), k

    d_train, k_train = votes(n_train)
    d_test, k_test = votes(n_test)
    counts = torch.zeros(max(int(active.sum()), 1), 5, dtype=torch.long)
    counts.index_put_((d_train, k_train), torch.ones_like(d_train), accumulate=True)
    return (counts.argmax(1)[d_test] == k_test).float().mean().item()


# ---------------------------------------------------------------- the cache: a checkpoint's codes,
# encoded once, beside it

def codes_path(checkpoint: str) -> Path:
    """Where a checkpoint's codes are cached: <stem>.codes.pt beside it."""
    path = Path(checkpoint)
    return path.with_name(f"{path.stem}.codes.pt")


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 of a model's weights (names, dtypes, shapes, bytes): what its codes depend on.

    The weights, not the file: a checkpoint rewritten after it was loaded cannot be paired
    with the codes of the weights that were encoded, and optimizer state does not matter.
    """
    h = hashlib.sha256(f"{type(model).__name__} mu binary".encode())
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name} {t.dtype} {tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def checkpoint_codes(path: str, model: torch.nn.Module, device: torch.device | str | None = None,
                     cache: bool = True, batch_size: int = 8192,
                     progress: Progress = None) -> torch.Tensor:
    """The codes μ (737280, M) of the model loaded from checkpoint `path`:
    encoded once, then cached.

    The cache, <stem>.codes.pt beside the checkpoint, holds the codes and the digest of the
    weights they came from; it is read when the digest matches and rebuilt when it does not.
    A cache that cannot be written is skipped with a note. `cache=False` neither reads nor writes.
    """
    say = progress or (lambda line: None)
    encode = model_encoder(model)
    if not cache:
        return encode_all(encode, device, batch_size, progress)
    target, digest, t = codes_path(path), weights_digest(model), time.perf_counter()
    try:
        saved = torch.load(target, map_location="cpu", weights_only=True)
        if (isinstance(saved, dict) and saved.get("weights_sha256") == digest
                and is_code_table(saved.get("codes"), encode)):
            say(f"codes of {path}: read from {target} ({time.perf_counter() - t:.1f} s)")
            return saved["codes"]
        say(f"codes of {path}: {target} is of other weights or not a table of their codes; "
            f"encoding again")
    except FileNotFoundError:
        pass
    except Exception as e:
        # torch raises many types for a corrupt file: encode again and replace it
        say(f"codes of {path}: {target} is unreadable ({e.__class__.__name__}); encoding again")
    say(f"codes of {path}: encoding all {shapes.N_IMAGES:,} images "
        f"(cached in {target} for next time)")
    codes = encode_all(encode, device, batch_size, progress)
    from runs import write_atomically  # the run's machinery: a crash never leaves half a cache
    try:
        write_atomically(str(target),
                         lambda f: torch.save({"weights_sha256": digest, "codes": codes}, f))
    except (OSError, RuntimeError) as e:  # torch.save raises RuntimeError on a full disk
        say(f"codes of {path}: not cached ({str(e).splitlines()[0]})")
    return codes


def is_code_table(codes, encode: Callable[[torch.Tensor], torch.Tensor]) -> bool:
    """Whether a cached `codes` can be the table encode_all gives: finite floats, a row per image, a
    column per code (the width that `encode` gives one image)."""
    if not isinstance(codes, torch.Tensor) or codes.dim() != 2 or not codes.is_floating_point():
        return False
    with torch.inference_mode():
        width = encode(shapes.render(shapes.index_to_classes(
            torch.zeros(1, dtype=torch.long)))).shape[1]
    return codes.shape == (shapes.N_IMAGES, width) and bool(torch.isfinite(codes).all())


# ---------------------------------------------------------------- the command line

# disentanglement_lib's β-VAE metric fixes one of all five factors (shape included) with L = 64.
DLIB_L = 64

# Fig. 6 (left): metric accuracy on 2D shapes in %, as (mean, std); the paper gives no std
# for ground truth.
PAPER = {
    "ground truth": (100.0, None),
    "raw pixels": (45.75, 0.8),
    "PCA": (84.9, 0.4),
    "ICA": (42.03, 10.6),
    "DC-IGN": (99.3, 0.1),
    "InfoGAN": (73.5, 0.9),
    "VAE untrained": (44.14, 2.5),
    "VAE (β = 1)": (61.58, 0.5),
    "β-VAE (β = 4)": (99.23, 0.1),
}
# The training-free rows as this code scores them (%, A.4 mean) at the L they were measured at, with
#   python baselines.py --table --a4 --L 16 64 --rows gt,pixels,pca,ica,untrained
# The paper does not state its L, and these rows move with it: a score reads against rows at
# its own L.
MEASURED = {
    16: {"VAE untrained": 47.93, "raw pixels": 40.58, "PCA": 88.04},
    64: {"VAE untrained": 69.76, "raw pixels": 62.68, "PCA": 96.11},
}
# the paper's rows printed beside a score
IN_CONTEXT = ("β-VAE (β = 4)", "VAE (β = 1)", "VAE untrained", "raw pixels")


def classifier_description(classifier: str = CLASSIFIER, steps: int = CLASSIFIER_STEPS,
                           lr: float = CLASSIFIER_LR) -> str:
    """How the linear classifier was fitted, for every printed score's settings."""
    if classifier == "lbfgs":
        return f"full-batch L-BFGS to convergence (≤ {steps} iterations)"
    return f"full-batch Adagrad lr {lr} for {steps} steps"


def load_shapes_checkpoint(path: str, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """A checkpoint's model and config, if it was trained on 2D shapes; UsageError with a clear
    reason if not."""
    from model import load_checkpoint
    from runs import UsageError
    model, config = load_checkpoint(path, device)
    if config.get("dataset") not in ("shapes", "dsprites") or config.get("channels", 1) != 1:
        raise UsageError(f"{path} is a model of {config.get('dataset')!r} images, not of 2D shapes")
    return model, config


def load_shapes_model(path: str, device: torch.device) -> torch.nn.Module:
    """A checkpoint's model, if it was trained on 2D shapes (`load_shapes_checkpoint`)."""
    return load_shapes_checkpoint(path, device)[0]


def in_context(L: int, factors: tuple[int, ...]) -> str:
    """The reference points of a score: the paper's Fig. 6 rows, and this code's training-free
    rows at L."""
    paper = ", ".join(f"{label} {PAPER[label][0]:g}" for label in IN_CONTEXT)
    line = f"  in context (%): paper (Fig. 6): {paper}"
    if factors != PAPER_FACTORS:
        line += "; with shape among the factors, the paper's and this code's rows do not apply"
    elif L in MEASURED:
        line += (f"; this code at L = {L}: "
                 + ", ".join(f"{k} {v:g}" for k, v in MEASURED[L].items()))
    else:
        line += f"; this code's own rows at these settings: python baselines.py --table --L {L}"
    return line


def build_parser() -> argparse.ArgumentParser:
    from replicas import PROBE_IMAGES, ROTATION_ANGLES, ROTATION_L
    from runs import positive_float, positive_int, seed_arg
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__)
    p.add_argument("checkpoints", nargs="+", help="train.py checkpoints of 2D-shapes models")
    p.add_argument("--L", type=positive_int, nargs="+",
                   help=f"pairs averaged per point (default {DEFAULT_L}; {DLIB_L} with --dlib); "
                        f"several: a score at each")
    p.add_argument("--n-train", type=positive_int, default=DEFAULT_N_TRAIN,
                   help=f"classifier training points (default {DEFAULT_N_TRAIN})")
    p.add_argument("--n-test", type=positive_int, default=DEFAULT_N_TEST,
                   help=f"held-out points (default {DEFAULT_N_TEST}, as the paper)")
    p.add_argument("--include-shape", action="store_true",
                   help="let y be shape too (the paper uses 4 factors)")
    p.add_argument("--classifier", choices=("lbfgs", "adagrad"), default=CLASSIFIER,
                   help="optimizer of the linear classifier: lbfgs converges (default); "
                        "adagrad is the paper's")
    p.add_argument("--classifier-steps", type=positive_int, default=CLASSIFIER_STEPS,
                   help=f"L-BFGS iterations at most, or Adagrad full-batch steps "
                        f"(default {CLASSIFIER_STEPS})")
    p.add_argument("--classifier-lr", type=positive_float, default=CLASSIFIER_LR,
                   help=f"Adagrad learning rate (default {CLASSIFIER_LR}, as the paper)")
    p.add_argument("--seeds", type=positive_int,
                   help="classifier seeds per checkpoint "
                        "(default 1; 3 for several checkpoints, as A.4)")
    p.add_argument("--table2", action="store_true",
                   help="also print the A.5 factor classification accuracies")
    p.add_argument("--all", action="store_true", help="also print MIG and the FactorVAE metric")
    p.add_argument("--dlib", action="store_true",
                   help=f"disentanglement_lib's settings for every metric: L = {DLIB_L} "
                        f"with shape among the factors, MIG on {DLIB_IMAGES:,} images, "
                        f"FactorVAE pruned at std 0.05; implies --all")
    p.add_argument("--latents", action="store_true",
                   help="also print which latent carries which factor: KL, mutual information "
                        "table, position angle, MIG")
    p.add_argument("--rotate", nargs="*", type=int, metavar="I J",
                   help=f"also turn latents I and J (default: the position pair) by "
                        f"{ROTATION_ANGLES[0]}-{ROTATION_ANGLES[-1]}°: Eq. 4 on fixed images and "
                        f"noise, score at L = "
                        + " and ".join(map(str, ROTATION_L)))
    p.add_argument("--best-angle", action="store_true",
                   help="also score at each L with the pair of --rotate (default: the position "
                        "pair) turned by the θ that scores best at the classifier seed after "
                        "those scored: the score alignment alone would give")
    p.add_argument("--probe-images", type=positive_int, default=PROBE_IMAGES,
                   help=f"fixed images of --latents' KL and --rotate's Eq. 4 "
                        f"(default {PROBE_IMAGES})")
    p.add_argument("--flip-noise", type=probability, default=0.0, metavar="P",
                   help="A.8: flip each pixel with probability P before encoding (codes encoded "
                        "afresh, not cached)")
    p.add_argument("--subsample", nargs="+", metavar="FACTOR=SLICE",
                   help="score on a part of the world, as train.py --subsample (e.g. posY=:16, a "
                        "model trained there): the pairs, --latents and --best-angle read only "
                        "its images")
    p.add_argument("--csv", help="also write one row per checkpoint: its settings, mean score at "
                                 "each L, and Eq. 4's recon and KL and active latents")
    p.add_argument("--seed", type=seed_arg, default=0, help="first classifier seed (default 0)")
    p.add_argument("--no-cache", action="store_true",
                   help="encode afresh; neither read nor write <stem>.codes.pt")
    p.add_argument("--device", help="device for encoding: cuda, mps or cpu "
                                    "(default: cuda, then mps, then cpu)")
    p.add_argument("--threads", type=positive_int,
                   help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--batch-size", type=positive_int, default=8192,
                   help="images per encoder batch (default 8192)")
    return p


def probability(text: str) -> float:
    """argparse type of --flip-noise: a number from 0 to 1."""
    value = float(text) if text.replace(".", "", 1).isdigit() else -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a probability from 0 to 1, got {text!r}")
    return value


def score_checkpoint(path: str, model: torch.nn.Module, config: dict, args: argparse.Namespace,
                     device: torch.device, factors: tuple[int, ...],
                     seeds: int) -> tuple[dict[int, list[float]], dict[int, list[float]], dict]:
    """One checkpoint's lines: its scores at `seeds` classifier seeds at each L in context, and
    with --table2, --all or --dlib the other metrics. Returns the scores by L and, with
    --best-angle, the scores at the best turn by L and their columns of --csv's row."""
    t = time.perf_counter()
    if args.flip_noise:
        say(f"codes of {path}: encoding all {shapes.N_IMAGES:,} images with each pixel flipped "
            f"with probability {args.flip_noise:g} (not cached)")
        codes = encode_all(flip_noise(model, args.flip_noise, args.seed), device, args.batch_size,
                           say)
    else:
        codes = checkpoint_codes(path, model, device, not args.no_cache, args.batch_size, say)
    encoded = time.perf_counter() - t
    say(f"{path}: scoring with {seeds} classifier seed(s)")
    classifier = dict(steps=args.classifier_steps, lr=args.classifier_lr, optimizer=args.classifier)
    scores = {}
    for L in args.L:
        scores[L] = [disentanglement_score(codes, L=L, seed=args.seed + s,
                                           **score_settings(args, factors))
                     for s in range(seeds)]
        at = f" at L = {L}" if len(args.L) > 1 else ""
        say(f"{path}: disentanglement score{at} {', '.join(f'{s:.2%}' for s in scores[L])} "
            f"({time.perf_counter() - t:.1f} s, of which codes {encoded:.1f} s)")
        say(in_context(L, factors))
    if args.table2:
        accuracy = factor_classification(codes, n_train=args.n_train, n_test=args.n_test,
                                         seed=args.seed, **classifier)
        say("  A.5 factor classification: "
            + ", ".join(f"{k} {v:.2%}" for k, v in accuracy.items()))
    if args.all or args.dlib:
        images = f"{DLIB_IMAGES:,} images" if args.dlib else "all images"
        say(f"  MIG {mig(codes, n_images=DLIB_IMAGES if args.dlib else None, seed=args.seed):.3f} "
            f"({images}), "
            f"FactorVAE metric {factor_vae_score(codes, seed=args.seed, dlib=args.dlib):.2%} "
            f"(dimensions pruned below "
            + ("std 0.05)" if args.dlib else "0.05 of the largest std)"))
    if args.latents:
        print_latent_view(path, model, codes, config, args.probe_images, device, args.subset)
    if args.rotate is not None:
        print_rotation_sweep(path, model, codes, config, args, device, factors)
    if args.best_angle:
        return scores, *print_best_angle(path, model, codes, scores, args, device, factors, seeds)
    return scores, {}, {}


def table_row(path: str, model: torch.nn.Module, config: dict, scores: dict[int, list[float]],
              args: argparse.Namespace, device: torch.device, best: dict) -> dict:
    """--csv's row of a checkpoint: its settings, its mean score at each L, Eq. 4's parts on
    the fixed probe images of replicas.py (recon and KL in nats, latents above loss.ACTIVE_KL),
    and `best`: the columns of --best-angle."""
    import replicas
    from loss import ACTIVE_KL
    x, eps = replicas.probe_batch(model.latents, args.probe_images, device=device,
                                  subset=args.subset)
    parts = replicas.objective_on_batch(model, x, eps, config["beta"],
                                        config.get("likelihood", "bernoulli"))
    return {"checkpoint": path, "beta": config["beta"], "beta_norm": config.get("beta_norm"),
            "latents": config["latents"], "seed": config.get("seed"),
            "subsample": " ".join(config.get("subsample") or []),
            "scored_on": " ".join(args.subsample or []), "flip_noise": args.flip_noise,
            **{f"score_L{L}": sum(s) / len(s) for L, s in scores.items()},
            "recon": parts["recon"].item(), "kl": parts["kl"].item(),
            "active": int((parts["kl_per_latent"] > ACTIVE_KL).sum()), **best}


def write_table(path: str, rows: list[dict]) -> None:
    """The rows of --csv into `path`, whole or not at all."""
    import csv
    import io
    from runs import write_atomically
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomically(path, lambda f: f.write(text.getvalue().encode()))


# -------------------------------------------------- --latents and --rotate: a replica's latents
# replicas.py's geometry of latents read with this file's score and mutual information; it imports
# nothing of this file, so the command line reaches it without a cycle.

def latent_summary(codes: torch.Tensor, kl: torch.Tensor, bins: int = 20,
                   subset: dict[int, slice] | None = None) -> dict:
    """The per-latent view of a model as numbers: from its codes μ (737280, M) of all images and
    each latent's mean KL (M,) in nats; read over all images, or over a part of the world
    (`subset`, shapes.parse_subset), where H(v_k) is that part's.

    Returns kl (M,), active (the latents of KL above ACTIVE_KL), nmi (M, 5): I(z_d; v_k) / H(v_k),
    factor and purity of each latent (`latent_factors`), pair (the position latents, or None),
    angle (`position_angle` of the pair, or None) and mig.
    """
    import loss
    import replicas
    index, mi, entropy = factor_information(codes, subset, bins)
    pair = replicas.position_pair(mi, kl, entropy)
    factors = replicas.latent_factors(mi, entropy)
    return {"kl": kl.tolist(), "active": [d for d in range(len(kl)) if kl[d] > loss.ACTIVE_KL],
            "nmi": mi / entropy, "factor": [f for f, _ in factors],
            "purity": [p for _, p in factors], "pair": pair,
            "angle": None if pair is None else replicas.position_angle(codes, *pair, index),
            "mig": information_gap(mi / entropy)}


def factor_information(codes: torch.Tensor, subset: dict[int, slice] | None = None,
                       bins: int = 20) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Over all images, or over a part of the world (`subset`): their DeepMind indices (N,), each
    latent's mutual information with each factor I(z_d; v_k) (M, 5) and each factor's entropy
    H(v_k) (5,), in nats."""
    index = shapes.subset_index(subset) if subset else torch.arange(shapes.N_IMAGES)
    classes = shapes.index_to_classes(index)  # (N, 5)
    part = codes[index] if subset else codes  # the whole table is not copied
    return index, mutual_information(part, classes, bins), factor_entropy(classes)


def rotation_probe(model: torch.nn.Module, codes: torch.Tensor, pair: tuple[int, int], theta: float,
                   x: torch.Tensor, eps: torch.Tensor, beta: float, likelihood: str = "bernoulli",
                   Ls: tuple[int, ...] | None = None, **score) -> dict[str, float]:
    """One angle of the sweep: the model with latents `pair` turned by θ (`rotate_latents`), its
    Eq. 4 on the fixed batch x with the fixed noise ε (loss, recon, kl; loss_turned: with the
    variances turned too), and its codes (the original codes turned: the μ head is linear, so this
    is exact) scored: position angle of the pair and the disentanglement score at each L (`score`:
    disentanglement_score's other settings; Ls: replicas.ROTATION_L by default)."""
    import replicas
    Ls = Ls or replicas.ROTATION_L
    kept = replicas.rotate_latents(model, *pair, theta)
    turned_too = replicas.rotate_latents(model, *pair, theta, turn_variance=True)
    parts = replicas.objective_on_batch(kept, x, eps, beta, likelihood)
    along = replicas.objective_on_batch(turned_too, x, eps, beta, likelihood)
    turned = replicas.rotate_codes(codes, *pair, theta)
    return {"theta": theta, **{k: parts[k].item() for k in ("loss", "recon", "kl")},
            "loss_turned": along["loss"].item(), "angle": replicas.position_angle(turned, *pair),
            **{f"score_L{L}": disentanglement_score(turned, L=L, **score) for L in Ls}}


def print_latent_view(path: str, model: torch.nn.Module, codes: torch.Tensor, config: dict,
                      n_images: int, device: torch.device,
                      subset: dict[int, slice] | None = None) -> None:
    """--latents: each latent's mean KL, its normalised mutual information with each factor (an
    aligned latents × factors table), the factor it follows and how purely, the position angle and
    MIG; over all images, or over the part of the world `subset`."""
    import loss
    import replicas
    where = (f"the {len(shapes.subset_index(subset)):,} of the part scored" if subset else
             f"all {shapes.N_IMAGES:,}")
    say(f"{path}: per-latent view: KL and recon on {n_images:,} fixed images, mutual information "
        f"I(z; v) / H(v) over {where} (codes μ in 20 bins)")
    x, eps = replicas.probe_batch(model.latents, n_images, device=device, subset=subset)
    parts = replicas.objective_on_batch(model, x, eps, config["beta"],
                                        config.get("likelihood", "bernoulli"))
    view = latent_summary(codes, parts["kl_per_latent"].cpu(), subset=subset)
    say(f"  active latents {len(view['active'])} of {model.latents} "
        f"(mean KL > {loss.ACTIVE_KL} nats); "
        f"KL {parts['kl']:.2f}, recon {parts['recon']:.2f}, "
        f"Eq. 4 (β = {config['beta']:g}) {parts['loss']:.2f} nats")
    width = max(map(len, shapes.FACTOR_NAMES))
    say(f"  {'latent':>6}  {'KL':>6}  "
        + "  ".join(f"{name:>{width}}" for name in shapes.FACTOR_NAMES)
        + f"  {'follows':<{width}}  purity")
    for d, kl in enumerate(view["kl"]):
        cells = "  ".join(f"{v:>{width}.3f}" for v in view["nmi"][d].tolist())
        follows = (f"{shapes.FACTOR_NAMES[view['factor'][d]]:<{width}}  {view['purity'][d]:6.2f}"
                   if d in view["active"] else "(inactive)")
        say(f"  {d:>6}  {kl:6.2f}  {cells}  {follows}")
    if view["pair"] is None:
        say("  position plane: fewer than two active latents")
    else:
        a, b = view["pair"]
        say(f"  position plane: latents {a} and {b} "
            f"(most position information; the more posX one first), "
            f"{view['angle']:.1f}° from the (posX, posY) axes (0° aligned, 45° fully mixed)")
    over = "the part scored" if subset else "all images"
    say(f"  MIG {view['mig']:.3f} ({over}); purity: the share of a latent's information about "
        f"the factors that is about the one it follows")


def rotation_pair(rotate: list[int], codes: torch.Tensor, kl: torch.Tensor, path: str,
                  subset: dict[int, slice] | None = None) -> tuple[int, int]:
    """The latents that --rotate turns: as given, or the position pair of the per-latent view
    (over the part of the world `subset`, where given)."""
    import replicas
    from runs import UsageError
    if rotate:
        return rotate[0], rotate[1]
    _, mi, entropy = factor_information(codes, subset)
    pair = replicas.position_pair(mi, kl, entropy)
    if pair is None:
        raise UsageError(f"{path} has fewer than two active latents: name the pair to turn, "
                         f"--rotate I J")
    return pair


def score_settings(args: argparse.Namespace, factors: tuple[int, ...]) -> dict:
    """disentanglement_score's settings from the command line, all but L and the seed."""
    return dict(n_train=args.n_train, n_test=args.n_test, factors=factors,
                steps=args.classifier_steps, lr=args.classifier_lr, optimizer=args.classifier,
                subset=args.subset)


def probe_pair(model: torch.nn.Module, codes: torch.Tensor, rotate: list[int] | None,
               x: torch.Tensor, path: str, subset: dict[int, slice] | None = None
               ) -> tuple[tuple[int, int], torch.Tensor, torch.Tensor]:
    """The pair to turn (`rotation_pair`, each latent's KL read on the probe images x), and the
    probe's μ and logvar (B, M)."""
    import loss
    with torch.inference_mode():
        mu, logvar = (t.float().cpu() for t in model.encode(x))  # (B, M)
    kl = loss.kl_per_latent(mu, logvar).mean(0)  # (M,)
    return rotation_pair(rotate, codes, kl, path, subset), mu, logvar


def print_rotation_sweep(path: str, model: torch.nn.Module, codes: torch.Tensor, config: dict,
                         args: argparse.Namespace, device: torch.device,
                         factors: tuple[int, ...]) -> None:
    """--rotate: Eq. 4 on a fixed batch with fixed noise (variances kept, and turned along) and the
    score at each L, one line per angle θ."""
    import replicas
    x, eps = replicas.probe_batch(model.latents, args.probe_images, device=device)
    beta, likelihood = config["beta"], config.get("likelihood", "bernoulli")
    (i, j), mu, logvar = probe_pair(model, codes, args.rotate, x, path)
    sigma = (0.5 * logvar[:, [i, j]]).exp().mean(0).tolist()
    # the hypothesis wants 0: one variance for both
    apart = (0.5 * (logvar[:, i] - logvar[:, j])).abs().mean()
    say(f"{path}: latents {i} and {j} turned by θ (encoder μ rows, decoder first-layer columns: "
        f"an exact change of coordinates of μ); posterior σ mean {sigma[0]:.3f} and "
        f"{sigma[1]:.3f}, |log σ_{i} − log σ_{j}| {apart:.2f} per image; "
        f"Eq. 4 (β = {beta:g}) on {len(x):,} fixed images with fixed noise ε, with logvar "
        f"kept and turned along; scores at seed {args.seed}, {args.n_train} train points")
    score = {**score_settings(args, factors), "seed": args.seed}
    say(f"  {'θ':>4}  {'Eq. 4':>8}  {'vs 0°':>7}  {'KL':>6}  {'σ turned':>8}  {'vs 0°':>7}  "
        f"{'angle':>6}  "
        + "  ".join(f"{f'L = {L}':>7}" for L in replicas.ROTATION_L))
    first = None
    for theta in replicas.ROTATION_ANGLES:
        row = rotation_probe(model, codes, (i, j), theta, x, eps, beta, likelihood, **score)
        first = first or row
        say(f"  {theta:>3}°  {row['loss']:8.2f}  {row['loss'] / first['loss'] - 1:+7.2%}  "
            f"{row['kl']:6.2f}  {row['loss_turned']:8.2f}  "
            f"{row['loss_turned'] / first['loss'] - 1:+7.2%}  {row['angle']:5.1f}°  "
            + "  ".join(f"{row[f'score_L{L}']:7.2%}" for L in replicas.ROTATION_L))


# degrees: a search over [0°, 90°) at the first step, then at the second within one first step of
# the best
BEST_ANGLE_STEPS = (5, 1)


def best_angle(codes: torch.Tensor, pair: tuple[int, int], L: int, seed: int,
               progress: Progress = None, **score) -> int:
    """The turn θ in whole degrees, 0 to 89, of latents `pair` whose codes score best at L at the
    classifier seed `seed` (`score`: disentanglement_score's other settings). A turn by 90° swaps
    the pair and flips a sign, which the score does not see (z_diff is |z1 − z2|, standardised per
    latent), so [0°, 90°) holds every turn; searched at BEST_ANGLE_STEPS, saying how far at least
    every PROGRESS_SECONDS where `progress` is given."""
    import replicas
    coarse, fine = BEST_ANGLE_STEPS
    scored, start = {}, time.perf_counter()
    last = start

    def at(theta: int) -> float:
        nonlocal last
        theta %= 90
        if theta not in scored:
            turned = replicas.rotate_codes(codes, *pair, theta)
            scored[theta] = disentanglement_score(turned, L=L, seed=seed, **score)
            if progress is not None and time.perf_counter() - last >= PROGRESS_SECONDS:
                last = time.perf_counter()
                progress(f"  L = {L}: {len(scored)} turns scored ({last - start:.0f} s)")
        return scored[theta]

    first = max(range(0, 90, coarse), key=at)  # a tie keeps the first: the smallest turn
    near = sorted(range(first - coarse + fine, first + coarse, fine), key=lambda t: abs(t - first))
    return max(near, key=at) % 90


def print_best_angle(path: str, model: torch.nn.Module, codes: torch.Tensor,
                     scores: dict[int, list[float]], args: argparse.Namespace,
                     device: torch.device, factors: tuple[int, ...],
                     seeds: int) -> tuple[dict[int, list[float]], dict]:
    """--best-angle: at each L, the scores with the pair turned by its best θ (`best_angle`),
    beside the unturned `scores`. θ is chosen at the classifier seed after the `seeds` scored, so
    the reported scores do not carry the luck of the choice. Returns those scores by L, and
    --csv's columns: the pair's position angle, and at each L the θ and the mean score (with fewer
    than two active latents: none, and the score unturned)."""
    import replicas
    from runs import UsageError
    x, _ = replicas.probe_batch(model.latents, args.probe_images, device=device,
                                subset=args.subset)
    try:
        pair = probe_pair(model, codes, args.rotate, x, path, args.subset)[0]
    except UsageError:  # a collapsed model among many: no pair to turn, its scores stand
        say(f"{path}: fewer than two active latents, no position pair to turn")
        return scores, {"angle": None, **{f"best_{k}_L{L}": None if k == "theta" else
                                          sum(scores[L]) / seeds
                                          for L in args.L for k in ("theta", "score")}}
    index = shapes.subset_index(args.subset) if args.subset else None  # the images of the angle
    choice, angle = args.seed + seeds, replicas.position_angle(codes, *pair, index)
    score = score_settings(args, factors)
    say(f"{path}: latents {pair[0]} and {pair[1]}, {angle:.1f}° from the (posX, posY) axes, turned "
        f"by the θ that scores best at classifier seed {choice} "
        f"({' then '.join(f'{s}°' for s in BEST_ANGLE_STEPS)} steps), scored at the seeds above")
    best, columns = {}, {"angle": angle}
    for L in args.L:
        theta = best_angle(codes, pair, L, choice, progress=say, **score)
        turned = replicas.rotate_codes(codes, *pair, theta)
        best[L] = [disentanglement_score(turned, L=L, seed=args.seed + s, **score)
                   for s in range(seeds)]
        gain = sum(best[L]) / seeds - sum(scores[L]) / seeds
        after = replicas.position_angle(turned, *pair, index)
        say(f"  L = {L}: turned by {theta}° ({after:.1f}° from the axes): "
            f"{', '.join(f'{s:.2%}' for s in best[L])} "
            f"({100 * gain:+.2f} points on the scores above)")
        columns |= {f"best_theta_L{L}": theta, f"best_score_L{L}": sum(best[L]) / seeds}
    return best, columns


def main() -> None:
    from replicas import check_rotate
    from runs import UsageError, cli_errors, pick_device, set_threads
    args = build_parser().parse_args()
    with cli_errors("metric.py"):
        set_threads(args.threads)
        if args.dlib and args.L not in (None, [DLIB_L]):
            raise UsageError(f"--dlib scores at disentanglement_lib's L = {DLIB_L}: leave --L out")
        args.L = list(dict.fromkeys(args.L or [DLIB_L if args.dlib else DEFAULT_L]))
        try:
            args.subset = shapes.parse_subset(args.subsample) or None
        except ValueError as e:
            raise UsageError(str(e)) from None
        whole_world = [flag for flag, on in (("--table2", args.table2), ("--all", args.all),
                                             ("--dlib", args.dlib),
                                             ("--rotate", args.rotate is not None)) if on]
        if args.subset and whole_world:
            raise UsageError(f"{', '.join(whole_world)} reads the whole world: "
                             f"leave out --subsample")
        device = pick_device(args.device)
        # fail before any work
        loaded = [load_shapes_checkpoint(path, device) for path in args.checkpoints]
        models = [model for model, _ in loaded]
        check_rotate(args.rotate, models, args.checkpoints)
        factors = (0,) + PAPER_FACTORS if args.include_shape or args.dlib else PAPER_FACTORS
        seeds = args.seeds or (3 if len(args.checkpoints) > 1 else 1)
        say(f"metric.py: scoring {len(args.checkpoints)} checkpoint(s) on {device}, "
            f"{torch.get_num_threads()} CPU threads; codes "
            + ("encoded afresh (--no-cache)" if args.no_cache else
               "read from <stem>.codes.pt beside each checkpoint, or encoded and written there")
            + "; results on this screen")
        say(("settings (disentanglement_lib's): " if args.dlib else "settings: ")
            + f"L={', '.join(map(str, args.L))}, "
            f"{args.n_train} train / {args.n_test} test points, "
            f"factors {', '.join(shapes.FACTOR_NAMES[f] for f in factors)}; "
            + (f"pairs from the part {' '.join(args.subsample)} "
               f"({len(shapes.subset_index(args.subset)):,} images); " if args.subset else "")
            + "standardised z_diff, linear softmax, "
            + classifier_description(args.classifier, args.classifier_steps, args.classifier_lr))
        scores, turned, rows = {L: [] for L in args.L}, {L: [] for L in args.L}, []
        for path, (model, config) in zip(args.checkpoints, loaded):
            mine, best, columns = score_checkpoint(path, model, config, args, device, factors,
                                                   seeds)
            for L in args.L:
                scores[L] += mine[L]
                turned[L] += best.get(L, [])
            if args.csv:
                rows.append(table_row(path, model, config, mine, args, device, columns))
        for L in args.L:
            for these, how in ((scores[L], ""), (turned[L], ", pairs turned to their best θ")):
                if len(these) > 1:
                    mean, std, kept = a4_protocol(these)
                    at = f" at L = {L}" if len(args.L) > 1 else ""
                    say(f"A.4 protocol{at}{how} over {len(args.checkpoints)} checkpoint(s) x "
                        f"{seeds} seed(s): {mean:.2%} ± {std:.2%} "
                        f"(top {len(kept)} of {len(these)} scores)")
        if args.csv:
            write_table(args.csv, rows)
            say(f"wrote {args.csv}: {len(rows)} row(s)")


if __name__ == "__main__":
    main()
