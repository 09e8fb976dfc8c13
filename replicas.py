"""What a trained replica's latents follow, and the objective's blind spot (Higgins et al., ICLR
2017, Sec. 4.2 and Fig. 7; the A.4 protocol's replicas).

The metric of Sec. 3 (metric.py) gives one number per model; this file reads a trained model's
latents one by one, from its codes μ of all 737,280 images:
  - each latent's mean KL, its mutual information with each factor, the factor it follows and how
    purely (`latent_summary`, `latent_factors`);
  - the two latents that carry position and the angle of their plane from the (posX, posY) axes
    (`position_pair`, `position_angle`): 0° aligned, 45° fully mixed;
  - the rotation probe: that pair turned by θ, an exact change of coordinates of the model
    (`rotate_latents`), which moves Eq. 4 little and the score much (`rotation_probe`).
metric.py --latents and --rotate print these views; traverse.py --replicas and --rotation draw
them. Needs metric.py, shapes.py, loss.py, model.py and runs.py beside it.

    python metric.py ckpt.pt --latents  # each latent's KL, factor and purity; position angle
    python metric.py ckpt.pt --rotate   # the position pair turned 0-90°: Eq. 4 and the score
    python traverse.py --replicas runs/*.pt --out replicas.png
"""

import copy
import math
from argparse import Namespace
from pathlib import Path

import torch

import loss as objective

import shapes
from metric import checkpoint_codes, disentanglement_score, mig, mutual_information, say
from model import BetaVAE, load_checkpoint
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

def latent_factors(mi: torch.Tensor) -> list[tuple[int, float]]:
    """For each latent, the factor it follows and how purely, from its mutual information
    `mi` (M, 5) in nats with each factor over all images (`mutual_information`).

    The factor is the one of largest I(z_d; v_k) / H(v_k): the largest share of a factor's entropy.
    Purity is I(z_d; v_k) / Σ_k' I(z_d; v_k'): the share of what the latent tells about the factors
    that is about that one. The factors are independent on the full grid, so a function of one
    factor alone has purity 1 exactly, and a latent that follows area (scale mixed with shape) has
    less.
    """
    factor = (mi / FACTOR_ENTROPY).argmax(1)  # (M,)
    total = mi.sum(1).clamp_min(1e-12)  # a constant latent: purity 0, not 0/0
    return [(int(k), (mi[d, k] / total[d]).item()) for d, k in enumerate(factor)]


def position_pair(mi: torch.Tensor, kl: torch.Tensor) -> tuple[int, int] | None:
    """The two active latents (mean KL above loss.ACTIVE_KL) that carry position: those of largest
    I(z_d; posX) / H(posX) + I(z_d; posY) / H(posY), as (the more posX one, the more posY one);
    None with fewer than two active latents. A sum, so that a pair turned by 45° is still found."""
    if int((kl > objective.ACTIVE_KL).sum()) < 2:
        return None
    normalised = (mi / FACTOR_ENTROPY)[:, POSITION]  # (M, 2)
    position = torch.where(kl > objective.ACTIVE_KL, normalised.sum(1),
                           torch.tensor(-1.0, dtype=torch.float64))  # (M,)
    a, b = position.topk(2).indices.tolist()
    x_minus_y = normalised[:, 0] - normalised[:, 1]
    return (a, b) if x_minus_y[a] >= x_minus_y[b] else (b, a)


def position_angle(codes: torch.Tensor, a: int, b: int) -> float:
    """The angle in degrees, 0 to 45, between the plane of latents (a, b) and the true
    (posX, posY) axes.

    Definition: fit z = W p + c by least squares over all images, where z = (μ_a, μ_b) and
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
    # (N, 5): codes are in DeepMind order
    classes = shapes.index_to_classes(torch.arange(len(codes)))
    p = classes[:, POSITION].double()
    z = codes[:, [a, b]].double()  # (N, 2)
    p, z = p - p.mean(0), z - z.mean(0)
    W = torch.linalg.lstsq(p, z).solution.T  # (2, 2): z ≈ W p
    U, _, Vh = torch.linalg.svd(W)
    R = U @ Vh
    phi = math.degrees(math.atan2(R[1, 0].item(), R[0, 0].item())) % 90.0
    return min(phi, 90.0 - phi)


def latent_summary(codes: torch.Tensor, kl: torch.Tensor, bins: int = 20) -> dict:
    """The per-latent view of a model as numbers: from its codes μ (737280, M) of all images and
    each latent's mean KL (M,) in nats.

    Returns kl (M,), active (the latents of KL above ACTIVE_KL), nmi (M, 5): I(z_d; v_k) / H(v_k),
    factor and purity of each latent (`latent_factors`), pair (the position latents, or None),
    angle (`position_angle` of the pair, or None) and mig.
    """
    classes = shapes.index_to_classes(torch.arange(shapes.N_IMAGES))  # (N, 5)
    mi = mutual_information(codes, classes, bins)  # (M, 5)
    pair = position_pair(mi, kl)
    factors = latent_factors(mi)
    return {"kl": kl.tolist(), "active": [d for d in range(len(kl)) if kl[d] > objective.ACTIVE_KL],
            "nmi": mi / FACTOR_ENTROPY, "factor": [f for f, _ in factors],
            "purity": [p for _, p in factors],
            "pair": pair, "angle": None if pair is None else position_angle(codes, *pair),
            "mig": mig(codes, bins)}


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
                device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed batch: n images drawn uniformly (B, 1, 64, 64) and fixed noise
    ε (B, M) ~ N(0, I)."""
    g = torch.Generator().manual_seed(seed)
    x = shapes.render(shapes.index_to_classes(torch.randint(shapes.N_IMAGES, (n,), generator=g)))
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


def rotation_probe(model: torch.nn.Module, codes: torch.Tensor, pair: tuple[int, int], theta: float,
                   x: torch.Tensor, eps: torch.Tensor, beta: float, likelihood: str = "bernoulli",
                   Ls: tuple[int, ...] = ROTATION_L, **score) -> dict[str, float]:
    """One angle of the sweep: the model with latents `pair` turned by θ (`rotate_latents`), its
    Eq. 4 on the fixed batch x with the fixed noise ε (loss, recon, kl; loss_turned: with the
    variances turned too), and its codes (the original codes turned: the μ head is linear, so this
    is exact) scored: position angle of the pair and the disentanglement score at each L (`score`:
    disentanglement_score's other settings)."""
    parts = objective_on_batch(rotate_latents(model, *pair, theta), x, eps, beta, likelihood)
    along = objective_on_batch(rotate_latents(model, *pair, theta, turn_variance=True), x, eps,
                               beta, likelihood)
    turned = rotate_codes(codes, *pair, theta)
    return {"theta": theta, **{k: parts[k].item() for k in ("loss", "recon", "kl")},
            "loss_turned": along["loss"].item(), "angle": position_angle(turned, *pair),
            **{f"score_L{L}": disentanglement_score(turned, L=L, **score) for L in Ls}}


# ---------------------------------------------------------------- the views: metric.py --latents,
# --rotate; traverse.py

def print_latent_view(path: str, model: torch.nn.Module, codes: torch.Tensor, config: dict,
                      n_images: int, device: torch.device) -> None:
    """--latents: each latent's mean KL, its normalised mutual information with each factor (an
    aligned latents × factors table), the factor it follows and how purely, the position angle and
    MIG."""
    say(f"{path}: per-latent view: KL and recon on {n_images:,} fixed images, mutual information "
        f"I(z; v) / H(v) over all {shapes.N_IMAGES:,} (codes μ in 20 bins)")
    x, eps = probe_batch(model.latents, n_images, device=device)
    parts = objective_on_batch(model, x, eps, config["beta"], config.get("likelihood", "bernoulli"))
    view = latent_summary(codes, parts["kl_per_latent"].cpu())
    say(f"  active latents {len(view['active'])} of {model.latents} "
        f"(mean KL > {objective.ACTIVE_KL} nats); "
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
    say(f"  MIG {view['mig']:.3f} (all images); purity: the share of a latent's information about "
        f"the factors that is about the one it follows")


def rotation_pair(rotate: list[int], codes: torch.Tensor, kl: torch.Tensor,
                  path: str) -> tuple[int, int]:
    """The latents that --rotate turns: as given, or the position pair of the per-latent view."""
    if rotate:
        return rotate[0], rotate[1]
    pair = position_pair(mutual_information(codes,
                                            shapes.index_to_classes(torch.arange(shapes.N_IMAGES))),
                         kl)
    if pair is None:
        raise UsageError(f"{path} has fewer than two active latents: name the pair to turn, "
                         f"--rotate I J")
    return pair


def print_rotation_sweep(path: str, model: torch.nn.Module, codes: torch.Tensor, config: dict,
                         args: Namespace, device: torch.device, factors: tuple[int, ...]) -> None:
    """--rotate: Eq. 4 on a fixed batch with fixed noise (variances kept, and turned along) and the
    score at each L, one line per angle θ."""
    x, eps = probe_batch(model.latents, args.probe_images, device=device)
    beta, likelihood = config["beta"], config.get("likelihood", "bernoulli")
    with torch.inference_mode():
        mu, logvar = (t.float().cpu() for t in model.encode(x))  # (B, M)
    i, j = rotation_pair(args.rotate, codes, objective.kl_per_latent(mu, logvar).mean(0), path)
    sigma = (0.5 * logvar[:, [i, j]]).exp().mean(0).tolist()
    # the hypothesis wants 0: one variance for both
    apart = (0.5 * (logvar[:, i] - logvar[:, j])).abs().mean()
    say(f"{path}: latents {i} and {j} turned by θ (encoder μ rows, decoder first-layer columns: "
        f"an exact change of coordinates of μ); posterior σ mean {sigma[0]:.3f} and "
        f"{sigma[1]:.3f}, |log σ_{i} − log σ_{j}| {apart:.2f} per image; "
        f"Eq. 4 (β = {beta:g}) on {len(x):,} fixed images with fixed noise ε, with logvar "
        f"kept and turned along; scores at seed {args.seed}, {args.n_train} train points")
    score = dict(n_train=args.n_train, n_test=args.n_test, factors=factors, seed=args.seed,
                 steps=args.classifier_steps, lr=args.classifier_lr, optimizer=args.classifier)
    say(f"  {'θ':>4}  {'Eq. 4':>8}  {'vs 0°':>7}  {'KL':>6}  {'σ turned':>8}  {'vs 0°':>7}  "
        f"{'angle':>6}  "
        + "  ".join(f"{f'L = {L}':>7}" for L in ROTATION_L))
    first = None
    for theta in ROTATION_ANGLES:
        row = rotation_probe(model, codes, (i, j), theta, x, eps, beta, likelihood, **score)
        first = first or row
        say(f"  {theta:>3}°  {row['loss']:8.2f}  {row['loss'] / first['loss'] - 1:+7.2%}  "
            f"{row['kl']:6.2f}  {row['loss_turned']:8.2f}  "
            f"{row['loss_turned'] / first['loss'] - 1:+7.2%}  {row['angle']:5.1f}°  "
            + "  ".join(f"{row[f'score_L{L}']:7.2%}" for L in ROTATION_L))


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


def read_replica(path: str, device: torch.device) -> tuple[BetaVAE, dict, torch.Tensor,
                                                           tuple[torch.Tensor, torch.Tensor],
                                                           torch.Tensor]:
    """A checkpoint's model and config, its codes μ (737280, M) (cached beside it), metric's fixed
    probe batch (x, ε) and the mean KL per latent (M,) on it."""
    model, config = load_checkpoint(path, device)
    codes = checkpoint_codes(path, model, device, progress=say)
    x, eps = probe_batch(model.latents, device=device)
    kl = objective_on_batch(model, x, eps, config["beta"])["kl_per_latent"].cpu()
    return model, config, codes, (x, eps), kl


def replica_points(paths: list[str], device: torch.device) -> list[tuple[str, float, float]]:
    """(label "beta = β", position angle in degrees, mean score at L = 16 over 3 classifier
    seeds, %) of each checkpoint, from its cached codes (`latent_summary`); a replica with fewer
    than two active latents has no position plane and is left out, said in one line."""
    points = []
    for path in paths:
        _, config, codes, _, kl = read_replica(path, device)
        angle = latent_summary(codes, kl)["angle"]
        score = 100 * sum(disentanglement_score(codes, seed=s) for s in range(3)) / 3
        say(f"{path}: position angle " + ("none (fewer than two active latents)" if angle is None
                                          else f"{angle:.1f}°")
            + f", score at L = 16 {score:.2f} %")
        if angle is not None:
            # the default font has no β
            points.append((f"beta = {config['beta']:g}", angle, score))
    return points


def rotation_sweeps(paths: list[str], device: torch.device,
                    **score) -> list[tuple[str, list[dict]]]:
    """Each checkpoint's rotation sweep (metric.py --rotate): its position pair turned by every θ
    of ROTATION_ANGLES, Eq. 4 on the fixed batch with the fixed noise and the score at L = 16
    (`score`: disentanglement_score's other settings), one line per replica as it is done."""
    sweeps = []
    for path in paths:
        model, config, codes, (x, eps), kl = read_replica(path, device)
        pair = rotation_pair([], codes, kl, path)
        say(f"{path}: turning latents {pair[0]} and {pair[1]} by {len(ROTATION_ANGLES)} angles, "
            f"scoring each")
        rows = [rotation_probe(model, codes, pair, theta, x, eps, config["beta"],
                               config.get("likelihood", "bernoulli"), Ls=(16,), **score)
                for theta in ROTATION_ANGLES]
        say(f"{path}: latents {pair[0]} and {pair[1]} turned over 0-90°: score at L = 16 "
            f"{min(r['score_L16'] for r in rows):.2%}-{max(r['score_L16'] for r in rows):.2%}, "
            f"Eq. 4 {max(eq4_change(rows, 'loss_turned')):+.2%} at most (variances turned), "
            f"{max(eq4_change(rows, 'loss')):+.2%} (kept)")
        sweeps.append((f"{Path(path).stem}, {rows[0]['angle']:.0f} deg", rows))
    return sweeps


def eq4_change(rows: list[dict], key: str) -> list[float]:
    """A rotation sweep's Eq. 4 (`key`: "loss", variances kept, or "loss_turned") at each θ, as a
    fraction of change from Eq. 4 at θ = 0."""
    return [r[key] / rows[0]["loss"] - 1 for r in rows]

