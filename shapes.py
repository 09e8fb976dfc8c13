"""The 2D-shapes world of β-VAE (Higgins et al., ICLR 2017, Sec. 4.2 and A.1).

737,280 binary 64×64 sprites from 5 generative factors: shape (square, ellipse,
heart), scale (6), orientation (40) and position X and Y (32 each). This file is
the simulator Sim(v) of Sec. 2 and 3: `render` draws any factor vector directly,
so training and the disentanglement metric never need DeepMind's 3 GB array.
The geometry is fitted to genuine dSprites images (assets/dsprites_sample12.npz): centre,
sizes, orientation direction and outlines draw each of those 12 images pixel for pixel.
The world (the factor grid, `render`, index <-> factors, sampling, `Shapes`) needs torch and
numpy alone, so this file copies into any project. After it, in a part of its own: the other
sources of training batches, a real dSprites npz (`DSpritesNpz`) and a folder of images for the
conv network (`ImageFolder`), `make_source` that picks one for a run, the npz export and the
command line; these import pillow and runs.py (safe writer, progress timer, CLI errors) where used.

    python shapes.py --grid shapes.png      # preview every shape by scale and orientation
    python shapes.py --benchmark            # images/s at batch 64, seconds for all 737,280
    python shapes.py --out dsprites.npz     # the whole set in DeepMind's npz layout
    python shapes.py --compare dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz   # IoU vs a real file
"""

import argparse
import math
import os
import signal
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

# Ctrl-C while torch loads (it may be in C++: exit at once), not a traceback
if __name__ == "__main__":
    signal.signal(signal.SIGINT,
                  lambda signum, frame: (os.write(2, b"interrupted while starting\n"),
                                         os._exit(130)))

import numpy as np
import torch

if TYPE_CHECKING:  # pillow is imported where files are read, so that the world copies alone
    from PIL import Image

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

# Geometry at scale 1, in pixels, fitted to the 12 genuine dSprites images in
# assets/dsprites_sample12.npz (`python shapes.py --compare assets/dsprites_sample12.npz`:
# every one of them is drawn pixel for pixel).
SQUARE_HALF_SIDE = 19.2 / 2  # side 19.2 px, ≈ 370 px on
ELLIPSE_AXES = (12.76, 7.21)  # semi-axes, long axis horizontal at orientation 0, ≈ 289 px on
# Heart: the classic heart curve x = 16 sin³t, y = 13 cos t − 5 cos 2t − 2 cos 3t − cos 4t,
# stretched to fill a square box as wide as the square (19.2 px), lobes up; the box's centre
# sits HEART_DROP px below the sprite centre, about which it turns. ≈ 225 px on.
HEART_BOX = 19.2
HEART_DROP = 0.22
HEART_ORIGIN = -0.1  # box-side units below the box centre: the curve is star-shaped about it
# A pixel whose centre lies on a shape's boundary is on, as in the real images; the relative
# margin keeps float rounding from deciding such ties.
TIE = 1e-5
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}  # what ImageFolder reads


def _heart_table(n: int = 4096) -> tuple[torch.Tensor, float]:
    """The heart's boundary in polar form about HEART_ORIGIN, and its farthest point from
    the centre.

    Returns the squared radius of the boundary (n,) at n pseudo-angles q from straight up
    (q = 0) through sideways (1) to straight down (2), in units of the box side, right half
    only (the heart is mirror-symmetric), and the largest distance (px at scale 1) of the
    heart from the sprite centre. Every ray from HEART_ORIGIN leaves the heart once (the
    curve is star-shaped about it), so a point is inside when it is no farther from the
    origin than the boundary in its direction. q = 1 − y / (|x| + |y|) grows with the angle
    like atan2 but costs one division.
    """
    t = np.linspace(0.0, np.pi, 20001)
    x = 16 * np.sin(t) ** 3 / 32  # the curve spans x in [−16, 16]: box width 1
    y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
    y = (y - (y.max() + y.min()) / 2) / (y.max() - y.min())  # box height 1, centred
    extent = np.hypot(x, y - HEART_DROP / HEART_BOX).max() * HEART_BOX
    y = y - HEART_ORIGIN
    q = 1 - y / (x + np.abs(y))  # increasing along t, from 0 to 2
    return (torch.from_numpy(np.interp(np.linspace(0, 2, n), q, x * x + y * y)).float(),
            float(extent))


HEART_RADIUS2, HEART_EXTENT = _heart_table()
# Largest distance of any pixel of each shape from its centre at scale 1 (the square's
# half-diagonal, the ellipse's long semi-axis, the heart's farthest point), with a margin;
# each sprite is drawn only inside a window of that radius.
MAX_RADIUS = (SQUARE_HALF_SIDE * 2 ** 0.5 + 0.05, ELLIPSE_AXES[0] + 0.05, HEART_EXTENT + 0.05)


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
        return torch.maximum(x.abs_(), y.abs_()) <= SQUARE_HALF_SIDE * scale * (1 + TIE)
    if shape == 1:
        a, b = ELLIPSE_AXES
        return (x.mul_(1 / (a * scale)).square_().add_(y.mul_(1 / (b * scale)).square_())
                <= 1 + 2 * TIE)
    # The heart, in box-side units from its polar origin; |x| by mirror symmetry.
    side = HEART_BOX * scale
    x = x.abs_().mul_(1 / side)
    y = y.mul_(1 / side).add_(HEART_DROP / HEART_BOX - HEART_ORIGIN)
    table = HEART_RADIUS2.to(x.device)
    # pseudo-angle in [0, 2]; the origin itself: 1
    q = y.div(x + y.abs()).nan_to_num_(0.0).neg_().add_(1)
    position = q.mul_((len(table) - 1) / 2)
    i = position.floor().long().clamp_(max=len(table) - 2)
    # squared radius of the boundary here
    boundary2 = torch.lerp(table[i], table[i + 1], position.sub_(i))
    return x.square_().add_(y.square_()) <= boundary2 * (1 + 2 * TIE)


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
        r = MAX_RADIUS[shape] * scale
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

    def sample(self, n: int,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """n images (n, 1, 64, 64) and their classes (n, 5), uniform over the grid."""
        classes = sample_factors(n, generator, self.device)
        return self.render(classes), classes


# ---------------------------------------------------------- A.8: the world at lower continuity

CONTINUOUS = (1, 2, 3, 4)  # scale, orientation, posX, posY: the factors A.8 steps along


def parse_subset(spec: list[str] | None) -> dict[int, slice]:
    """Part of the world (A.8, Fig. 8), from items "factor=start:stop:step" over class indices:
    posX=::2 keeps every second position, posX=:18 the first 18. Returns {factor: slice};
    ValueError for a malformed item."""
    subset = {}
    for item in spec or []:
        name, _, text = item.partition("=")
        parts = text.split(":")
        if (name not in FACTOR_NAMES or len(parts) not in (2, 3)
                or not all(p.isdigit() or not p for p in parts) or parts[2:] == ["0"]):
            raise ValueError(f"subset {item!r}: expected factor=start:stop:step with factor "
                             f"one of {', '.join(FACTOR_NAMES)}, such as posX=::2")
        f = FACTOR_NAMES.index(name)
        subset[f] = slice(*(int(p) if p else None for p in parts))
        if len(range(FACTOR_SIZES[f])[subset[f]]) == 0:
            raise ValueError(f"subset {item}: keeps no value of {name}")
    return subset


def subset_values(subset: dict[int, slice]) -> list[torch.Tensor]:
    """The class indices each factor keeps (all of those of a factor the subset does not name)."""
    return [torch.arange(size)[subset.get(f, slice(None))] for f, size in enumerate(FACTOR_SIZES)]


def sample_subset(values: list[torch.Tensor], n: int,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """n factor vectors (n, 5) drawn uniformly over a part of the world, given the class indices
    each factor keeps (`subset_values`); on the generator's device."""
    on = "cpu" if generator is None else generator.device
    return torch.stack([v.to(on)[torch.randint(len(v), (n,), generator=generator, device=on)]
                        for v in values], 1)


def subset_index(subset: dict[int, slice]) -> torch.Tensor:
    """The DeepMind indices (N_part,) of the images of a part of the world, in index order."""
    classes = torch.cartesian_prod(*subset_values(subset))  # (N_part, 5)
    return classes_to_index(classes).sort().values


class SubsetShapes(Shapes):
    """Training batches from part of the world (A.8): a factor keeps every k-th value (neighbours
    lie further apart: lower continuity) or a contiguous range (fewer images, same continuity)."""

    def __init__(self, subset: dict[int, slice], device: torch.device | str = "cpu"):
        super().__init__(device)
        self.values = subset_values(subset)  # per factor (V_f,)
        self.size = math.prod(len(v) for v in self.values)  # images in the subset

    def sample(self, n: int,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """n images (n, 1, 64, 64) and their classes (n, 5), uniform over the subset."""
        classes = sample_subset(self.values, n, generator).to(self.device)  # (n, 5)
        return self.render(classes), classes


def consecutive_hamming(subset: dict[int, slice], factor: int, n: int = 2048,
                        seed: int = 0) -> float:
    """A.8's continuity along `factor`: over n random pairs of images of the subset that differ in
    that factor alone, by one step between the values it keeps, the mean normalised Hamming
    distance: pixels that differ / the mean number of pixels on in the two. NaN if it keeps one."""
    values = subset_values(subset)
    if len(values[factor]) < 2:
        return math.nan
    g = torch.Generator().manual_seed(seed)
    v1 = torch.stack([v[torch.randint(len(v), (n,), generator=g)] for v in values], 1)  # (n, 5)
    step = torch.randint(len(values[factor]) - 1, (n,), generator=g)
    v2 = v1.clone()
    v1[:, factor], v2[:, factor] = values[factor][step], values[factor][step + 1]
    x1, x2 = render(v1).flatten(1), render(v2).flatten(1)  # (n, 4096)
    on = (x1.sum(1) + x2.sum(1)) / 2
    return ((x1 != x2).sum(1) / on).mean().item()


def continuity(subset: dict[int, slice]) -> dict[str, float]:
    """consecutive_hamming along each continuous factor, and their mean ("mean"): the abscissa of
    Fig. 8."""
    distances = {FACTOR_NAMES[f]: consecutive_hamming(subset, f) for f in CONTINUOUS}
    return {**distances, "mean": sum(distances.values()) / len(distances)}


# ======================================== beyond the world: files, figures, the command line
# Everything below reads or writes files; pillow and runs.py are imported where they are used, so
# that the world above copies alone.

def load_npz(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Read a dSprites npz: uint8 images (N, 64, 64) and int64 classes (N, 5).

    Raises ValueError with one readable sentence when the file is not in DeepMind's layout.
    """
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise ValueError(f"cannot read {path} as an npz file ({e.__class__.__name__})") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} is not an npz file "
                         f"(a single array: DeepMind's file is an npz archive)")
    missing = {"imgs", "latents_classes"} - set(data.files)
    if missing:
        raise ValueError(f"{path} is not a dSprites npz: no {', '.join(sorted(missing))} "
                         f"(it holds {', '.join(data.files) or 'nothing'})")
    imgs, latents = data["imgs"], data["latents_classes"]
    if imgs.ndim != 3 or imgs.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"{path}: imgs has shape {imgs.shape}, expected (N, 64, 64)")
    if latents.shape != (len(imgs), 6):
        raise ValueError(f"{path}: latents_classes has shape {latents.shape}, "
                         f"expected ({len(imgs)}, 6)")
    classes = latents[:, 1:].astype(np.int64)  # drop DeepMind's colour column
    if (classes < 0).any() or (classes >= np.array(FACTOR_SIZES)).any():
        raise ValueError(f"{path}: latents_classes out of range for sizes {FACTOR_SIZES}")
    # DeepMind's images are uint8 in {0, 1}; a file of floats or of 0/255 would train on
    # wrong pixels.
    if imgs.dtype != np.uint8 or (len(imgs) and imgs.max() > 1):
        kind = f"{imgs.dtype} images" + (f" with values up to {imgs.max():g}" if len(imgs) else "")
        raise ValueError(f"{path}: {kind}; expected uint8 pixels of 0 or 1, as in DeepMind's file")
    return imgs, classes


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

    def sample(self, n: int,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.randint(len(self.classes), (n,), generator=generator)
        images = torch.from_numpy(self.imgs[rows.numpy()]).to(self.device).float().unsqueeze(1)
        return images, self.classes[rows].to(self.device)


def open_image(path: Path) -> "Image.Image":
    """pillow's image at `path`, opened lazily; ValueError for a file it cannot or will not read."""
    from PIL import Image, UnidentifiedImageError
    try:
        return Image.open(path)
    except Image.DecompressionBombError:  # pillow refuses images far larger than any data set's
        raise ValueError(f"image {path} is too large to read "
                         f"(over {2 * Image.MAX_IMAGE_PIXELS:,} pixels)") from None
    except (OSError, UnidentifiedImageError):
        raise ValueError(f"cannot read image {path}") from None


class ImageFolder:
    """Every image under a folder (CelebA, chairs, faces), resized to 64×64 with pillow, held as
    uint8 in memory."""

    def __init__(self, root: str, device: torch.device | str = "cpu", channels: int | None = None):
        from PIL import Image, UnidentifiedImageError
        if not Path(root).is_dir():
            raise ValueError(f"--data {root} is not a folder")
        files = sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {root}")
        if channels is None:  # grey folders (chairs, faces) stay one channel
            with open_image(files[0]) as first:
                channels = 1 if first.mode in ("1", "L", "I;16", "I") else 3
        mode = "L" if channels == 1 else "RGB"
        images = np.empty((len(files), IMAGE_SIZE, IMAGE_SIZE, channels), dtype=np.uint8)
        for i, f in enumerate(files):
            with open_image(f) as im:
                try:
                    im = im.convert(mode).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
                except (OSError, UnidentifiedImageError):
                    raise ValueError(f"cannot read image {f}") from None
            images[i] = np.asarray(im).reshape(IMAGE_SIZE, IMAGE_SIZE, channels)
        self.images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # (N, C, 64, 64)
        self.channels = channels
        self.device = torch.device(device)

    def images_at(self, rows: torch.Tensor) -> torch.Tensor:
        """The images of these rows as floats in [0, 1] on the device: (n, C, 64, 64)."""
        return self.images[rows].to(self.device).float().div_(255)

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, None]:
        return self.images_at(torch.randint(len(self.images), (n,), generator=generator)), None


def make_source(config: dict, device: torch.device) -> Shapes | DSpritesNpz | ImageFolder:
    """The batch source of a run's config: anything with sample(n, generator) -> (x, classes)."""
    if config.get("subsample") and config["dataset"] != "shapes":
        raise ValueError("--subsample takes part of the rendered world: it needs --dataset shapes")
    if config["dataset"] == "shapes":
        subset = parse_subset(config.get("subsample"))
        return SubsetShapes(subset, device) if subset else Shapes(device)
    if not config.get("data"):
        raise ValueError(f"--dataset {config['dataset']} needs --data PATH")
    if config["dataset"] == "dsprites":
        return DSpritesNpz(config["data"], device)
    return ImageFolder(config["data"], device, config.get("channels"))


def export_npz(path: str, start: int = 0, stop: int = N_IMAGES, chunk: int = 65536) -> None:
    """Write images start..stop-1 in DeepMind's npz layout, so readers of the real file run
    on ours."""

    def write(f) -> None:
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
        np.savez_compressed(ProgressFile(f, f"compressing into {path}"), imgs=imgs,
                            latents_classes=latents_classes, latents_values=latents_values,
                            metadata=np.array(metadata, dtype=object))

    from runs import write_atomically
    write_atomically(path, write)


class ProgressFile:
    """A binary file that prints the MB written every runs.PROGRESS_SECONDS: compressing the
    whole set is slow."""

    def __init__(self, f, what: str):
        from runs import Every
        self.f, self.what, self.written, self.ticker = f, what, 0, Every()

    def write(self, data) -> int:
        self.written += len(data)
        if self.ticker.due():
            print(f"{self.what}: {self.written / 2 ** 20:,.0f} MB written "
                  f"({self.ticker.elapsed():.0f} s)", flush=True)
        return self.f.write(data)

    def __getattr__(self, name: str):  # seek, tell, flush: zipfile's other calls go to the file
        return getattr(self.f, name)


def compare(path: str, png: str, worst: int = 8,
            chunk: int = 8192) -> dict[str, tuple[float, float, int]]:
    """Our image of every factor setting in a dSprites npz against the file's: IoU by shape.

    IoU is |real ∩ ours| / |real ∪ ours| of the pixels that are on. Returns, for each shape
    present, (mean IoU, min IoU, images); writes `png`, the `worst` images of lowest IoU
    overlaid, enlarged 3x: on in both white, in the file only red, in ours only cyan.
    """
    from runs import Every
    imgs, classes = load_npz(path)
    iou = torch.empty(len(imgs))  # (N,)
    ticker = Every()
    for start in range(0, len(imgs), chunk):
        real = torch.from_numpy(imgs[start:start + chunk]).bool()  # (B, 64, 64)
        ours = render(torch.from_numpy(classes[start:start + chunk]),
                      dtype=torch.uint8)[:, 0].bool()
        union = (real | ours).sum((1, 2))
        iou[start:start + chunk] = torch.where(union > 0,
                                               (real & ours).sum((1, 2)) / union.clamp(min=1), 1.0)
        if ticker.due():
            print(f"compared {start + len(real):,} of {len(imgs):,} images "
                  f"({ticker.elapsed():.0f} s)", flush=True)
    shape = torch.from_numpy(classes[:, 0])
    stats = {SHAPE_NAMES[s]: (iou[shape == s].mean().item(), iou[shape == s].min().item(),
                              int((shape == s).sum()))
             for s in range(len(SHAPE_NAMES)) if (shape == s).any()}
    worst_overlays(imgs, classes, iou, iou.argsort()[:worst].tolist(), png)  # lowest IoU first
    return stats


def worst_overlays(imgs: np.ndarray, classes: np.ndarray, iou: torch.Tensor, rows: list[int],
                   png: str) -> None:
    """--compare's figure: the file's image and ours of each row overlaid, enlarged 3x."""
    from PIL import Image, ImageDraw
    tiles = []
    for row in rows:
        real = imgs[row].astype(bool)
        ours = render(torch.from_numpy(classes[row:row + 1]))[0, 0].numpy().astype(bool)
        rgb = np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
        rgb[real] = (255, 40, 40)
        rgb[ours] = (40, 230, 230)
        rgb[real & ours] = 255
        tile = Image.new("RGB", (3 * IMAGE_SIZE, 3 * IMAGE_SIZE + 28), "white")
        tile.paste(Image.fromarray(rgb).resize((3 * IMAGE_SIZE, 3 * IMAGE_SIZE), Image.NEAREST),
                   (0, 28))
        c = classes[row]
        ImageDraw.Draw(tile).text((2, 1), f"row {row}: {SHAPE_NAMES[c[0]]} IoU {iou[row]:.3f}\n"
                                           f"sc {c[1]} or {c[2]} x {c[3]} y {c[4]}", fill="black")
        tiles.append(tile)
    legend = "white: on in both   red: in the file only   cyan: in ours only"
    canvas = Image.new("RGB", (max(len(tiles), 3) * (3 * IMAGE_SIZE + 8), 3 * IMAGE_SIZE + 48),
                       "white")
    ImageDraw.Draw(canvas).text((2, 2), legend, fill="black")
    for k, tile in enumerate(tiles):
        canvas.paste(tile, (k * (3 * IMAGE_SIZE + 8), 18))
    canvas.save(png)


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
    from runs import cli_errors, pick_device, positive_int, set_threads
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="write the whole set to this npz, in DeepMind's layout")
    p.add_argument("--grid", help="write a preview PNG: each shape across scales and orientations")
    p.add_argument("--compare", metavar="NPZ",
                   help="IoU by shape between a dSprites npz (DeepMind's file or a sample) "
                        "and our renderer")
    p.add_argument("--overlay", default="compare.png",
                   help="with --compare: PNG of the worst images overlaid (default compare.png)")
    p.add_argument("--benchmark", action="store_true", help="print render speed")
    p.add_argument("--continuity", nargs="*", metavar="FACTOR=SLICE",
                   help="A.8: the normalised Hamming distance of neighbouring images, along each "
                        "factor, of the world or of a part of it (train.py --subsample's items)")
    p.add_argument("--device", help="device for --benchmark: cuda, mps or cpu "
                                    "(default: cuda, then mps, then cpu)")
    p.add_argument("--threads", type=positive_int,
                   help="CPU threads for torch (default: torch's choice)")
    args = p.parse_args()
    if not (args.out or args.grid or args.compare or args.benchmark or args.continuity is not None):
        p.error("nothing to do: give --out, --grid, --compare, --continuity or --benchmark")
    with cli_errors("shapes.py", interrupted="interrupted; nothing was written"):
        set_threads(args.threads)
        device = pick_device(args.device)
        if args.grid:
            draw_grid(args.grid)
            print(f"wrote {args.grid}")
        if args.compare:
            print(f"comparing every image of {args.compare} with shapes.render", flush=True)
            for name, (mean, low, n) in compare(args.compare, args.overlay).items():
                print(f"{name:8s} IoU mean {mean:.4f}, min {low:.4f} over {n:,} image(s)")
            print(f"wrote {args.overlay}: the images of lowest IoU, overlaid")
        if args.out:
            t = time.perf_counter()
            print(f"rendering {N_IMAGES:,} images and compressing them into {args.out} "
                  f"(a minute or two)", flush=True)
            export_npz(args.out)
            print(f"wrote {args.out}: {N_IMAGES:,} images in {time.perf_counter() - t:.1f} s")
        if args.continuity is not None:
            subset = parse_subset(args.continuity)
            distances = ", ".join(f"{k} {v:.3f}" for k, v in continuity(subset).items())
            print(f"{' '.join(args.continuity) or 'the whole world'}: "
                  f"{SubsetShapes(subset).size:,} images; normalised Hamming distance of "
                  f"neighbours: {distances}")
        if args.benchmark:
            benchmark(device)


if __name__ == "__main__":
    main()
