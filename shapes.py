"""The 2D-shapes world of β-VAE (Higgins et al., ICLR 2017, Sec. 4.2 and A.1).

737,280 binary 64×64 sprites from 5 generative factors: shape (square, ellipse,
heart), scale (6), orientation (40) and position X and Y (32 each). This file is
the simulator Sim(v) of Sec. 2 and 3: `render` draws any factor vector directly,
so training and the disentanglement metric never need DeepMind's 3 GB array.
The geometry matches facts measured on the real dSprites images
(../shared/DESIGN.md): centre, sizes, orientation direction, outlines.

    python shapes.py --grid shapes.png      # preview every shape by scale and orientation
    python shapes.py --benchmark            # images/s at batch 64, seconds for all 737,280
    python shapes.py --out dsprites.npz     # the whole set in DeepMind's npz layout
"""

import argparse
import math
import sys
import time
import zipfile

import numpy as np
import torch

FACTOR_NAMES = ("shape", "scale", "orientation", "posX", "posY")
FACTOR_SIZES = (3, 6, 40, 32, 32)
SHAPE_NAMES = ("square", "ellipse", "heart")
# The values DeepMind's npz stores in `latents_values` (shape is 1, 2, 3 there).
FACTOR_VALUES = (
    np.array([1.0, 2.0, 3.0]),
    np.linspace(0.5, 1.0, 6),
    np.linspace(0.0, 2 * np.pi, 40),  # both ends included: index 0 and 39 draw the same image
    np.linspace(0.0, 1.0, 32),
    np.linspace(0.0, 1.0, 32),
)
N_IMAGES = math.prod(FACTOR_SIZES)  # 737,280
IMAGE_SIZE = 64
# index = dot(classes, FACTOR_BASES): posY varies fastest, as in DeepMind's file.
FACTOR_BASES = tuple(math.prod(FACTOR_SIZES[i + 1:]) for i in range(len(FACTOR_SIZES)))

# Geometry at scale 1, in pixels (measured on the real images, DESIGN.md).
SQUARE_HALF_SIDE = 19.25 / 2  # side 19.25 px, ≈ 370 px on
ELLIPSE_AXES = (13.0, 7.0)  # semi-axes, long axis horizontal at orientation 0, ≈ 286 px on
# Heart: a diamond (half-diagonal HEART_D) with two disks on its upper edges, the disks
# tangent to the lower edges, stretched vertically by HEART_STRETCH so that it is as tall
# as it is wide: ≈ 18.3 px wide and tall, ≈ 225 px on.
HEART_D = 7.6
HEART_STRETCH = 1.09
# Shift that puts the heart's bounding-box centre (not the diamond's) at the sprite centre:
# unstretched it spans y in [-d, d/2 + d/√2].
HEART_BOX_SHIFT = HEART_D * (0.5 + 0.5 ** 0.5 - 1) / 2
# Largest distance of any pixel of any shape from its centre at scale 1 (the rotated
# square's half-diagonal); each sprite is drawn only inside a window of that radius.
MAX_RADIUS = SQUARE_HALF_SIDE * 2 ** 0.5 + 0.05


def classes_to_index(classes: torch.Tensor) -> torch.Tensor:
    """(B, 5) int64 factor classes -> (B,) index into DeepMind's ordering."""
    bases = torch.tensor(FACTOR_BASES, dtype=torch.int64, device=classes.device)
    return (classes.long() * bases).sum(-1)


def index_to_classes(index: torch.Tensor) -> torch.Tensor:
    """(B,) index into DeepMind's ordering -> (B, 5) int64 factor classes."""
    index = index.long()
    columns = [(index // base) % size for base, size in zip(FACTOR_BASES, FACTOR_SIZES)]
    return torch.stack(columns, dim=-1)


def sample_factors(n: int, generator: torch.Generator | None = None,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """n factor vectors drawn uniformly over the grid: (n, 5) int64 classes."""
    index = torch.randint(N_IMAGES, (n,), generator=generator, device="cpu" if generator is None
                          else generator.device)
    return index_to_classes(index).to(device or index.device)


def _inside(shape: int, x: torch.Tensor, y: torch.Tensor, scale: float) -> torch.Tensor:
    """Whether points (x, y), in the shape's own frame (y up), lie inside it. Overwrites x, y."""
    if shape == 0:
        return torch.maximum(x.abs_(), y.abs_()) <= SQUARE_HALF_SIDE * scale
    if shape == 1:
        a, b = ELLIPSE_AXES
        return x.mul_(1 / (a * scale)).square_().add_(y.mul_(1 / (b * scale)).square_()) <= 1.0
    d = HEART_D * scale
    x = x.abs_()  # the heart is mirror-symmetric: one lobe tested for both
    y = y.mul_(1 / HEART_STRETCH).sub_(HEART_BOX_SHIFT * scale)
    diamond = (x + y.abs()) <= d
    lobe = (x.sub_(d / 2).square_() + y.sub_(d / 2).square_()) <= d * d / 2
    return diamond.logical_or_(lobe)


def render(classes: torch.Tensor, dtype: torch.dtype = torch.float32,
           out: torch.Tensor | None = None, chunk: int = 16384) -> torch.Tensor:
    """Sim(v): (B, 5) int64 factor classes -> (B, 1, 64, 64) images in {0, 1}.

    A pixel (col, row) covers [col, col+1) x [row, row+1) and is on when its centre lies
    inside the shape. Vectorised over the batch; each sprite is tested only inside a
    window around its centre, grouped by shape and scale so that every test is one
    tensor expression. Runs on the device of `classes`. `out`, if given, is a
    (B, 1, 64, 64) buffer to draw into (reusing one saves the page faults of a new one).
    """
    classes = classes.long()
    B = classes.shape[0]
    if out is None:
        out = torch.empty(B, 1, IMAGE_SIZE, IMAGE_SIZE, dtype=dtype, device=classes.device)
    flat = out.view(B, IMAGE_SIZE * IMAGE_SIZE)
    flat.zero_()
    for start in range(0, B, chunk):
        _render_chunk(classes[start:start + chunk], flat[start:start + chunk])
    return out


def _render_chunk(classes: torch.Tensor, out: torch.Tensor) -> None:
    device = classes.device
    # Orientation 39 is 2π: take it modulo 39 so that it draws exactly orientation 0.
    theta = (classes[:, 2] % 39).float() * (2 * math.pi / 39)  # (B,)
    cx = 16 + 32 * classes[:, 3].float() / 31  # (B,) shape centre in pixels, x right
    cy = 16 + 32 * classes[:, 4].float() / 31  # (B,) y down the rows
    group = classes[:, 0] * FACTOR_SIZES[1] + classes[:, 1]  # (B,) shape-and-scale id
    for g in torch.unique(group).tolist():
        shape, s = divmod(g, FACTOR_SIZES[1])
        scale = float(FACTOR_VALUES[1][s])
        idx = (group == g).nonzero().squeeze(1)  # (G,)
        # The pixel centres within r of the centre: at most W = floor(2r) + 1 columns from x0.
        r = MAX_RADIUS * scale
        W = math.floor(2 * r) + 1
        offsets = torch.arange(W, device=device)  # (W,)
        x0 = torch.ceil(cx[idx] - r - 0.5).long()  # (G,) window's first column
        y0 = torch.ceil(cy[idx] - r - 0.5).long()
        u = (x0[:, None] + offsets + 0.5) - cx[idx, None]  # (G, W) pixel x relative to centre
        v = cy[idx, None] - (y0[:, None] + offsets + 0.5)  # (G, W) pixel y, up positive
        c, s_ = theta[idx].cos()[:, None], theta[idx].sin()[:, None]
        # Turning the shape counter-clockwise by θ = turning the pixels clockwise by θ:
        # x' = c·u + s·v, y' = c·v − s·u, each an outer sum of two (G, W) vectors.
        x = (c * u)[:, None, :] + (s_ * v)[:, :, None]  # (G, W, W) shape frame, [row, col]
        y = (c * v)[:, :, None] - (s_ * u)[:, None, :]
        inside = _inside(shape, x, y, scale).view(len(idx), -1)  # (G, W*W)
        window = (offsets[:, None] * IMAGE_SIZE + offsets).view(1, -1)  # (1, W*W)
        target = (idx * IMAGE_SIZE * IMAGE_SIZE + y0 * IMAGE_SIZE + x0)[:, None] + window
        out.view(-1).scatter_(0, target.view(-1), inside.view(-1).to(out.dtype))


class Shapes:
    """Training batches rendered on the fly: uniform over the grid, memory stays flat."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)

    def render(self, classes: torch.Tensor) -> torch.Tensor:
        return render(classes.to(self.device))

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """n images (n, 1, 64, 64) and their classes (n, 5), uniform over the grid."""
        classes = sample_factors(n, generator, self.device)
        return self.render(classes), classes


class DSpritesNpz:
    """A real dSprites npz (or an export of ours) behind the same interface as `Shapes`.

    Holds the file's uint8 images (3 GB for the whole set) on the CPU; `render` looks
    images up by their classes instead of drawing them.
    """

    def __init__(self, path: str, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.imgs, classes = load_npz(path)
        self.classes = torch.from_numpy(classes)  # (N, 5)
        self.row_of = torch.full((N_IMAGES,), -1, dtype=torch.int64)
        self.row_of[classes_to_index(self.classes)] = torch.arange(len(self.classes))

    def render(self, classes: torch.Tensor) -> torch.Tensor:
        rows = self.row_of[classes_to_index(classes.cpu())]
        if (rows < 0).any():
            raise ValueError("some requested factor combinations are not in this npz")
        return torch.from_numpy(self.imgs[rows.numpy()]).to(self.device).float().unsqueeze(1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.randint(len(self.classes), (n,), generator=generator)
        images = torch.from_numpy(self.imgs[rows.numpy()]).to(self.device).float().unsqueeze(1)
        return images, self.classes[rows].to(self.device)


def load_npz(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Read a dSprites npz: uint8 images (N, 64, 64) and int64 classes (N, 5).

    Raises ValueError with one readable sentence when the file is not in DeepMind's layout.
    """
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise ValueError(f"cannot read {path} as an npz file ({e.__class__.__name__})") from None
    missing = {"imgs", "latents_classes"} - set(data.files)
    if missing:
        raise ValueError(f"{path} is not a dSprites npz: no {', '.join(sorted(missing))} "
                         f"(it holds {', '.join(data.files) or 'nothing'})")
    imgs, latents = data["imgs"], data["latents_classes"]
    if imgs.ndim != 3 or imgs.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"{path}: imgs has shape {imgs.shape}, expected (N, 64, 64)")
    if latents.shape != (len(imgs), 6):
        raise ValueError(f"{path}: latents_classes has shape {latents.shape}, expected ({len(imgs)}, 6)")
    classes = latents[:, 1:].astype(np.int64)  # drop DeepMind's colour column
    if (classes < 0).any() or (classes >= np.array(FACTOR_SIZES)).any():
        raise ValueError(f"{path}: latents_classes out of range for sizes {FACTOR_SIZES}")
    return imgs.astype(np.uint8, copy=False), classes


def export_npz(path: str, start: int = 0, stop: int = N_IMAGES, chunk: int = 65536) -> None:
    """Write images start..stop-1 in DeepMind's npz layout, so readers of the real file run on ours."""
    index = torch.arange(start, stop)
    classes = index_to_classes(index)  # (N, 5)
    imgs = np.empty((len(index), IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    out = torch.from_numpy(imgs).unsqueeze(1)  # (N, 1, 64, 64) rendered in place
    for i in range(0, len(index), chunk):
        render(classes[i:i + chunk], out=out[i:i + chunk])
    latents_classes = np.concatenate([np.zeros((len(index), 1), np.int64), classes.numpy()], 1)
    latents_values = np.stack([np.ones(len(index))] + [FACTOR_VALUES[f][classes[:, f].numpy()]
                                                       for f in range(5)], 1)
    metadata = {
        "date": "rendered by shapes.py",
        "description": "2D shapes rendered to match DeepMind's dSprites",
        "latents_names": ("color",) + FACTOR_NAMES,
        "latents_sizes": np.array((1,) + FACTOR_SIZES),
        "latents_possible_values": {"color": np.array([1.0]),
                                    **{n: v for n, v in zip(FACTOR_NAMES, FACTOR_VALUES)}},
    }
    with open(path, "wb") as f:  # a file object, so numpy does not append ".npz" to the name
        np.savez_compressed(f, imgs=imgs, latents_classes=latents_classes,
                            latents_values=latents_values, metadata=np.array(metadata, dtype=object))


def draw_grid(path: str, orientations: int = 10) -> None:
    """Preview: one block per shape, scales down the rows, orientations across."""
    from PIL import Image

    o = torch.linspace(0, 39, orientations).round().long()  # (O,)
    rows = []
    for shape in range(3):
        for scale in range(6):
            c = torch.tensor([[shape, scale, 0, 16, 16]]).repeat(len(o), 1)
            c[:, 2] = o
            rows.append(render(c)[:, 0])  # (O, 64, 64)
    images = torch.stack(rows)  # (18, O, 64, 64)
    images = torch.nn.functional.pad(images, (1, 1, 1, 1), value=0.3)  # thin grey frame
    n_rows, n_cols, h, w = images.shape
    canvas = images.permute(0, 2, 1, 3).reshape(n_rows * h, n_cols * w)
    Image.fromarray((canvas.numpy() * 255).astype(np.uint8)).save(path)


def benchmark(device: torch.device) -> None:
    g = torch.Generator(device).manual_seed(0)
    c64 = sample_factors(64, g, device)
    render(c64)
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < 2.0:
        render(sample_factors(64, g, device))
        n += 64
    rate64 = n / (time.perf_counter() - t)
    all_classes = index_to_classes(torch.arange(N_IMAGES, device=device))
    buffer = torch.empty(65536, 1, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8, device=device)
    render(all_classes[:65536], out=buffer)  # touch the buffer's pages once
    t = time.perf_counter()
    for i in range(0, N_IMAGES, 65536):
        render(all_classes[i:i + 65536], out=buffer[:N_IMAGES - i])
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t
    print(f"device {device}, {torch.get_num_threads()} threads")
    print(f"batch 64: {rate64:,.0f} images/s")
    print(f"all {N_IMAGES:,} images: {seconds:.2f} s ({N_IMAGES / seconds:,.0f} images/s)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="write the whole set to this npz, in DeepMind's layout")
    p.add_argument("--grid", help="write a preview PNG: each shape across scales and orientations")
    p.add_argument("--benchmark", action="store_true", help="print render speed")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="device for --benchmark (default: cuda if present, else cpu)")
    args = p.parse_args()
    if not (args.out or args.grid or args.benchmark):
        p.error("nothing to do: give --out, --grid or --benchmark")
    try:
        device = torch.device(args.device)
        if args.grid:
            draw_grid(args.grid)
            print(f"wrote {args.grid}")
        if args.out:
            t = time.perf_counter()
            export_npz(args.out)
            print(f"wrote {args.out}: {N_IMAGES:,} images in {time.perf_counter() - t:.1f} s")
        if args.benchmark:
            benchmark(device)
    except (OSError, RuntimeError, ValueError) as e:
        print(f"shapes.py: error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
