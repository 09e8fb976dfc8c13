"""The geometry of a trained replica's latents, and the objective's blind spot (Higgins et al.,
ICLR 2017, Sec. 4.2 and Fig. 7; the A.4 protocol's replicas).

The metric of Sec. 3 gives one number per model; these pieces read a trained model's latents one by
one, from its codes μ of all 737,280 images and their mutual information with each factor:
  - the factor each latent follows and how purely (`latent_factors`);
  - the two latents that carry position and the angle of their plane from the (posX, posY) axes
    (`position_pair`, `position_angle`): 0° aligned, 45° fully mixed;
  - that pair turned by θ, an exact change of coordinates of the model (`rotate_latents`,
    `rotate_codes`), and Eq. 4 on a fixed batch with fixed noise (`probe_batch`,
    `objective_on_batch`), which the turn moves little while the score moves much.
metric.py's --latents and --rotate combine them with the score (`metric.latent_summary`,
`metric.rotation_probe`); traverse.py --replicas and --rotation draw them. Needs shapes.py,
loss.py and runs.py beside it (not metric.py, which imports this file for those views).

    python metric.py ckpt.pt --latents  # each latent's KL, factor and purity; position angle
    python metric.py ckpt.pt --rotate   # the position pair turned 0-90°: Eq. 4 and the score
    python traverse.py --replicas runs/*.pt --out replicas.png
"""

import copy
import math

import torch

import loss as objective
import shapes
from runs import UsageError

# H(v_k) over the whole set: log |v_k|
FACTOR_ENTROPY = torch.tensor(shapes.FACTOR_SIZES, dtype=torch.float64).log()
POSITION = (3, 4)  # posX, posY in the factor order of shapes.FACTOR_NAMES
PROBE_IMAGES = 4096  # the fixed batch of the per-latent KL and of the rotation probe's Eq. 4
# θ in degrees; 90° swaps the pair (and flips a sign)
ROTATION_ANGLES = (0, 15, 30, 45, 60, 75, 90)
# the metric's L in the rotation sweep: 16 reads rotations, 64 saturates (README)
ROTATION_L = (16, 64)


# ---------------------------------------------------------------- which latent carries which factor

def latent_factors(mi: torch.Tensor,
                   entropy: torch.Tensor = FACTOR_ENTROPY) -> list[tuple[int, float]]:
    """For each latent, the factor it follows and how purely, from its mutual information
    `mi` (M, 5) in nats with each factor over all images (`mutual_information`), and each
    factor's entropy H(v_k) (5,) over the same images (over part of the world: less).

    The factor is the one of largest I(z_d; v_k) / H(v_k): the largest share of a factor's entropy.
    Purity is I(z_d; v_k) / Σ_k' I(z_d; v_k'): the share of what the latent tells about the factors
    that is about that one. The factors are independent on the full grid, so a function of one
    factor alone has purity 1 exactly, and a latent that follows area (scale mixed with shape) has
    less.
    """
    factor = (mi / entropy).argmax(1)  # (M,)
    total = mi.sum(1).clamp_min(1e-12)  # a constant latent: purity 0, not 0/0
    return [(int(k), (mi[d, k] / total[d]).item()) for d, k in enumerate(factor)]


def position_pair(mi: torch.Tensor, kl: torch.Tensor,
                  entropy: torch.Tensor = FACTOR_ENTROPY) -> tuple[int, int] | None:
    """The two active latents (mean KL above loss.ACTIVE_KL) that carry position: those of largest
    I(z_d; posX) / H(posX) + I(z_d; posY) / H(posY), as (the more posX one, the more posY one);
    None with fewer than two active latents. A sum, so that a pair turned by 45° is still found.
    `entropy`: H(v_k) (5,) over the images of `mi`."""
    if int((kl > objective.ACTIVE_KL).sum()) < 2:
        return None
    normalised = (mi / entropy)[:, POSITION]  # (M, 2)
    position = torch.where(kl > objective.ACTIVE_KL, normalised.sum(1),
                           torch.tensor(-1.0, dtype=torch.float64))  # (M,)
    a, b = position.topk(2).indices.tolist()
    x_minus_y = normalised[:, 0] - normalised[:, 1]
    return (a, b) if x_minus_y[a] >= x_minus_y[b] else (b, a)


def position_angle(codes: torch.Tensor, a: int, b: int, index: torch.Tensor | None = None) -> float:
    """The angle in degrees, 0 to 45, between the plane of latents (a, b) and the true
    (posX, posY) axes, over all images or those of DeepMind indices `index` (part of the world).

    Definition: fit z = W p + c by least squares over those images, where z = (μ_a, μ_b) and
    p = (posX, posY) as class indices (the same grid step on both axes); W is the 2×2 map from
    position to the two latents. Its polar decomposition W = R S (R orthogonal, S symmetric
    positive, from the SVD W = U Σ Vᵀ: R = U Vᵀ) separates the turn R from the latents' own
    scales and any shear S. R's first column is (cos φ, sin φ): R is the rotation by φ, or that
    rotation with the sign of latent b flipped. Aligned latents follow one factor each, in either
    order and with either sign, so R counts modulo those signed permutations, which take φ to
    ±φ + k·90°: the angle is min(φ mod 90°, 90° − φ mod 90°). 0° = each latent follows
    one position factor; 45° = each follows posX ± posY equally: fully mixed. Turning the pair
    by θ with `rotate_codes` moves the angle by θ (then folded), whatever the latents' scales
    and signs.
    """
    if index is None:  # codes are in DeepMind order
        index, z = torch.arange(len(codes)), codes[:, [a, b]]
    else:
        z = codes[index][:, [a, b]]
    p = shapes.index_to_classes(index)[:, POSITION].double()  # (N, 2)
    z = z.double()  # (N, 2)
    p, z = p - p.mean(0), z - z.mean(0)
    W = torch.linalg.lstsq(p, z).solution.T  # (2, 2): z ≈ W p
    U, _, Vh = torch.linalg.svd(W)
    R = U @ Vh
    phi = math.degrees(math.atan2(R[1, 0].item(), R[0, 0].item())) % 90.0
    return min(phi, 90.0 - phi)


# ---------------------------------------------------------------- the objective's blind spot:
# the position pair turned
# Two latents turned by θ are an exact change of coordinates of the model, which Eq. 4 barely sees
# where the two posterior variances are equal, and which the metric reads.

def rotation(theta: float) -> torch.Tensor:
    """R(θ) (2, 2) for θ in degrees: turns a pair of coordinates counter-clockwise."""
    c, s = math.cos(math.radians(theta)), math.sin(math.radians(theta))
    return torch.tensor([[c, -s], [s, c]])


def rotate_codes(codes: torch.Tensor, i: int, j: int, theta: float) -> torch.Tensor:
    """Codes (N, M) with latents (i, j) turned by R(θ): (z_i, z_j) -> R (z_i, z_j), the rest as
    they are."""
    turned = codes.clone()
    turned[:, [i, j]] = codes[:, [i, j]] @ rotation(theta).T.to(codes)  # rows: z R^T = (R z)^T
    return turned


def rotate_latents(model: torch.nn.Module, i: int, j: int, theta: float,
                   turn_variance: bool = False) -> torch.nn.Module:
    """A copy of `model` (a BetaVAE) whose latents (i, j) are `model`'s turned by R(θ): an exact
    change of coordinates of the codes μ and of the decoder.

    The encoder's last Linear gives (μ, logvar) (2M outputs): its μ rows i and j become R times
    them, so μ' = R μ on the pair; the logvar rows M + i, M + j stay. The decoder's first Linear
    gets columns W' = W Rᵀ on the pair, so W' R z = W z: decode'(R z) = decode(z) for every z.
    In Eq. 4 the KL is unchanged (|R μ| = |μ|, σ unchanged); the reconstruction term is unchanged
    in expectation where σ_i = σ_j, since then z' = R μ + σ ε = R (μ + σ Rᵀ ε) and
    Rᵀ ε ~ N(0, I) like ε. Where σ_i ≠ σ_j no diagonal posterior is a change of coordinates;
    with `turn_variance` each variance turns with its mean as far as the linear head allows:
    logvar'_i = cos²θ logvar_i + sin²θ logvar_j,
    logvar'_j = sin²θ logvar_i + cos²θ logvar_j, so that 90° is an exact relabelling (the pair
    swapped, one sign flipped) of the whole posterior.
    """
    turned = copy.deepcopy(model)
    head, first = turned.encoder[-1], turned.decoder[0]  # Linear(H, 2M), Linear(M, H)
    R = rotation(theta).to(head.weight)
    logvar = [turned.latents + i, turned.latents + j]
    mix = R.square()  # [[cos², sin²], [sin², cos²]]
    with torch.no_grad():
        head.weight[[i, j]] = R @ head.weight[[i, j]]  # (2, H)
        head.bias[[i, j]] = R @ head.bias[[i, j]]
        if turn_variance:
            head.weight[logvar] = mix @ head.weight[logvar]  # (2, H)
            head.bias[logvar] = mix @ head.bias[logvar]
        first.weight[:, [i, j]] = first.weight[:, [i, j]] @ R.T  # (H, 2)
    return turned


def probe_batch(latents: int, n: int = PROBE_IMAGES, seed: int = 0,
                device: torch.device | str | None = None,
                subset: dict[int, slice] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed batch: n images drawn uniformly (B, 1, 64, 64), from the whole world or a part of
    it (shapes.parse_subset), and fixed noise ε (B, M) ~ N(0, I)."""
    g = torch.Generator().manual_seed(seed)
    classes = (shapes.sample_subset(shapes.subset_values(subset), n, g) if subset else
               shapes.index_to_classes(torch.randint(shapes.N_IMAGES, (n,), generator=g)))
    x = shapes.render(classes)
    return x.to(device), torch.randn(n, latents, generator=g).to(device)


def objective_on_batch(model: torch.nn.Module, x: torch.Tensor, eps: torch.Tensor, beta: float,
                       likelihood: str = "bernoulli") -> dict[str, torch.Tensor]:
    """Eq. 4's negative and its parts (loss.beta_vae_loss) on images x with the
    noise ε (B, M) given."""
    with torch.inference_mode():
        mu, logvar = model.encode(x)  # (B, M)
        z = mu + eps * (0.5 * logvar).exp()  # the reparameterisation trick, with this ε
        return objective.beta_vae_loss(model.decode(z).float(), x, mu.float(), logvar.float(), beta,
                                       likelihood)


# ---------------------------------------------------------------- checks of the command lines


def check_rotate(rotate: list[int] | None, models: list[torch.nn.Module], paths: list[str]) -> None:
    """--rotate's latents, before any work: none (the position pair) or two distinct ones each
    model has."""
    if not rotate:
        return
    if len(rotate) != 2 or rotate[0] == rotate[1]:
        raise UsageError(f"--rotate {' '.join(map(str, rotate))}: give two different latents I J, "
                         f"or none for the position pair")
    for path, model in zip(paths, models):
        if not all(0 <= d < model.latents for d in rotate):
            raise UsageError(f"--rotate {rotate[0]} {rotate[1]}: {path} has latents 0 to "
                             f"{model.latents - 1}")


def eq4_change(rows: list[dict], key: str) -> list[float]:
    """A rotation sweep's Eq. 4 (`key`: "loss", variances kept, or "loss_turned") at each θ, as a
    fraction of change from Eq. 4 at θ = 0."""
    return [r[key] / rows[0]["loss"] - 1 for r in rows]

