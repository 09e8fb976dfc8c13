"""Figures of a trained β-VAE (Higgins et al., ICLR 2017): traversals, latent response maps,
samples.

Latent traversals (Figs. 1–4, Fig. 7A rows 4–8): infer mu from a seed image, then sweep one
latent over [−3, 3] while the others stay at mu; one row per latent, the most informative
(largest mean KL to the prior) first, its index and KL beside it. A PNG and an animated GIF.
Latent response maps (Fig. 7A rows 1–3, 2D shapes only): the mean of each latent's mu over the
whole data set as a function of position (a heat map), of scale and of rotation (one curve per
shape: square red, ellipse green, heart blue). Samples from the prior (Fig. 9): decoded z ~ N(0, I).
Reconstructions: inputs above the decoded mean of q(z|x). Learning curves: the disentanglement
score that train.py --eval-every logs, against training minutes or images seen (--x). Every
figure carries its axes: ticks, axis names, the response maps' colour bar (the value of mu), KL
in nats. The explorer (fc models of grey images): explorer.html, one self-contained page that
runs the decoder in the browser, a slider per latent, seed images whose mu sets them; its HTML
and JavaScript are explorer_template.html, which this file fills in with the weights and codes.

The response maps read the checkpoint's codes through metric.checkpoint_codes: cached beside it
as <stem>.codes.pt (--no-cache: encode afresh). Needs shapes.py, model.py, loss.py, metric.py,
runs.py and explorer_template.html beside it (pillow for the pictures).

    python traverse.py ckpt.pt                 # every figure, into ckpt_figures/
    python traverse.py ckpt.pt --only traversal --steps 7 --out figs
    python traverse.py ckpt.pt --html          # the explorer alone: open explorer.html in a browser
    python traverse.py faces.pt --seeds 5      # a model trained on an image folder
    python traverse.py --curves "β = 4=b4.csv" "β = 1=b1.csv" --out curves.png  # score vs minutes
    python traverse.py --curves paper_b4_s0.csv --x images --out paper.png  # score vs images seen
    python traverse.py --replicas runs/fig6/b*_s*[0-9].pt --out replicas.png  # score vs position angle
    python traverse.py --rotation runs/fig6/b4_s[0-3].pt --out rotation.png  # the objective's blind spot
    python traverse.py --sweep scores.csv --out fig6_right.png   # score and recon against β_norm, M
    python traverse.py --continuity fig8.csv noise*.csv --out fig8.png   # A.8: continuity, noise
    python traverse.py --alignment "capacity=cap.csv" plain.csv   # metric.py --best-angle: angles
"""

import argparse
import base64
import csv
import io
import json
import math
import os
import signal
import time
from pathlib import Path

# Ctrl-C while torch loads (it may be in C++: exit at once), not a traceback
if __name__ == "__main__":
    signal.signal(signal.SIGINT,
                  lambda signum, frame: (os.write(2, b"interrupted while starting\n"),
                                         os._exit(130)))

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

import loss as objective
import metric
import replicas
import shapes
from model import BetaVAE, load_checkpoint
from runs import UsageError, cli_errors, pick_device, positive_int, seed_arg, set_threads

TRAVERSAL_RANGE = 3.0  # Figs. 1–4, 7: each latent swept over [−3, 3], the prior's ±3σ
MAX_STEPS = 100  # positions of one traversal at most: 100 columns are 6,600 px wide
KL_IMAGES = 4096  # images whose mean KL per latent orders the rows
BATCH = 1024
GAP = 2  # pixels between images
CELL = 64 + GAP
LINE = 18  # height of one line of text
LABEL_WIDTH = 112  # column of row labels, left of a grid
SPACE = 16  # between the blocks of one figure
# square red, ellipse green, heart blue
SHAPE_COLOURS = ((220, 30, 30), (20, 150, 40), (30, 70, 220))
PLOT = (150, 96)  # one response curve's axis box, pixels
HEAT = 96  # side of one 32×32 position map, enlarged
TICK = 4  # length of a tick mark, pixels
# height of one latent's response maps: the maps, then their tick labels
MAP_ROW = HEAT + LINE + 4 * GAP
BAR = (10, 44)  # the colour bar: its width, and the room for its value labels right of it
CURVE = (480, 280)  # the learning curves' axis box, pixels
LEGEND_X = 56 + CURVE[0] - 170  # a legend's left edge at a plot's lower right
CURVE_COLOURS = ((30, 70, 220), (220, 30, 30), (20, 150, 40), (150, 60, 180), (230, 140, 0),
                 (90, 90, 90), (0, 150, 150), (160, 100, 40), (230, 90, 170), (0, 0, 0),
                 (170, 170, 0))
FIGURES = ("traversal", "maps", "samples", "recon", "explorer")  # what --only chooses from
EXPLORER_TEMPLATE = Path(__file__).with_name("explorer_template.html")
# The explorer's seeds: each shape, upright, at these (name, scale class, posX, posY).
EXPLORER_PLACES = (("large, centre", 5, 16, 16), ("small, top left", 0, 6, 6),
                   ("medium, bottom right", 2, 25, 25))


def font(size: int = 13) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only its small bitmap font
        return ImageFont.load_default()


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(..., C, H, W) in [0, 1], C = 1 or 3 -> (..., H, W, 3) uint8 for pillow."""
    images = images.expand(*images.shape[:-3], 3, *images.shape[-2:])  # grey to RGB
    return (images.clamp(0, 1) * 255).round().byte().movedim(-3, -1).cpu().numpy()


def labelled_grid(images: torch.Tensor, row_labels: list[str] | None = None,
                  col_labels: list[str] | None = None, title: str | None = None,
                  corner: tuple[str, str] | None = None) -> Image.Image:
    """(R, K, C, 64, 64) images -> one picture: a label left of each row, above each column,
    a title.

    `corner` names the row labels (on the title's line) and the column labels (on theirs),
    in the row labels' column.
    """
    R, K = images.shape[:2]
    left = LABEL_WIDTH if row_labels else 0
    top = LINE * ((title is not None) + (col_labels is not None))
    canvas = Image.new("RGB", (left + GAP + K * CELL, top + GAP + R * CELL), "white")
    pixels = to_uint8(images)  # (R, K, 64, 64, 3)
    draw, f = ImageDraw.Draw(canvas), font()
    for r in range(R):
        for k in range(K):
            canvas.paste(Image.fromarray(pixels[r, k]),
                         (left + GAP + k * CELL, top + GAP + r * CELL))
        if row_labels:
            draw.text((4, top + GAP + r * CELL + (64 - LINE) // 2), row_labels[r], fill="black",
                      font=f)
    for k, text in enumerate(col_labels or []):
        # centred over its column
        x = left + GAP + k * CELL + (64 - draw.textlength(text, font=f)) / 2
        draw.text((x, top - LINE + 2), text, fill="black", font=f)
    if title is not None:
        draw.text((left + GAP, 2), title, fill="black", font=f)
    if corner and row_labels:
        rows_name, columns_name = corner
        draw.text((4, top - 2 * LINE + 2), rows_name, fill="grey", font=f)
        draw.text((4, top - LINE + 2), columns_name, fill="grey", font=f)
    return canvas


def side_by_side(blocks: list[Image.Image]) -> Image.Image:
    canvas = Image.new("RGB", (sum(b.width for b in blocks) + SPACE * (len(blocks) - 1),
                               max(b.height for b in blocks)), "white")
    x = 0
    for b in blocks:
        canvas.paste(b, (x, 0))
        x += b.width + SPACE
    return canvas


@torch.no_grad()
def encode(model: BetaVAE, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (N, C, 64, 64) on the model's device -> mu, logvar (N, M) on the CPU, in batches."""
    parts = [model.encode(b) for b in x.split(BATCH)]
    return torch.cat([p[0] for p in parts]).cpu(), torch.cat([p[1] for p in parts]).cpu()


@torch.no_grad()
def decode(model: BetaVAE, z: torch.Tensor) -> torch.Tensor:
    """z (N, M) -> the Bernoulli means sigmoid(logits) (N, C, 64, 64) on the CPU, in batches."""
    device = next(model.parameters()).device
    return torch.cat([torch.sigmoid(model.decode(b.to(device))).cpu() for b in z.split(BATCH)])


def latent_kl(model: BetaVAE, x: torch.Tensor) -> torch.Tensor:
    """Mean KL(q(z_i|x) || p(z_i)) of each latent over the images x: (M,) nats."""
    mu, logvar = encode(model, x)
    return objective.kl_per_latent(mu, logvar).mean(0)


def latents_by_kl(model: BetaVAE, source: shapes.Shapes | shapes.DSpritesNpz | shapes.ImageFolder,
                  generator: torch.Generator) -> torch.Tensor:
    """latent_kl over KL_IMAGES training images, said most informative first: (M,) nats."""
    x, _ = source.sample(KL_IMAGES, generator)  # (N, C, 64, 64)
    kl = latent_kl(model, x)
    metric.say("latents by mean KL (nats): "
               + ", ".join(f"z{i} {kl[i]:.2f}" for i in kl.argsort(descending=True)))
    return kl


def traversal(model: BetaVAE, mu: torch.Tensor, steps: int) -> torch.Tensor:
    """Sweep each latent over [−3, 3] from each code mu (S, M), the others fixed.

    Returns decoded images (S, M, steps, C, 64, 64): [seed, latent traversed, position].
    """
    S, M = mu.shape
    z = mu.cpu()[:, None, None, :].repeat(1, M, steps, 1)  # (S, M, steps, M)
    for i in range(M):
        z[:, i, :, i] = torch.linspace(-TRAVERSAL_RANGE, TRAVERSAL_RANGE, steps)
    images = decode(model, z.view(-1, M))  # (S·M·steps, C, 64, 64)
    return images.view(S, M, steps, *images.shape[1:])


def draw_traversals(images: torch.Tensor, names: list[str], kl: torch.Tensor, png: Path,
                    gif: Path) -> None:
    """A block per seed (rows: latents by KL, columns: positions) as a PNG; a GIF over the
    positions."""
    S, M, steps = images.shape[:3]
    order = kl.argsort(descending=True)
    rows = [f"z{i}  {kl[i]:.2f}" for i in order.tolist()]
    values = torch.linspace(-TRAVERSAL_RANGE, TRAVERSAL_RANGE, steps).tolist()
    blocks = [labelled_grid(images[s, order], rows if s == 0 else None,
                            [f"{v:+.1f}" for v in values], f"seed: {names[s]}",
                            ("latent, KL (nats)", "latent value:"))
              for s in range(S)]
    side_by_side(blocks).save(png)
    frames = [labelled_grid(images[:, order, t].transpose(0, 1), rows, names,
                            f"traversed latent = {values[t]:+.2f}", ("latent, KL (nats)", "seed:"))
              for t in range(steps)]
    frames += frames[-2:0:-1]  # there and back again, so the loop does not jump
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=150, loop=0)


def latent_responses(codes: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mean code over the whole 2D-shapes set as a function of each factor (Fig. 7A rows 1–3).

    codes (737280, D), row i the code of image i in DeepMind's order. Returns
    position (D, 32 posY, 32 posX), scale (D, 3 shapes, 6) and rotation (D, 3 shapes, 40),
    each averaged over every factor not shown.
    """
    v = codes.float().cpu().view(*shapes.FACTOR_SIZES, -1)  # (3, 6, 40, 32 posX, 32 posY, D)
    return {"position": v.mean((0, 1, 2)).permute(2, 1, 0),
            "scale": v.mean((2, 3, 4)).permute(2, 0, 1),
            "rotation": v.mean((1, 3, 4)).permute(2, 0, 1)}


def heat_colour(t: np.ndarray) -> np.ndarray:
    """t in [0, 1] -> RGB uint8 along dark blue, blue, cyan, yellow, red (a 'jet' map, as
    Fig. 7)."""
    anchors = np.array([[0, 0, 130], [0, 60, 255], [0, 230, 255], [255, 230, 0], [220, 0, 0]],
                       float)
    x = np.linspace(0, 1, len(anchors))
    return np.stack([np.interp(t, x, anchors[:, c]) for c in range(3)], -1).round().astype(np.uint8)


def response_maps(codes: torch.Tensor, kl: torch.Tensor, path: Path) -> dict[str, torch.Tensor]:
    """Draw Fig. 7A's response maps of every latent, most informative first; returns the numbers.

    Each latent's row: the mean mu by position (posX across, posY down, as in the images), a
    colour bar giving the value of its colours, and mu against scale and against rotation on
    that same value scale, so that a factor the latent ignores draws flat.
    """
    responses = latent_responses(codes)
    D = responses["position"].shape[0]
    top = 2 * LINE
    bar_x = LABEL_WIDTH + HEAT + SPACE // 2
    columns = (LABEL_WIDTH, bar_x + sum(BAR) + SPACE, bar_x + sum(BAR) + PLOT[0] + 2 * SPACE)
    canvas = Image.new("RGB", (columns[2] + PLOT[0] + SPACE, top + D * MAP_ROW), "white")
    draw, f = ImageDraw.Draw(canvas), font()
    for x, text in zip(columns, ("mean mu by position", "mu by scale", "mu by rotation")):
        draw.text((x, 2), text, fill="black", font=f)
    draw.text((4, 2), "latent, KL (nats)", fill="grey", font=f)
    x = columns[1]
    for name, colour in zip(shapes.SHAPE_NAMES, SHAPE_COLOURS):
        draw.text((x, LINE + 1), name, fill=colour, font=f)
        x += draw.textlength(name, font=f) + 10
    for row, i in enumerate(kl.argsort(descending=True).tolist()):
        response_row(canvas, {k: r[i] for k, r in responses.items()}, f"z{i}  {kl[i]:.2f}",
                     top + row * MAP_ROW, columns)
    canvas.save(path)
    return responses


def ticks(draw: ImageDraw.ImageDraw, x0: float, x1: float, y: float, labels: list[str]) -> None:
    """Tick marks below an axis from x0 to x1, evenly spaced, each with its label centred
    under it."""
    f = font()
    for x, label in zip(np.linspace(x0, x1, len(labels)).tolist(), labels):
        draw.line([(x, y), (x, y + TICK)], fill="grey")
        draw.text((x - draw.textlength(label, font=f) / 2, y + TICK), label, fill="black", font=f)


def response_row(canvas: Image.Image, response: dict[str, torch.Tensor], label: str, y: int,
                 columns: tuple[int, int, int]) -> None:
    """One latent's row of the response maps at height y: its position map, colour bar and two
    curves."""
    draw, f = ImageDraw.Draw(canvas), font()
    # One scale for the map and both curves, so that a factor the latent ignores draws flat.
    lo, hi = (min(r.min().item() for r in response.values()),
              max(r.max().item() for r in response.values()))
    span = max(hi - lo, 1e-6)
    draw.text((4, y + HEAT // 2 - LINE // 2), label, fill="black", font=f)
    heat = heat_colour(((response["position"] - lo) / span).numpy())  # (32, 32, 3)
    canvas.paste(Image.fromarray(heat).resize((HEAT, HEAT), Image.NEAREST), (columns[0], y))
    cell = HEAT / 32  # the ticks sit on the centres of the first and last positions
    ticks(draw, columns[0] + cell / 2, columns[0] + HEAT - cell / 2, y + HEAT, ["posX 0", "1"])
    for text, v in (("posY 0", y + cell / 2), ("1", y + HEAT - cell / 2)):
        draw.line([(columns[0] - TICK, v), (columns[0], v)], fill="grey")
        draw.text((columns[0] - TICK - 2 - draw.textlength(text, font=f), v - LINE / 2), text,
                  fill="black", font=f)
    bar_x = LABEL_WIDTH + HEAT + SPACE // 2
    # (H, w, 3): high at the top
    ramp = heat_colour(np.linspace(1, 0, PLOT[1] - 8))[:, None, :].repeat(BAR[0], 1)
    canvas.paste(Image.fromarray(ramp), (bar_x, y + 4))  # the bar spans the curves' value range
    draw.rectangle((bar_x, y + 4, bar_x + BAR[0], y + PLOT[1] - 4), outline="grey")
    for value, v in ((hi, y + 4), ((lo + hi) / 2, y + PLOT[1] / 2), (lo, y + PLOT[1] - 4)):
        draw.line([(bar_x + BAR[0], v), (bar_x + BAR[0] + TICK, v)], fill="grey")
        draw.text((bar_x + BAR[0] + TICK + 2, v - LINE / 2), f"{value:.2f}", fill="black", font=f)
    for x0, curves, labels in zip(columns[1:], (response["scale"], response["rotation"]),
                                  (["0.5", "scale", "1"], ["0", "rotation", "2pi"])):
        draw.rectangle((x0, y, x0 + PLOT[0], y + PLOT[1]), outline="grey")
        # the colour bar's values, on the same scale
        for v in (y + 4, y + PLOT[1] / 2, y + PLOT[1] - 4):
            draw.line([(x0, v), (x0 + TICK, v)], fill="grey")
        xs = np.linspace(x0 + 4, x0 + PLOT[0] - 4, curves.shape[1])
        ticks(draw, x0 + 4, x0 + PLOT[0] - 4, y + PLOT[1], labels)
        for curve, colour in zip(curves, SHAPE_COLOURS):
            ys = y + PLOT[1] - 4 - (curve.numpy() - lo) / span * (PLOT[1] - 8)  # y grows down
            draw.line(list(zip(xs.tolist(), ys.tolist())), fill=colour, width=2)


# --curves --x: the log's column, its scale and the axis's name
CURVE_AXES = {"minutes": ("seconds", 1 / 60, "training minutes (CPU)"),
              "images": ("samples", 1e-6, "training images (millions)")}


def read_scores(csv_path: str, x: str = "minutes") -> tuple[list[float], list[float]]:
    """Training minutes (or images, in millions) and disentanglement scores (%) of a train.py
    --eval-every CSV log."""
    column, scale, _ = CURVE_AXES[x]
    try:
        with open(csv_path, newline="") as f:
            log = csv.DictReader(f)
            has_column = column in (log.fieldnames or ())
            rows = [row for row in log if row.get("score")]
    except OSError as e:
        raise UsageError(f"cannot read {csv_path}: {e.strerror}") from None
    if not has_column:
        raise UsageError(f"{csv_path} has no {column} column: it is not a train.py log")
    if not rows:
        raise UsageError(f"{csv_path} has no scores: train with --eval-every N to log them")
    xs, scores = [float(r[column]) * scale for r in rows], [100 * float(r["score"]) for r in rows]
    if not all(math.isfinite(v) for v in xs + scores):
        raise UsageError(f"{csv_path}: its {column} or scores hold nan or inf: "
                         "not a train.py log as written")
    return xs, scores


def split_checkpoint(spec: str) -> tuple[str | None, str]:
    """A `path` or `label=path` argument (curves here, the rows of baselines.py's table).

    Labels hold '=' themselves ("β-VAE (β = 4)=a.pt"), so the last one splits.
    """
    if Path(spec).exists() or "=" not in spec:
        return None, spec
    label, path = spec.rsplit("=", 1)
    return label, path


def learning_curves(specs: list[str], path: Path, x: str = "minutes") -> None:
    """The disentanglement score against training minutes (or images), one line per CSV log
    (`label=path` or path)."""
    curves = []
    for spec in specs:
        label, csv_path = split_checkpoint(spec)
        curves.append((label or Path(csv_path).stem, *read_scores(csv_path, x)))
    x_max = max(max(xs) for _, xs, _ in curves)
    steps = (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)
    step = next((s for s in steps if x_max / s <= 8), 60 * math.ceil(x_max / 480))  # ≤ 8 ticks
    x_max = step * math.ceil(x_max / step - 1e-9)
    canvas, draw, xy = score_axes(x_max,
                                  [round(i * step, 1) for i in range(round(x_max / step) + 1)],
                                  CURVE_AXES[x][2], "disentanglement score (Sec. 3)")
    lines = [[xy(m, s) for m, s in zip(xs, scores)] for _, xs, scores in curves]
    colours = CURVE_COLOURS * len(curves)
    for points, colour in zip(lines, colours):
        draw.line(points, fill=colour, width=2)
        for px, py in points:
            draw.ellipse((px - 2, py - 2, px + 2, py + 2), fill=colour)
    labels = [label for label, _, _ in curves]
    width = max(draw.textlength(label, font=font()) for label in labels)
    x0, y0 = LEGEND_X, legend_y(0, len(labels))
    if any(covers((x0 - 4, y0 - 4, x0 + width + 4, y0 + len(labels) * LINE), line)
           for line in lines):  # no room in the box: the legend goes right of it
        x0 = 56 + CURVE[0] + SPACE
        wide = Image.new("RGB", (round(x0 + width + SPACE), canvas.height), "white")
        wide.paste(canvas)
        canvas, draw = wide, ImageDraw.Draw(wide)
    for i, (label, colour) in enumerate(zip(labels, colours)):
        legend(draw, i, len(labels), label, colour, x=x0)
    canvas.save(path)


def covers(box: tuple[float, float, float, float], line: list[tuple[float, float]]) -> bool:
    """Whether a polyline, its points and the segments between them, enters box (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    ends = np.array(line, dtype=float)  # (P, 2)
    t = np.linspace(0, 1, 33)[:, None, None]  # a point every few pixels of a segment
    along = ends[:1][None] if len(ends) == 1 else (1 - t) * ends[:-1] + t * ends[1:]
    return bool(((along[..., 0] >= x0) & (along[..., 0] <= x1)
                 & (along[..., 1] >= y0) & (along[..., 1] <= y1)).any())


# ---------------------------------------------------------------- reading replicas for the figures

def read_replica(path: str, device: torch.device) -> tuple[BetaVAE, dict, torch.Tensor,
                                                           tuple[torch.Tensor, torch.Tensor],
                                                           torch.Tensor]:
    """A checkpoint's model and config, its codes μ (737280, M) (cached beside it), metric's fixed
    probe batch (x, ε) and the mean KL per latent (M,) on it."""
    model, config = load_checkpoint(path, device)
    codes = metric.checkpoint_codes(path, model, device, progress=metric.say)
    x, eps = replicas.probe_batch(model.latents, device=device)
    kl = replicas.objective_on_batch(model, x, eps, config["beta"])["kl_per_latent"].cpu()
    return model, config, codes, (x, eps), kl


def replica_points(paths: list[str], device: torch.device) -> list[tuple[str, float, float]]:
    """(label "beta = β", position angle in degrees, mean score at L = 16 over 3 classifier
    seeds, %) of each checkpoint, from its cached codes (`metric.latent_summary`); a replica with
    fewer than two active latents has no position plane and is left out, said in one line."""
    points = []
    for path in paths:
        _, config, codes, _, kl = read_replica(path, device)
        angle = metric.latent_summary(codes, kl)["angle"]
        score = 100 * sum(metric.disentanglement_score(codes, seed=s) for s in range(3)) / 3
        plane = "none (fewer than two active latents)" if angle is None else f"{angle:.1f}°"
        metric.say(f"{path}: position angle {plane}, score at L = 16 {score:.2f} %")
        if angle is not None:
            # the default font has no β
            points.append((f"beta = {config['beta']:g}", angle, score))
    return points


def rotation_sweeps(paths: list[str], device: torch.device,
                    **score) -> list[tuple[str, list[dict]]]:
    """Each checkpoint's rotation sweep (metric.py --rotate): its position pair turned by every θ
    of replicas.ROTATION_ANGLES, Eq. 4 on the fixed batch with the fixed noise and the score at
    L = 16 (`score`: disentanglement_score's other settings), one line per replica as it is done."""
    sweeps, thetas = [], replicas.ROTATION_ANGLES
    for path in paths:
        model, config, codes, (x, eps), kl = read_replica(path, device)
        pair = metric.rotation_pair([], codes, kl, path)
        metric.say(f"{path}: turning latents {pair[0]} and {pair[1]} by {len(thetas)} angles, "
                   f"scoring each")
        rows = [metric.rotation_probe(model, codes, pair, theta, x, eps, config["beta"],
                                      config.get("likelihood", "bernoulli"), Ls=(16,), **score)
                for theta in thetas]
        metric.say(f"{path}: latents {pair[0]} and {pair[1]} turned over 0-90°: score at L = 16 "
                   f"{min(r['score_L16'] for r in rows):.2%}-"
                   f"{max(r['score_L16'] for r in rows):.2%}, "
                   f"Eq. 4 {max(replicas.eq4_change(rows, 'loss_turned')):+.2%} at most "
                   f"(variances turned), {max(replicas.eq4_change(rows, 'loss')):+.2%} (kept)")
        sweeps.append((f"{Path(path).stem}, {rows[0]['angle']:.0f} deg", rows))
    return sweeps


def replica_figure(points: list[tuple[str, float, float]], path: Path) -> None:
    """The score of each replica against the angle of its position latents: points (label, angle in
    degrees, score in %), one colour per label (β)."""
    canvas, draw, xy = score_axes(45, range(0, 46, 5),
                                  "angle of the position latents from (posX, posY), degrees",
                                  "disentanglement score at L = 16 (Sec. 3), one point per replica")
    labels = list(dict.fromkeys(label for label, _, _ in points))
    for i, label in enumerate(labels):
        colour = CURVE_COLOURS[i % len(CURVE_COLOURS)]
        for _, angle, score in (p for p in points if p[0] == label):
            px, py = xy(angle, score)
            draw.ellipse((px - 4, py - 4, px + 4, py + 4), fill=colour)
        legend(draw, i, len(labels), label, colour)
    canvas.save(path)


def score_axes(x_max: float, ticks, x_name: str, title: str,
               y_ticks: tuple[float, ...] = (25, 50, 75, 100), unit: str = " %",
               tick_label=lambda m: f"{m:g}"):
    """A blank plot with a y axis over y_ticks (default: the score, from chance at 25 % to 100 %)
    in `unit` and an x axis from 0 to x_max with ticks, labelled tick_label(tick): the canvas, its
    drawing context, and xy(x, y) -> pixel."""
    left, top = 56, 2 * LINE
    canvas = Image.new("RGB", (left + CURVE[0] + 2 * SPACE, top + CURVE[1] + 3 * LINE), "white")
    draw, f = ImageDraw.Draw(canvas), font()
    y_min, y_max = y_ticks[0], y_ticks[-1]

    def xy(x: float, y: float) -> tuple[float, float]:
        return left + x / x_max * CURVE[0], top + (y_max - y) / (y_max - y_min) * CURVE[1]

    for value in y_ticks:
        draw.line([xy(0, value), xy(x_max, value)], fill=(225, 225, 225))
        x, y = xy(0, value)
        draw.line([(x - TICK, y), (x, y)], fill="grey")
        draw.text((4, y - LINE / 2), f"{value:g}{unit}", fill="black", font=f)
    for m in ticks:
        x, y = xy(m, y_min)
        draw.line([(x, y), (x, y + TICK)], fill="grey")
        draw.text((x - draw.textlength(tick_label(m), font=f) / 2, y + TICK), tick_label(m),
                  fill="black", font=f)
    draw.rectangle((left, top, left + CURVE[0], top + CURVE[1]), outline="grey")
    draw.text((left + (CURVE[0] - draw.textlength(x_name, font=f)) / 2, top + CURVE[1] + LINE + 4),
              x_name, fill="black", font=f)
    draw.text((left, 2), title, fill="black", font=f)
    return canvas, draw, xy


def legend(draw: ImageDraw.ImageDraw, i: int, n: int, label: str,
           colour: tuple[int, int, int], left: bool = False, x: float | None = None) -> None:
    """Line i of n of a plot's legend, at its lower right (or left, or from x on)."""
    if x is None:
        x = 56 + 12 if left else LEGEND_X
    draw.text((x, legend_y(i, n)), label, fill=colour, font=font())


def legend_y(i: int, n: int) -> float:
    """The top of line i of an n-line legend whose last line sits at a plot's lower edge."""
    return 2 * LINE + CURVE[1] - (n - i) * LINE - 4


def rotation_figure(sweeps: list[tuple[str, list[dict]]], path: Path) -> None:
    """The objective's blind spot: the score at L = 16 (left) and Eq. 4's change from θ = 0 (right)
    against the angle θ the position pair is turned by, one colour per replica; on the right thick
    lines turn the posterior variances along, thin lines keep them."""
    thetas = replicas.ROTATION_ANGLES
    left, ld, lxy = score_axes(thetas[-1], thetas, "position latents turned by (degrees)",
                               "disentanglement score at L = 16 (Sec. 3)")
    change = [{key: [100 * c for c in replicas.eq4_change(rows, key)]
               for key in ("loss_turned", "loss")} for _, rows in sweeps]
    values = [v for lines in change for line in lines.values() for v in line]  # % of Eq. 4 at θ = 0
    low, high = min(0, math.floor(min(values))), max(1, math.ceil(max(values)))
    step = math.ceil((high - low) / 8)  # ≤ 8 ticks
    right, rd, rxy = score_axes(thetas[-1], thetas, "position latents turned by (degrees)",
                                "Eq. 4 against 0 deg: variances turned (thick), kept (thin)",
                                y_ticks=tuple(range(low, high + step, step)))
    for i, ((label, rows), lines, colour) in enumerate(zip(sweeps, change,
                                                           CURVE_COLOURS * len(sweeps))):
        turned_by = [r["theta"] for r in rows]
        ld.line([lxy(t, 100 * r["score_L16"]) for t, r in zip(turned_by, rows)], fill=colour,
                width=2)
        for key, width in (("loss_turned", 3), ("loss", 1)):
            rd.line([rxy(t, c) for t, c in zip(turned_by, lines[key])], fill=colour, width=width)
        legend(ld, i, len(sweeps), label, colour)
    side_by_side([left, right]).save(path)


# ---------------------------------------------------------------- Fig. 6 (right) and Fig. 8 (A.8)

TEXT_COLUMNS = ("checkpoint", "subsample", "scored_on")  # metric.py --csv's columns not numbers


def read_table(paths: list[str]) -> list[dict]:
    """The rows of metric.py --csv tables, their numbers as floats."""
    rows = []
    for path in paths:
        try:
            with open(path, newline="") as f:
                rows += [{k: v if k in TEXT_COLUMNS or v == "" else float(v)
                          for k, v in row.items()} for row in csv.DictReader(f)]
        except (OSError, ValueError, csv.Error) as e:
            raise UsageError(f"cannot read the table {path} ({e.__class__.__name__})") from None
    if not rows or not {"score_L16", "recon", "latents"} <= rows[0].keys():
        raise UsageError(f"{paths[0]} is not a table of python metric.py --L 16 --csv")
    return rows


def dot(draw: ImageDraw.ImageDraw, xy: tuple[float, float], colour, r: float = 3) -> None:
    draw.ellipse((xy[0] - r, xy[1] - r, xy[0] + r, xy[1] + r), fill=colour)


def sweep_figure(rows: list[dict], path: Path) -> None:
    """Fig. 6 (right): the score at L = 16 (left) and the reconstruction −log p(x|z) (right)
    against the normalised β on a log scale, one colour per latent size M: a dot per replica, a
    line through the means over seeds."""
    if any(r["beta_norm"] == "" for r in rows):
        raise UsageError("--sweep draws models trained with --beta-norm; a row has none")
    beta_norms = sorted({r["beta_norm"] for r in rows})
    first = math.floor(math.log10(beta_norms[0]))
    x_max = max(1, math.ceil(math.log10(beta_norms[-1])) - first)
    x_of = lambda b: math.log10(b) - first  # noqa: E731  decades above the first tick
    axes = dict(x_max=x_max, ticks=range(x_max + 1), x_name="normalised beta = beta M / N (A.6)",
                tick_label=lambda m: f"{10.0 ** (m + first):g}")
    left, ld, lxy = score_axes(**axes, title="disentanglement score at L = 16, by latent size M")
    top = 50 * math.ceil(max(r["recon"] for r in rows) / 50)
    right, rd, rxy = score_axes(**axes, title="reconstruction -log p(x|z) on fixed images, nats",
                                y_ticks=tuple(top * k / 4 for k in range(5)), unit="")
    sizes = sorted({int(r["latents"]) for r in rows})
    for i, M in enumerate(sizes):
        colour = CURVE_COLOURS[i % len(CURVE_COLOURS)]
        for draw, xy, key, scale in ((ld, lxy, "score_L16", 100), (rd, rxy, "recon", 1)):
            means = []
            for b in beta_norms:
                values = [scale * r[key] for r in rows if r["latents"] == M and r["beta_norm"] == b]
                for v in values:
                    dot(draw, xy(x_of(b), v), colour)
                if values:
                    means.append(xy(x_of(b), sum(values) / len(values)))
            if len(means) > 1:
                draw.line(means, fill=colour, width=2)
        legend(ld, i, len(sizes), f"M = {M}", colour)
    side_by_side([left, right]).save(path)


def continuity_figure(rows: list[dict], path: Path) -> None:
    """Fig. 8 (A.8): the score at L = 16 of models trained on parts of the world against the mean
    normalised Hamming distance of neighbouring images in their part (shapes.continuity), each
    labelled by its checkpoint's name (left); the score of the whole world's models against the
    share of pixels flipped at test time, metric.py --flip-noise (right)."""
    points = []
    for r in (r for r in rows if not r["flip_noise"]):  # a few seconds each: said as it goes
        distance = shapes.continuity(shapes.parse_subset(r["subsample"].split()))["mean"]
        metric.say(f"{r['checkpoint']}: continuity of its part of the world {distance:.3f}")
        points.append((Path(r["checkpoint"]).stem, 100 * r["score_L16"], distance))
    x_max = math.ceil(10 * max(d for *_, d in points)) / 10
    left, ld, lxy = score_axes(x_max, [k / 10 for k in range(round(10 * x_max) + 1)],
                               "normalised Hamming distance of neighbouring images",
                               "score at L = 16 of models trained on part of the world")
    for name, score, distance in points:
        x, y = lxy(distance, score)
        dot(ld, (x, y), CURVE_COLOURS[0], 4)
        ld.text((x + 6, y - LINE / 2), name, fill="black", font=font())
    whole = [r for r in rows if not r["subsample"]]
    noise = sorted({r["flip_noise"] for r in whole})
    right, rd, rxy = score_axes(max(10, 100 * noise[-1]) if noise else 10, range(0, 11, 2),
                                "pixels flipped at test time (%)",
                                "score at L = 16 of the whole world's models under noise")
    means = []
    for p in noise:
        scores = [100 * r["score_L16"] for r in whole if r["flip_noise"] == p]
        for s in scores:
            dot(rd, rxy(100 * p, s), CURVE_COLOURS[1])
        means.append(rxy(100 * p, sum(scores) / len(scores)))
    if len(means) > 1:
        rd.line(means, fill=CURVE_COLOURS[1], width=2)
    side_by_side([left, right]).save(path)


def alignment_figure(specs: list[str], path: Path) -> None:
    """How often a recipe aligns position: for each metric.py --best-angle table (`label=path` or
    path, one recipe's replicas), a histogram of the replicas' position angles in 5° bins (left),
    and each replica's score at L = 16 against its angle, with a line up to its score with the
    pair turned to its best θ where the table has it (right). Replicas without a position pair are
    left out, said in one line."""
    recipes = []
    for spec in specs:
        label, table = split_checkpoint(spec)
        rows = read_table([table])
        if "angle" not in rows[0]:
            raise UsageError(f"{table} has no angle column: score with metric.py --best-angle --csv")
        kept = [r for r in rows if r["angle"] != ""]
        if len(kept) < len(rows):
            metric.say(f"{table}: {len(rows) - len(kept)} replica(s) without a position pair "
                       f"left out")
        recipes.append((label or Path(table).stem, kept))
    counts = [[sum(5 * k <= min(r["angle"], 44.99) < 5 * k + 5 for r in rows) for k in range(9)]
              for _, rows in recipes]
    top = max(2, max(max(c) for c in counts))
    step = math.ceil(top / 5)  # ≤ 6 ticks
    left, ld, lxy = score_axes(45, range(0, 46, 5), "angle of the position latents (degrees)",
                               "replicas in each 5-degree bin of the position angle",
                               y_ticks=tuple(range(0, top + step, step)), unit="")
    right, rd, rxy = score_axes(45, range(0, 46, 5), "angle of the position latents (degrees)",
                                "score at L = 16: as trained (dot), pair turned to its best (line)")
    width = 5 / (len(recipes) + 1)  # the bars of one bin side by side
    for i, ((label, rows), bins) in enumerate(zip(recipes, counts)):
        colour = CURVE_COLOURS[i % len(CURVE_COLOURS)]
        for k, n in enumerate(bins):
            if n:
                x0, y0 = lxy(5 * k + (i + 0.5) * width, n)
                x1, y1 = lxy(5 * k + (i + 1.5) * width, 0)
                ld.rectangle((x0, y0, x1, y1), fill=colour)
        for r in rows:
            dot(rd, rxy(r["angle"], 100 * r["score_L16"]), colour)
            if isinstance(r.get("best_score_L16"), float):
                rd.line([rxy(r["angle"], 100 * r["score_L16"]),
                         rxy(r["angle"], 100 * r["best_score_L16"])], fill=colour, width=2)
        legend(rd, i, len(recipes), label, colour, left=True)  # aligned replicas never score low
    side_by_side([left, right]).save(path)


def seed_images(config: dict, source: shapes.Shapes | shapes.DSpritesNpz | shapes.ImageFolder,
                n: int, generator: torch.Generator) -> tuple[torch.Tensor, list[str]]:
    """The images whose codes the traversals start from: (S, C, 64, 64) and a name for each."""
    if config["dataset"] != "folder":  # one of each shape, mid scale, upright, centred
        c = torch.tensor([[s, 3, 0, 16, 16] for s in range(len(shapes.SHAPE_NAMES))])
        return source.render(c), list(shapes.SHAPE_NAMES)
    rows = torch.randperm(len(source.images), generator=generator)[:n]
    return source.images_at(rows), [f"img {r}" for r in rows.tolist()]


def explorer_seeds(config: dict, source: shapes.Shapes | shapes.DSpritesNpz | shapes.ImageFolder,
                   generator: torch.Generator) -> tuple[torch.Tensor, list[str]]:
    """The explorer's seed images (S, C, 64, 64) and names: each shape at EXPLORER_PLACES, or
    as many of an image folder's own images."""
    if config["dataset"] == "folder":
        return seed_images(config, source, len(shapes.SHAPE_NAMES) * len(EXPLORER_PLACES),
                           generator)
    c = torch.tensor([[s, scale, 0, x, y] for s in range(len(shapes.SHAPE_NAMES))
                      for _, scale, x, y in EXPLORER_PLACES])
    return source.render(c), [f"{shape}, {place}" for shape in shapes.SHAPE_NAMES
                              for place, *_ in EXPLORER_PLACES]


def slider_labels(kl: torch.Tensor, follows: list[str] | None = None) -> list[str]:
    """The explorer's text beside each latent's slider, in index order: the one place it is made;
    with `follows` (latent_follows), the factor each latent follows too."""
    return [f"z{i}  {follows[i] + '  ' if follows else ''}KL {k:.2f} nats"
            for i, k in enumerate(kl.tolist())]


def latent_follows(model: BetaVAE, kl: torch.Tensor, device: torch.device,
                   n: int = 65536) -> list[str]:
    """On 2D shapes, the factor each latent follows and how purely (replicas.latent_factors, as
    metric.py --latents, from n random images rather than all), "inactive" below loss.ACTIVE_KL."""
    index = torch.randint(shapes.N_IMAGES, (n,), generator=torch.Generator().manual_seed(0))
    codes = metric.rendered_codes(model, device)(index)  # (n, M) mu
    mi = metric.mutual_information(codes, shapes.index_to_classes(index))
    return [f"{shapes.FACTOR_NAMES[f]} {purity:.2f}" if k > objective.ACTIVE_KL else "inactive"
            for (f, purity), k in zip(replicas.latent_factors(mi), kl.tolist())]


def quantise_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """weight (R, C) -> int8 q (R, C) and float32 scale (R,), weight ≈ q · scale[:, None].

    Each row's largest |w| maps to ±127, so no weight moves by more than scale / 2. fp16 would
    not fit: the fc decoder's 7.8 M weights are 15.6 MB as fp16 before base64 adds a third.
    """
    weight = weight.float()
    # a zero row keeps q = 0
    scale = weight.abs().amax(1).clamp_min(torch.finfo(torch.float32).tiny) / 127
    return (weight / scale[:, None]).round().clamp(-127, 127).to(torch.int8), scale


def explorer_data(model: BetaVAE, kl: torch.Tensor, labels: list[str], seeds: torch.Tensor,
                  names: list[str], title: str) -> dict:
    """What explorer.html holds, as JSON: the decoder's Linear layers (int8 rows with float32 scales
    and biases, base64), the latents' KL, labels and order (most KL first), and each seed's mu and
    image."""
    def b64(t: torch.Tensor) -> str:  # the bytes as a JavaScript typed array reads them
        return base64.b64encode(t.detach().cpu().contiguous().numpy().tobytes()).decode()

    def png(image: torch.Tensor) -> str:
        buffer = io.BytesIO()
        Image.fromarray(to_uint8(image)).save(buffer, "PNG")
        return f"data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}"

    layers = []
    for linear in (m for m in model.decoder if isinstance(m, torch.nn.Linear)):
        q, scale = quantise_rows(linear.weight.detach().cpu())
        layers.append({"rows": q.shape[0], "cols": q.shape[1], "q": b64(q), "scale": b64(scale),
                       "bias": b64(linear.bias.float())})
    mu, _ = encode(model, seeds)
    return {"title": title, "latents": model.latents, "range": TRAVERSAL_RANGE,
            "active_kl": objective.ACTIVE_KL, "kl": kl.tolist(),
            "order": kl.argsort(descending=True).tolist(), "labels": labels, "layers": layers,
            "seeds": [{"name": n, "mu": m.tolist(), "image": png(x)}
                      for n, m, x in zip(names, mu, seeds)]}


def write_explorer(path: Path, model: BetaVAE, kl: torch.Tensor, labels: list[str],
                   seeds: torch.Tensor, names: list[str], title: str) -> None:
    """explorer.html: explorer_template.html with explorer_data's JSON in its place; fc decoders
    only."""
    # "<" escaped, so that no text in the data (a seed's name) can close the page's <script> early.
    data = json.dumps(explorer_data(model, kl, labels, seeds, names, title)).replace("<", "\\u003c")
    path.write_text(EXPLORER_TEMPLATE.read_text(encoding="utf-8")
                    .replace("__EXPLORER_DATA__", data), encoding="utf-8")


def figure_folder(args: argparse.Namespace) -> Path:
    """--out, or <checkpoint stem>_figures beside the checkpoint; made if it is not there."""
    out = (Path(args.out) if args.out
           else Path(args.checkpoint).with_name(f"{Path(args.checkpoint).stem}_figures"))
    # --out of --curves is a file, here not
    if out.suffix.lower() in (".png", ".gif", ".html") and not out.is_dir():
        raise UsageError(f"--out names the folder for the figures ({', '.join(FIGURES)}); "
                         f"{out} looks like a file: "
                         f"give a folder, e.g. --out {out.with_suffix('')}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot write figures to {out}: {e.strerror}") from None
    return out


def chosen_figures(only: str | None, config: dict) -> dict[str, bool]:
    """Whether to draw each of FIGURES: --only's, or every one; one the model cannot have is
    skipped with a one-line notice."""
    draw = {name: only in (None, name) for name in FIGURES}
    if draw["maps"] and config["dataset"] == "folder":
        metric.say("response maps: skipped, they need the 2D-shapes factors and this model saw an "
                   "image folder")
        draw["maps"] = False
    if draw["explorer"] and (config["arch"], config.get("channels", 1)) != ("fc", 1):
        metric.say(f"explorer.html: skipped, it runs the fc decoder of grey images and this model "
                   f"is {config['arch']} with {config.get('channels', 1)} channel(s)")
        draw["explorer"] = False
    return draw


def samples_and_reconstructions(model: torch.nn.Module, source, generator: torch.Generator,
                                draw: dict[str, bool], out: Path, wrote) -> None:
    """Samples from the prior (Fig. 9) and reconstructions, where `draw` asks for them."""
    if draw["samples"]:
        z = torch.randn(64, model.latents, generator=generator)  # z ~ N(0, I), Fig. 9
        samples = decode(model, z)  # (64, C, 64, 64)
        labelled_grid(samples.view(8, 8, *samples.shape[1:]),
                      title="samples: z ~ N(0, I)").save(out / "samples.png")
        wrote("samples.png")
    if draw["recon"]:
        x, _ = source.sample(8, generator)  # (8, C, 64, 64)
        recon = decode(model, encode(model, x)[0])  # the mean of q(z|x), decoded: no sampling noise
        labelled_grid(torch.stack([x.cpu(), recon]),
                      ["input", "reconstruction"]).save(out / "reconstructions.png")
        wrote("reconstructions.png")


def figures(args: argparse.Namespace) -> None:
    """Everything the CLI does: load the checkpoint, draw the figures asked for into the folder."""
    if not 2 <= args.steps <= MAX_STEPS:
        raise UsageError(f"--steps must be from 2 (the ends of the sweep) to {MAX_STEPS} "
                         "(a figure's width)")
    device = pick_device(args.device)
    model, config = load_checkpoint(args.checkpoint, device)
    out = figure_folder(args)
    generator = torch.Generator().manual_seed(args.seed)
    source = shapes.make_source(config, device)
    draw = chosen_figures(args.only, config)
    written = []
    say = metric.say
    say(f"traverse.py: {', '.join(name for name, on in draw.items() if on) or 'no figures'} "
        f"of {args.checkpoint} on {device}, {torch.get_num_threads()} CPU threads, into {out}/"
        + ("; the maps read the codes cached beside the checkpoint, or encode all 737,280 "
           "images once" if draw["maps"] and not args.no_cache else ""))
    kl = (latents_by_kl(model, source, generator)
          if draw["traversal"] or draw["maps"] or draw["explorer"] else None)
    t = time.perf_counter()

    def wrote(*names: str) -> None:  # and the seconds since the last figure
        nonlocal t
        written.extend(names)
        say(f"wrote {', '.join(names)} ({time.perf_counter() - t:.1f} s)")
        t = time.perf_counter()

    if draw["traversal"]:
        seeds, names = seed_images(config, source, args.seeds, generator)
        mu, _ = encode(model, seeds)
        draw_traversals(traversal(model, mu, args.steps), names, kl, out / "traversal.png",
                        out / "traversal.gif")
        wrote("traversal.png", "traversal.gif")
    if draw["maps"]:
        codes = metric.checkpoint_codes(args.checkpoint, model, device, not args.no_cache,
                                        progress=say)  # (737280, M) mu
        response_maps(codes, kl, out / "response_maps.png")
        wrote("response_maps.png")
    samples_and_reconstructions(model, source, generator, draw, out, wrote)
    if draw["explorer"]:
        seeds, names = explorer_seeds(config, source, generator)
        follows = (latent_follows(model, kl, device) if config["dataset"] in ("shapes", "dsprites")
                   else None)
        write_explorer(out / "explorer.html", model, kl, slider_labels(kl, follows), seeds, names,
                       f"{Path(args.checkpoint).name}: β = {config['beta']:g}, "
                       f"trained on {config['dataset']}")
        wrote("explorer.html")
    say(f"wrote {', '.join(written) or 'nothing'} in {out}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__)
    p.add_argument("checkpoint", nargs="?", help="a train.py checkpoint")
    p.add_argument("--curves", nargs="+", metavar="CSV",
                   help="instead: learning curves of train.py --eval-every logs "
                        "(path or label=path) into --out PNG")
    p.add_argument("--x", choices=CURVE_AXES, default="minutes",
                   help="--curves against training minutes (default) or images seen")
    p.add_argument("--replicas", nargs="+", metavar="CKPT",
                   help="instead: each replica's score (L = 16) against its position latents' "
                        "angle, into --out PNG")
    p.add_argument("--rotation", nargs="+", metavar="CKPT",
                   help="instead: each replica's score (L = 16) and Eq. 4 as its position latents "
                        "turn by 0-90°, into --out PNG")
    p.add_argument("--sweep", nargs="+", metavar="CSV",
                   help="instead: Fig. 6 (right) from metric.py --csv tables of a --beta-norm × "
                        "--latents grid, into --out PNG")
    p.add_argument("--continuity", nargs="+", metavar="CSV",
                   help="instead: Fig. 8 (A.8) from metric.py --csv tables of --subsample models "
                        "and of --flip-noise scores, into --out PNG")
    p.add_argument("--alignment", nargs="+", metavar="CSV",
                   help="the alignment figure: metric.py --best-angle --csv tables, one recipe "
                        "each (label=path or path)")
    p.add_argument("--out",
                   help="folder for the figures (default: <checkpoint stem>_figures beside it); "
                        "with --curves, the PNG")
    p.add_argument("--only", choices=FIGURES, help="draw this figure alone")
    p.add_argument("--html", dest="only", action="store_const", const="explorer",
                   help="write the interactive explorer.html alone (the same as --only explorer)")
    p.add_argument("--steps", type=int, default=10,
                   help="positions of each traversal over [-3, 3] (default 10)")
    p.add_argument("--seeds", type=positive_int, default=3,
                   help="image-folder models: images to traverse from (default 3)")
    p.add_argument("--seed", type=seed_arg, default=0,
                   help="seed of the sampled images and z (default 0)")
    p.add_argument("--no-cache", action="store_true",
                   help="response maps: encode afresh; neither read nor write <stem>.codes.pt")
    p.add_argument("--device", help="cuda, mps or cpu (default: cuda, then mps, then cpu)")
    p.add_argument("--threads", type=positive_int,
                   help="CPU threads for torch (default: torch's choice)")
    return p


def main() -> None:
    p = build_parser()
    args = p.parse_args()
    if sum(x is not None for x in (args.checkpoint, args.curves, args.replicas, args.rotation,
                                   args.sweep, args.continuity, args.alignment)) != 1:
        p.error("give a checkpoint, or --curves CSV ..., --replicas CKPT ..., --rotation CKPT ..., "
                "--sweep CSV ..., --continuity CSV ... or --alignment CSV ...")
    with cli_errors("traverse.py"):
        set_threads(args.threads)
        if args.curves:
            out = Path(args.out or "curves.png")
            learning_curves(args.curves, out, args.x)
        elif args.replicas:
            out = Path(args.out or "replicas.png")
            replica_figure(replica_points(args.replicas, pick_device(args.device)), out)
        elif args.rotation:
            out = Path(args.out or "rotation.png")
            rotation_figure(rotation_sweeps(args.rotation, pick_device(args.device)), out)
        elif args.sweep:
            out = Path(args.out or "sweep.png")
            sweep_figure(read_table(args.sweep), out)
        elif args.continuity:
            out = Path(args.out or "continuity.png")
            continuity_figure(read_table(args.continuity), out)
        elif args.alignment:
            out = Path(args.out or "alignment.png")
            alignment_figure(args.alignment, out)
        else:
            figures(args)
            return
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
