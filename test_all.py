"""Every test of the project: reference checks, invariants, and end-to-end CLI runs.

Fast on a laptop CPU; GPU-only tests are skipped without CUDA.

    pytest test_all.py
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import shapes

HERE = Path(__file__).parent


def run_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run one of the project's scripts as a user would; return its result."""
    result = subprocess.run([sys.executable, *args], cwd=HERE, capture_output=True, text=True,
                            timeout=240)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def assert_one_line_error(result: subprocess.CompletedProcess) -> None:
    """Bad input: a non-zero exit and one clear line on stderr, never a traceback.

    argparse's own errors put its usage line before the error line; that is allowed.
    """
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.strip().splitlines()
             if not line.startswith(("usage:", " "))]
    assert len(lines) == 1 and "error" in lines[0], result.stderr


def classes(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.int64)


# ---------------------------------------------------------------- shapes.py

def every_extreme() -> torch.Tensor:
    """Every shape and orientation at the largest scale, at every corner and edge of the frame."""
    grid = torch.cartesian_prod(torch.arange(3), torch.tensor([5]), torch.arange(40),
                                torch.tensor([0, 15, 31]), torch.tensor([0, 15, 31]))
    return grid


def test_images_are_binary():
    x = shapes.render(shapes.sample_factors(2000, torch.Generator().manual_seed(1)))
    assert x.shape == (2000, 1, 64, 64) and x.dtype == torch.float32
    assert set(x.unique().tolist()) == {0.0, 1.0}


def reference_render(c: torch.Tensor, pad: int = 16) -> torch.Tensor:
    """A plain renderer: every pixel of a (64 + 2·pad)² canvas tested, no windows, no scatter."""
    size = 64 + 2 * pad
    centres = torch.arange(size, dtype=torch.float64) - pad + 0.5  # pixel centres
    theta = (c[:, 2] % 39).double() * 2 * np.pi / 39
    cx = 16 + 32 * c[:, 3].double() / 31
    cy = 16 + 32 * c[:, 4].double() / 31
    u = centres[None, None, :] - cx[:, None, None]
    v = cy[:, None, None] - centres[None, :, None]
    cos, sin = theta.cos()[:, None, None], theta.sin()[:, None, None]
    x, y = cos * u + sin * v, cos * v - sin * u
    out = torch.zeros(len(c), size, size)
    for i in range(len(c)):
        shape, scale = c[i, 0].item(), float(shapes.FACTOR_VALUES[1][c[i, 1]])
        out[i] = shapes._inside(shape, x[i].float(), y[i].float(), scale).float()
    return out


def test_render_equals_plain_renderer_and_no_pixel_leaves_the_frame():
    c = every_extreme()
    big = reference_render(c)  # (N, 96, 96)
    assert big.sum() > 0
    inner = big[:, 16:80, 16:80]
    assert torch.equal(inner.sum((1, 2)), big.sum((1, 2))), "a shape crosses the frame"
    # at most a few pixels on the boundary of a shape may differ by float rounding
    assert (shapes.render(c)[:, 0] != inner).sum() <= 3


def test_orientation_0_and_39_are_the_same_image():
    c0 = every_extreme()
    c0 = c0[c0[:, 2] == 0]
    c39 = c0.clone()
    c39[:, 2] = 39
    assert torch.equal(shapes.render(c0), shapes.render(c39))


def test_orientation_turns_counter_clockwise():
    # The ellipse's long axis is horizontal at 0; turned counter-clockwise on screen by
    # index 5 (θ ≈ 0.81 rad), its right end rises, to smaller row numbers.
    x = shapes.render(classes([1, 5, 5, 15, 15]))[0, 0]
    rows, cols = x.nonzero(as_tuple=True)
    right = cols > cols.float().mean()
    assert rows[right].float().mean() < rows[~right].float().mean()


def test_heart_at_orientation_0_is_mirror_symmetric_with_point_down():
    for scale in range(6):
        # posX = 0 puts the centre at x = 16, so the mirror maps column c to 31 - c.
        x = shapes.render(classes([2, scale, 0, 0, 15]))[0, 0]
        assert torch.equal(x[:, :32], x[:, :32].flip(1)) and x[:, 32:].sum() == 0
        rows = x.nonzero()[:, 0]
        top, bottom = rows.min(), rows.max()
        # point down: the bottom row is narrower than the top row
        assert x[bottom].sum() < x[top].sum() or x[bottom].sum() <= 2


@pytest.mark.parametrize("shape,area", [(0, 370), (1, 286), (2, 225)])
def test_pixel_count_by_shape_and_scale_matches_the_real_images(shape, area):
    grid = torch.cartesian_prod(torch.tensor([shape]), torch.arange(6), torch.arange(0, 40, 3),
                                torch.tensor([3, 20]), torch.tensor([5, 28]))
    counts = shapes.render(grid).sum((1, 2, 3))
    for scale in range(6):
        expected = area * shapes.FACTOR_VALUES[1][scale] ** 2
        mean = counts[grid[:, 1] == scale].mean().item()
        assert abs(mean - expected) <= 0.1 * expected, (scale, mean, expected)


def test_square_centre_lands_at_16_plus_32_pos():
    for px, py in [(0, 0), (31, 0), (10, 25), (31, 31)]:
        x = shapes.render(classes([0, 3, 0, px, py]))[0, 0]
        rows, cols = x.nonzero(as_tuple=True)
        cx, cy = cols.float().mean() + 0.5, rows.float().mean() + 0.5  # pixel centres
        assert abs(cx - (16 + 32 * px / 31)) <= 0.5 and abs(cy - (16 + 32 * py / 31)) <= 0.5


def test_mean_on_fraction_matches_the_real_set():
    x = shapes.render(shapes.sample_factors(40000, torch.Generator().manual_seed(0)))
    assert abs(x.mean().item() - 0.0425) <= 0.002


def test_index_classes_round_trip_in_deepmind_order():
    index = torch.randint(shapes.N_IMAGES, (5000,), generator=torch.Generator().manual_seed(2))
    assert torch.equal(shapes.classes_to_index(shapes.index_to_classes(index)), index)
    # posY is fastest, shape slowest
    assert shapes.index_to_classes(torch.tensor([1]))[0].tolist() == [0, 0, 0, 0, 1]
    assert shapes.index_to_classes(torch.tensor([shapes.N_IMAGES - 1]))[0].tolist() == [2, 5, 39, 31, 31]
    c = shapes.sample_factors(100000, torch.Generator().manual_seed(3))
    for f, size in enumerate(shapes.FACTOR_SIZES):
        assert c[:, f].min() == 0 and c[:, f].max() == size - 1


def test_render_large_batch_equals_small_batches():
    c = shapes.sample_factors(300, torch.Generator().manual_seed(4))
    assert torch.equal(shapes.render(c), torch.cat([shapes.render(c[i:i + 7]) for i in range(0, 300, 7)]))
    assert torch.equal(shapes.render(c, chunk=50), shapes.render(c))


def test_npz_export_round_trips_on_a_slice(tmp_path):
    path = tmp_path / "slice.npz"
    start, stop = 300000, 302000
    shapes.export_npz(str(path), start, stop)
    data = np.load(path, allow_pickle=True, encoding="latin1")
    assert data["imgs"].dtype == np.uint8 and data["imgs"].shape == (2000, 64, 64)
    expected = shapes.render(shapes.index_to_classes(torch.arange(start, stop)))[:, 0].numpy()
    assert np.array_equal(data["imgs"], expected.astype(np.uint8))
    assert data["latents_classes"].shape == (2000, 6) and (data["latents_classes"][:, 0] == 0).all()
    values = data["latents_values"]
    assert (values[:, 0] == 1).all() and set(np.unique(values[:, 1])) <= {1.0, 2.0, 3.0}
    assert list(data["metadata"][()]["latents_sizes"]) == [1, 3, 6, 40, 32, 32]
    # and our loader serves those images behind the training interface
    source = shapes.DSpritesNpz(str(path))
    images, c = source.sample(64, torch.Generator().manual_seed(0))
    assert torch.equal(images, shapes.render(c))
    assert torch.equal(source.render(c), images)


def test_wrong_layout_npz_gives_a_clear_error(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=np.zeros((4, 64, 64), np.uint8))
    with pytest.raises(ValueError, match="not a dSprites npz"):
        shapes.load_npz(str(bad))
    np.savez(bad, imgs=np.zeros((4, 32, 32), np.uint8), latents_classes=np.zeros((4, 6), np.int64))
    with pytest.raises(ValueError, match="expected"):
        shapes.load_npz(str(bad))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="cannot read"):
        shapes.load_npz(str(tmp_path / "junk.npz"))


def test_shapes_cli_grid_and_bad_input(tmp_path):
    png = tmp_path / "grid.png"
    run_cli("shapes.py", "--grid", str(png))
    from PIL import Image
    assert Image.open(png).size == (10 * 66, 18 * 66)
    assert_one_line_error(run_cli("shapes.py", "--grid", str(tmp_path / "no" / "dir.png"), check=False))
    assert_one_line_error(run_cli("shapes.py", check=False))
    assert_one_line_error(run_cli("shapes.py", "--benchmark", "--device", "nonsense", check=False))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_render_on_cuda_equals_cpu():
    c = shapes.sample_factors(5000, torch.Generator().manual_seed(5))
    assert torch.equal(shapes.render(c.cuda()).cpu(), shapes.render(c))
