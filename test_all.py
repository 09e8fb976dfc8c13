"""Every test of the project: reference checks, invariants, and end-to-end CLI runs.

Fast on a laptop CPU; GPU-only tests are skipped without CUDA, the explorer's browser tests without
chromium (.ci/run installs it).

    pytest test_all.py                      # everything
    pytest test_all.py -m "not harness"     # the paper's claims alone: a student's quick check

Part 1, the paper's claims: reference checks and invariants of the 2D-shapes world, Eq. 4 and
Table 1, the metric (Sec. 3, A.4, A.5), the figures and the baselines of Fig. 6. Part 2, the harness
(marked `harness`): every CLI end to end, bad input, safe files, locks, stops and exact resumes
(runs.py), the codes cache, the protocol's stacked replicas and the device check. Within each part,
sections follow the files: shapes.py, model.py and loss.py, train.py, metric.py, traverse.py,
baselines.py.

The paper's claims, and the tests that check them:
  Eq. 4, the β-VAE objective: test_closed_form_kl_matches_monte_carlo (the KL's closed form),
    test_loss_parts_against_a_hand_computation (reconstruction, KL, β),
    test_normalised_beta_of_a6 (A.6)
  Table 1, the networks: test_table1_fc_layer_sizes (layer sizes), test_model_output_shapes (shapes)
  Sec. 3, the disentanglement metric: test_ground_truth_scores_at_least_99_percent (ground truth
    ~100 %), test_random_and_constant_codes_score_at_chance (noise ~chance),
    test_rotated_ground_truth_scores_below_ground_truth (independence is not disentanglement),
    test_same_seed_same_score_and_z_diff_definition (z_diff, Eq. 5)
  Which latent carries which factor, and Eq. 4's blind spot:
    test_latents_view_names_each_latents_factor_and_purity_and_the_position_angle,
    test_rotating_two_latents_is_exact_for_the_model_eq4_barely_moves_and_the_score_drops (turning
    two latents leaves Eq. 4 nearly unchanged while the score drops)
  A.4, the protocol: test_a4_protocol_drops_the_bottom_half (the bottom half dropped),
    and in Part 2: test_stacked_replicas_step_as_separate_runs_do (stacked replicas equal separate
    runs), test_stacked_replicas_stopped_by_sigterm_resume_exactly_and_read_as_lone_checkpoints,
    test_gpu_check_script_dry_run_on_a_cpu (the device check's every stage, on a CPU)
  A.5, Table 2 (factor classification): test_factor_classification_reads_single_codes,
    test_baselines_ground_truth_row_scores_at_least_99_percent
  A.3, the baselines: test_baselines_pca_matches_numpy_svd (PCA against numpy's SVD),
    test_baselines_pca_of_the_images_explains_about_60_percent,
    test_baselines_fast_ica_recovers_mixed_non_gaussian_sources (ICA),
    test_baselines_in_pair_keeps_every_factor_but_shape; DC-IGN and InfoGAN (A.2):
    test_dcign_clamp_forward_and_backward_match_their_definitions,
    test_infogan_mutual_information_term_against_a_hand_computation
  The 2D-shapes world: test_images_are_binary (binary images),
    test_pixel_count_by_shape_and_scale_matches_the_real_images and
    test_mean_on_fraction_matches_the_real_set (pixel counts as in the real images),
    test_renderer_draws_the_genuine_dsprites_images and
    test_a_pixel_whose_centre_lies_on_the_boundary_is_on (genuine dSprites images drawn pixel for
    pixel), test_orientation_0_and_39_are_the_same_image and
    test_orientation_turns_counter_clockwise (orientation),
    test_render_equals_plain_renderer_and_no_pixel_leaves_the_frame (in frame),
    test_index_classes_round_trip_in_deepmind_order (DeepMind's image order)
"""

import argparse
import ast
import base64
import csv
import html
import importlib
import io
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import baselines
import loss as objective
import metric
import model
import runs
import replicas
import shapes
import stacked
import sweep
import train
import traverse

HERE = Path(__file__).parent
# Part 2's tests: `pytest test_all.py -m "not harness"` runs the paper's claims alone
harness = pytest.mark.harness


def run_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run one of the project's scripts as a user would; return its result."""
    result = subprocess.run([sys.executable, *args], cwd=HERE, capture_output=True, text=True,
                            timeout=600)
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


def main_error(monkeypatch, capsys, script: str, *args: str) -> str:
    """Run `script`'s main() in this process (no torch import to wait for) on bad input:
    assert a non-zero exit and one clear line on stderr; return that stderr."""
    monkeypatch.setattr(sys, "argv", [script, *args])
    with pytest.raises(SystemExit) as stop:
        importlib.import_module(script.removesuffix(".py")).main()
    err = capsys.readouterr().err
    assert_one_line_error(subprocess.CompletedProcess([], stop.value.code, "", err))
    return err


def classes(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.int64)


@pytest.fixture(scope="session")
def ground_truth() -> torch.Tensor:
    """Every image's ground-truth factors as its code (737,280, 5), in DeepMind's order: a code that
    scores ~100 %.

    Shared by every test that needs it; none may change it in place."""
    return shapes.index_to_classes(torch.arange(shapes.N_IMAGES)).float()

# ================================================================ Part 1: the paper's claims

# ---------------------------------------------------------------- the 2D-shapes world, Sim(v)
#                                                                  (shapes.py)

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


def test_a_subset_of_the_world_keeps_the_values_asked_for_and_draws_the_worlds_images():
    for spec, share in ((["posX=::2"], 1 / 2), (["posX=::2", "posY=::2"], 1 / 4),
                        (["posX=:24", "posY=:24"], 9 / 16), (["orientation=::8", "scale=1:6:2"],
                                                             5 / 40 * 3 / 6)):
        subset = shapes.parse_subset(spec)
        assert shapes.SubsetShapes(subset).size == shapes.N_IMAGES * share, spec
    subset = shapes.parse_subset(["posX=::4", "orientation=10:20"])
    x, c = shapes.SubsetShapes(subset).sample(512, torch.Generator().manual_seed(0))
    assert set(c[:, 3].tolist()) == set(range(0, 32, 4))  # 512 draws meet all 8 positions kept
    assert set(c[:, 2].tolist()) <= set(range(10, 20)) and len(set(c[:, 0].tolist())) == 3
    index = shapes.classes_to_index(c)  # each is an image of the world: its index, its picture
    assert torch.equal(shapes.index_to_classes(index), c) and index.max() < shapes.N_IMAGES
    assert torch.equal(x, shapes.render(c))
    for bad in (["posX"], ["posX=2"], ["size=::2"], ["posX=::0"], ["posX=40:"], ["posX=a:"]):
        with pytest.raises(ValueError):
            shapes.parse_subset(bad)


def test_continuity_is_the_hamming_distance_of_neighbours_counted_by_hand():
    # one pair only: a square of scale 5 at posY 7, posX 3 and posX 5 (every 2nd position kept)
    subset = shapes.parse_subset(["shape=0:1", "scale=5:6", "orientation=0:1", "posX=3:6:2",
                                  "posY=7:8"])
    a = shapes.render(classes([0, 5, 0, 3, 7]))[0, 0].tolist()
    b = shapes.render(classes([0, 5, 0, 5, 7]))[0, 0].tolist()
    differ = sum(a[r][c] != b[r][c] for r in range(64) for c in range(64))
    on = (sum(map(sum, a)) + sum(map(sum, b))) / 2
    assert differ > 0 and shapes.consecutive_hamming(subset, 3, n=16) == pytest.approx(differ / on)
    assert math.isnan(shapes.consecutive_hamming(subset, 4))  # one posY kept: no neighbour
    world, sparse = shapes.continuity({}), shapes.continuity(shapes.parse_subset(["posX=::4"]))
    assert sparse["posX"] > 3 * world["posX"] and sparse["posY"] == pytest.approx(world["posY"],
                                                                                    rel=0.1)


# 12 genuine dSprites images (README, "The 2D-shapes world")
REAL_SAMPLE = HERE / "assets" / "dsprites_sample12.npz"


def image_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of the on pixels of two stacks of binary images (N, 64, 64) -> (N,)."""
    a, b = a.bool(), b.bool()
    return (a & b).sum((1, 2)) / (a | b).sum((1, 2))


def test_renderer_draws_the_genuine_dsprites_images():
    imgs, c = shapes.load_npz(str(REAL_SAMPLE))
    assert set(c[:, 0].tolist()) == {0, 1, 2}  # squares, ellipses and hearts
    iou = image_iou(shapes.render(torch.from_numpy(c))[:, 0], torch.from_numpy(imgs))
    assert iou.min() >= 0.93 and iou.mean() >= 0.96, iou
    # the heart above all: a third of the world
    assert iou[torch.from_numpy(c[:, 0] == 2)].min() >= 0.93


def test_a_pixel_whose_centre_lies_on_the_boundary_is_on():
    # As the real images: the ellipse at scale 0.5, orientation 0, centred on (16, 16) has the
    # rows 3.5 px above and below its centre, 76 pixels in all.
    x = shapes.render(classes([1, 0, 0, 0, 0]))[0, 0]
    assert x[12].sum() > 0 and x[19].sum() > 0 and x[11].sum() == x[20].sum() == 0 and x.sum() == 76
    # Points on each shape's boundary, computed independently in float32, are inside; 1 % farther
    # out they are outside and 1 % nearer inside. The heart's comes from its curve, not from
    # shapes.py's table.
    scale = 0.7
    h = shapes.SQUARE_HALF_SIDE * scale
    s = torch.linspace(-h, h, 101)
    a, b = (v * scale for v in shapes.ELLIPSE_AXES)
    phi = torch.linspace(0, 2 * math.pi, 101)
    # the classic heart curve, right half
    t = torch.linspace(0, math.pi, 20001, dtype=torch.float64)
    hx = 16 * t.sin() ** 3 / 32  # x spans [−16, 16]: box width 1
    hy = 13 * t.cos() - 5 * (2 * t).cos() - 2 * (3 * t).cos() - (4 * t).cos()
    hy = (hy - (hy.max() + hy.min()) / 2) / (hy.max() - hy.min())  # box height 1, centred
    # 190 points; near the notch's cusp (t < 0.15) shapes.py's polar table is exact only to 0.01 px
    hx, hy = hx[1000::100], hy[1000::100]
    side = shapes.HEART_BOX * scale
    heart = (torch.cat([hx, -hx]) * side, torch.cat([hy, hy]) * side - shapes.HEART_DROP * scale)
    boundaries = {0: (torch.cat([s, torch.full_like(s, h)]),
                      torch.cat([torch.full_like(s, -h), s])),
                  1: (a * phi.cos(), b * phi.sin()),
                  2: tuple(v.float() for v in heart)}
    for shape, (bx, by) in boundaries.items():
        assert shapes._inside(shape, bx.clone(), by.clone(), scale).all(), shape
        assert not shapes._inside(shape, 1.01 * bx, 1.01 * by, scale).any(), shape
        assert shapes._inside(shape, 0.99 * bx, 0.99 * by, scale).all(), shape


def test_index_classes_round_trip_in_deepmind_order():
    index = torch.randint(shapes.N_IMAGES, (5000,), generator=torch.Generator().manual_seed(2))
    assert torch.equal(shapes.classes_to_index(shapes.index_to_classes(index)), index)
    # posY is fastest, shape slowest
    assert shapes.index_to_classes(torch.tensor([1]))[0].tolist() == [0, 0, 0, 0, 1]
    assert (shapes.index_to_classes(torch.tensor([shapes.N_IMAGES - 1]))[0].tolist()
            == [2, 5, 39, 31, 31])
    c = shapes.sample_factors(100000, torch.Generator().manual_seed(3))
    for f, size in enumerate(shapes.FACTOR_SIZES):
        assert c[:, f].min() == 0 and c[:, f].max() == size - 1


def test_render_large_batch_equals_small_batches():
    c = shapes.sample_factors(300, torch.Generator().manual_seed(4))
    assert torch.equal(shapes.render(c),
                       torch.cat([shapes.render(c[i:i + 7]) for i in range(0, 300, 7)]))
    assert torch.equal(shapes.render(c, chunk=50), shapes.render(c))


# ---------------------------------------------------------------- Eq. 4 and Table 1 (loss.py,
#                                                                  model.py)

def test_closed_form_kl_matches_monte_carlo():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    std = (0.5 * logvar).exp()
    z = mu + std * torch.randn(200000, 3, 4, generator=g, dtype=torch.float64)
    log_q = torch.distributions.Normal(mu.double(), std.double()).log_prob(z)
    log_p = torch.distributions.Normal(0.0, 1.0).log_prob(z)
    monte_carlo = (log_q - log_p).mean(0)
    closed = objective.kl_per_latent(mu, logvar).double()
    assert torch.allclose(closed, monte_carlo, atol=0.03, rtol=0.02)
    assert objective.kl_per_latent(torch.zeros(2, 3), torch.zeros(2, 3)).abs().max() == 0


def test_loss_parts_against_a_hand_computation():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 1, 4, 4, generator=g)
    x = (torch.rand(2, 1, 4, 4, generator=g) > 0.5).float()
    mu, logvar = torch.randn(2, 3, generator=g), torch.randn(2, 3, generator=g)
    p = torch.sigmoid(logits)
    bce = -(x * p.log() + (1 - x) * (1 - p).log()).sum((1, 2, 3))  # −log Bernoulli, per image
    kl = 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar)
    parts = objective.beta_vae_loss(logits, x, mu, logvar, beta=4.0)
    assert torch.allclose(parts["recon"], bce.mean(), atol=1e-4)
    assert torch.allclose(parts["kl_per_latent"], kl.mean(0), atol=1e-6)
    assert torch.allclose(parts["loss"], bce.mean() + 4.0 * kl.sum(1).mean(), atol=1e-3)
    gauss = objective.reconstruction_nll(logits, x, "gaussian", sigma2=0.5)
    assert torch.allclose(gauss, ((p - x) ** 2).sum((1, 2, 3)), atol=1e-5)
    capacity = objective.capacity_loss(parts, gamma=10.0, capacity=2.0)
    assert torch.allclose(capacity, parts["recon"] + 10.0 * (parts["kl"] - 2.0).abs())
    assert objective.capacity_at(0, 25.0, 100) == 0 and objective.capacity_at(50, 25.0, 100) == 12.5
    assert objective.capacity_at(500, 25.0, 100) == 25.0


def test_normalised_beta_of_a6():
    assert objective.normalised_beta(4.0, 10, 4096) == pytest.approx(4 * 10 / 4096)
    assert objective.beta_from_normalised(objective.normalised_beta(250.0, 32, 12288),
                                          32, 12288) == pytest.approx(250)


@pytest.mark.parametrize("arch,channels,latents", [("fc", 1, 10), ("conv", 3, 32), ("conv", 1, 5)])
def test_model_output_shapes(arch, channels, latents):
    net = model.BetaVAE(arch, latents if latents != 32 else None, channels)
    x = torch.rand(3, channels, 64, 64)
    mu, logvar = net.encode(x)
    assert mu.shape == logvar.shape == (3, latents)
    assert net.decode(mu).shape == (3, channels, 64, 64)
    logits, mu2, _ = net(x)
    assert logits.shape == x.shape and torch.equal(mu, mu2)


def test_table1_fc_layer_sizes():
    sizes = [m.out_features for m in model.BetaVAE("fc").modules()
             if isinstance(m, torch.nn.Linear)]
    assert sizes == [1200, 1200, 20, 1200, 1200, 1200, 4096]


def test_metric_binary_mu_equals_the_dense_encoder():
    net = model.BetaVAE("fc")
    x = shapes.render(shapes.sample_factors(64, torch.Generator().manual_seed(6)))
    assert torch.allclose(metric.binary_mu(net, x), net.encode(x)[0], atol=1e-5)
    conv = model.BetaVAE("conv", channels=1)
    # the conv net: the dense encoder
    assert torch.equal(metric.model_encoder(conv)(x), conv.encode(x)[0])


# ---------------------------------------------------------------- the disentanglement metric:
#                                                                  Sec. 3, Eq. 5, A.4, A.5
#                                                                  (metric.py)

SMALL = dict(n_train=2000, n_test=1000, steps=1000)


def test_ground_truth_scores_at_least_99_percent(ground_truth):
    assert metric.disentanglement_score(ground_truth, **SMALL) >= 0.99
    assert metric.disentanglement_score(ground_truth, factors=(0, 1, 2, 3, 4), **SMALL) >= 0.99


def test_random_and_constant_codes_score_at_chance():
    noise = torch.randn(shapes.N_IMAGES, 10, generator=torch.Generator().manual_seed(0))
    assert abs(metric.disentanglement_score(noise, **SMALL) - 0.25) <= 0.1
    assert abs(metric.disentanglement_score(torch.zeros(shapes.N_IMAGES, 10), **SMALL)
               - 0.25) <= 0.05


def test_rotated_ground_truth_scores_below_ground_truth(ground_truth):
    # Independence alone is not disentanglement (Sec. 3): a rotation of the factors keeps them
    # decodable but mixes every factor into every dimension.
    standard = (ground_truth - ground_truth.mean(0)) / ground_truth.std(0)
    rotation = torch.linalg.qr(torch.randn(5, 5, generator=torch.Generator().manual_seed(1)))[0]
    # At L = 64 the metric saturates (a rotation still scores 93-100 %); at L = 16 it does not.
    rotated = metric.disentanglement_score(standard @ rotation, L=16, **SMALL)
    assert rotated < metric.disentanglement_score(standard, L=16, **SMALL) - 0.1


def test_same_seed_same_score_and_z_diff_definition(ground_truth):
    codes = torch.randn(shapes.N_IMAGES, 3, generator=torch.Generator().manual_seed(2))
    a = metric.disentanglement_score(codes, seed=5, **SMALL)
    assert a == metric.disentanglement_score(codes, seed=5, **SMALL)
    # z_diff against Eq. 5 by hand: the ground-truth difference on the fixed factor is 0
    z_diff, y = metric.z_diff_points(ground_truth, 50, 8, (1, 2, 3, 4),
                                     torch.Generator().manual_seed(3))
    assert z_diff.shape == (50, 5) and (z_diff[torch.arange(50), y] == 0).all()
    assert (z_diff[:, 0] > 0).float().mean() > 0.8  # shape is free to vary


def test_callable_codes_equal_a_table():
    table = torch.randn(shapes.N_IMAGES, 4, generator=torch.Generator().manual_seed(4))
    assert metric.disentanglement_score(table, **SMALL) == \
        metric.disentanglement_score(lambda index: table[index], **SMALL)


def test_mig_high_on_ground_truth_zero_when_duplicated(ground_truth):
    assert metric.mig(ground_truth) > 0.8
    assert metric.mig(torch.cat([ground_truth, ground_truth], 1)) == pytest.approx(0, abs=1e-6)


def test_factor_vae_metric_high_on_ground_truth_chance_on_constants(ground_truth):
    assert metric.factor_vae_score(ground_truth, n_train=2000, n_test=1000) >= 0.99
    assert abs(metric.factor_vae_score(torch.zeros(shapes.N_IMAGES, 4), n_train=2000, n_test=1000)
               - 0.2) < 0.05


def test_factor_classification_reads_single_codes(ground_truth):
    accuracy = metric.factor_classification(ground_truth, n_train=1000, n_test=500, steps=100)
    assert set(accuracy) == set(shapes.FACTOR_NAMES)
    assert accuracy["shape"] > 0.6  # chance is 1/3
    noise = metric.factor_classification(torch.randn(shapes.N_IMAGES, 3), n_train=1000, n_test=500,
                                         steps=100)
    assert noise["posX"] < 0.1  # noise carries nothing: chance is 1/32


def test_a4_protocol_drops_the_bottom_half():
    mean, std, kept = metric.a4_protocol([0.1, 0.9, 0.5, 0.7, 0.2, 0.8])
    assert kept == [0.9, 0.8, 0.7] and mean == pytest.approx(0.8) and \
        std == pytest.approx((2 / 300) ** 0.5)


def factor_codes(ground_truth: torch.Tensor) -> torch.Tensor:
    """Standardised ground truth (5 columns), then the object's area (scale mixed with shape, in
    pixels) and a constant: (737,280, 7) codes whose every latent's factor and purity are known."""
    area = (torch.tensor([370.0, 289.0, 225.0])[ground_truth[:, 0].long()]
            * (0.5 + 0.1 * ground_truth[:, 1]) ** 2)
    standard = (ground_truth - ground_truth.mean(0)) / ground_truth.std(0)
    return torch.cat([standard, area[:, None], torch.zeros(len(area), 1)], 1)


def test_latents_view_names_each_latents_factor_and_purity_and_the_position_angle(ground_truth):
    # the constant is inactive
    codes, kl = factor_codes(ground_truth), torch.tensor([1.0, 1, 1, 1, 1, 1, 0])
    view = metric.latent_summary(codes, kl)
    assert view["active"] == [0, 1, 2, 3, 4, 5]
    assert view["factor"][:6] == [0, 1, 2, 3, 4, 1] and min(view["purity"][:5]) > 0.999
    assert view["purity"][5] < 0.8  # area follows scale, mixed with shape
    assert view["nmi"].shape == (7, 5) and view["nmi"][3, 3] > 0.8 and view["nmi"][3, 4] < 1e-9
    assert view["pair"] == (3, 4) and view["angle"] == pytest.approx(0, abs=1e-6)
    assert view["mig"] == metric.mig(codes)
    # the angle ignores the latents' scales and signs
    scaled = codes * torch.tensor([1, 1, 1, 3.0, -0.5, 1, 1])
    sheared = codes.clone()
    # and a symmetric shear S
    sheared[:, 3:5] = codes[:, 3:5] @ torch.tensor([[2.0, 0.5], [0.5, 1.0]])
    for theta, angle in [(30, 30), (45, 45), (60, 30), (90, 0), (100, 10)]:
        for before in (scaled, sheared):
            turned = replicas.rotate_codes(before, 3, 4, theta)
            assert replicas.position_angle(turned, 3, 4) == pytest.approx(angle, abs=1e-4), theta
    mi = metric.mutual_information(replicas.rotate_codes(codes, 3, 4, 45), ground_truth.long())
    assert set(replicas.position_pair(mi, kl)) == {3, 4}  # still found when fully mixed
    codes[:, 5] += codes[:, 3]  # area and some posX: not the posY latent
    assert replicas.position_pair(metric.mutual_information(codes, ground_truth.long()),
                                  kl) == (3, 4)
    # one active latent
    assert replicas.position_pair(mi, torch.tensor([0.0, 0, 0, 1, 0, 0, 0])) is None


def test_rotating_two_latents_is_exact_for_the_model_eq4_barely_moves_and_the_score_drops(
        ground_truth):
    torch.manual_seed(0)
    net = model.BetaVAE("fc", latents=4).eval()
    head, M = net.encoder[-1], net.latents
    with torch.no_grad():  # latents 0 and 1 get one posterior variance: the hypothesis' condition
        head.weight[M + 1], head.bias[M + 1] = head.weight[M], head.bias[M]
    x, eps = replicas.probe_batch(M, n=64)
    z = 2 * torch.randn(64, M)
    before = replicas.objective_on_batch(net, x, eps, 4.0)["loss"].item()
    for theta in (30.0, 45.0):
        turned = replicas.rotate_latents(net, 0, 1, theta)
        with torch.no_grad():
            (mu, logvar), (mu_r, logvar_r) = net.encode(x), turned.encode(x)
            # exact change of coordinates: μ' = R μ, logvar kept,
            # decode'(R z) = decode(z) for any z
            assert torch.allclose(mu_r, replicas.rotate_codes(mu, 0, 1, theta), atol=1e-6)
            assert torch.equal(logvar_r, logvar)
            assert torch.allclose(turned.decode(replicas.rotate_codes(z, 0, 1, theta)),
                                  net.decode(z), atol=1e-5)
            # the decoder does read the pair
            assert (turned.decode(z) - net.decode(z)).abs().max() > 0.1
        # Eq. 4 with the noise turned too is the same number; with the same noise, within 0.1 %
        same = replicas.objective_on_batch(turned, x, replicas.rotate_codes(eps, 0, 1, theta),
                                           4.0)["loss"].item()
        assert same == pytest.approx(before, rel=1e-6)
        assert replicas.objective_on_batch(turned, x, eps, 4.0)["loss"].item() == \
            pytest.approx(before, rel=1e-3)
        # the model itself is left alone
        assert turned is not net and torch.equal(net.encode(x)[0], mu)
    # Latents 2 and 3 have unequal variances: turned by 90° with their variances, a relabelling,
    # Eq. 4 exact
    relabelled = replicas.rotate_latents(net, 2, 3, 90.0, turn_variance=True)
    with torch.no_grad():
        assert torch.allclose(relabelled.encode(x)[1], logvar[:, [0, 1, 3, 2]], atol=1e-6)
    same = replicas.objective_on_batch(relabelled, x, replicas.rotate_codes(eps, 2, 3, 90.0),
                                       4.0)["loss"].item()
    assert same == pytest.approx(before, rel=1e-6) and \
        not torch.allclose(logvar[:, 2], logvar[:, 3], atol=1e-3)
    # while the metric, reading single latents, loses the position factors turned by 45°
    codes = (ground_truth - ground_truth.mean(0)) / ground_truth.std(0)
    aligned = metric.disentanglement_score(codes, L=16, **SMALL)
    assert metric.disentanglement_score(replicas.rotate_codes(codes, 3, 4, 45), L=16,
                                        **SMALL) < aligned - 0.15


def test_best_angle_turns_a_rotated_position_pair_back_and_scores_the_ceiling(ground_truth):
    # A reference check with a known answer: noisy ground truth (exact codes score ~100 % at any
    # turn but 45°) with its position pair turned by 30° is aligned again by a turn of 60° (or
    # −30°: the same turn, as the score ignores 90°).
    codes = (ground_truth - ground_truth.mean(0)) / ground_truth.std(0)
    noisy = codes + torch.randn(codes.shape, generator=torch.Generator().manual_seed(0))
    oblique = replicas.rotate_codes(noisy, 3, 4, 30)
    small = dict(n_train=1000, n_test=500, steps=200)
    theta = metric.best_angle(oblique, (3, 4), 16, seed=7, **small)
    assert min((theta - 60) % 90, (60 - theta) % 90) <= 6  # the score is flat near its top
    turned = replicas.rotate_codes(oblique, 3, 4, theta)
    assert replicas.position_angle(turned, 3, 4) <= 6
    assert metric.disentanglement_score(turned, L=16, seed=0, **small) > \
        metric.disentanglement_score(oblique, L=16, seed=0, **small) + 0.05


def test_a_part_of_the_world_is_scored_on_its_images_alone(ground_truth):
    # A model trained on part of the world (train.py --subsample) never saw the rest, where its
    # codes mean nothing: here NaN. Scored on the part, nothing reads them, and the angle and the
    # mutual information are the part's: posY's 16 values there fill 16 of the 20 bins, so the
    # posY latent carries all of that part's H(posY) = log 16.
    subset = shapes.parse_subset(["posY=:16"])
    index = shapes.subset_index(subset)
    assert len(index) == shapes.N_IMAGES // 2 and torch.equal(index, index.unique())
    assert torch.equal(shapes.index_to_classes(index)[:, 4].unique(), torch.arange(16))
    codes = torch.full((shapes.N_IMAGES, 7), float("nan"))
    codes[index] = factor_codes(ground_truth)[index]
    assert metric.disentanglement_score(codes, subset=subset, **SMALL) >= 0.99
    view = metric.latent_summary(codes, torch.tensor([1.0, 1, 1, 1, 1, 1, 0]), subset=subset)
    assert view["pair"] == (3, 4) and view["angle"] == pytest.approx(0, abs=1e-6)
    assert view["nmi"][4, 4] == pytest.approx(1) and view["factor"][:5] == [0, 1, 2, 3, 4]
    turned = replicas.rotate_codes(codes, 3, 4, 30)
    assert replicas.position_angle(turned, 3, 4, index) == pytest.approx(30, abs=1e-4)
    x, _ = replicas.probe_batch(5, 256, subset=subset)  # every probe image lies in the part
    assert x[:, 0, 32:].sum() < x.sum() / 4  # posY=:16 is the top half: shapes rarely cross


# ---------------------------------------------------------------- latent traversals and response
#                                                                  maps: Figs. 1-4, 7 (traverse.py)

def test_traverse_a_latent_the_decoder_ignores_barely_changes_the_image():
    torch.manual_seed(0)
    net = model.BetaVAE("fc", latents=4).eval()
    with torch.no_grad():
        last = net.encoder[-1]  # rows 0-3 give mu, rows 4-7 logvar
        last.weight[[1, 5]] = 0  # q(z1|x) = N(0, 1) = p(z1): KL 0
        last.bias[[1, 5]] = 0
        last.weight[0] *= 50  # z0 varies across images: the top latent
        net.decoder[0].weight[:, 1] = 0  # the decoder ignores z1 ...
        net.decoder[0].weight[:, 0] *= 5  # ... and listens to z0
    x = shapes.render(shapes.sample_factors(512, torch.Generator().manual_seed(0)))
    kl = traverse.latent_kl(net, x)
    assert kl[1] < 1e-6 and kl.argmax() == 0
    mu, _ = traverse.encode(net, x[:3])
    images = traverse.traversal(net, mu, steps=5)
    assert images.shape == (3, 4, 5, 1, 64, 64)
    # (M,) mean pixel change along each row
    change = (images - images[:, :, :1]).abs().mean((0, 2, 3, 4, 5))
    assert change[1] < 1e-6 and change[0] > 0.01, change


def test_traverse_response_map_of_a_code_equal_to_posx_is_a_ramp(tmp_path):
    c = shapes.index_to_classes(torch.arange(shapes.N_IMAGES))
    codes = torch.stack([c[:, 3].float(), c[:, 1].float()], 1)  # z0 = posX, z1 = scale
    r = traverse.response_maps(codes, torch.tensor([1.0, 2.0]), tmp_path / "maps.png")
    ramp = torch.arange(32.0).expand(32, 32)  # 0 .. 31 left to right, the same down every row
    assert torch.allclose(r["position"][0], ramp)
    assert torch.allclose(r["scale"][0], torch.full((3, 6), 15.5))
    assert torch.allclose(r["rotation"][0], torch.full((3, 40), 15.5))
    assert torch.allclose(r["scale"][1], torch.arange(6.0).expand(3, 6))
    assert torch.allclose(r["position"][1], torch.full((32, 32), 2.5))
    picture = Image.open(tmp_path / "maps.png").convert("RGB")
    width, height = picture.size
    assert height == 2 * traverse.LINE + 2 * traverse.MAP_ROW
    assert width >= traverse.LABEL_WIDTH + traverse.HEAT + 2 * traverse.PLOT[0]
    # each row's colour bar: the highest value's colour at its top, the lowest's at its bottom
    bar = traverse.LABEL_WIDTH + traverse.HEAT + traverse.SPACE // 2 + traverse.BAR[0] // 2
    top = 2 * traverse.LINE + 4
    (r_top, _, b_top), (r_bottom, _, b_bottom) = (picture.getpixel((bar, y))
                                                  for y in (top + 1, top + traverse.PLOT[1] - 10))
    # red at the top, dark blue at the bottom
    assert r_top > 200 > b_top + 150 and b_bottom > 100 > r_bottom + 50


# ---------------------------------------------------------------- the baselines of Fig. 6: PCA, ICA
#                                                                  (A.3), DC-IGN, InfoGAN (A.2)
#                                                                  (baselines.py)

def test_baselines_pca_matches_numpy_svd():
    g = torch.Generator().manual_seed(0)
    mixing = torch.randn(20, 20, generator=g, dtype=torch.float64)
    x = torch.randn(400, 20, generator=g, dtype=torch.float64) @ mixing + 3
    pca = baselines.fit_pca(*baselines.covariance([x]), k=5)
    _, s, vt = np.linalg.svd((x - x.mean(0)).numpy(), full_matrices=False)
    projection = vt[:5].T @ vt[:5]  # onto the top-5 subspace, whatever the signs and the basis
    assert np.allclose((pca.components.T @ pca.components).numpy(), projection, atol=1e-6)
    assert pca.explained == pytest.approx((s[:5] ** 2).sum() / (s ** 2).sum(), abs=1e-8)
    whitened = torch.cov(pca(x).T, correction=0)
    assert torch.allclose(whitened, torch.eye(5, dtype=torch.float64), atol=1e-6)


def test_baselines_chunked_covariance_equals_direct():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1000, 12, generator=g, dtype=torch.float64) * torch.arange(1, 13) + 5
    mean, cov = baselines.covariance(x.split(300))  # 4 chunks, the last one short
    assert torch.allclose(mean, x.mean(0)) and torch.allclose(cov, torch.cov(x.T, correction=0),
                                                              atol=1e-10)
    # image chunks in float32 sharing one buffer (a band of pixels, for speed): the sums of counts
    # are exact
    band = lambda chunks: (c[:, 1900:2200] for c in chunks)  # noqa: E731
    chunked = baselines.covariance(band(baselines.pixel_chunks(1500, torch.device("cpu"),
                                                               batch_size=400)))
    images = next(band(baselines.pixel_chunks(1500, torch.device("cpu"), batch_size=1500))).double()
    assert images.sum() > 0
    assert torch.allclose(chunked[0], images.mean(0), atol=1e-12)
    assert torch.allclose(chunked[1], torch.cov(images.T, correction=0), atol=1e-12)


def test_baselines_pca_of_the_images_explains_about_60_percent():
    pca = baselines.fit_pca(*baselines.covariance(baselines.pixel_chunks(3000, torch.device("cpu"),
                                                                         1000)))
    assert 0.58 < pca.explained < 0.66  # paper (A.3): 60.8 %
    images = next(baselines.pixel_chunks(3000, torch.device("cpu"), 3000))
    codes = pca(images)  # (3000, 10): the same images, whitened
    assert codes.shape == (3000, 10)
    assert torch.allclose(torch.cov(codes.T.double(), correction=0),
                          torch.eye(10, dtype=torch.float64), atol=1e-3)


def amari_error(P: torch.Tensor) -> float:
    """0 when P (d, d) is a scaled permutation: every unmixed signal is one source."""
    P, d = P.abs(), len(P)
    rows = (P / P.max(1, keepdim=True).values).sum(1) - 1
    cols = (P / P.max(0, keepdim=True).values).sum(0) - 1
    return ((rows.sum() + cols.sum()) / (2 * d * (d - 1))).item()


def test_baselines_fast_ica_recovers_mixed_non_gaussian_sources():
    g = torch.Generator().manual_seed(2)
    n = 20000
    u = lambda: torch.rand(n, generator=g, dtype=torch.float64)  # noqa: E731
    sources = torch.stack([2 * u() - 1,  # uniform: sub-Gaussian
                           u().log() - u().log(),  # Laplace: super-Gaussian
                           u() ** 3], 1)  # skewed
    mixing = torch.randn(3, 3, generator=g, dtype=torch.float64)
    ica = baselines.fast_ica(sources @ mixing.T)
    assert ica.converged
    assert amari_error(ica.unmixing @ mixing) < 0.1
    assert amari_error(torch.eye(3) + 0.5) > 0.3  # a mixture is far from it
    stopped = baselines.fast_ica(sources @ mixing.T, max_iter=2)  # --ica-max-iter 2
    assert (stopped.iterations, stopped.converged) == (2, False)


def test_ica_replicas_stop_at_the_iterations_asked_and_say_which_models_converged():
    g = torch.Generator().manual_seed(5)
    pca_codes = (torch.rand(shapes.N_IMAGES, 10, generator=g) - 0.5) * 12 ** 0.5  # (737280, 10)
    lines = []
    replicas, note = baselines.ica_replicas(pca_codes, "pairs", lines.append, max_iter=3)
    assert len(replicas) == 3
    assert lines == [f"  ICA on {{{pair}}}: NOT converged after 3 iterations"
                     for pair in ("square, ellipse", "square, heart", "ellipse, heart")]
    assert "0 of 3 met the tolerance 0.0001 in 3 iterations" in note


def test_ica_pair_models_are_scored_on_their_pair_or_on_every_image():
    # 10 whitened "PCA codes" of independent uniform sources: a pair model sees only its shapes'
    # images (A.3), unless asked to be scored on all three
    g = torch.Generator().manual_seed(4)
    pca_codes = (torch.rand(shapes.N_IMAGES, 10, generator=g) - 0.5) * 12 ** 0.5
    on_pair, _ = baselines.ica_codes(pca_codes, (0, 2))
    on_all, ica = baselines.ica_codes(pca_codes, (0, 2), on_pair=False)
    index = torch.arange(0, shapes.N_IMAGES, 97)
    assert torch.equal(on_all, ica(pca_codes.double()).float())  # every image, as it is
    assert set(shapes.index_to_classes(index)[:, 0].tolist()) == {0, 1, 2}
    ellipses = index[shapes.index_to_classes(index)[:, 0] == 1]  # read as a square or a heart
    read = on_pair(ellipses)
    assert not any(torch.equal(read[i], on_all[ellipses[i]]) for i in range(len(ellipses)))


def test_baselines_in_pair_keeps_every_factor_but_shape():
    g = torch.Generator().manual_seed(3)
    index = torch.randint(shapes.N_IMAGES, (6000,), generator=g)
    moved = shapes.index_to_classes(baselines.in_pair(index, (0, 2), g))
    assert torch.equal(moved[:, 1:], shapes.index_to_classes(index)[:, 1:])
    assert set(moved[:, 0].tolist()) == {0, 2} and \
        abs((moved[:, 0] == 2).float().mean() - 0.5) < 0.03


def test_baselines_ground_truth_row_scores_at_least_99_percent(ground_truth):
    assert torch.equal(baselines.ground_truth_codes(), ground_truth)
    assert baselines.score_row(baselines.Row("ground truth", lambda: [ground_truth]), seeds=1,
                               **SMALL)[0][0] >= 0.99
    # every replica with every classifier seed
    replicas = baselines.Row("two", lambda: [ground_truth, torch.zeros(shapes.N_IMAGES, 2)])
    scores, accuracies = baselines.score_row(replicas, seeds=2, table2=True, n_train=100,
                                             n_test=100, steps=5)
    assert len(scores) == 4 and scores[0] != scores[2] and len(accuracies) == 2
    _, accuracies = baselines.score_row(replicas, seeds=1, table2=True, n_train=2000, n_test=500)
    assert accuracies[0]["posX"] > 0.9 and accuracies[1]["posX"] < 0.1  # 1/32 by chance
    table2 = baselines.format_table2([("PCA", accuracies[:1])], markdown=True).splitlines()
    assert table2[0].startswith("| representation | shape (%)") and "(60.66)" in table2[2]


def test_dcign_clamp_forward_and_backward_match_their_definitions():
    z = torch.tensor([[1.0, 2.0, 3.0], [3.0, 6.0, -1.0]], requires_grad=True)  # (B = 2, M = 3)
    active = torch.tensor([False, True, False])
    out = baselines.Clamp.apply(z, active)
    # forward: the active latent passes, the others become their batch means 2 and 1
    assert torch.equal(out.detach(), torch.tensor([[2.0, 2.0, 1.0], [2.0, 6.0, 1.0]]))
    out.backward(torch.tensor([[10.0, 20.0, 30.0], [40.0, 50.0, 60.0]]))
    # backward: the active latent gets the gradient from above, the clamped ones (z − z̄) / B
    assert torch.equal(z.grad, torch.tensor([[-0.5, 20.0, 1.0], [0.5, 50.0, -1.0]]))


def test_dcign_unpooling_computes_upsample_then_conv_and_so_does_the_plain_model():
    # A reference check: UnpoolConv2d against the nn.Upsample + nn.Conv2d it replaces, with the
    # same weights, in float64, forward and every gradient, on an odd-sized input.
    torch.manual_seed(0)
    ours = baselines.UnpoolConv2d(3, 5).double()
    plain = torch.nn.Sequential(torch.nn.Upsample(scale_factor=2),
                                torch.nn.Conv2d(3, 5, 3, padding=1)).double()
    plain[1].load_state_dict(ours.state_dict())
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64, requires_grad=True)
    a, b = ours(x), plain(x)
    assert a.shape == (2, 5, 14, 12) and torch.allclose(a, b, atol=1e-12)
    w = torch.randn_like(a)  # a random direction, so every output position matters
    for ga, gb in zip(torch.autograd.grad((a * w).sum(), [x, ours.weight, ours.bias]),
                      torch.autograd.grad((b * w).sum(), [x, plain[1].weight, plain[1].bias])):
        assert torch.allclose(ga, gb, atol=1e-10)
    # --benchmark's reference model decodes as the model does, on the same parameters
    net = baselines.DCIGN().eval()
    z = torch.randn(4, 10)
    expected = net.decode(z)
    baselines.plain_unpooling(net)
    assert any(isinstance(m, torch.nn.Upsample) for m in net.modules())
    assert torch.allclose(net.decode(z), expected, atol=1e-4)


def test_dcign_batches_vary_one_factor_and_every_latent_has_a_factor():
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(40):
        factor, c = baselines.clamped_batch(64, g)
        others = [f for f in range(5) if f != factor]
        assert (c[:, others] == c[0, others]).all() and len(c[:, factor].unique()) > 1
        seen.add(factor)
    assert seen == set(range(5)) == set(baselines.DCIGN_LATENTS)
    assert sorted(i for latents in baselines.DCIGN_LATENTS.values()
                  for i in latents) == list(range(10))


def test_infogan_flags_fix_sigma_at_one_and_lambda_and_instance_noise_reach_the_trainer(tmp_path):
    args = baselines.build_parser().parse_args(["--train", "infogan", "--q-std", "fixed",
                                                "--info-lambda", "0.05", "--instance-noise", "0",
                                                "--train-batch-size", "8"])
    config = baselines.baseline_config(args, str(tmp_path / "i.pt"), torch.device("cpu"))
    assert config["q_std"] == "fixed" and config["info_lambda"] == 0.05
    trainer = baselines.InfoGANTrainer(config, torch.device("cpu"))
    # D's inputs: the real images exactly ±1 without instance noise, 0.5 off them with 0.5
    seen, discriminate = [], trainer.model.discriminate
    trainer.model.discriminate = lambda x: seen.append(x.detach()) or discriminate(x)
    for noise in (0.0, 0.5):
        seen.clear()
        trainer.instance_noise = noise
        trainer.step()
        off = (seen[0] - seen[0].sign()).abs()  # the first call: the real batch
        # the median |noise| is 0.674 σ; flips of sign (|noise| > 1) lie above it
        assert off.max() == 0 if noise == 0 else abs(off.median() / 0.6745 - noise) < 0.02
    assert baselines.InfoGANTrainer({k: v for k, v in config.items() if k != "instance_noise"},
                                    torch.device("cpu")).instance_noise == 0.2  # older runs'
    # annealed: linearly from 0.5 at step 0 to 0 at --instance-noise-steps, then 0
    args = baselines.build_parser().parse_args(["--train", "infogan", "--instance-noise", "0.5",
                                                "--instance-noise-steps", "4"])
    annealed = baselines.InfoGANTrainer(
        baselines.baseline_config(args, str(tmp_path / "a.pt"), torch.device("cpu")),
        torch.device("cpu"))
    assert [(setattr(annealed, "step_count", t), annealed.noise_std())[1] for t in (0, 1, 4, 9)] \
        == [0.5, 0.375, 0.0, 0.0]
    mu, logvar = torch.randn(4, 5), torch.randn(4, 5)
    fixed_mu, fixed_logvar = trainer.q_gaussian(mu, logvar)
    assert torch.equal(fixed_mu, mu) and torch.equal(fixed_logvar, torch.zeros(4, 5))
    assert trainer.info_lambda == 0.05
    trainer.fixed_std = False  # the default: Q's own log-variance
    assert torch.equal(trainer.q_gaussian(mu, logvar)[1], logvar)
    # --lr-d: Adam's first step moves each weight by its rate times g / |g| (biases feeding batch
    # norm get gradients near Adam's ε): D's and Q's weights by --lr-d, G's by A.2's 1e-3 still
    args = baselines.build_parser().parse_args(["--train", "infogan", "--lr-d", "2e-3",
                                                "--train-batch-size", "8"])
    fast = baselines.InfoGANTrainer(
        baselines.baseline_config(args, str(tmp_path / "f.pt"), torch.device("cpu")),
        torch.device("cpu"))
    m = fast.model
    before = {name: p.detach().clone() for name, p in m.named_parameters()}
    fast.step()
    moved = {name: (p.detach() - before[name]).abs().max().item()
             for name, p in m.named_parameters()}
    weights = [name for name in moved if name.endswith("weight")]
    assert len(weights) == 20  # G 9, D 8, Q 3, batch norms among them
    assert all(abs(moved[name] - (1e-3 if name.startswith("generator.") else 2e-3)) < 1e-6
               for name in weights)


def test_infogan_spectral_norm_bounds_each_layer_of_d_and_its_checkpoint_loads_as_spectral(
        tmp_path):
    args = baselines.build_parser().parse_args(["--train", "infogan", "--d-norm", "spectral",
                                                "--train-batch-size", "8"])
    config = baselines.baseline_config(args, str(tmp_path / "s.pt"), torch.device("cpu"))
    trainer = baselines.InfoGANTrainer(config, torch.device("cpu"))
    body = trainer.model.body
    assert not any(isinstance(layer, torch.nn.modules.batchnorm._BatchNorm) for layer in body)
    for _ in range(20):  # each training forward pass refines the power iteration
        trainer.step()
    # each weight's largest singular value, by numpy's SVD of the (out, in·k·k) matrix, is 1
    layers = [layer for layer in body if hasattr(layer, "parametrizations")]
    layers.append(trainer.model.d_head)
    assert len(layers) == 5
    for layer in layers:
        weight = layer.weight.detach().flatten(1).double().numpy()
        assert abs(np.linalg.svd(weight, compute_uv=False)[0] - 1) < 0.05
    # a checkpoint's config rebuilds the same network, spectral norm and all
    torch.save({"model": trainer.model.state_dict(), "config": config}, tmp_path / "s.pt")
    net, _ = baselines.load_representation(str(tmp_path / "s.pt"), torch.device("cpu"))
    x = torch.rand(4, 1, 64, 64).round()
    trainer.model.eval()
    assert torch.equal(net.encode(x)[0], trainer.model.encode(x)[0])


def test_infogan_lin2020_networks_have_their_widths_and_a_checkpoint_reloads_them(tmp_path):
    args = baselines.build_parser().parse_args(["--train", "infogan", "--networks", "lin2020",
                                                "--d-norm", "spectral", "--train-batch-size", "8"])
    config = baselines.baseline_config(args, str(tmp_path / "n.pt"), torch.device("cpu"))
    trainer = baselines.InfoGANTrainer(config, torch.device("cpu"))
    m = trainer.model
    nn = torch.nn
    # Lin et al. 2020's dSprites networks: G up from 4 × 4 × 64 through 64, 32, 32 channels with
    # batch norm; D four convolutions 32, 32, 64, 64 and FC 128, Q FC 128, none with batch norm
    widths = [layer.out_channels for layer in m.generator if isinstance(layer, nn.ConvTranspose2d)]
    assert widths == [64, 32, 32, 1] and m.generator[3].out_features == 64 * 4 * 4
    assert [layer.out_channels for layer in m.body if isinstance(layer, nn.Conv2d)] == [32, 32, 64, 64]
    d_and_q = [*m.body, *m.q_head]
    assert not any(isinstance(layer, nn.modules.batchnorm._BatchNorm) for layer in d_and_q)
    spectral = [layer for layer in [*d_and_q, m.d_head] if hasattr(layer, "parametrizations")]
    assert len(spectral) == 8  # every convolution and linear layer of D and Q
    for _ in range(3):
        trainer.step()
    torch.save({"model": m.state_dict(), "config": config}, tmp_path / "n.pt")
    net, _ = baselines.load_representation(str(tmp_path / "n.pt"), torch.device("cpu"))
    x = torch.rand(4, 1, 64, 64).round()
    m.eval()
    assert torch.equal(net.encode(x)[0], m.encode(x)[0])
    with pytest.raises(ValueError, match="unknown networks"):
        baselines.InfoGAN(networks="a3")
    with pytest.raises(ValueError, match="unknown g_norm"):
        baselines.InfoGAN(g_norm="layer")
    # --g-norm none takes every batch norm out of G, in both networks, and leaves D as it was
    for networks, layers in (("a2", 11), ("lin2020", 13)):
        plain = baselines.InfoGAN(networks=networks, g_norm="none")
        with_norm = baselines.InfoGAN(networks=networks)
        assert len(with_norm.generator) - len(plain.generator) == 4 + (networks == "lin2020")
        assert not any(isinstance(layer, nn.modules.batchnorm._BatchNorm) for layer in plain.generator)
        assert len(plain.generator) == layers and str(plain.body) == str(with_norm.body)


def test_infogan_lin2020_code_init_pixels_and_two_g_steps_reach_the_networks_and_trainer(tmp_path):
    args = baselines.build_parser().parse_args([
        "--train", "infogan", "--networks", "lin2020", "--d-norm", "spectral", "--init", "dcgan",
        "--g-steps", "2", "--pixels", "unit", "--train-batch-size", "8"])
    config = baselines.baseline_config(args, str(tmp_path / "l.pt"), torch.device("cpu"))
    torch.manual_seed(0)
    trainer = baselines.InfoGANTrainer(config, torch.device("cpu"))
    m, nn = trainer.model, torch.nn
    layers = [layer for layer in m.modules()
              if isinstance(layer, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d))]
    assert len(layers) == 14  # G 6, D 5 and its head, Q 2
    for layer in layers:
        spectral = nn.utils.parametrize.is_parametrized(layer, "weight")
        w = layer.parametrizations.weight.original if spectral else layer.weight
        w = w.detach().double()
        assert (layer.bias == 0).all()
        if isinstance(layer, nn.Conv2d):  # TF's truncated normal: within ±2σ, std 0.88σ
            assert w.abs().max() <= 0.04 and abs(w.std() / 0.02 - 0.88) < 0.1
        elif w.numel() >= 1024:
            assert abs(w.std() / 0.02 - 1) < 0.1 and w.abs().max() > 0.04
        if spectral:  # the power iteration restarted from the new weight: σ of the used weight 1
            m.eval()
            used = layer.weight.detach().flatten(1).double().numpy()
            assert abs(np.linalg.svd(used, compute_uv=False)[0] - 1) < 0.05
            m.train()
    with pytest.raises(ValueError, match="unknown init"):
        baselines.InfoGAN(init="xavier")
    # --pixels unit: Lin et al.'s sigmoid G and D on [0, 1], against a hand computation, in the
    # [−1, 1] the rest of the code reads
    for networks in baselines.NETWORKS:
        unit = baselines.InfoGAN(networks=networks, d_norm="spectral", pixels="unit").eval()
        z = torch.rand(4, 10) * 2 - 1
        a = unit.generator[:-1](z)  # (4, 1, 64, 64) before G's last activation
        assert torch.allclose(unit.generator(z), 2 * torch.sigmoid(a) - 1, atol=1e-6)
        x = torch.rand(4, 1, 64, 64).round()  # in {0, 1}
        h = unit.body(x)  # what Lin et al.'s D computes on the images as they are
        logit, mu, _, _ = unit.discriminate(2 * x - 1)
        assert torch.allclose(logit, unit.d_head(h)[:, 0], atol=1e-6)
        assert torch.allclose(unit.encode(x)[0], mu, atol=1e-6)
    with pytest.raises(ValueError, match="unknown pixels"):
        baselines.InfoGAN(pixels="bytes")
    # two Adam steps of G for each of D's: G's moment counter runs twice as fast
    for _ in range(3):
        trainer.step()
    g_steps = {int(state["step"]) for state in trainer.optimizer_g.state_dict()["state"].values()}
    d_steps = {int(state["step"]) for state in trainer.optimizer.state_dict()["state"].values()}
    assert g_steps == {6} and d_steps == {3}
    assert trainer.model.unit_pixels and isinstance(trainer.model.generator[-1], baselines.HalfTanh)


def test_infogan_categorical_code_is_drawn_uniformly_and_q_pays_its_cross_entropy(tmp_path):
    plain, three = baselines.InfoGAN(), baselines.InfoGAN(categories=3)
    # without the code, G's inputs are drawn as ever: c ~ U(−1, 1), then the noise
    g = torch.Generator().manual_seed(0)
    expected = torch.cat([torch.rand(4, 5, generator=g) * 2 - 1, torch.randn(4, 5, generator=g)], 1)
    assert torch.equal(baselines.infogan_inputs(plain, 4, torch.Generator().manual_seed(0)),
                       expected)
    # with it: one one-hot column block between the codes and the noise, each value a third
    inputs = baselines.infogan_inputs(three, 3000, torch.Generator().manual_seed(0))
    one_hot = inputs[:, 5:8]
    assert inputs.shape == (3000, 13) and torch.equal(one_hot.sum(1), torch.ones(3000))
    assert all(abs(share - 1 / 3) < 0.03 for share in one_hot.mean(0).tolist())
    # Q's loss adds −log softmax(logits)[k], by hand, to the Gaussian's over c
    args = baselines.build_parser().parse_args(["--train", "infogan", "--categories", "3",
                                                "--q-std", "fixed", "--train-batch-size", "8"])
    config = baselines.baseline_config(args, str(tmp_path / "k.pt"), torch.device("cpu"))
    trainer = baselines.InfoGANTrainer(config, torch.device("cpu"))
    c, mu = torch.rand(4, 5) * 2 - 1, torch.randn(4, 5)
    k, logits = torch.tensor([0, 2, 1, 2]), torch.randn(4, 3)
    by_hand = -sum(math.log(math.exp(logits[b, k[b]]) / sum(map(math.exp, logits[b].tolist())))
                   for b in range(4)) / 4
    assert abs(trainer.q_nll(c, k, mu, torch.zeros(4, 5), logits)
               - baselines.info_nll(c, mu, torch.zeros(4, 5)) - by_hand) < 1e-5
    trainer.step()  # G, D and Q train with it
    # the metric reads Q's 5 means and the category's 3 probabilities
    torch.save({"model": trainer.model.state_dict(), "config": config}, tmp_path / "k.pt")
    net, _ = baselines.load_representation(str(tmp_path / "k.pt"), torch.device("cpu"))
    codes, _ = net.encode(shapes.render(shapes.sample_factors(4, torch.Generator())))
    assert codes.shape == (4, 8) and torch.allclose(codes[:, 5:].sum(1), torch.ones(4))


def test_shape_like_passes_the_worlds_images_and_fails_textures_speckle_grey_and_wrong_sizes():
    # objects against a hand count: a diagonal touch joins (8-connected), a ring is one, dots three
    masks = torch.zeros(3, 8, 8, dtype=torch.bool)
    masks[0, 1, 1] = masks[0, 2, 2] = True
    masks[1, 1:6, 1:6] = True
    masks[1, 2:5, 2:5] = False
    masks[2, 0, 0] = masks[2, 0, 7] = masks[2, 7, 3] = True
    assert baselines.objects(masks).tolist() == [1, 1, 3]
    world = shapes.render(shapes.sample_factors(256, torch.Generator().manual_seed(0)))
    assert baselines.shape_like(world).all()  # every image of the world passes
    left, right = (shapes.render(classes([0, 5, 0, x, 16])) for x in (0, 31))
    square = torch.zeros(2, 1, 64, 64)
    square[0, 0, 10:40, 10:40] = 1  # 900 pixels: larger than any object of the world
    square[1, 0, 10:13, 10:13] = 1  # 9: smaller
    stripes = torch.zeros(1, 1, 64, 64)
    stripes[..., ::4, :] = 1  # a texture
    for failing in (torch.maximum(left, right),  # two objects
                    world[:8] * 0.5,  # grey
                    torch.rand(8, 1, 64, 64, generator=torch.Generator().manual_seed(1)),
                    square, stripes):
        assert not baselines.shape_like(failing).any()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: 2,000 steps, CPU minutes")
def test_infogan_learns_to_draw_one_blob_of_the_worlds_area(tmp_path, monkeypatch):
    # A working G turns from texture into one binary object of a world image's area: most of its
    # samples, after the steps at which the CPU run of these flags got there (docs/baselines.md).
    out = tmp_path / "infogan.pt"
    baselines_in_process(monkeypatch, "--train", "infogan", "--q-std", "fixed", "--info-lambda",
                         "1", "--instance-noise", "0.5", "--steps", "2000", "--log-every", "500",
                         "--device", "cuda", "--out", str(out))
    model, _ = baselines.load_representation(str(out), torch.device("cuda"))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # (256, 1, 64, 64) in [-1, 1]
        samples = baselines.sampling_generator(model)(baselines.infogan_inputs(model, 256, g).cuda())
    assert baselines.shape_like((samples + 1) / 2).float().mean() > 0.5  # most of them


def test_nearest_world_finds_an_image_itself_and_scores_a_blob_below_its_shape():
    index = torch.tensor([5, 300_000, 737_279])
    candidates = torch.cat([torch.arange(0, shapes.N_IMAGES, 997), index])
    iou, match = baselines.nearest_world(shapes.render(shapes.index_to_classes(index)),
                                         candidates, chunk=256)
    assert torch.equal(iou, torch.ones(3)) and torch.equal(match, index)
    # a disc of a large square's area on its centre: the IoU by hand, well below 1
    square = shapes.render(classes([0, 5, 0, 16, 16]))  # (1, 1, 64, 64)
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    cy, cx = square[0, 0].nonzero().float().mean(0)
    disc = (((yy - cy) ** 2 + (xx - cx) ** 2) <= square.sum() / math.pi).float()[None, None]
    both = (disc * square).sum()
    iou, match = baselines.nearest_world(disc, torch.cat([shapes.classes_to_index(
        classes([0, 5, 0, 16, 16])), torch.tensor([0])]))
    assert iou.item() == pytest.approx((both / (disc.sum() + square.sum() - both)).item())
    assert 0.7 < iou.item() < 0.95 and match.item() == shapes.classes_to_index(
        classes([0, 5, 0, 16, 16])).item()


def test_precise_batch_norm_holds_the_mean_statistics_of_its_batches_and_leaves_the_model_alone():
    torch.manual_seed(0)
    nn = torch.nn
    module = nn.Sequential(nn.Linear(10, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 8),
                           nn.BatchNorm1d(8))
    g = torch.Generator().manual_seed(3)
    batches = [torch.randn(64, 10, generator=g) * 3 + 1 for _ in range(3)]
    fresh = baselines.precise_batch_norm(module, batches)
    assert not fresh.training and module.training
    assert torch.equal(module[1].running_mean, torch.zeros(32))  # the module itself untouched
    means = torch.stack([module[0](x).mean(0) for x in batches]).detach()  # (3, 32)
    assert torch.allclose(fresh[1].running_mean, means.mean(0), atol=1e-5)
    # one batch: eval mode normalises it as train mode does, up to the unbiased variance
    x = torch.randn(4096, 10, generator=g) * 3 + 1
    one = baselines.precise_batch_norm(module, [x])
    with torch.no_grad():
        assert torch.allclose(one(x), module(x), atol=5e-3)
        assert not torch.allclose(module.eval()(x), one(x), atol=0.1)  # stale statistics


def test_r1_penalty_against_hand_gradients_and_its_flag_reaches_the_trainer(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 1, 64, 64, generator=g).requires_grad_()
    w = torch.randn(1, 1, 64, 64, generator=g).requires_grad_()
    # D(x) = Σ w·x: ∇_x D = w for each image, so E‖∇ D‖² = ‖w‖², and its gradient in w is 2w
    penalty = baselines.r1_penalty((w * x).sum((1, 2, 3)), x)
    assert penalty.item() == pytest.approx(w.pow(2).sum().item(), rel=1e-5)
    penalty.backward()
    assert torch.allclose(w.grad, 2 * w.detach(), rtol=1e-5)
    # D(x) = Σ w·x²: ∇_x D = 2 w x, which differs per image
    square = baselines.r1_penalty((w.detach() * x * x).sum((1, 2, 3)), x)
    hand = (2 * w.detach() * x.detach()).pow(2).sum((1, 2, 3)).mean()
    assert square.item() == pytest.approx(hand.item(), rel=1e-5)
    args = baselines.build_parser().parse_args(["--train", "infogan", "--r1", "10",
                                                "--train-batch-size", "8"])
    trainer = baselines.InfoGANTrainer(
        baselines.baseline_config(args, str(tmp_path / "r.pt"), torch.device("cpu")),
        torch.device("cpu"))
    assert trainer.r1_gamma == 10
    assert all(torch.isfinite(v).all() for v in trainer.step().values())
    assert baselines.InfoGANTrainer({k: v for k, v in trainer.config.items() if k != "r1"},
                                    torch.device("cpu")).r1_gamma == 0  # older runs'


def test_infogan_mutual_information_term_against_a_hand_computation():
    c = torch.tensor([[0.5, -1.0], [0.5, -1.0]])
    mu = torch.zeros(2, 2)
    logvar = torch.tensor([[0.0, math.log(4.0)]] * 2)
    # −log N(0.5; 0, 1) − log N(−1; 0, 4) = ½ log 2π + ⅛ + ½ log 2π + ½ log 4 + ⅛
    hand = math.log(2 * math.pi) + 0.5 * math.log(4.0) + 0.25
    assert baselines.info_nll(c, mu, logvar).item() == pytest.approx(hand, rel=1e-6)
    normal = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    assert baselines.info_nll(c, mu, logvar).item() == \
        pytest.approx(-normal.log_prob(c).sum(1).mean().item())


# ================================================================ Part 2: the harness (CLIs, bad
#                                                                  input, safe files, stops and
#                                                                  resumes)

# ---------------------------------------------------------------- copy one file: each concept file
#                                                                  works alone

# file: the siblings it names
CONCEPT_FILES = {"loss.py": (), "model.py": (), "shapes.py": (), "metric.py": ("shapes.py",)}
# a short script per file, run in a folder that holds the file, its named siblings, and nothing else
COPY_USES = {
    "loss.py": """
import torch, loss
g = torch.Generator().manual_seed(0)
x = (torch.rand(8, 1, 64, 64, generator=g) > 0.9).float()
logits, mu, logvar = torch.randn(8, 1, 64, 64, generator=g), torch.randn(8, 10, generator=g), torch.randn(8, 10, generator=g)
parts = loss.beta_vae_loss(logits, x, mu, logvar, beta=4.0)
assert torch.allclose(parts["loss"], parts["recon"] + 4.0 * parts["kl"]) and parts["kl"] > 0
print("loss ok")
""",
    "model.py": """
import torch, model
net = model.BetaVAE("fc")
x = (torch.rand(4, 1, 64, 64) > 0.9).float()
logits, mu, logvar = net(x)
assert logits.shape == (4, 1, 64, 64) and mu.shape == logvar.shape == (4, 10)
torch.save({"model": net.state_dict(), "config": {**net.config, "dataset": "shapes", "beta": 4.0}},
           "ckpt.pt")
loaded, config = model.load_checkpoint("ckpt.pt")
assert torch.equal(loaded.encode(x)[0], net.eval().encode(x)[0]) and config["arch"] == "fc"
open("junk.pt", "wb").write(b"not a checkpoint")
try:
    model.load_checkpoint("junk.pt")
except model.CheckpointError as e:
    assert len(str(e).splitlines()) == 1
else:
    raise AssertionError("a junk file loaded")
print("model ok")
""",
    "shapes.py": """
import torch, shapes
index = torch.tensor([0, 1, 12345, 737279])
classes = shapes.index_to_classes(index)
assert torch.equal(shapes.classes_to_index(classes), index)
x = shapes.render(shapes.sample_factors(16, torch.Generator().manual_seed(0)))
assert x.shape == (16, 1, 64, 64) and set(x.unique().tolist()) == {0.0, 1.0}
print("shapes ok")
""",
    "metric.py": """
import torch, torch.nn as nn, metric, shapes
truth = shapes.index_to_classes(torch.arange(shapes.N_IMAGES)).float()  # ground-truth codes, DeepMind's order
assert metric.disentanglement_score(truth, n_train=1000, n_test=500) > 0.97

class Centroid(nn.Module):  # a researcher's own encoder: position and area of the on pixels, and noise
    def encode(self, x):
        w = x.flatten(1)
        grid = torch.arange(64.0)
        area = w.sum(1).clamp_min(1)
        cx = (x.sum(2).flatten(1) * grid).sum(1) / area
        cy = (x.sum(3).flatten(1) * grid).sum(1) / area
        mu = torch.stack([cx, cy, area, torch.randn(len(x))], 1)
        return mu, torch.zeros_like(mu)

score = metric.disentanglement_score(metric.rendered_codes(Centroid()), L=8, n_train=500,
                                     n_test=300)
noise = metric.disentanglement_score(metric.rendered_codes(lambda x: torch.randn(len(x), 4)), L=8,
                                     n_train=500, n_test=300)
assert score > 0.6 and noise < 0.4, (score, noise)
print("metric ok", round(score, 3), round(noise, 3))
""",
}


def module_imports(path: Path) -> set[str]:
    """The top-level names a file imports at module level (not inside a function), at run time."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            continue  # for annotations only: never imported when the file runs
        # `if __name__ == ...` blocks too
        for sub in ast.walk(node) if isinstance(node, ast.If) else [node]:
            if isinstance(sub, ast.Import):
                names |= {a.name.split(".")[0] for a in sub.names}
            elif isinstance(sub, ast.ImportFrom) and sub.level == 0:
                names.add(sub.module.split(".")[0])
    return names


def test_concept_files_import_only_torch_numpy_and_the_siblings_they_name():
    project = {p.stem for p in HERE.glob("*.py")}
    for name, siblings in CONCEPT_FILES.items():
        pulled = module_imports(HERE / name) & project
        assert pulled <= {Path(s).stem for s in siblings}, \
            f"{name} imports {sorted(pulled)} of the project"
        assert module_imports(HERE / name) - project <= \
            set(sys.stdlib_module_names) | {"torch", "numpy"}, name


@pytest.mark.parametrize("name", sorted(CONCEPT_FILES))
def test_a_concept_file_copied_alone_into_a_fresh_folder_works(tmp_path, name):
    for f in (name, *CONCEPT_FILES[name]):
        shutil.copy(HERE / f, tmp_path / f)
    # -I: the folder alone, not the repository
    script = "import os, sys\nsys.path.insert(0, os.getcwd())\n" + COPY_USES[name]
    r = subprocess.run([sys.executable, "-I", "-c", script], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"{Path(name).stem} ok" in r.stdout


# ---------------------------------------------------------------- shapes.py

@harness
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


@harness
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


@harness
def test_shapes_cli_grid_and_bad_input(tmp_path, monkeypatch, capsys):
    png = tmp_path / "grid.png"
    run_cli("shapes.py", "--grid", str(png))
    assert Image.open(png).size == (10 * 66, 18 * 66)
    assert_one_line_error(run_cli("shapes.py", "--grid", str(tmp_path / "no" / "dir.png"),
                                  check=False))
    main_error(monkeypatch, capsys, "shapes.py")
    main_error(monkeypatch, capsys, "shapes.py", "--benchmark", "--device", "nonsense")
    result = run_cli("shapes.py", "--continuity", "posX=::2")
    assert "posX=::2: 368,640 images; normalised Hamming distance of neighbours: scale" in (
        result.stdout)
    main_error(monkeypatch, capsys, "shapes.py", "--continuity", "posX=2")


@harness
def test_shapes_cli_compare_reports_iou_by_shape_and_overlays_the_worst(tmp_path):
    png = tmp_path / "worst.png"
    result = run_cli("shapes.py", "--compare", str(REAL_SAMPLE), "--overlay", str(png))
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if "IoU mean" in line}
    assert set(lines) == {"square", "ellipse", "heart"} and "over 4 image(s)" in lines["heart"]
    assert Image.open(png).size[0] >= 8 * 3 * 64  # the 8 lowest, enlarged 3x
    # and it sees a difference: the same file with every image moved 2 px right
    data = dict(np.load(REAL_SAMPLE))
    data["imgs"] = np.roll(data["imgs"], 2, axis=2)
    np.savez(tmp_path / "moved.npz", **data)
    stats = shapes.compare(str(tmp_path / "moved.npz"), str(png))
    assert all(mean < 0.9 for mean, _, _ in stats.values()), stats
    np.savez(tmp_path / "bad.npz", images=np.zeros((4, 64, 64), np.uint8))
    assert_one_line_error(run_cli("shapes.py", "--compare", str(tmp_path / "bad.npz"), check=False))


@harness
def test_export_to_an_unwritable_place_fails_at_once_and_a_failed_write_leaves_no_file(
        tmp_path, monkeypatch, capsys):
    assert_one_line_error(run_cli("shapes.py", "--out", str(tmp_path / "no" / "set.npz"),
                                  check=False))
    main_error(monkeypatch, capsys, "shapes.py", "--out", str(tmp_path))
    old = tmp_path / "set.npz"
    old.write_bytes(b"the old file")

    def fail(f) -> None:
        f.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        runs.write_atomically(str(old), fail)
    assert old.read_bytes() == b"the old file" and \
        [p.name for p in tmp_path.iterdir()] == ["set.npz"]


@harness
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_render_on_cuda_equals_cpu():
    c = shapes.sample_factors(5000, torch.Generator().manual_seed(5))
    assert torch.equal(shapes.render(c.cuda()).cpu(), shapes.render(c))


# ---------------------------------------------------------------- model.py (checkpoints), runs.py
#                                                                  (devices)

@harness
def test_load_checkpoint_rejects_bad_files(tmp_path):
    with pytest.raises(model.CheckpointError, match="no such"):
        model.load_checkpoint(str(tmp_path / "missing.pt"))
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(model.CheckpointError, match="not a readable"):
        model.load_checkpoint(str(tmp_path / "junk.pt"))
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(model.CheckpointError, match="not a checkpoint of this project"):
        model.load_checkpoint(str(tmp_path / "other.pt"))


@harness
def test_train_and_every_cli_pick_devices_through_runs_pick_device():
    assert runs.pick_device("cpu") == torch.device("cpu")
    with pytest.raises(runs.UsageError, match="unknown device"):
        runs.pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(runs.UsageError, match="no CUDA"):
            runs.pick_device("cuda")


# ---------------------------------------------------------------- train.py

def train_cli(tmp_path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run_cli("train.py", "--log-every", "5", "--save-every", "10", "--device", "cpu", *args,
                   check=check)


def main_in_process(monkeypatch, script: str, *args: str) -> None:
    """`script`'s main() in this process, as `python script *args` runs it; torch's thread
    count kept."""
    monkeypatch.setattr(sys, "argv", [script, *args])
    threads = torch.get_num_threads()
    try:
        importlib.import_module(script.removesuffix(".py")).main()
    finally:
        torch.set_num_threads(threads)


def train_in_process(monkeypatch, *args: str) -> None:
    main_in_process(monkeypatch, "train.py", *args)


def baselines_in_process(monkeypatch, *args: str) -> None:
    main_in_process(monkeypatch, "baselines.py", *args)


def drop_seconds(log: Path) -> list[list[str]]:
    """A CSV log's rows without the timing column."""
    return [row.split(",")[:2] + row.split(",")[3:] for row in log.read_text().splitlines()]


def assert_same_run(a: Path, b: Path) -> None:
    """Two checkpoints (and their logs) of runs that must be equal to the bit."""
    ca, cb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    assert ca["step"] == cb["step"]
    for k in ca["model"]:
        assert torch.equal(ca["model"][k], cb["model"][k]), k
    assert drop_seconds(a.with_suffix(".csv")) == drop_seconds(b.with_suffix(".csv"))


# the conv net: 6 MB checkpoints, against the fc net's 114 MB
SMALL_RUN = ("--arch", "conv", "--batch-size", "8", "--log-every", "4", "--save-every", "10",
             "--threads", "1", "--device", "cpu")


@pytest.fixture(scope="module")
def unbroken_40(tmp_path_factory) -> Path:
    """An unbroken 40-step SMALL_RUN: every stop-and-resume test must end equal to it."""
    out = tmp_path_factory.mktemp("unbroken") / "unbroken.pt"
    with pytest.MonkeyPatch.context() as monkeypatch:
        train_in_process(monkeypatch, *SMALL_RUN, "--steps", "40", "--out", str(out))
    return out


@pytest.fixture
def start_run():
    """start_run(out, *args): a 100,000-step SMALL_RUN into `out`, killed when the test ends however
    it ends, so that a failed assertion never leaves it training beside the other tests."""
    started = []

    def start(out: Path, *args: str) -> subprocess.Popen:
        started.append(subprocess.Popen([sys.executable, "train.py", *SMALL_RUN,
                                         "--steps", "100000", "--out", str(out), *args], cwd=HERE,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        return started[-1]

    yield start
    for proc in started:
        proc.kill()
        proc.communicate()


def wait_for_step(proc: subprocess.Popen, step: int) -> None:
    for line in proc.stdout:
        if line.startswith(f"step {step}/"):
            return
    raise AssertionError(f"no step {step}: {proc.stderr.read()}")


def nan_checkpoint(path: Path) -> Path:
    """A checkpoint in train.py's layout whose weights hold a NaN, as a diverged run's would."""
    state = model.BetaVAE("fc").state_dict()
    state["decoder.0.bias"][0] = float("nan")
    torch.save({"model": state,
                "config": {"dataset": "shapes", "arch": "fc", "latents": 10, "channels": 1},
                "optimizer": {}, "step": 1, "rng": {}}, path)
    return path


def image_folder(tmp_path: Path, size: tuple[int, int] = (80, 70)) -> Path:
    """Six random RGB images of `size` (H, W) in a fresh folder, as a stand-in for CelebA."""
    folder = tmp_path / "faces"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def huge_png(path: Path, side: int = 15000) -> None:
    """A PNG whose header claims side × side pixels (225 megapixels for 15000): pillow refuses it
    at open."""
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    # width, height, then the rest of IHDR
    ihdr = struct.pack(">II", side, side) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    path.write_bytes(bytes(data))


@harness
def test_train_cli_writes_a_checkpoint_that_loads(tmp_path):
    out = tmp_path / "ckpt.pt"
    result = train_cli(tmp_path, "--steps", "20", "--out", str(out))
    assert "step 20/20" in result.stdout and "samples/s" in result.stdout and \
        "active" in result.stdout
    net, config = model.load_checkpoint(str(out))
    assert config["beta"] == 4.0 and config["optimizer"] == "adagrad" and config["lr"] == 1e-2
    assert config["arch"] == "fc" and config["latents"] == 10 and config["batch_size"] == 64
    log = (tmp_path / "ckpt.csv").read_text().splitlines()
    assert log[0].startswith("step,samples,seconds,loss,recon,kl,active,kl_0") and len(log) == 5
    assert not (tmp_path / "ckpt.pt.tmp").exists()


@harness
def test_eval_every_writes_the_score_into_the_log(tmp_path, monkeypatch, capsys, ground_truth):
    # no encoding: the ground truth, which scores 100 % (the metric's own tests encode)
    monkeypatch.setattr(metric, "encode_all", lambda encode, device, progress: ground_truth)
    train_in_process(monkeypatch, "--steps", "10", "--log-every", "5", "--eval-every", "10",
                     "--batch-size", "8", "--device", "cpu", "--out", str(tmp_path / "e.pt"))
    assert "disentanglement score 100.00%" in capsys.readouterr().out
    header, row5, row10 = [line.split(",")
                           for line in (tmp_path / "e.csv").read_text().splitlines()]
    assert header[-1] == "score" and row5[-1] == "" and float(row10[-1]) == 1.0


@harness
def test_trainer_leaves_its_config_and_the_global_random_state_alone():
    config = train.make_config(train.build_parser().parse_args(["--batch-size", "8"]))
    before, rng = dict(config), torch.get_rng_state()
    trainer = train.Trainer(config, torch.device("cpu"))
    trainer.step()
    assert config == before and torch.equal(torch.get_rng_state(), rng)
    assert trainer.config["channels"] == 1 and trainer.config is not config
    # the same seed: the same weights and first step
    again = train.Trainer(config, torch.device("cpu"))
    assert all(torch.equal(p, q)
               for p, q in zip(train.Trainer(config, torch.device("cpu")).model.parameters(),
                               again.model.parameters()))
    assert torch.equal(again.step()["loss"],
                       train.Trainer(config, torch.device("cpu")).step()["loss"])


@harness
def test_scoring_during_training_leaves_the_training_noise_alone(monkeypatch, ground_truth):
    # no encoding
    monkeypatch.setattr(metric, "encode_all", lambda encode, device, progress: ground_truth)
    net = model.BetaVAE("fc")
    torch.manual_seed(7)
    before = torch.get_rng_state()
    assert metric.training_score(net, torch.device("cpu")) > 0.9
    assert torch.equal(torch.get_rng_state(), before) and net.training


@harness
def test_train_prints_between_log_rows_without_moving_them_and_names_the_cpu_recipe(
        tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runs, "PROGRESS_SECONDS", 0.0)  # as if every step took 10 s
    train_in_process(monkeypatch, *SMALL_RUN, "--steps", "6", "--log-every", "5",
                     "--out", str(tmp_path / "p.pt"))
    steps = [line.split()[1] for line in capsys.readouterr().out.splitlines()
             if line.startswith("step ")]
    assert steps == ["1/6", "2/6", "3/6", "4/6", "5/6", "6/6"]
    assert [row.split(",")[0]
            for row in (tmp_path / "p.csv").read_text().splitlines()] == ["step", "5", "6"]
    train_in_process(monkeypatch, "--arch", "conv", "--time-limit", "1e-6", "--threads", "1",
                     "--device", "cpu", "--out", str(tmp_path / "d.pt"))
    assert train.CPU_RECIPE in capsys.readouterr().out  # the paper's 300,000 steps, on a CPU


@harness
def test_resume_equals_an_unbroken_run(tmp_path):
    # a stop at a log row: the rows must match too
    small = (*SMALL_RUN, "--log-every", "5", "--beta", "2")
    run_cli("train.py", *small, "--steps", "20", "--out", str(tmp_path / "a.pt"))
    run_cli("train.py", *small, "--steps", "10", "--out", str(tmp_path / "b.pt"))
    run_cli("train.py", "--steps", "20", "--out", str(tmp_path / "b.pt"), "--resume",
            "--threads", "1", "--device", "cpu")
    a = torch.load(tmp_path / "a.pt", weights_only=True)
    b = torch.load(tmp_path / "b.pt", weights_only=True)
    assert a["step"] == b["step"] == 20
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    rows_a = (tmp_path / "a.csv").read_text().splitlines()
    rows_b = (tmp_path / "b.csv").read_text().splitlines()
    strip = lambda row: row.split(",")[:2] + row.split(",")[3:]  # noqa: E731 (all but seconds)
    assert [strip(r) for r in rows_a] == [strip(r) for r in rows_b]


@harness
def test_ctrl_c_saves_a_checkpoint(tmp_path):
    out = tmp_path / "int.pt"
    proc = subprocess.Popen([sys.executable, "train.py", "--steps", "100000", "--log-every", "2",
                             "--save-every", "100000", "--out", str(out), "--device", "cpu"],
                            cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # at once, what it does
        assert proc.stdout.readline().startswith(f"training {out} to step 100,000")
        wait_for_step(proc, 2)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()  # a failed assertion must not leave it training beside the other tests
    assert proc.returncode == 130 and "--resume" in stderr and "Traceback" not in stderr
    assert torch.load(out, weights_only=True)["step"] >= 2


@harness
def test_image_folder_run(tmp_path):
    folder = image_folder(tmp_path)
    out = tmp_path / "conv.pt"
    train_cli(tmp_path, "--dataset", "folder", "--data", str(folder), "--steps", "5",
              "--batch-size", "4", "--out", str(out), "--likelihood", "gaussian")
    net, config = model.load_checkpoint(str(out))
    assert config["arch"] == "conv" and config["latents"] == 32 and config["channels"] == 3
    assert config["optimizer"] == "adam" and config["lr"] == 1e-4


# Bad input to train.py, each case one line on stderr and no traceback. A "cli" case runs
# `python train.py` as a user types it (test_train_bad_input_is_one_line), a "main" case
# train.main() in this process, without a torch import to wait for
# (test_train_cli_bad_input_is_one_line_in_process). Names in capitals, and run.csv, stand for the
# files of bad_input_files.
TRAIN_BAD_INPUT = [
    ("cli", "--beta", "-1"),
    ("main", "--lr", "nan"),
    ("cli", "--lr", "1e6", "--steps", "30"),  # diverges to NaN
    ("main", "--seed", "1e23"),
    ("main", "--seed", "100000000000000000000000"),
    ("main", "--threads", "0"),
    ("main", "--device", "cuda:99"),
    ("main", "--device", "tpu"),
    ("cli", "--eval-every", "7"),  # not a multiple of --log-every
    ("main", "--out", ""),
    ("main", "--out", "FOLDER"),
    ("main", "--out", "run.csv"),
    ("cli", "--resume", "--out", "CORRUPT"),
    ("cli", "--resume", "--out", "/no/such/ckpt.pt"),
    ("main", "--resume", "--out", "DCIGN"),
    ("cli", "--dataset", "celeba"),
    ("cli", "--dataset", "folder"),
    ("cli", "--dataset", "folder", "--data", "EMPTY"),
    ("cli", "--dataset", "folder", "--data", "EMPTY", "--eval-every", "10"),
    ("main", "--dataset", "folder", "--data", "HUGE"),
    ("cli", "--dataset", "dsprites", "--data", "/no/such/file.npz"),
    ("main", "--dataset", "dsprites", "--data", "NPY"),
    # the audit's "Also": nan, inf and negative capacities and γ
    ("main", "--capacity-max", "nan"),
    ("main", "--capacity-max", "-5"),
    ("main", "--gamma", "inf"),
    ("main", "--seeds", "0-100000000000"),  # the audit's 9: not a MemoryError
    ("main", "--save-minutes", "0"),
]


def bad_train_input(how: str) -> list[tuple[str, ...]]:
    """The arguments of TRAIN_BAD_INPUT's cases run `how` ("cli" or "main")."""
    return [case[1:] for case in TRAIN_BAD_INPUT if case[0] == how]


@pytest.fixture
def bad_input_files(tmp_path) -> dict[str, Path]:
    """The files that TRAIN_BAD_INPUT's placeholders stand for, made in tmp_path."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "corrupt.pt").write_bytes(b"PK\x03\x04 truncated")
    (tmp_path / "folder").mkdir()
    np.save(tmp_path / "imgs.npy", np.zeros((2, 64, 64), np.uint8))
    (tmp_path / "huge").mkdir()
    huge_png(tmp_path / "huge" / "big.png")
    torch.save({"model": baselines.DCIGN().state_dict(), "config": {"baseline": "dcign"},
                "optimizer": {}, "step": 1, "rng": {}}, tmp_path / "dcign.pt")
    return {"EMPTY": tmp_path / "empty", "CORRUPT": tmp_path / "corrupt.pt",
            "FOLDER": tmp_path / "folder", "NPY": tmp_path / "imgs.npy", "HUGE": tmp_path / "huge",
            "DCIGN": tmp_path / "dcign.pt", "run.csv": tmp_path / "run.csv"}


@harness
@pytest.mark.parametrize("args", bad_train_input("cli"))
def test_train_bad_input_is_one_line(tmp_path, bad_input_files, args):
    args = [str(bad_input_files.get(a, a)) for a in args]
    result = train_cli(tmp_path, "--out", str(tmp_path / "x.pt"), *args, check=False)
    assert_one_line_error(result)


@harness
@pytest.mark.parametrize("args", bad_train_input("main"))
def test_train_cli_bad_input_is_one_line_in_process(tmp_path, monkeypatch, capsys, bad_input_files,
                                                    args):
    args = [str(bad_input_files.get(a, a)) for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "x.pt")]
    main_error(monkeypatch, capsys, "train.py", "--steps", "2", "--log-every", "1", *args)


@harness
def test_train_refuses_an_existing_out_unless_resume_or_overwrite(tmp_path, monkeypatch, capsys):
    out = tmp_path / "quick.pt"
    train_in_process(monkeypatch, *SMALL_RUN, "--steps", "8", "--out", str(out))
    before, log = out.read_bytes(), (tmp_path / "quick.csv").read_text()
    capsys.readouterr()
    refused = main_error(monkeypatch, capsys, "train.py", *SMALL_RUN, "--steps", "4",
                         "--out", str(out))
    assert "--resume" in refused and "--overwrite" in refused
    assert out.read_bytes() == before and (tmp_path / "quick.csv").read_text() == log
    train_in_process(monkeypatch, *SMALL_RUN, "--steps", "4", "--out", str(out), "--overwrite")
    assert torch.load(out, weights_only=True)["step"] == 4
    assert len((tmp_path / "quick.csv").read_text().splitlines()) == 2  # header and step 4


@harness
@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
def test_train_stopped_at_a_chosen_step_then_resumed_equals_an_unbroken_run(tmp_path, monkeypatch,
                                                                            unbroken_40, stop,
                                                                            start_run):
    out = tmp_path / "stopped.pt"
    proc = start_run(out)
    wait_for_step(proc, random.Random(stop).choice([4, 8, 12, 16]))  # a step that is not a save's
    proc.send_signal(getattr(signal, stop))
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + getattr(signal, stop) and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1 and "--resume" in stderr, stderr
    step = torch.load(out, weights_only=True)["step"]
    assert 4 <= step < 40 and not Path(f"{out}.lock").exists()
    train_in_process(monkeypatch, *SMALL_RUN, "--steps", "40", "--out", str(out), "--resume")
    assert_same_run(out, unbroken_40)


@harness
def test_train_refuses_a_second_run_on_one_out_and_after_sigkill_resumes_with_a_clean_log(
        tmp_path, monkeypatch, capsys, unbroken_40, start_run):
    out = tmp_path / "killed.pt"
    proc = start_run(out)
    wait_for_step(proc, 16)  # saved at step 10, logged to 16
    second = main_error(monkeypatch, capsys, "train.py", *SMALL_RUN, "--steps", "20",
                        "--out", str(out), "--overwrite")
    assert f"PID {proc.pid}" in second
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert torch.load(out, weights_only=True)["step"] == 10 and \
        Path(f"{out}.lock").exists()  # stale
    train_in_process(monkeypatch, *SMALL_RUN, "--steps", "40", "--out", str(out), "--resume")
    assert_same_run(out, unbroken_40)
    assert not Path(f"{out}.lock").exists() and not list(tmp_path.glob(".killed.pt.*"))
    steps = [int(row[0]) for row in drop_seconds(tmp_path / "killed.csv")[1:]]
    assert steps == list(range(4, 41, 4))  # no step twice


@harness
def test_train_ctrl_c_during_scoring_keeps_the_score(tmp_path, monkeypatch):
    out = tmp_path / "scored.pt"

    def score_and_interrupt(model, device):
        signal.raise_signal(signal.SIGINT)  # Ctrl-C while the score is being computed
        return 0.5

    monkeypatch.setattr(metric, "training_score", score_and_interrupt)
    config = train.make_config(train.build_parser().parse_args(
        ["--batch-size", "8", "--log-every", "2", "--eval-every", "4", "--steps", "40"]))
    with pytest.raises(SystemExit) as stop:
        train.train(config, str(out), torch.device("cpu"))
    assert stop.value.code == 130
    assert drop_seconds(tmp_path / "scored.csv")[-1][-1] == "0.5000"
    assert torch.load(out, weights_only=True)["step"] == 4


@harness
def test_train_nan_stop_keeps_only_a_checkpoint_with_finite_weights(tmp_path, monkeypatch, capsys):
    out = tmp_path / "n.pt"
    # fp32 weights overflow
    err = main_error(monkeypatch, capsys, "train.py", "--lr", "1e300", "--steps", "3",
                     "--log-every", "1", "--save-every", "1", "--batch-size", "8",
                     "--device", "cpu", "--out", str(out))
    assert "NaN" in err and "no checkpoint was written" in err
    assert not out.exists()  # the weights after step 1 are NaN: never saved as good


@harness
def test_train_resume_and_load_checkpoint_refuse_nan_weights(tmp_path, monkeypatch, capsys):
    path = nan_checkpoint(tmp_path / "nan.pt")
    with pytest.raises(model.CheckpointError, match="NaN"):
        model.load_checkpoint(str(path))
    err = main_error(monkeypatch, capsys, "train.py", "--out", str(path), "--resume",
                     "--steps", "2")
    assert "NaN" in err


@harness
def test_train_failed_save_keeps_the_last_checkpoint_and_a_symlink_at_a_temp_path_is_left_alone(
        tmp_path, monkeypatch):
    out = tmp_path / "full.pt"
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    Path(f"{out}.tmp").symlink_to(target)  # where every run used to write its temp file
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True)
    Path(f"{out}.lock").write_text(f"{dead.stdout.strip()} {socket.gethostname()}\n")
    real_save, saves = torch.save, []

    def disk_full(obj, f):  # the second save runs out of space half-way
        saves.append(1)
        if len(saves) == 2:
            f.write(b"partial")
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64")
        real_save(obj, f)

    monkeypatch.setattr(torch, "save", disk_full)
    config = train.make_config(train.build_parser().parse_args(
        ["--batch-size", "8", "--log-every", "5", "--save-every", "10", "--steps", "30"]))
    with runs.out_lock(str(out)), pytest.raises(
            runs.UsageError, match=r"cannot write checkpoint \(disk full\?\); step 10 kept"):
        train.train(config, str(out), torch.device("cpu"))
    assert not Path(f"{out}.lock").exists() and torch.load(out, weights_only=True)["step"] == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full.csv", "full.pt", "full.pt.tmp",
                                                          "precious.txt"]
    assert target.read_text() == "keep me"


@harness
def test_samples_per_second_after_resume_counts_only_the_steps_this_session_took(
        tmp_path, monkeypatch, capsys):
    """A resumed run's first rate once counted the steps before the stop too: 4,159 samples/s where
    900 was true."""
    clock, step = [0.0], train.Trainer.step

    def step_taking_one_second(self):
        clock[0] += 1.0
        return step(self)

    monkeypatch.setattr(runs.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(train.Trainer, "step", step_taking_one_second)
    out = str(tmp_path / "resumed.pt")
    train_in_process(monkeypatch, *SMALL_RUN, "--log-every", "10", "--steps", "10", "--out", out,
                     "--time-limit", "5")
    # stopped at step 5, between log rows
    assert torch.load(out, weights_only=True)["tally"]["since"] == 0
    capsys.readouterr()
    train_in_process(monkeypatch, *SMALL_RUN, "--log-every", "10", "--steps", "10", "--out", out,
                     "--resume")
    # 5 steps of batch 8 in 5 s, not 10 steps
    assert "step 10/10 | 8 samples/s" in capsys.readouterr().out


@harness
def test_train_resume_refuses_a_flag_that_would_change_the_run(monkeypatch, capsys, unbroken_40):
    before = unbroken_40.read_bytes()
    err = main_error(monkeypatch, capsys, "train.py", *SMALL_RUN, "--steps", "80",
                     "--out", str(unbroken_40), "--resume", "--beta", "2")
    assert "--beta 2.0" in err and unbroken_40.read_bytes() == before


@harness
def test_train_bf16_falls_back_to_fp32_where_it_is_slower(monkeypatch, capsys):
    assert runs.bf16_speedup(torch.device("cpu")) > 0  # the real measurement: a few ms
    config = {"bf16": True}
    monkeypatch.setattr(runs, "bf16_speedup", lambda device: 0.3)
    runs.settle_bf16(config, torch.device("cpu"))
    assert config == {"bf16": False, "bf16_slower": 3.33} and \
        "training in fp32" in capsys.readouterr().out
    config = {"bf16": True}
    monkeypatch.setattr(runs, "bf16_speedup", lambda device: 2.0)
    runs.settle_bf16(config, torch.device("cpu"))
    assert config == {"bf16": True}


@harness
def test_train_refuses_a_dsprites_npz_of_other_than_0_1_images(tmp_path):
    c = shapes.sample_factors(4, torch.Generator().manual_seed(0))
    latents = np.concatenate([np.zeros((4, 1), np.int64), c.numpy()], 1)
    images = shapes.render(c).squeeze(1).numpy()  # (4, 64, 64) in {0, 1}
    for name, imgs in (("floats", images * 0.9), ("bytes", (images * 255).astype(np.uint8))):
        np.savez(tmp_path / f"{name}.npz", imgs=imgs, latents_classes=latents)
        with pytest.raises(ValueError, match="0 or 1"):
            shapes.make_source({"dataset": "dsprites", "data": str(tmp_path / f"{name}.npz")},
                               torch.device("cpu"))
    np.save(tmp_path / "imgs.npy", images)
    with pytest.raises(ValueError, match="not an npz"):
        shapes.make_source({"dataset": "dsprites", "data": str(tmp_path / "imgs.npy")},
                           torch.device("cpu"))


# ---------------------------------------------------------------- train.py: the protocol (A.4),
#                                                                  stacked replicas

def replica_config(beta: float, seed: int, *flags: str) -> dict:
    args = train.build_parser().parse_args(["--batch-size", "8", "--seed", str(seed), *flags])
    args.beta = beta
    return train.make_config(args)


@harness
@pytest.mark.parametrize("optimizer", [("--optimizer", "adagrad", "--lr", "1e-2"),
                                       ("--optimizer", "adam", "--lr", "1e-3")])
def test_stacked_replicas_step_as_separate_runs_do(optimizer):
    configs = [replica_config(beta, seed, *optimizer)
               for beta, seed in ((4.0, 0), (1.0, 1), (4.0, 2))]
    # 8 steps: by 20, float rounding grown through Adagrad's ±lr first steps moves β = 1's weights
    # by up to 5 % of their norm (measured; replica 0 stays within 0.2 %), too far for a test to
    # tell from a bug.
    steps = 8
    with torch.random.fork_rng(devices=[]):
        together_trainer = stacked.StackedTrainer([train.Trainer(c, torch.device("cpu"))
                                                   for c in configs])
        together = [together_trainer.step() for _ in range(steps)]  # [step][replica]
        lone_states = []
        for r, config in enumerate(configs):  # one after another: each lone run owns the global RNG
            trainer = train.Trainer(config, torch.device("cpu"))
            for step in range(steps):
                alone = trainer.step()
                for k in ("loss", "recon", "kl"):
                    assert torch.allclose(together[step][r][k], alone[k], rtol=1e-3), (step, r, k)
            # its noise generator's state too, before the next run's
            lone_states.append(trainer.state())
    assert alone["kl"] > 0.1  # the latents are in use: a real comparison, not of zeros

    def near(a: torch.Tensor, b: torch.Tensor) -> bool:
        # Float rounding can flip the sign of a near-zero gradient, and Adagrad's first steps move
        # every weight by ±lr whatever its gradient's size: compare whole tensors, not elements.
        return (a - b).norm() <= 1e-3 * b.norm()

    for r, lone in enumerate(lone_states):
        state = stacked.Replica(together_trainer, r).state()
        for k, v in lone["model"].items():
            assert near(state["model"][k], v), k
        for i, moments in lone["optimizer"]["state"].items():
            for k, v in moments.items():
                assert near(state["optimizer"]["state"][i][k], v), (i, k)
        assert torch.equal(state["rng"]["data"], lone["rng"]["data"])
        # the noise generator's state
        assert torch.equal(state["rng"]["torch"], lone["rng"]["torch"])


STACKED = ("--batch-size", "8", "--log-every", "3", "--save-every", "1000", "--threads", "1",
           "--device", "cpu", "--beta", "1", "4", "--seeds", "0", "--stack", "yes")


@harness
def test_stacked_replicas_stopped_by_sigterm_resume_exactly_and_read_as_lone_checkpoints(
        tmp_path, monkeypatch):
    train_in_process(monkeypatch, *STACKED, "--steps", "12", "--out", str(tmp_path / "unbroken"))
    stepped = stacked.StackedTrainer.step

    def sigterm_at_step_5(self):
        parts = stepped(self)
        if self.step_count == 5:
            os.kill(os.getpid(), signal.SIGTERM)  # a cluster stopping the job
        return parts

    monkeypatch.setattr(stacked.StackedTrainer, "step", sigterm_at_step_5)
    with pytest.raises(SystemExit) as stop:
        train_in_process(monkeypatch, *STACKED, "--steps", "12", "--out", str(tmp_path / "stopped"))
    assert stop.value.code == 128 + signal.SIGTERM
    monkeypatch.setattr(stacked.StackedTrainer, "step", stepped)
    assert torch.load(tmp_path / "stopped" / "b4_s0.pt", weights_only=True)["step"] == 5
    train_in_process(monkeypatch, *STACKED, "--steps", "12", "--out", str(tmp_path / "stopped"),
                     "--resume")
    for name in ("b1_s0", "b4_s0"):
        assert_same_run(tmp_path / "stopped" / f"{name}.pt", tmp_path / "unbroken" / f"{name}.pt")
    # ordinary checkpoints: the model loads alone, a lone run resumes it, baselines.py labels
    # them by β
    net, config = model.load_checkpoint(str(tmp_path / "unbroken" / "b4_s0.pt"))
    assert config["beta"] == 4.0 and config["seed"] == 0
    train_in_process(monkeypatch, "--out", str(tmp_path / "unbroken" / "b1_s0.pt"), "--resume",
                     "--steps", "13", "--threads", "1")
    rows = baselines.checkpoint_rows([str(p) for p in sorted((tmp_path / "unbroken").glob("*.pt"))],
                                     torch.device("cpu"), 8192)
    assert [row.label for row in rows] == ["VAE (β = 1)", "β-VAE (β = 4)"]


@harness
def test_the_protocol_runs_one_replica_after_another_on_a_cpu(tmp_path, monkeypatch, capsys):
    train_in_process(monkeypatch, *STACKED[:-2], "--seeds", "0,1", "--beta", "4", "--steps", "3",
                     "--arch", "conv", "--out", str(tmp_path / "p"))
    out = capsys.readouterr().out
    assert "2 replicas" in out and "one after another on cpu" in out
    assert sorted(p.name for p in (tmp_path / "p").glob("*.pt")) == ["b4_s0.pt", "b4_s1.pt"]
    assert sweep.seeds_arg("0-2,5") == [0, 1, 2, 5]
    for bad in ("x", "3-1", "0,0", "-1"):
        with pytest.raises(argparse.ArgumentTypeError):
            sweep.seeds_arg(bad)
    main_error(monkeypatch, capsys, "train.py", *STACKED, "--steps", "3", "--arch", "conv",
               "--out", str(tmp_path / "c"))


GRID = ("--beta-norm", "0.01", "0.1", "--latents", "3", "5", "--seeds", "0,1")


@harness
def test_a_grid_has_one_order_and_its_replica_index_trains_the_same_model(tmp_path, monkeypatch,
                                                                          capsys):
    args = train.build_parser().parse_args([*GRID, "--out", "g"])
    grid = sweep.replicas(args)  # β_norm outermost, then M, then the seed
    assert [(r["beta_norm"], r["latents"], r["seed"]) for r in grid] == [
        (b, m, s) for b in (0.01, 0.1) for m in (3, 5) for s in (0, 1)]
    names = [Path(sweep.replica_path("g", r, grid)).name for r in grid]
    assert names[:3] == ["bn0.01_m3_s0.pt", "bn0.01_m3_s1.pt", "bn0.01_m5_s0.pt"]
    assert len(set(names)) == 8
    protocol = train.build_parser().parse_args(["--beta", "1", "4", "--seeds", "0-1"])
    assert [Path(sweep.replica_path("g", r, sweep.replicas(protocol))).name
            for r in sweep.replicas(protocol)] == ["b1_s0.pt", "b1_s1.pt", "b4_s0.pt", "b4_s1.pt"]
    train_in_process(monkeypatch, *GRID, "--out", str(tmp_path / "g"), "--list")
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == 8 and listed[5].split()[:2] == ["5", str(tmp_path / "g" / names[5])]
    assert "β_norm 0.1, M 3, seed 1" in listed[5] and not (tmp_path / "g").exists()
    tiny = ("--steps", "2", "--log-every", "1", "--batch-size", "4", "--threads", "1",
            "--device", "cpu")
    train_in_process(monkeypatch, *GRID, *tiny, "--out", str(tmp_path / "g"), "--replica-index", "5")
    assert [p.name for p in (tmp_path / "g").glob("*.pt")] == [names[5]]
    config = torch.load(tmp_path / "g" / names[5], weights_only=True)["config"]
    assert (config["beta_norm"], config["latents"], config["seed"]) == (0.1, 3, 1)
    assert config["beta"] == pytest.approx(0.1 * 4096 / 3)  # A.6: β = β_norm·N/M
    train_in_process(monkeypatch, "--beta-norm", "0.1", "--latents", "3", "--seed", "1", *tiny,
                     "--out", str(tmp_path / "alone.pt"))
    alone = torch.load(tmp_path / "alone.pt", weights_only=True)["model"]
    task = torch.load(tmp_path / "g" / names[5], weights_only=True)["model"]
    assert all(torch.equal(alone[k], task[k]) for k in alone)  # task 5 is that lone run
    err = main_error(monkeypatch, capsys, "train.py", *GRID, *tiny, "--out", str(tmp_path / "g"),
                     "--replica-index", "8")
    assert "replicas 0 to 7" in err
    err = main_error(monkeypatch, capsys, "train.py", *GRID, "--replica-index", "-1")
    assert "replica index" in err
    err = main_error(monkeypatch, capsys, "train.py", *GRID, "--beta", "4", "--list")
    assert "not both" in err


@harness
def test_train_on_a_subset_of_the_world_keeps_it_in_the_config(tmp_path, monkeypatch, capsys):
    tiny = ("--steps", "2", "--log-every", "1", "--batch-size", "4", "--threads", "1",
            "--device", "cpu")
    train_in_process(monkeypatch, "--subsample", "posX=::2", "posY=:24", *tiny,
                     "--out", str(tmp_path / "s.pt"))
    ckpt = torch.load(tmp_path / "s.pt", weights_only=True)
    assert ckpt["config"]["subsample"] == ["posX=::2", "posY=:24"]
    assert isinstance(train.Trainer(ckpt["config"], torch.device("cpu")).source,
                      shapes.SubsetShapes)
    err = main_error(monkeypatch, capsys, "train.py", "--subsample", "posX=2", *tiny,
                     "--out", str(tmp_path / "bad.pt"))
    assert "expected factor=start:stop:step" in err
    err = main_error(monkeypatch, capsys, "train.py", "--subsample", "posX=::2", "--dataset",
                     "dsprites", "--data", str(REAL_SAMPLE), *tiny, "--out", str(tmp_path / "d.pt"))
    assert "needs --dataset shapes" in err


@harness
def test_the_job_array_script_runs_task_i_as_replica_i_of_the_grid(tmp_path):
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "6", "SWEEP_DRY_RUN": "1",
           "SLURM_SUBMIT_DIR": str(HERE)}
    out = str(tmp_path / "g")
    result = subprocess.run(["bash", "sweep.sbatch", *GRID, "--out", out], cwd=HERE, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    trains, scores = result.stdout.splitlines()
    assert trains.endswith(f"--out {out} --replica-index 6 --threads 1 --resume")
    assert scores == f"python metric.py {out}/bn0.1_m5_s0.pt --threads 1"  # replica 6 of 0-7
    result = subprocess.run(["bash", "sweep.sbatch", *GRID, "--out", out], cwd=HERE,
                            env={**env, "SLURM_ARRAY_TASK_ID": "8"}, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 1 and "task 8 is not in the grid" in result.stderr


def slurm_cluster_answers() -> bool:
    """Whether a Slurm cluster is up here (sinfo lists an idle or mixed node): CI has none."""
    if shutil.which("sinfo") is None:
        return False
    result = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True)
    return result.returncode == 0 and any(s in result.stdout for s in ("idle", "mix"))


@harness
@pytest.mark.skipif(not slurm_cluster_answers(), reason="no Slurm cluster answers here")
def test_a_slurm_job_array_trains_each_replica_of_the_grid(tmp_path):
    grid = ("--beta-norm", "0.01", "--latents", "3", "5", "7", "--steps", "2", "--batch-size", "4",
            "--log-every", "1", "--out", str(tmp_path / "g"))
    submit = subprocess.run(["sbatch", "--parsable", "--wait", "--array=0-2",
                             f"--output={tmp_path}/slurm-%a.out", "sweep.sbatch", *grid],
                            cwd=HERE, env={**os.environ, "SWEEP_SCORE": "0"}, capture_output=True,
                            text=True, timeout=600)
    assert submit.returncode == 0, submit.stderr
    for i, m in enumerate((3, 5, 7)):
        config = torch.load(tmp_path / "g" / f"bn0.01_m{m}_s0.pt", weights_only=True)["config"]
        assert config["latents"] == m and config["steps"] == 2, (tmp_path / f"slurm-{i}.out")


@harness
def test_gpu_check_script_dry_run_on_a_cpu(tmp_path, monkeypatch):
    check = tmp_path / "check"  # one replica, 2 steps: the script's every stage
    # Encoding all 737,280 images would be most of a minute here (test_encode_all_* covers it): the
    # replica's codes are cached beforehand, under the digest of the weights the script is about to
    # train, from a twin.
    twin = tmp_path / "twin.pt"
    train_in_process(monkeypatch, "--beta", "4", "--seed", "0", "--steps", "2", "--device", "cpu",
                     "--out", str(twin))
    twin_model = metric.load_shapes_model(str(twin), torch.device("cpu"))
    (check / "fig6").mkdir(parents=True)
    torch.save({"weights_sha256": metric.weights_digest(twin_model),
                "codes": torch.rand(shapes.N_IMAGES, 10)},
               metric.codes_path(str(check / "fig6" / "b4_s0.pt")))
    env = {**os.environ, "DEVICE": "cpu", "BETAS": "4", "SEEDS": "0", "STEPS": "2", "BUDGET": "600",
           "SCORE_SECONDS": "0"}
    result = subprocess.run(["bash", "gpu_check.sh", str(check)], cwd=HERE, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:]
    replica = torch.load(check / "fig6" / "b4_s0.pt", weights_only=True)["model"]
    assert all(torch.equal(replica[k], v) for k, v in twin_model.state_dict().items()), \
        "the cached codes went unread"
    table = (check / "table.md").read_text().splitlines()
    assert len(table) == 3 and table[2].startswith("| β = 4 | 1 | 2 |") and \
        table[2].endswith("| 99.23 ± 0.1 |")
    assert (check / "figures_best_b4_s0" / "traversal.png").exists()
    assert (check / "figures_best_b4_s0" / "response_maps.png").exists()
    assert (check / "b4_s0.csv").exists() and "done in" in (check / "gpu_check.log").read_text()


# ---------------------------------------------------------------- metric.py

@harness
def test_encode_all_rows_follow_deepmind_order_and_report_progress(monkeypatch):
    monkeypatch.setattr(metric, "PROGRESS_SECONDS", 0.0)  # a line after every batch
    lines = []
    # pixel count
    codes = metric.encode_all(lambda x: x.flatten(1).sum(1, keepdim=True), batch_size=65536,
                              progress=lines.append)
    assert codes.shape == (shapes.N_IMAGES, 1)
    assert len(lines) == 12 and lines[0].startswith("encoded 65,536 of 737,280 images (")
    assert lines[-1].startswith("encoded 737,280 of 737,280 images (") and lines[-1].endswith(" s)")
    index = torch.tensor([0, 1, 12345, 737279])
    assert torch.equal(codes[index, 0],
                       shapes.render(shapes.index_to_classes(index)).sum((1, 2, 3)))


def shapes_checkpoint(path: Path, arch: str = "fc", **config) -> Path:
    """An untrained model saved as train.py saves one (without optimizer state): enough for loading.

    The fc model has 5 latents, so that the ground truth (5 factors) stands for its codes in a
    cache."""
    net = model.BetaVAE(arch, 5 if arch == "fc" else None, channels=config.get("channels", 1))
    torch.save({"model": net.state_dict(),
                "config": {"arch": arch, "latents": net.latents, "channels": 1,
                           "dataset": "shapes", "beta": 4.0, **config}}, path)
    return path


def fake_encode_all(calls: list, codes: torch.Tensor):
    """metric.encode_all without the encoding: counts its calls, returns `codes`."""
    def encode_all(encode, device=None, batch_size=8192, progress=None):
        calls.append(encode)
        return codes
    return encode_all


@harness
def test_checkpoint_codes_are_cached_beside_it_and_rebuilt_when_its_weights_change(
        tmp_path, monkeypatch, ground_truth):
    calls = []
    monkeypatch.setattr(metric, "encode_all", fake_encode_all(calls, ground_truth))
    net = model.BetaVAE("conv", channels=1, latents=5)
    ckpt = tmp_path / "run.pt"  # the cache is tied to the weights, so the file itself is not read
    lines = []
    codes = metric.checkpoint_codes(str(ckpt), net, progress=lines.append)
    cache = tmp_path / "run.codes.pt"
    assert calls and torch.equal(codes, ground_truth) and cache.exists() and \
        metric.codes_path(str(ckpt)) == cache
    assert "encoding all 737,280 images" in lines[0]
    saved = torch.load(cache, weights_only=True)
    assert saved["weights_sha256"] == metric.weights_digest(net) and \
        torch.equal(saved["codes"], ground_truth)
    assert torch.equal(metric.checkpoint_codes(str(ckpt), net, progress=lines.append), ground_truth)
    assert len(calls) == 1 and "read from" in lines[-1]  # the second time: from the cache
    with torch.no_grad():
        next(net.parameters())[0].add_(1)  # other weights: encoded again, and the cache replaced
    metric.checkpoint_codes(str(ckpt), net)
    assert len(calls) == 2 and \
        torch.load(cache, weights_only=True)["weights_sha256"] == metric.weights_digest(net)
    cache.write_bytes(b"PK\x03\x04 truncated")  # a corrupt cache is encoded again, not an error
    metric.checkpoint_codes(str(ckpt), net, progress=lines.append)
    assert len(calls) == 3 and "unreadable" in " ".join(lines)
    before = cache.stat().st_mtime_ns
    metric.checkpoint_codes(str(ckpt), net, cache=False)  # --no-cache: neither read nor written
    assert len(calls) == 4 and cache.stat().st_mtime_ns == before
    unwritable = tmp_path / "file"
    unwritable.write_text("a file, not a folder")
    lines.clear()
    assert torch.equal(metric.checkpoint_codes(str(unwritable / "run.pt"), net,
                                               progress=lines.append), ground_truth)
    assert "not cached" in lines[-1]


@harness
def test_metric_cli_scores_a_checkpoint_from_its_cache_in_context_and_rejects_bad_input(
        tmp_path, monkeypatch, capsys, ground_truth):
    out = shapes_checkpoint(tmp_path / "m.pt")
    net, _ = model.load_checkpoint(str(out))
    # the cache of ground-truth codes: the CLI reads it, encoding nothing
    with monkeypatch.context() as patch:
        patch.setattr(metric, "encode_all", fake_encode_all([], ground_truth))
        metric.checkpoint_codes(str(out), net)
    result = run_cli("metric.py", str(out), "--n-train", "500", "--n-test", "200",
                     "--classifier-steps", "100", "--device", "cpu", "--threads", "1")
    first, settings = result.stdout.splitlines()[:2]
    assert first.startswith("metric.py: scoring 1 checkpoint(s) on cpu, 1 CPU threads") and \
        "L=16" in settings
    assert "read from" in result.stdout and "disentanglement score 100.00%" in result.stdout
    assert "β-VAE (β = 4) 99.23" in result.stdout and \
        "this code at L = 16: VAE untrained 47.93" in result.stdout
    for path in ("missing.pt", "junk.pt"):
        (tmp_path / "junk.pt").write_text("junk")
        main_error(monkeypatch, capsys, "metric.py", str(tmp_path / path), "--device", "cpu")
    conv = tmp_path / "conv.pt"  # a model of an image folder
    torch.save({"model": model.BetaVAE("conv", channels=1).state_dict(),
                "config": {"arch": "conv", "latents": 32, "channels": 1, "dataset": "folder"}},
               conv)
    assert "not of 2D shapes" in main_error(monkeypatch, capsys, "metric.py", str(conv),
                                            "--device", "cpu")


@harness
def test_metric_in_context_names_the_papers_rows_and_ours_at_the_same_L():
    assert metric.PAPER["β-VAE (β = 4)"] == (99.23, 0.1) and baselines.PAPER is metric.PAPER
    line = metric.in_context(16, metric.PAPER_FACTORS)
    assert all(f"{label} {metric.PAPER[label][0]:g}" in line for label in metric.IN_CONTEXT)
    assert "L = 16: VAE untrained 47.93, raw pixels 40.58, PCA 88.04" in line
    assert "L = 64: VAE untrained 69.76" in metric.in_context(64, metric.PAPER_FACTORS)
    # none measured at 8
    assert "python baselines.py --table --L 8" in metric.in_context(8, metric.PAPER_FACTORS)
    # the rows are of four factors
    assert "do not apply" in metric.in_context(16, (0,) + metric.PAPER_FACTORS)


@harness
def test_metric_dlib_applies_disentanglement_libs_settings_to_every_metric(
        tmp_path, monkeypatch, capsys, ground_truth):
    # MIG from 10,000 images, entropies from them too
    assert metric.mig(ground_truth, n_images=10000) > 0.8
    assert metric.mig(torch.cat([ground_truth, ground_truth], 1),
                      n_images=10000) == pytest.approx(0, abs=1e-6)
    # every std 0.02: kept relative to the largest, below dlib's 0.05
    small = ground_truth / ground_truth.std(0) * 0.02
    assert metric.factor_vae_score(small, n_train=2000, n_test=1000) >= 0.99
    assert abs(metric.factor_vae_score(small, n_train=2000, n_test=1000, dlib=True) - 0.2) < 0.05
    ckpt = shapes_checkpoint(tmp_path / "d.pt", arch="conv")
    monkeypatch.setattr(metric, "encode_all", fake_encode_all([], ground_truth))
    monkeypatch.setattr(sys, "argv", ["metric.py", str(ckpt), "--dlib", "--n-train", "500",
                                      "--n-test", "200", "--classifier-steps", "100",
                                      "--device", "cpu"])
    metric.main()
    out = capsys.readouterr().out
    assert "settings (disentanglement_lib's): L=64" in out and "factors shape, scale" in out
    assert "MIG" in out and "(10,000 images)" in out and "pruned below std 0.05" in out
    assert "do not apply" in out  # the paper's rows are of four factors
    main_error(monkeypatch, capsys, "metric.py", str(ckpt), "--dlib", "--L", "16",
               "--device", "cpu")


@harness
def test_metric_cli_copied_with_the_files_its_docstring_names_scores_codes(tmp_path):
    for name in ("metric.py", "shapes.py", "model.py", "loss.py", "runs.py", "replicas.py"):
        (tmp_path / name).write_text((HERE / name).read_text())
    script = ("import sys, torch, metric, shapes\n"
              "codes = shapes.index_to_classes(torch.arange(shapes.N_IMAGES)).float()\n"
              "print(metric.disentanglement_score(codes, n_train=500, n_test=200, steps=100))\n"
              "sys.argv = ['metric.py', 'ckpt.pt']\n"
              "metric.main()\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                            text=True, timeout=600, env={**os.environ, "PYTHONPATH": ""})
    assert float(result.stdout.split()[0]) >= 0.99, result.stderr
    assert_one_line_error(result)
    assert "no such checkpoint" in result.stderr


@harness
def test_metric_refuses_a_checkpoint_with_nan_weights_at_load(tmp_path, monkeypatch, capsys):
    err = main_error(monkeypatch, capsys, "metric.py", str(nan_checkpoint(tmp_path / "nan.pt")),
                     "--device", "cpu")
    assert "NaN" in err


def latents_checkpoint(path: Path, logvar_bias: float) -> Path:
    """An untrained fc model of 5 latents, saved as train.py saves one; every latent active (mean KL
    about 1 nat) with logvar_bias -3, none with 0."""
    torch.manual_seed(0)
    net = model.BetaVAE("fc", latents=5)
    with torch.no_grad():
        net.encoder[-1].bias[5:] = logvar_bias
    torch.save({"model": net.state_dict(),
                "config": {"arch": "fc", "latents": 5, "channels": 1, "dataset": "shapes",
                           "beta": 4.0, "likelihood": "bernoulli"}}, path)
    return path


def test_flip_noise_changes_nothing_at_0_inverts_at_1_and_flips_p_of_the_pixels():
    index = torch.arange(0, shapes.N_IMAGES, 5003)  # (148,)
    count = lambda x: x.flatten(1).sum(1, keepdim=True)  # noqa: E731  pixels on
    clean = metric.rendered_codes(count)(index)
    assert torch.equal(metric.rendered_codes(metric.flip_noise(count, 0.0))(index), clean)
    assert torch.equal(metric.rendered_codes(metric.flip_noise(count, 1.0))(index), 4096 - clean)
    noisy = metric.rendered_codes(metric.flip_noise(count, 0.1))(index)
    expected = clean + 0.1 * (4096 - 2 * clean)  # 10 % of the off pixels on, of the on ones off
    assert (noisy - expected).abs().mean() < 30 and not torch.equal(noisy, expected)
    net = model.BetaVAE("fc").eval()  # a module with encode(): its mean, unchanged at p = 0
    x = shapes.render(shapes.index_to_classes(index[:16]))
    assert torch.allclose(metric.flip_noise(net, 0.0)(x), net.encode(x)[0], atol=1e-5)


@harness
def test_metric_cli_scores_at_several_L_under_noise_and_writes_a_table(tmp_path, monkeypatch,
                                                                       capsys, ground_truth):
    calls = []
    monkeypatch.setattr(metric, "encode_all", fake_encode_all(calls, ground_truth))
    ckpt, table = latents_checkpoint(tmp_path / "m.pt", -3.0), tmp_path / "t.csv"
    monkeypatch.setattr(sys, "argv", ["metric.py", str(ckpt), str(ckpt), "--L", "4", "8",
                                      "--flip-noise", "0.05", "--csv", str(table), "--n-train",
                                      "500", "--n-test", "200", "--probe-images", "64",
                                      "--device", "cpu"])
    metric.main()
    out = capsys.readouterr().out
    assert "with probability 0.05 (not cached)" in out and not (tmp_path / "m.codes.pt").exists()
    assert "disentanglement score at L = 4" in out and "A.4 protocol at L = 8 over 2" in out
    with torch.no_grad():  # the encoder read flips pixels
        assert not torch.equal(calls[0](torch.zeros(64, 1, 64, 64)),
                               calls[0](torch.zeros(64, 1, 64, 64)))  # fresh noise each call
    rows = list(csv.DictReader(open(table)))
    assert len(rows) == 2 and float(rows[0]["score_L8"]) > 0.9  # its codes: the ground truth
    assert rows[0]["latents"] == "5" and rows[0]["active"] == "5" and rows[0]["flip_noise"] == "0.05"
    assert float(rows[0]["kl"]) > 1 and float(rows[0]["recon"]) > 0
    for bad in ("1.5", "-0.1", "x"):
        err = main_error(monkeypatch, capsys, "metric.py", str(ckpt), "--flip-noise", bad)
        assert "--flip-noise" in err


@harness
def test_metric_cli_latents_and_rotate_print_the_view_and_the_sweep_and_reject_a_bad_pair(
        tmp_path, monkeypatch, capsys, ground_truth):
    # its codes: the ground truth
    monkeypatch.setattr(metric, "encode_all", fake_encode_all([], ground_truth))
    small = ["--n-train", "500", "--n-test", "200", "--classifier-steps", "100",
             "--probe-images", "64", "--device", "cpu"]
    ckpt = latents_checkpoint(tmp_path / "m.pt", -3.0)
    table = tmp_path / "t.csv"
    monkeypatch.setattr(metric, "BEST_ANGLE_STEPS", (45, 45))  # 0° and 45° only: fast
    monkeypatch.setattr(sys, "argv", ["metric.py", str(ckpt), "--latents", "--rotate",
                                      "--best-angle", "--csv", str(table), *small])
    metric.main()
    out = capsys.readouterr().out
    # aligned already: the best turn is none, chosen at the seed after the one scored
    assert "turned by the θ that scores best at classifier seed 1" in out
    assert "L = 16: turned by 0° (0.0° from the axes)" in out
    row = next(csv.DictReader(open(table)))
    assert row["best_theta_L16"] == "0" and float(row["angle"]) < 0.1
    assert float(row["best_score_L16"]) == pytest.approx(float(row["score_L16"]))
    assert "active latents 5 of 5" in out and "follows      purity" in out
    rows = [line.split() for line in out.splitlines() if line.startswith("       3  ")]
    assert rows and rows[0][-2:] == ["posX", "1.00"]  # latent 3 follows posX alone
    assert "latents 3 and 4 (most position information; the more posX one first), 0.0° from" in out
    assert "MIG 0.902" in out
    assert "latents 3 and 4 turned by θ" in out
    sweep = [line.split() for line in out.splitlines()
             if line.lstrip().startswith(("0°", "45°", "90°"))]
    assert [row[0] for row in sweep] == ["0°", "45°", "90°"] and \
        [row[6] for row in sweep] == ["0.0°", "45.0°", "0.0°"]
    for bad, why in [(["--rotate", "1"], "two different latents"),
                     (["--rotate", "2", "2"], "two different latents"),
                     (["--rotate", "0", "5"], "has latents 0 to 4")]:
        assert why in main_error(monkeypatch, capsys, "metric.py", str(ckpt), *bad, *small)
    # untrained: no latent active, so no position pair
    quiet = latents_checkpoint(tmp_path / "q.pt", 0.0)
    assert "fewer than two active latents" in main_error(monkeypatch, capsys, "metric.py",
                                                         str(quiet), "--rotate", *small)
    # while --best-angle over many checkpoints scores a collapsed one as it is
    monkeypatch.setattr(sys, "argv", ["metric.py", str(quiet), str(ckpt), "--best-angle",
                                      "--seeds", "1", "--csv", str(table), *small])
    metric.main()
    assert "q.pt: fewer than two active latents, no position pair to turn" in \
        capsys.readouterr().out
    rows = list(csv.DictReader(open(table)))
    assert [r["best_theta_L16"] for r in rows] == ["", "0"]
    assert rows[0]["best_score_L16"] == rows[0]["score_L16"]
    # on a part of the world: the pairs, the view and the angle read its images alone
    monkeypatch.setattr(sys, "argv", ["metric.py", str(ckpt), "--subsample", "posY=:16",
                                      "--latents", "--best-angle", "--csv", str(table), *small])
    metric.main()
    out = capsys.readouterr().out
    assert "pairs from the part posY=:16 (368,640 images)" in out
    # MIG rises from the whole world's 0.902: posY's 16 values there fill 16 of the 20 bins
    assert "over the 368,640 of the part scored" in out and "MIG 0.932 (the part scored)" in out
    row = next(csv.DictReader(open(table)))
    assert row["scored_on"] == "posY=:16" and float(row["score_L16"]) > 0.9
    for bad, why in [(["--table2"], "--table2 reads the whole world"),
                     (["--rotate"], "--rotate reads the whole world"), ([], "posY=16")]:
        spec = "posY=16" if not bad else "posY=:16"
        assert why in main_error(monkeypatch, capsys, "metric.py", str(ckpt), "--subsample", spec,
                                 *bad, *small)


# One test for three CLIs, here with the first: metric.py, traverse.py and baselines.py refuse the
# same bad --device and counts.
@harness
@pytest.mark.parametrize("script, args", [
    ("metric.py", ["unread.pt", "--device", "cuda:99"]),
    ("metric.py", ["unread.pt", "--seeds", "0"]),
    ("metric.py", ["unread.pt", "--seeds", "-1"]),
    ("metric.py", ["unread.pt", "--threads", "0"]),
    ("traverse.py", ["unread.pt", "--device", "cuda:99"]),
    ("traverse.py", ["unread.pt", "--threads", "-1"]),
    ("baselines.py", ["--train", "dcign", "--device", "cuda:99"]),
    ("baselines.py", ["--train", "dcign", "--threads", "0"]),
])
def test_metric_traverse_baselines_refuse_a_missing_device_and_bad_counts_in_one_line(
        tmp_path, monkeypatch, capsys, script, args):
    monkeypatch.chdir(tmp_path)
    main_error(monkeypatch, capsys, script, *args)


# ---------------------------------------------------------------- traverse.py

@pytest.fixture(scope="module")
def traverse_checkpoint(tmp_path_factory) -> Path:
    """A 20-step fc model: the figures need a checkpoint, not a good one."""
    out = tmp_path_factory.mktemp("traverse") / "tiny.pt"
    run_cli("train.py", "--steps", "20", "--batch-size", "16", "--threads", "1",
            "--log-every", "10", "--out", str(out), "--device", "cpu")
    return out


@harness
def test_traverse_cli_writes_the_traversals_beside_the_checkpoint(traverse_checkpoint):
    result = run_cli("traverse.py", str(traverse_checkpoint), "--only", "traversal", "--steps", "5",
                     "--device", "cpu")
    assert "latents by mean KL" in result.stdout
    folder = traverse_checkpoint.parent / "tiny_figures"
    assert sorted(p.name for p in folder.iterdir()) == ["traversal.gif", "traversal.png"]
    G, C, L = traverse.GAP, traverse.CELL, traverse.LINE
    # one block per shape, 10 latent rows by 5 positions; row labels left of the first block only
    width = traverse.LABEL_WIDTH + 3 * (G + 5 * C) + 2 * traverse.SPACE
    assert Image.open(folder / "traversal.png").size == (width, 2 * L + G + 10 * C)
    gif = Image.open(folder / "traversal.gif")
    assert gif.n_frames == 2 * 5 - 2  # there and back
    assert gif.size == (traverse.LABEL_WIDTH + G + 3 * C, 2 * L + G + 10 * C)


@harness
def test_traverse_folder_model_draws_every_figure_but_the_maps(tmp_path):
    folder = image_folder(tmp_path, (70, 80))
    ckpt = tmp_path / "conv.pt"
    run_cli("train.py", "--dataset", "folder", "--data", str(folder), "--latents", "4",
            "--steps", "5", "--batch-size", "4", "--threads", "1", "--out", str(ckpt),
            "--device", "cpu")
    out = tmp_path / "figs"
    result = run_cli("traverse.py", str(ckpt), "--seeds", "2", "--steps", "3", "--out", str(out),
                     "--device", "cpu")
    assert "response maps: skipped" in result.stdout and "explorer.html: skipped" in result.stdout
    G, C, L, W = traverse.GAP, traverse.CELL, traverse.LINE, traverse.LABEL_WIDTH
    sizes = {p.name: Image.open(p).size for p in out.iterdir()}
    assert sizes == {"traversal.png": (W + 2 * (G + 3 * C) + traverse.SPACE, 2 * L + G + 4 * C),
                     "traversal.gif": (W + G + 2 * C, 2 * L + G + 4 * C),
                     "samples.png": (G + 8 * C, L + G + 8 * C),
                     "reconstructions.png": (W + G + 8 * C, G + 2 * C)}
    assert Image.open(out / "samples.png").mode == "RGB"


@harness
def test_traverse_maps_read_the_cached_codes_and_every_figure_says_when_it_is_written(
        tmp_path, monkeypatch, capsys, ground_truth):
    ckpt = shapes_checkpoint(tmp_path / "m.pt")
    calls = []
    monkeypatch.setattr(metric, "encode_all", fake_encode_all(calls, ground_truth))
    for run in range(2):
        traverse.figures(traverse.build_parser().parse_args(
            [str(ckpt), "--only", "maps", "--out", str(tmp_path / "figs"), "--device", "cpu"]))
        out = capsys.readouterr().out.splitlines()
        assert out[0].startswith("traverse.py: maps of ") and "CPU threads, into " in out[0]
        assert any(line.startswith("wrote response_maps.png (") for line in out)
        assert ("read from" in "\n".join(out)) == (run == 1) and len(calls) == 1  # encoded once
    assert (tmp_path / "m.codes.pt").exists() and (tmp_path / "figs" / "response_maps.png").exists()
    traverse.figures(traverse.build_parser().parse_args(
        [str(ckpt), "--only", "maps", "--out", str(tmp_path / "figs"), "--device", "cpu",
         "--no-cache"]))
    assert len(calls) == 2


@harness
def test_traverse_learning_curves_draw_each_log_and_reject_logs_without_scores(tmp_path,
                                                                            monkeypatch, capsys):
    log = tmp_path / "b4.csv"
    log.write_text("step,samples,seconds,loss,score\n250,64000,60.0,150.0,1.0\n"
                   "500,128000,120.0,140.0,\n750,192000,600.0,130.0,1.0\n")
    assert traverse.read_scores(str(log)) == ([1.0, 10.0], [100.0, 100.0])
    assert traverse.read_scores(str(log), "images") == (pytest.approx([0.064, 0.192]),
                                                        [100.0, 100.0])
    traverse.learning_curves([str(log)], tmp_path / "by_images.png", x="images")
    assert Image.open(tmp_path / "by_images.png").size[0] > 0
    out = tmp_path / "curves.png"
    run_cli("traverse.py", "--curves", f"β = 4={log}", "--out", str(out))
    pixels = np.asarray(Image.open(out).convert("RGB"))
    top = 2 * traverse.LINE  # a score of 100 % is drawn on the box's top edge
    blue = (pixels[top - 2:top + 3] == traverse.CURVE_COLOURS[0]).all(-1)
    # the legend sits right of x = 366
    assert blue.any() and not (pixels[top + 20:-3 * traverse.LINE]
                               == traverse.CURVE_COLOURS[0]).all(-1)[:, :300].any()
    # a curve through the legend's corner moves the legend right of the box, not over the curve
    low = tmp_path / "low.csv"
    low.write_text("step,samples,seconds,loss,score\n250,64000,60.0,150.0,0.3\n"
                   "750,192000,600.0,130.0,0.3\n")
    traverse.learning_curves([f"near chance={low}"], tmp_path / "low.png")
    wide = np.asarray(Image.open(tmp_path / "low.png").convert("RGB"))
    blue = (wide == traverse.CURVE_COLOURS[0]).all(-1)
    box_right = 56 + traverse.CURVE[0]
    assert wide.shape[1] > pixels.shape[1] and blue[:, box_right + 2:].any()
    assert not blue[:top + traverse.CURVE[1] - 40].any()  # the curve is low, the legend level
    bare = tmp_path / "bare.csv"
    bare.write_text("step,samples,seconds,loss\n250,64000,60.0,150.0\n")
    assert_one_line_error(run_cli("traverse.py", "--curves", str(bare), check=False))
    for args in (["--curves", str(tmp_path / "missing.csv")], []):
        main_error(monkeypatch, capsys, "traverse.py", *args)


@harness
@pytest.mark.parametrize("args", [
    ("MISSING",),
    ("CORRUPT",),
    ("CKPT", "--out", "FILE/figs"),  # a folder under a file: cannot be made
    # a file's name: the folder would surprise (--curves' --out is a file)
    ("CKPT", "--out", "FIGS.png"),
])
def test_traverse_bad_input_is_one_line(tmp_path, traverse_checkpoint, args):
    (tmp_path / "corrupt.pt").write_bytes(b"PK\x03\x04 truncated")
    (tmp_path / "file").write_text("not a folder")
    paths = {"MISSING": tmp_path / "missing.pt", "CORRUPT": tmp_path / "corrupt.pt",
             "CKPT": traverse_checkpoint, "FILE/figs": tmp_path / "file" / "figs",
             "FIGS.png": tmp_path / "figs.png"}
    args = [str(paths.get(a, a)) for a in args]
    result = run_cli("traverse.py", *args, "--only", "samples", "--device", "cpu", check=False)
    assert_one_line_error(result)
    assert result.stderr.startswith("traverse.py: error:") and not (tmp_path / "figs.png").exists()


@harness
def test_traverse_refuses_nan_weights_and_a_log_without_seconds(tmp_path, monkeypatch, capsys):
    err = main_error(monkeypatch, capsys, "traverse.py", str(nan_checkpoint(tmp_path / "nan.pt")),
                     "--device", "cpu")
    assert "NaN" in err and not (tmp_path / "nan_figures").exists()
    log = tmp_path / "other.csv"
    log.write_text("step,score\n10,0.5\n")
    assert "seconds" in main_error(monkeypatch, capsys, "traverse.py", "--curves", str(log),
                                   "--out", str(tmp_path / "c.png"))


@harness
def test_traverse_needs_two_steps_and_a_seed(capsys):
    with pytest.raises(runs.UsageError, match="from 2"):
        traverse.figures(traverse.build_parser().parse_args(["unread.pt", "--steps", "1"]))
    with pytest.raises(SystemExit):
        traverse.build_parser().parse_args(["unread.pt", "--seeds", "0"])
    assert "--seeds: 0: it must be positive" in capsys.readouterr().err


CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(CHROMIUM is None,
                                    reason="no chromium on PATH: the explorer's browser tests "
                                           "need it (apt-get install chromium; .ci/run does)")


def browser_dump(page: Path, fragment: str, tmp_path: Path) -> tuple[dict, str]:
    """Open `page` in headless Chromium with the URL fragment `fragment`: the JSON its dump hook
    wrote into the page, and the page's whole DOM."""
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    result = subprocess.run([CHROMIUM, *flags, f"--user-data-dir={tmp_path / 'chromium'}",
                             "--dump-dom", f"{page.as_uri()}#{fragment}"],
                            capture_output=True, text=True, timeout=120)
    dump = re.search(r'<pre id="dump"[^>]*>(.+?)</pre>', result.stdout, re.S)
    assert dump, f"the page wrote no dump; chromium said: {result.stderr[-2000:]}"
    return json.loads(html.unescape(dump[1])), result.stdout


@harness
def test_traverse_quantise_rows_moves_no_weight_by_more_than_half_a_step():
    weight = (torch.randn(5, 300, generator=torch.Generator().manual_seed(0))
              * torch.tensor([[1], [1e-3], [50], [0], [1]]))
    q, scale = traverse.quantise_rows(weight)
    assert q.dtype == torch.int8 and scale.dtype == torch.float32
    assert ((q * scale[:, None] - weight).abs() <= scale[:, None] / 2 * (1 + 1e-6)).all()
    # each row's largest weight on the grid's end
    assert q.abs().amax(1).tolist() == [127, 127, 127, 0, 127]


def grid_model() -> model.BetaVAE:
    """A seeded fc model whose decoder weights lie on the explorer's int8 grid: the page's copy of
    the decoder is the model's own, so any difference in what it draws is the page's doing."""
    torch.manual_seed(0)
    net = model.BetaVAE("fc").eval()
    with torch.no_grad():
        for layer in net.decoder:
            if isinstance(layer, torch.nn.Linear):
                q, scale = traverse.quantise_rows(layer.weight)
                layer.weight.copy_(q * scale[:, None])
    return net


@harness
@needs_chromium
def test_traverse_explorer_draws_in_a_browser_what_pytorch_decodes(tmp_path):
    net = grid_model()
    seeds, names = traverse.explorer_seeds({"dataset": "shapes"}, shapes.Shapes(),
                                           torch.Generator())
    kl = torch.rand(10, generator=torch.Generator().manual_seed(0))
    page = tmp_path / "explorer.html"
    traverse.write_explorer(page, net, kl, traverse.slider_labels(kl), seeds, names, "grid model")
    # exact in the URL
    z = torch.tensor([[0.5, -1, 1.25, -2.5, 0.75, 2, -0.25, 3, -3, 1.5]], dtype=torch.float64)
    dump, _ = browser_dump(page, f"z={','.join(f'{v:g}' for v in z[0].tolist())}&dump", tmp_path)
    with torch.no_grad():
        p = torch.sigmoid(net.double().decode(z)).flatten()
    decoded = torch.tensor(dump["p"], dtype=torch.float64)  # what the page's decoder gave
    drawn = torch.tensor(dump["pixels"], dtype=torch.float64) / 255  # what its canvas holds
    # the code drew a picture, not a flat grey
    assert dump["z"] == z[0].tolist() and p.max() - p.min() > 0.1
    # Tolerances. The weights lie on the int8 grid (grid_model), so quantisation loses nothing; the
    # page sums in float64 as PyTorch does here, its weights q · scale and the model's float32
    # copies of them a float32 rounding (2^-24 relatively) apart: p within 1e-5 (measured: 5e-9).
    # The canvas holds 255 p rounded to a byte: within 0.5/255 of p.
    assert (decoded - p).abs().max() <= 1e-5, (decoded - p).abs().max()
    assert (drawn - p).abs().max() <= 0.5 / 255 + 1e-5, (drawn - p).abs().max()


@harness
@needs_chromium
def test_traverse_html_writes_an_explorer_whose_seed_buttons_set_the_sliders_to_their_mu(
        tmp_path, capsys, traverse_checkpoint):
    traverse.figures(traverse.build_parser().parse_args([str(traverse_checkpoint), "--html",
                                                         "--out", str(tmp_path),
                                                         "--device", "cpu"]))
    assert "wrote explorer.html" in capsys.readouterr().out
    page = tmp_path / "explorer.html"
    assert [p.name for p in tmp_path.iterdir()] == ["explorer.html"] and page.stat().st_size <= 16e6
    # the fifth button: an ellipse, small, top left
    dump, dom = browser_dump(page, "seed=4&dump", tmp_path)
    ellipse = shapes.render(torch.tensor([[1, 0, 0, 6, 6]]))
    net, _ = model.load_checkpoint(str(traverse_checkpoint))
    with torch.no_grad():
        mu = net.encode(ellipse)[0][0].double()
    assert torch.allclose(torch.tensor(dump["z"], dtype=torch.float64), mu, atol=1e-5)
    assert torch.allclose(torch.tensor(dump["sliders"], dtype=torch.float64), mu.clamp(-3, 3),
                          atol=1e-5)
    original = Image.open(io.BytesIO(base64.b64decode(
        dump["original"].split(",", 1)[1]))).convert("L")
    assert np.array_equal(np.asarray(original) / 255, ellipse[0, 0].numpy())
    labels = re.findall(r'<label class="slider[^"]*">z\d+ +(\S+)(?: [\d.]+)? +KL ([-\d.]+) nats', dom)
    kl = [float(k) for _, k in labels]
    # a slider per latent, the most KL first, each labelled with the factor it follows
    assert len(kl) == 10 and kl == sorted(kl, reverse=True)
    assert {f for f, k in labels if float(k) > 0.1} <= set(shapes.FACTOR_NAMES)
    assert all(f == "inactive" for f, k in labels if float(k) <= 0.1)


# ---------------------------------------------------------------- baselines.py

@harness
def test_baselines_table_formats_ours_beside_the_paper():
    text = baselines.format_table([("PCA", [0.8, 0.9]), ("mine", [0.5])], markdown=True)
    lines = text.splitlines()
    assert lines[0].startswith("| representation") and lines[1] == "| --- | --- | --- | --- |"
    assert lines[2] == "| PCA | 85.00 ± 5.00 | 84.9 ± 0.4 | +0.10 |"
    assert lines[3] == "| mine | 50.00 ± 0.00 | — | — |"
    assert baselines.checkpoint_label({"beta": 4.0}) == "β-VAE (β = 4)" in baselines.PAPER
    assert baselines.checkpoint_label({"beta": 1.0}) == "VAE (β = 1)" in baselines.PAPER
    assert traverse.split_checkpoint("β-VAE (β = 4)=runs/a.pt") == ("β-VAE (β = 4)",
                                                                    "runs/a.pt")


@harness
def test_baselines_checkpoints_are_labelled_by_beta_and_grouped_as_replicas(
        tmp_path, monkeypatch, ground_truth):
    for name, beta in (("a", 4.0), ("b", 1.0), ("c", 1.0)):
        # 5 latents: the ground truth stands for their codes
        shapes_checkpoint(tmp_path / f"{name}.pt", beta=beta)
    specs = [str(tmp_path / "a.pt"), str(tmp_path / "b.pt"), f"mine={tmp_path / 'c.pt'}",
             str(tmp_path / "a.pt")]
    calls = []
    monkeypatch.setattr(metric, "encode_all", fake_encode_all(calls, ground_truth))  # no encoding
    rows = baselines.checkpoint_rows(specs, torch.device("cpu"), 8192)  # codes are not computed yet
    assert [row.label for row in rows] == ["β-VAE (β = 4)", "VAE (β = 1)", "mine"] and not calls
    assert [len(list(row.codes())) for row in rows] == [2, 1, 1]
    # through metric's cache: a.pt, given twice, is encoded once; a second table encodes nothing
    assert len(calls) == 3 and all((tmp_path / f"{name}.codes.pt").exists() for name in "abc")
    assert [len(list(row.codes())) for row in rows] == [2, 1, 1] and len(calls) == 3
    rows = baselines.checkpoint_rows(specs[:1], torch.device("cpu"), 8192, cache=False)
    assert len(list(rows[0].codes())) == 1 and len(calls) == 4


@harness
def test_baselines_cli_table_and_bad_input(tmp_path, monkeypatch, capsys):
    # on a busy machine L-BFGS's small dot products crawl on 2 threads
    result = run_cli("baselines.py", "--table", "--rows", "pixels,gt", "--L", "8", "2",
                     "--n-train", "300", "--n-test", "100", "--seeds", "2",
                     "--classifier-steps", "50", "--device", "cpu", "--table2", "--a4",
                     "--threads", "1")
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["representation", "ours", "(%)"] and "paper (%)" in lines[0]
    assert lines[1].startswith("ground truth") and " 100 " in lines[1]
    assert lines[2].startswith("raw pixels") and "45.75 ± 0.8" in lines[2]  # in the paper's order
    assert "raw pixels, L = 8:" in result.stderr  # progress
    # one table per L, each followed by its settings, then Table 2
    settings = [line for line in lines if line.startswith("Metric: L = ")]
    assert [s.split(",")[0] for s in settings] == ["Metric: L = 8", "Metric: L = 2"] and \
        "(A.4)" in settings[0]
    assert sum(line.startswith("raw pixels") for line in lines) == 3 and \
        "Table 2 (A.5)" in result.stdout
    conv = tmp_path / "faces.pt"  # a model of other images
    torch.save({"model": model.BetaVAE("conv", channels=3).state_dict(),
                "config": {"arch": "conv", "latents": 32, "channels": 3, "dataset": "folder"}},
               conv)
    for args in (["--rows", "gt,nope"], [str(tmp_path / "missing.pt")], [str(conv)]):
        assert main_error(monkeypatch, capsys, "baselines.py", "--table", "--rows", "gt",
                          *args).startswith("baselines.py: error:")


@harness
@pytest.mark.parametrize("name", ["dcign", "infogan"])
def test_baseline_training_smoke_run_writes_a_checkpoint_that_loads(tmp_path, monkeypatch, capsys,
                                                                    name):
    out = tmp_path / f"{name}.pt"
    small = ["--train-batch-size", "8", "--log-every", "5", "--threads", "1", "--device", "cpu",
             "--out", str(out)]
    result = run_cli("baselines.py", "--train", name, "--steps", "10", *small)
    assert "step 10/10" in result.stdout and out.exists()
    rows = (tmp_path / f"{name}.csv").read_text().splitlines()
    assert rows[0].startswith("step,samples,seconds,") and rows[-1].startswith("10,80,")
    net, label = baselines.load_representation(str(out), torch.device("cpu"))
    assert label == baselines.TRAINED[name].label
    x = shapes.render(shapes.sample_factors(4, torch.Generator().manual_seed(0)))
    assert net.encode(x)[0].shape == (4, 10 if name == "dcign" else baselines.INFOGAN_CODES)
    if name == "infogan":
        assert (tmp_path / "infogan_samples.png").exists()
        # the share of the last batch's samples that look like shapes, logged beside the losses
        log = list(csv.DictReader(open(tmp_path / "infogan.csv")))
        assert all(0 <= float(row["shape_like"]) <= 1 for row in log) and "shape-like" in \
            result.stdout
        # resuming restores both optimizers: 10 + 5 steps equal 15 unbroken ones
        baselines_in_process(monkeypatch, "--train", name, "--steps", "15", "--resume", *small)
        unbroken = tmp_path / "unbroken.pt"
        baselines_in_process(monkeypatch, "--train", name, "--steps", "15", *small[:-1],
                             str(unbroken))
        a, b = torch.load(out, weights_only=True), torch.load(unbroken, weights_only=True)
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
        refused = main_error(monkeypatch, capsys, "baselines.py", "--train", name, "--steps", "20",
                             "--resume", "--q-std", "fixed", "--out", str(out), "--device", "cpu")
        assert "--q-std fixed differs from its learned" in refused
        for flag, value, was in (("--lr-d", "0.002", "0.0002"), ("--train-batch-size", "16", "8")):
            refused = main_error(monkeypatch, capsys, "baselines.py", "--train", name, "--steps",
                                 "20", "--resume", flag, value, "--out", str(out))
            assert f"{flag} {value} differs from its {was}: leave {flag} out" in refused
    # not a β-VAE: pointed to baselines.py
    assert "baselines.py --table" in main_error(monkeypatch, capsys, "metric.py", str(out))
    if name == "dcign":  # its benchmark times both unpoolings in one run
        bench = run_cli("baselines.py", "--train", name, "--benchmark", *small[:4])
        assert "UnpoolConv2d" in bench.stdout and "nn.Upsample + nn.Conv2d" in bench.stdout
        assert re.search(r"the transposed unpooling is \d+\.\d\dx the plain one", bench.stdout)
        assert "give --train dcign" in main_error(monkeypatch, capsys, "baselines.py", "--benchmark")


@harness
def test_baseline_learning_curve_scores_rendered_images_at_reduced_settings(tmp_path, monkeypatch,
                                                                           capsys):
    # --eval-every's score is recorded, not computed (minutes): its settings and codes
    seen, index = [], torch.arange(0, shapes.N_IMAGES, 100_003)

    def score(codes, **settings):
        seen.append((codes(index), settings))
        return 0.25
    monkeypatch.setattr(metric, "disentanglement_score", score)
    monkeypatch.setattr(metric, "encode_all", None)  # never all 737,280 images
    out = tmp_path / "dcign.pt"
    baselines_in_process(monkeypatch, "--train", "dcign", "--steps", "10", "--train-batch-size",
                         "8", "--log-every", "5", "--eval-every", "10", "--device", "cpu",
                         "--out", str(out))
    assert [row["score"] for row in csv.DictReader(open(tmp_path / "dcign.csv"))] == ["", "0.2500"]
    (codes, settings), = seen
    settings.pop("progress")("  z_diff of 1,000 of 2,000 points (70 s)")  # the minutes report
    said = capsys.readouterr().out  # before the minutes, then within them
    assert 0 <= said.find("scoring: rendering and encoding") < said.find("scoring: z_diff of 1,0")
    assert settings == {"L": 16, "n_train": 2000, "n_test": 1000}
    # the codes of the images asked for, by the model as it was at step 10 (the checkpoint's)
    net, _ = baselines.load_representation(str(out), torch.device("cpu"))
    assert torch.allclose(codes, net.encode(shapes.render(shapes.index_to_classes(index)))[0])


@harness
def test_baseline_checkpoints_get_their_rows_and_bad_training_input_is_one_line(
        tmp_path, monkeypatch, capsys):
    for name in ("dcign", "infogan"):
        torch.save({"model": baselines.TRAINED[name].model({}).state_dict(),
                    "config": {"baseline": name}}, tmp_path / f"{name}.pt")
    rows = baselines.checkpoint_rows([str(tmp_path / "dcign.pt"), str(tmp_path / "infogan.pt")],
                                     torch.device("cpu"), 8192)
    assert [row.label for row in rows] == ["DC-IGN", "InfoGAN"] and \
        all(r in baselines.PAPER for r in ("DC-IGN", "InfoGAN"))
    bad = run_cli("baselines.py", "--train", "dcign", "--steps", "0", check=False)
    assert_one_line_error(bad)
    assert "baselines.py: error:" in bad.stderr
    for args in (["--train", "infogan", "--resume", "--out", str(tmp_path / "no.pt")],
                 ["--train", "infogan", "--resume", "--out", str(tmp_path / "dcign.pt")]):
        assert "baselines.py: error:" in main_error(monkeypatch, capsys, "baselines.py", *args)


# ---------------------------------------------------------------- runs.py: the audit's defects
#                                                                  (issue 22), and time-based saves

@harness
def test_a_codes_cache_that_cannot_be_written_still_gives_the_codes(tmp_path, monkeypatch,
                                                                    ground_truth):
    monkeypatch.setattr(metric, "encode_all",
                        lambda encode, device, batch_size, progress: ground_truth)

    def disk_full(obj, f):  # what torch.save raises on a full disk: RuntimeError, not OSError
        f.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64")

    monkeypatch.setattr(torch, "save", disk_full)
    lines = []
    codes = metric.checkpoint_codes(str(tmp_path / "c.pt"), model.BetaVAE("fc"), "cpu",
                                    progress=lines.append)
    assert codes is ground_truth and "not cached" in lines[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@harness
def test_a_codes_cache_of_the_right_weights_but_a_wrong_table_is_encoded_again(
        tmp_path, monkeypatch, ground_truth):
    net, calls = model.BetaVAE("fc"), []
    monkeypatch.setattr(
        metric, "encode_all",
        lambda encode, device, batch_size, progress: calls.append(1) or ground_truth)
    digest = metric.weights_digest(net)
    for bad in (ground_truth[:, :2], ground_truth.long(),
                torch.full_like(ground_truth, float("nan"))):
        torch.save({"weights_sha256": digest, "codes": bad}, tmp_path / "c.codes.pt")
        assert metric.checkpoint_codes(str(tmp_path / "c.pt"), net, "cpu") is ground_truth
    assert len(calls) == 3


@harness
def test_each_stacked_replica_checkpoint_holds_its_own_optimizer_state_alone():
    configs = [replica_config(4.0, seed, "--optimizer", "adam", "--lr", "1e-3")
               for seed in range(3)]
    trainer = stacked.StackedTrainer([train.Trainer(c, torch.device("cpu")) for c in configs])
    trainer.step()
    for state in stacked.Replica(trainer, 1).state()["optimizer"]["state"].values():
        for v in state.values():  # a view of the stacked tensor would save every replica's storage
            assert v.untyped_storage().nbytes() == v.numel() * v.element_size()


@harness
@pytest.mark.parametrize("config", ["not a dict", {"latents": 10}, {"arch": "fc", "latents": "10"}])
def test_a_checkpoint_with_a_bad_config_is_one_line_everywhere(tmp_path, monkeypatch, capsys,
                                                               config):
    path = tmp_path / "bad.pt"
    torch.save({"model": model.BetaVAE("fc").state_dict(), "config": config, "optimizer": {},
                "step": 1, "rng": {}}, path)
    with pytest.raises(model.CheckpointError):
        model.load_checkpoint(str(path))
    main_error(monkeypatch, capsys, "metric.py", str(path), "--device", "cpu")
    main_error(monkeypatch, capsys, "traverse.py", str(path), "--device", "cpu")
    main_error(monkeypatch, capsys, "baselines.py", "--table", "--rows", "gt", str(path),
               "--device", "cpu")
    main_error(monkeypatch, capsys, "train.py", "--resume", "--out", str(path), "--device", "cpu")


@harness
def test_learning_curves_of_a_long_run_draw_and_a_nan_time_is_one_line(tmp_path):
    long = tmp_path / "long.csv"
    # 50 hours
    long.write_text("step,samples,seconds,loss,score\n20000,1,3600.0,1,0.5\n"
                    "300000,2,180000.0,1,0.9\n")
    traverse.learning_curves([str(long)], tmp_path / "curves.png")
    assert Image.open(tmp_path / "curves.png").size[0] > 0
    bad = tmp_path / "nan.csv"
    bad.write_text("step,samples,seconds,loss,score\n10,1,nan,1,0.5\n")
    with pytest.raises(runs.UsageError, match="seconds"):
        traverse.read_scores(str(bad))


@harness
def test_traverse_refuses_a_sweep_too_long_to_draw(tmp_path, traverse_checkpoint, monkeypatch,
                                                   capsys):
    assert "--steps" in main_error(monkeypatch, capsys, "traverse.py", str(traverse_checkpoint),
                                   "--steps", "1000000", "--device", "cpu",
                                   "--out", str(tmp_path / "f"))


@harness
def test_an_out_name_too_long_for_the_file_system_is_refused_before_any_step(tmp_path):
    name = "a" * 245 + ".pt"  # its temp file, .<name>.XXXXXXXX.tmp, is over 255 bytes
    with pytest.raises(runs.UsageError, match="too long"):
        runs.check_out(str(tmp_path / name), False, False)


@harness
def test_taking_the_lock_removes_this_runs_stale_temp_files_alone(tmp_path):
    # of a.pt; of a.pt.b.pt
    mine, theirs = tmp_path / ".a.pt.x1y2z3w4.tmp", tmp_path / ".a.pt.b.pt.x1y2z3w4.tmp"
    mine.write_text("killed save")
    theirs.write_text("a save in flight")
    with runs.out_lock(str(tmp_path / "a.pt")):
        pass
    assert not mine.exists() and theirs.exists()


@harness
def test_checkpoints_fall_due_by_minutes_as_well_as_by_steps(tmp_path, monkeypatch):
    saved = []
    monkeypatch.setattr(runs, "save_checkpoint", lambda path, state: saved.append(state["step"]))
    config = train.make_config(train.build_parser().parse_args(
        ["--batch-size", "8", "--log-every", "2", "--save-every", "1000", "--save-minutes", "1e-9",
         "--steps", "4"]))
    assert config["save_minutes"] == 1e-9
    train.train(config, str(tmp_path / "m.pt"), torch.device("cpu"))
    assert saved == [1, 2, 3, 4]  # every step is over a nanominute; step 4 is the end's save


@harness
def test_the_cpu_protocol_ends_on_a_sigterm_that_lands_in_a_replicas_final_save(
        tmp_path, monkeypatch, capsys):
    real_save = runs.save_checkpoint

    # the scheduler's SIGTERM arrives while the first replica's last save runs
    def save_then_sigterm(path, state):
        signal.raise_signal(signal.SIGTERM)
        real_save(path, state)

    monkeypatch.setattr(runs, "save_checkpoint", save_then_sigterm)
    monkeypatch.setattr(sys, "argv", ["train.py", "--beta", "1", "4", "--seeds", "0",
                                      "--steps", "2", "--batch-size", "8", "--device", "cpu",
                                      "--out", str(tmp_path / "p")])
    with pytest.raises(SystemExit) as stop:
        train.main()
    assert stop.value.code == 143 and "--resume" in capsys.readouterr().err
    assert (tmp_path / "p" / "b1_s0.pt").exists() and not (tmp_path / "p" / "b4_s0.pt").exists()


@harness
def test_two_ctrl_c_during_a_save_stop_at_once_and_are_not_a_full_disk(tmp_path, monkeypatch,
                                                                       capsys):
    real_save = torch.save

    # torch.save turns a KeyboardInterrupt in its writer into a RuntimeError
    def interrupted_twice(obj, f):
        try:
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . "
                               "unexpected pos 64") from None
        real_save(obj, f)

    monkeypatch.setattr(torch, "save", interrupted_twice)
    config = train.make_config(train.build_parser().parse_args(
        ["--batch-size", "8", "--save-every", "2", "--steps", "4"]))
    with pytest.raises(SystemExit) as stop:
        train.train(config, str(tmp_path / "s.pt"), torch.device("cpu"))
    assert stop.value.code == 130 and "stopped at once" in capsys.readouterr().err


def hold_lock(out: str, start, holding, most, hold: float = 0.3) -> None:
    """A child process: wait for `start`, try to take the lock of `out`; while holding it, count
    itself in `holding` and keep in `most` the largest number of holders at once."""
    start.wait()
    try:
        with runs.out_lock(out):
            with holding.get_lock():
                holding.value += 1
                most.value = max(most.value, holding.value)
            time.sleep(hold)
            with holding.get_lock():
                holding.value -= 1
    except runs.UsageError:
        pass
    os._exit(0)


@harness
def test_two_runs_started_together_never_both_hold_the_lock_and_a_dead_runs_lock_file_never_blocks(
        tmp_path):
    import multiprocessing
    ctx = multiprocessing.get_context("fork")
    out = str(tmp_path / "race.pt")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True)
    locks = ["", "garbage", f"{os.getpid()} {socket.gethostname()}",
             f"{dead.stdout.strip()} {socket.gethostname()}"]
    # empty, garbled, a live (reused) PID, a dead run's: no flock held
    for trial, stale in enumerate(locks * 4):
        Path(f"{out}.lock").write_text(stale)
        start, holding, most = ctx.Event(), ctx.Value("i", 0), ctx.Value("i", 0)
        children = [ctx.Process(target=hold_lock, args=(out, start, holding, most))
                    for _ in range(4)]
        for child in children:
            child.start()
        start.set()
        for child in children:
            child.join()
        assert most.value == 1, (f"trial {trial}: {most.value} runs held the lock at once "
                                 f"(lock file {stale!r})")
    result = run_cli("train.py", "--steps", "1", "--batch-size", "8", "--device", "cpu",
                     "--out", out)
    assert "wrote" in result.stdout


@harness
@pytest.mark.parametrize("script", ["train.py", "metric.py", "traverse.py", "baselines.py",
                                    "shapes.py"])
def test_ctrl_c_while_a_script_starts_is_one_line(script):
    proc = subprocess.Popen([sys.executable, script, "--help"], cwd=HERE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)  # torch takes seconds to import: the signal lands in it
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in stderr and \
        len(stderr.strip().splitlines()) <= 1, stderr


@harness
def test_a_closed_stdout_never_costs_a_run_its_checkpoint(tmp_path):
    out = tmp_path / "piped.pt"
    proc = subprocess.Popen([sys.executable, "train.py", "--steps", "40", "--log-every", "1",
                             "--batch-size", "8", "--device", "cpu", "--out", str(out)], cwd=HERE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        proc.stdout.readline()  # as `| head -1`: one line read, then the reader goes
        proc.stdout.close()
        stderr = proc.stderr.read()
        assert proc.wait(timeout=120) == 0 and "Traceback" not in stderr, stderr
    finally:
        proc.kill()
    assert torch.load(out, weights_only=True)["step"] == 40


@harness
def test_baselines_resume_keeps_its_total_and_refuses_a_differing_flag(tmp_path, monkeypatch,
                                                                       capsys):
    out = str(tmp_path / "d.pt")
    train_flags = ("--train", "dcign", "--steps", "2", "--train-batch-size", "4",
                   "--log-every", "1", "--device", "cpu")
    monkeypatch.setattr(sys, "argv", ["baselines.py", *train_flags, "--out", out])
    baselines.main()
    monkeypatch.setattr(sys, "argv", ["baselines.py", "--train", "dcign", "--out", out, "--resume",
                                      "--device", "cpu"])
    baselines.main()  # no --steps: the checkpoint's 2, not the default 20,000
    assert torch.load(out, weights_only=True)["config"]["steps"] == 2
    err = main_error(monkeypatch, capsys, "baselines.py", "--train", "dcign", "--out", out,
                     "--resume", "--train-batch-size", "8", "--device", "cpu")
    assert "differs" in err


@harness
def test_a_log_without_a_checkpoint_is_no_run_to_refuse(tmp_path, monkeypatch, capsys):
    out = tmp_path / "failed.pt"
    # a run that failed before its first checkpoint
    (tmp_path / "failed.csv").write_text("step,samples\n")
    train_in_process(monkeypatch, "--steps", "1", "--batch-size", "8", "--device", "cpu",
                     "--out", str(out))
    assert "saved no checkpoint" in capsys.readouterr().out and out.exists()


@harness
def test_sigterm_to_the_npz_export_leaves_no_temp_file(tmp_path):
    proc = subprocess.Popen([sys.executable, "shapes.py", "--out", str(tmp_path / "all.npz")],
                            cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("rendering")  # the export has begun
        time.sleep(1)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()  # a failed assertion must not leave it exporting beside the other tests
    assert proc.returncode == 143 and "Traceback" not in stderr
    assert list(tmp_path.iterdir()) == []


@harness
def test_the_replica_figure_puts_each_beta_in_its_colour(tmp_path):
    path = tmp_path / "replicas.png"
    traverse.replica_figure([("β = 4", 2.0, 90.0), ("β = 4", 36.0, 62.0), ("β = 1", 30.0, 64.0)],
                            path)
    pixels = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3)
    first, second, third = ((pixels == colour).all(1).sum()
                            for colour in traverse.CURVE_COLOURS[:3])
    # two dots of ~50 pixels in the first, one in the second
    assert first > second + 40 and second > 40 and third == 0


def write_table(path: Path, rows: list[dict]) -> Path:
    """A table as metric.py --csv writes one."""
    fields = ["checkpoint", "beta", "beta_norm", "latents", "seed", "subsample", "flip_noise",
              "score_L16", "recon", "kl", "active"]
    fields = list(dict.fromkeys(fields + [k for row in rows for k in row]))  # --best-angle's too
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows({**{k: "" for k in fields}, **row} for row in rows)
    return path


@harness
def test_the_sweep_and_continuity_figures_draw_metric_py_tables(tmp_path):
    rows = [dict(checkpoint=f"g/bn{b:g}_m{m}_s{s}.pt", beta_norm=b, latents=m, seed=s,
                 flip_noise=0, score_L16=0.5 + 0.1 * s + b + m / 100, recon=100 + 1000 * b + m)
            for b in (0.001, 0.01, 0.1) for m in (5, 10) for s in (0, 1)]
    png = tmp_path / "sweep.png"
    traverse.sweep_figure(traverse.read_table([str(write_table(tmp_path / "g.csv", rows))]), png)
    pixels = np.asarray(Image.open(png).convert("RGB")).reshape(-1, 3)
    assert Image.open(png).width == 2 * (56 + traverse.CURVE[0] + 2 * traverse.SPACE) + traverse.SPACE
    assert all((pixels == colour).all(1).sum() > 100 for colour in traverse.CURVE_COLOURS[:2])
    parts = [dict(checkpoint=f"f/{name}.pt", subsample=spec, flip_noise=p, score_L16=score,
                  recon=100, latents=10)
             for name, spec, p, score in (("full", "", 0, 0.9), ("pos4", "posX=::4 posY=::4", 0, 0.7),
                                          ("full", "", 0.02, 0.85), ("full", "", 0.1, 0.6))]
    png = tmp_path / "fig8.png"
    traverse.continuity_figure(traverse.read_table([str(write_table(tmp_path / "f.csv", parts))]),
                               png)
    pixels = np.asarray(Image.open(png).convert("RGB")).reshape(-1, 3)
    assert all((pixels == colour).all(1).sum() > 50 for colour in traverse.CURVE_COLOURS[:2])
    for bad in (tmp_path / "missing.csv", write_table(tmp_path / "x.csv", [])):
        result = run_cli("traverse.py", "--sweep", str(bad), "--out", str(png), check=False)
        assert_one_line_error(result)
    # the alignment figure: two recipes' --best-angle tables, a collapsed replica left out, and a
    # --latents table scored on a part of the world (no turned scores: dots alone)
    recipes = [write_table(tmp_path / f"{name}.csv",
                           [dict(checkpoint=f"{name}/b4_s{s}.pt", latents=10, recon=100,
                                 score_L16=0.8, angle=angle, best_score_L16=0.9)
                            for s, angle in enumerate(angles)])
               for name, angles in (("plain", (3.0, 22.0, "")), ("capacity", (1.0, 44.0)))]
    recipes.append(write_table(tmp_path / "part.csv", [
        dict(checkpoint="part/b4_s0.pt", latents=10, recon=100, score_L16=0.7, angle=12.0,
             scored_on="posY=:16")]))
    png = tmp_path / "alignment.png"
    result = run_cli("traverse.py", "--alignment", f"CPU recipe={recipes[0]}", str(recipes[1]),
                     str(recipes[2]), "--out", str(png))
    assert "1 replica(s) without a position pair left out" in result.stdout
    pixels = np.asarray(Image.open(png).convert("RGB")).reshape(-1, 3)
    assert all((pixels == colour).all(1).sum() > 100 for colour in traverse.CURVE_COLOURS[:3])
    no_angle = run_cli("traverse.py", "--alignment", str(tmp_path / "g.csv"), "--out", str(png),
                       check=False)
    assert_one_line_error(no_angle)
    assert "metric.py --best-angle" in no_angle.stderr


@harness
def test_the_rotation_figure_draws_each_replicas_sweep_whose_score_drops_at_45_degrees(
        tmp_path, monkeypatch, ground_truth):
    # its codes: the ground truth
    monkeypatch.setattr(metric, "encode_all", fake_encode_all([], ground_truth))
    monkeypatch.setattr(replicas, "ROTATION_ANGLES", (0, 45, 90))
    ckpt = latents_checkpoint(tmp_path / "m.pt", -3.0)
    [(label, rows)] = traverse.rotation_sweeps([str(ckpt)], torch.device("cpu"), n_train=500,
                                               n_test=200, steps=100)
    assert label == "m, 0 deg" and [r["theta"] for r in rows] == [0, 45, 90]
    # posX and posY mixed: the metric drops
    assert rows[1]["score_L16"] < rows[0]["score_L16"] - 0.15
    # 90°: the pair swapped, read as well
    assert abs(rows[2]["score_L16"] - rows[0]["score_L16"]) < 0.05
    path = tmp_path / "rotation.png"
    lower = [{**r, "score_L16": r["score_L16"] - 0.2, "loss_turned": 1.01 * r["loss_turned"]}
             for r in rows]
    traverse.rotation_figure([(label, rows), ("n", lower)], path)
    image = Image.open(path)
    pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    assert image.width == 2 * (56 + traverse.CURVE[0] + 2 * traverse.SPACE) + traverse.SPACE
    assert all((pixels == colour).all(1).sum() > 100 for colour in traverse.CURVE_COLOURS[:2])
    result = run_cli("traverse.py", "--rotation", str(tmp_path / "missing.pt"), "--out", str(path),
                     check=False)
    assert_one_line_error(result)
    assert "no such checkpoint" in result.stderr
