"""Baselines of the β-VAE disentanglement metric (Higgins et al., ICLR 2017, Sec. 4.2, Fig. 6 left, A.3).

Fig. 6 (left) scores, with the metric of Sec. 3, representations that need no β-VAE beside the
trained models: the ground-truth factors, the raw pixels, PCA (the top 10 components of the
whitened pixels, A.3), ICA (FastICA on those 10 whitened components, one model per pair of
shapes as in A.3) and the Table 1 VAE at its random initialisation. A row of the table is a
label and the codes of one or more replicas (metric.Codes: a table with a row per image in
DeepMind's order, or a function of the image index); every row is scored the same way, and
the table puts our mean ± std beside the paper's figure.

    python baselines.py --table                             # every row (a quarter of an hour on 2 cores)
    python baselines.py --table --rows pca,ica --markdown   # some rows, as markdown for the README
    python baselines.py --table b4.pt b1.pt "β-VAE (β = 4)=b4_seed2.pt"   # and trained models
"""

import argparse
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch

import metric
import shapes
from model import BetaVAE, CheckpointError, load_checkpoint, pick_device

# Fig. 6 (left): metric accuracy on 2D shapes in %, as (mean, std); the paper gives no std for ground truth.
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
PAPER_PCA_EXPLAINED = 0.608  # variance explained by the top 10 components (A.3)
ROWS = {"gt": "ground truth", "pixels": "raw pixels", "pca": "PCA", "ica": "ICA", "untrained": "VAE untrained"}

PCA_COMPONENTS = 10  # A.3
# The covariance of every image, though that is minutes of 4096² matmuls on a CPU: the components come
# in pairs of near-equal variance, each pair's rotation follows the sample, and the metric reads single
# components: the PCA of a random 100,000 images scored from 81 to 88 % by the sample, all images 88 %.
DEFAULT_PCA_IMAGES = shapes.N_IMAGES
SHAPE_PAIRS = ((0, 1), (0, 2), (1, 2))  # {square, ellipse}, {square, heart}, {ellipse, heart} (A.3)
ICA_POINTS = 100_000  # whitened points FastICA is fitted on
ICA_MAX_ITER = 200  # and the tolerance: scikit-learn's defaults
ICA_TOL = 1e-4


# ---------------------------------------------------------------- PCA (A.3)

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


def pixel_chunks(n_images: int, device: torch.device, batch_size: int = 8192, seed: int = 0) -> Iterator[torch.Tensor]:
    """Flattened images (B, 4096): the whole set, or n_images of it drawn without replacement.

    The chunks share one buffer: use each before asking for the next.
    """
    if n_images >= shapes.N_IMAGES:
        index = torch.arange(shapes.N_IMAGES)
    else:
        index = torch.randperm(shapes.N_IMAGES, generator=torch.Generator().manual_seed(seed))[:n_images]
    buffer = torch.empty(batch_size, 1, 64, 64, device=device)  # reused: no page faults per chunk
    for start in range(0, len(index), batch_size):
        i = index[start:start + batch_size].to(device)
        yield shapes.render(shapes.index_to_classes(i), out=buffer[:len(i)]).flatten(1)  # (B, 4096)


@dataclass
class PCA:
    """The top k principal components; calling it gives the whitened codes (B, k) of images or rows."""

    mean: torch.Tensor  # (D,)
    components: torch.Tensor  # (k, D) unit eigenvectors of the covariance, largest eigenvalue first
    variances: torch.Tensor  # (k,) their eigenvalues
    explained: float  # fraction of the total variance in the k components

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)  # (B, D)
        w = (self.components / self.variances.sqrt()[:, None]).to(x)  # (k, D): unit variance per code
        # Centring after the projection: a (k,) shift instead of a (B, D) copy.
        return x @ w.T - self.mean.to(x) @ w.T


def fit_pca(mean: torch.Tensor, cov: torch.Tensor, k: int = PCA_COMPONENTS) -> PCA:
    """The top k eigenvectors of a covariance (D, D), D ≥ 3k.

    LOBPCG finds only those k: ~3 s for D = 4096 where a full eigh takes ~35 s on 2 cores.
    """
    start = torch.randn(len(cov), k, dtype=cov.dtype, generator=torch.Generator().manual_seed(0))
    variances, vectors = torch.lobpcg(cov, X=start, largest=True)  # (k,), (D, k)
    order = variances.argsort(descending=True)
    return PCA(mean, vectors[:, order].T.contiguous(), variances[order], (variances.sum() / cov.trace()).item())


# ---------------------------------------------------------------- ICA (A.3)

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


def fast_ica(x: torch.Tensor, max_iter: int = ICA_MAX_ITER, tol: float = ICA_TOL, seed: int = 0) -> ICA:
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
    W = symmetric_decorrelation(torch.randn(d, d, dtype=x.dtype, generator=torch.Generator().manual_seed(seed)))
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


def ica_codes(pca_codes: torch.Tensor, pair: tuple[int, int] | None, seed: int = 0) -> tuple[metric.Codes, ICA]:
    """FastICA on ICA_POINTS whitened PCA codes (737280, 10) of one pair of shapes (or all images).

    For a pair, the codes are a function that reads any index as the image of its factors
    with one of the pair's shapes, so the metric sees only that pair's images.
    """
    g = torch.Generator().manual_seed(seed)
    index = torch.randint(shapes.N_IMAGES, (ICA_POINTS,), generator=g)
    if pair is not None:
        index = in_pair(index, pair, g)
    ica = fast_ica(pca_codes[index], seed=seed)
    sources = ica(pca_codes.double()).float()  # (737280, 10)
    if pair is None:
        return sources, ica
    return (lambda index: sources[in_pair(index, pair, g)]), ica


# ---------------------------------------------------------------- the other representations

def ground_truth_codes() -> torch.Tensor:
    """The factor classes themselves (737280, 5): the ideal representation."""
    return shapes.index_to_classes(torch.arange(shapes.N_IMAGES)).float()


def pixel_codes(index: torch.Tensor) -> torch.Tensor:
    """Raw pixels (B, 4096), rendered when asked: the whole table would be 12 GB of floats."""
    return shapes.render(shapes.index_to_classes(index)).flatten(1)


def untrained_vae(seed: int) -> BetaVAE:
    """The Table 1 fc model as train.py initialises it with --seed `seed`, before any step."""
    with torch.random.fork_rng(devices=[]):  # leave the caller's random state alone
        torch.manual_seed(seed)
        return BetaVAE("fc").eval()


def checkpoint_label(config: dict) -> str:
    beta = config.get("beta", 1.0)
    return "VAE (β = 1)" if beta == 1 else f"β-VAE (β = {beta:g})"


# ---------------------------------------------------------------- the table

@dataclass
class Row:
    """One line of the table: a label (a key of PAPER where the paper has the row) and a function
    giving the codes of each replica, called only when the row is scored."""

    label: str
    codes: Callable[[], Iterable[metric.Codes]]


def score_row(row: Row, seeds: int = 3, first_seed: int = 0, **settings) -> list[float]:
    """The metric for every replica and classifier seed: len = replicas × seeds."""
    return [metric.disentanglement_score(codes, seed=first_seed + s, **settings)
            for codes in row.codes() for s in range(seeds)]


def mean_std(scores: list[float]) -> tuple[float, float]:
    """Mean and (population) std of scores, in %."""
    mean = sum(scores) / len(scores)
    return 100 * mean, 100 * math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores))


def format_table(results: list[tuple[str, list[float]]], markdown: bool = False) -> str:
    """Our mean ± std beside the paper's figure and the difference, in percentage points."""
    lines = [("representation", "ours (%)", "paper (%)", "ours − paper")]
    for label, scores in results:
        mean, std = mean_std(scores)
        paper = PAPER.get(label)
        if paper is None:
            lines.append((label, f"{mean:.2f} ± {std:.2f}", "—", "—"))
        else:
            paper_text = f"{paper[0]:g}" + ("" if paper[1] is None else f" ± {paper[1]:g}")
            lines.append((label, f"{mean:.2f} ± {std:.2f}", paper_text, f"{mean - paper[0]:+.2f}"))
    if markdown:
        lines.insert(1, ("---",) * 4)
        return "\n".join("| " + " | ".join(line) + " |" for line in lines)
    widths = [max(len(line[c]) for line in lines) for c in range(4)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)


def split_checkpoint(spec: str) -> tuple[str | None, str]:
    """`path` or `label=path`; labels hold '=' themselves ("β-VAE (β = 4)=a.pt"), so the last one splits."""
    if os.path.exists(spec) or "=" not in spec:
        return None, spec
    label, path = spec.rsplit("=", 1)
    return label, path


def checkpoint_rows(specs: list[str], device: torch.device, batch_size: int) -> list[Row]:
    """One row per label; checkpoints sharing a label are replicas. Loads every one now, to fail early."""
    groups: dict[str, list[torch.nn.Module]] = {}
    for spec in specs:
        label, path = split_checkpoint(spec)
        net = metric.load_shapes_model(path, device)
        groups.setdefault(label or checkpoint_label(load_checkpoint(path)[1]), []).append(net)
    return [Row(label, lambda nets=nets: (metric.encode_all(metric.model_encoder(net), device, batch_size)
                                          for net in nets))
            for label, nets in groups.items()]


def baseline_rows(names: list[str], args: argparse.Namespace, device: torch.device,
                  log: Callable[[str], None]) -> tuple[list[Row], dict[str, str]]:
    """The rows named (keys of ROWS, in the paper's order) and notes for under the table, by label.

    Fits the PCA now when PCA or ICA is asked for: both read its codes.
    """
    rows, notes = [], {}
    if "gt" in names:
        rows.append(Row(ROWS["gt"], lambda: [ground_truth_codes()]))
    if "pixels" in names:
        rows.append(Row(ROWS["pixels"], lambda: [pixel_codes]))
    if "pca" in names or "ica" in names:
        t = time.perf_counter()
        n = min(args.pca_images, shapes.N_IMAGES)
        pca = fit_pca(*covariance(pixel_chunks(n, device, args.batch_size)))
        pca_codes = metric.encode_all(pca, device, args.batch_size)  # (737280, 10)
        notes["PCA"] = (f"PCA: covariance of {n:,} images; the top {PCA_COMPONENTS} components explain "
                        f"{pca.explained:.1%} of the pixel variance (paper {PAPER_PCA_EXPLAINED:.1%})")
        log(f"{notes['PCA']} ({time.perf_counter() - t:.0f} s)")
        if "pca" in names:
            rows.append(Row(ROWS["pca"], lambda: [pca_codes]))
        if "ica" in names:
            pairs = SHAPE_PAIRS if args.ica == "pairs" else (None,)
            notes["ICA"] = (f"ICA: FastICA (logcosh, symmetric) on {ICA_POINTS:,} whitened PCA codes, "
                            + ("one model per pair of shapes, each scored on its pair's images (as A.3)"
                               if args.ica == "pairs" else "one model on all shapes (the paper fits one per pair)"))

            def ica_replicas() -> Iterator[metric.Codes]:
                converged = 0
                for pair in pairs:
                    codes, ica = ica_codes(pca_codes, pair)
                    converged += ica.converged
                    which = "all shapes" if pair is None else "{" + ", ".join(shapes.SHAPE_NAMES[s] for s in pair) + "}"
                    state = "converged" if ica.converged else "NOT converged"
                    log(f"  ICA on {which}: {state} after {ica.iterations} iterations")
                    yield codes
                notes["ICA"] += (f"; {converged} of {len(pairs)} met the tolerance {ICA_TOL:g} "
                                 f"in {ICA_MAX_ITER} iterations")

            rows.append(Row(ROWS["ica"], ica_replicas))
    if "untrained" in names:
        rows.append(Row(ROWS["untrained"], lambda: (
            metric.encode_all(metric.model_encoder(untrained_vae(seed).to(device)), device, args.batch_size)
            for seed in range(args.untrained_inits))))
        inits = "seed 0" if args.untrained_inits == 1 else f"seeds 0–{args.untrained_inits - 1}, one replica each"
        notes["VAE untrained"] = f"VAE untrained: the Table 1 fc model as initialised with torch {inits}"
    return rows, notes


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("checkpoints", nargs="*",
                   help="trained 2D-shapes models to add, as path or label=path; the same label = replicas")
    p.add_argument("--table", action="store_true", help="score the rows and print the Fig. 6 (left) table")
    p.add_argument("--rows", default=",".join(ROWS),
                   help=f"baseline rows, comma-separated, from {', '.join(ROWS)} (default: all)")
    p.add_argument("--markdown", action="store_true", help="print the table as markdown")
    p.add_argument("--L", type=int, default=metric.DEFAULT_L,
                   help=f"pairs averaged per point (default {metric.DEFAULT_L})")
    p.add_argument("--n-train", type=int, default=metric.DEFAULT_N_TRAIN,
                   help=f"classifier training points (default {metric.DEFAULT_N_TRAIN})")
    p.add_argument("--n-test", type=int, default=metric.DEFAULT_N_TEST,
                   help=f"held-out points (default {metric.DEFAULT_N_TEST})")
    p.add_argument("--classifier", choices=("lbfgs", "adagrad"), default=metric.CLASSIFIER,
                   help=f"optimizer of the linear classifier (default {metric.CLASSIFIER}; adagrad is the paper's)")
    p.add_argument("--classifier-steps", type=int, default=metric.CLASSIFIER_STEPS,
                   help=f"L-BFGS iterations at most, or Adagrad steps (default {metric.CLASSIFIER_STEPS})")
    p.add_argument("--classifier-lr", type=float, default=metric.CLASSIFIER_LR,
                   help=f"Adagrad learning rate (default {metric.CLASSIFIER_LR}, as the paper)")
    p.add_argument("--seeds", type=int, default=3, help="classifier seeds per replica (default 3, as A.4)")
    p.add_argument("--seed", type=int, default=0, help="first classifier seed (default 0)")
    p.add_argument("--pca-images", type=int, default=DEFAULT_PCA_IMAGES,
                   help=f"images the PCA covariance is computed on, drawn at random (default all "
                        f"{shapes.N_IMAGES:,}; fewer is faster but moves the PCA and ICA scores)")
    p.add_argument("--ica", choices=("pairs", "all"), default="pairs",
                   help="one FastICA model per pair of shapes, averaged (default, as A.3), or one on all")
    p.add_argument("--untrained-inits", type=int, default=1,
                   help="random initialisations of the untrained VAE, one replica each (default 1)")
    p.add_argument("--device", help="device for rendering and encoding (default: cuda, then mps, then cpu)")
    p.add_argument("--batch-size", type=int, default=8192, help="images per rendering batch (default 8192)")
    return p


def main() -> None:
    p = build_parser()
    args = p.parse_args()
    if not args.table:
        p.error("nothing to do: give --table")
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731 (progress; the table is stdout)
    try:
        for flag in ("L", "n_train", "n_test", "classifier_steps", "seeds", "pca_images", "untrained_inits",
                     "batch_size"):
            if getattr(args, flag) <= 0:
                raise ValueError(f"--{flag.replace('_', '-')} must be positive")
        names = [name.strip() for name in args.rows.split(",") if name.strip()]
        unknown = [name for name in names if name not in ROWS]
        if unknown:
            raise ValueError(f"unknown row {unknown[0]!r} in --rows (choose from {', '.join(ROWS)})")
        device = pick_device(args.device)
        extra = checkpoint_rows(args.checkpoints, device, args.batch_size)  # fail before any work
        rows, notes = baseline_rows(names, args, device, log)
        settings = dict(L=args.L, n_train=args.n_train, n_test=args.n_test, steps=args.classifier_steps,
                        lr=args.classifier_lr, optimizer=args.classifier)
        results = []
        for row in rows + extra:
            t = time.perf_counter()
            scores = score_row(row, args.seeds, args.seed, **settings)
            mean, std = mean_std(scores)
            log(f"{row.label}: {mean:.2f} ± {std:.2f} % over {len(scores)} score(s): "
                f"{', '.join(f'{100 * s:.2f}' for s in scores)} ({time.perf_counter() - t:.0f} s)")
            results.append((row.label, scores))
        print(format_table(results, args.markdown))
        print()
        classifier = (f"full-batch L-BFGS to convergence (≤ {args.classifier_steps} iterations)"
                      if args.classifier == "lbfgs" else
                      f"full-batch Adagrad lr {args.classifier_lr} for {args.classifier_steps} steps")
        print(f"Metric: L = {args.L}, {args.n_train:,} train / {args.n_test:,} test points, factors "
              f"{', '.join(shapes.FACTOR_NAMES[f] for f in metric.PAPER_FACTORS)}; linear softmax, {classifier}; "
              f"{args.seeds} classifier seed(s) per replica, std over seeds and replicas.")
        for note in notes.values():
            print(f"{note}.")
    except (CheckpointError, ValueError, RuntimeError, OSError) as e:
        print(f"baselines.py: error: {str(e).splitlines()[0]}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
