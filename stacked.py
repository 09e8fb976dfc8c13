"""The A.4 protocol's replicas stepped together, and training speed
(Higgins et al., ICLR 2017, A.4).

A.4 scores 10 replicas per model. On a GPU one fc β-VAE at batch 64 is bound by kernel launches,
so R replicas stacked into one module (each Linear's weights as one (R, out, in) parameter) run
each layer as one batched matmul at little more than the cost of one model. Each replica starts
from the train.py `Trainer` that would run it alone (its weights, generators and optimizer), gets
the gradient of its own loss, and is saved as an ordinary train.py checkpoint, so stacked
replicas follow separate runs up to float rounding. On a CPU separate models are faster, so the
protocol stacks only on CUDA (train.py --stack). Also here: --benchmark, training samples/s beside
the machine's matmul rate. Needs model.py, loss.py, shapes.py, metric.py and runs.py beside it;
train.py's protocol and --benchmark call into this file with their Trainers, so it never
imports train.py.

    python train.py --beta 1 4 --seeds 0-9 --out runs/fig6    # stacked on CUDA, one after another on a CPU
    python train.py --benchmark                                # training samples/s
"""

import collections
import functools
import time
from collections.abc import Callable
from contextlib import ExitStack

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import loss as objective
import metric
import runs
import shapes
from model import BetaVAE
from runs import UsageError

BENCH_REPLICAS = 20  # the protocol's models (2 βs × 10 replicas, A.4), for --benchmark


class StackedVAE(nn.Module):
    """R Table 1 fc β-VAEs as one module: each Linear's weight (out, in) and bias become one
    parameter of shape (R, out, in) and (R, 1, out), in the order of BetaVAE.parameters().

    On a GPU one fc model at batch 64 is bound by kernel launches; R stacked models run each
    layer as one batched matmul and cost little more than one. On a CPU it is slower than R
    separate models (the README's measurements), so the protocol stacks only on CUDA.
    """

    def __init__(self, models: list[BetaVAE]):
        super().__init__()
        self.latents = models[0].latents
        # encoder.1.weight, encoder.1.bias, ...
        self.names = [name for name, _ in models[0].named_parameters()]
        self.shapes = [p.shape for p in models[0].parameters()]
        stacked = [torch.stack([p.detach() for p in ps])
                   for ps in zip(*(m.parameters() for m in models))]
        self.params = nn.ParameterList([p if p.dim() == 3 else p[:, None, :] for p in stacked])
        self.encoder_layers = sum(name.startswith("encoder") for name in self.names) // 2

    def layers(self, h: torch.Tensor, first: int, last: int, activation) -> torch.Tensor:
        for k in range(first, last):
            weight, bias = self.params[2 * k], self.params[2 * k + 1]
            # (R, B, out) = b + h W^T for each replica
            h = torch.baddbmm(bias, h, weight.transpose(1, 2))
            if k < last - 1:
                h = activation(h)
        return h

    def forward(self, x: torch.Tensor, noise: list[torch.Generator]) -> tuple[torch.Tensor, ...]:
        """x (R, B, 4096) -> logits (R, B, 4096), mu, logvar (R, B, M); replica r's ε from
        noise[r]."""
        mu, logvar = self.layers(x, 0, self.encoder_layers, torch.relu).chunk(2, dim=-1)
        eps = torch.stack([torch.randn(mu.shape[1:], generator=g, dtype=mu.dtype, device=mu.device)
                           for g in noise])
        z = mu + eps * (0.5 * logvar).exp()  # z = mu + sigma * eps, as BetaVAE.forward
        return self.layers(z, self.encoder_layers, len(self.params) // 2, torch.tanh), mu, logvar

    def replica_state(self, r: int) -> dict[str, torch.Tensor]:
        """Replica r's weights as a BetaVAE state_dict."""
        return {name: p[r].detach().reshape(shape).clone()
                for name, shape, p in zip(self.names, self.shapes, self.params)}


class StackedTrainer:
    """The replicas of the protocol, one recipe with its own β and seed each, stepped together.

    Each replica starts as `Trainer` would start it alone (the same initial weights, batches and
    noise from its seed) and its gradient is its own loss's, so R stacked replicas follow R
    separate runs up to float rounding (tested). Its optimizer state is its slice of the stacked
    optimizer's: Adagrad and Adam work element by element. On CUDA the whole set is rendered
    once into device memory (3 GB) and batches are looked up by index.
    """

    def __init__(self, lone: list):
        """`lone`: each replica's train.Trainer as it starts alone (weights, generators,
        optimizer)."""
        c = self.config = lone[0].config
        if c["dataset"] != "shapes" or c["arch"] != "fc" or c["capacity_max"] is not None:
            raise UsageError("stacked replicas train the fc model on --dataset shapes "
                             "without --capacity-max; give --stack no")
        self.configs, self.device, self.report = ([t.config for t in lone], lone[0].device,
                                                  lone[0].report)
        device = self.device
        self.noise = [t.noise for t in lone]
        self.cpu_state = [t.cpu_state for t in lone]
        self.data = [t.data_generator for t in lone]
        self.model = StackedVAE([t.model for t in lone]).to(device)
        first = lone[0].optimizer  # the same optimizer and settings, over the stacked parameters
        self.optimizer = type(first)(self.model.parameters(), **first.defaults)
        self.beta = torch.tensor([config["beta"] for config in self.configs], device=device)  # (R,)
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=c["bf16"])
        self.step_count = 0
        self.images = None
        if device.type == "cuda":
            print(f"rendering the {shapes.N_IMAGES:,} images into {device} memory once (3 GB)",
                  flush=True)
            self.images = torch.empty(shapes.N_IMAGES, 1, 64, 64, dtype=torch.uint8, device=device)
            for start in range(0, shapes.N_IMAGES, 65536):
                index = torch.arange(start, min(start + 65536, shapes.N_IMAGES), device=device)
                shapes.render(shapes.index_to_classes(index),
                              out=self.images[start:start + len(index)])

    def batch(self) -> torch.Tensor:
        """Each replica's batch, drawn from its own generator as Shapes.sample draws it:
        (R, B, 4096)."""
        B = self.config["batch_size"]
        index = torch.stack([torch.randint(shapes.N_IMAGES, (B,), generator=g)
                             for g in self.data])  # (R, B)
        if self.images is not None:
            return self.images[index.to(self.device)].flatten(2).float()
        # (R·B, 1, 64, 64)
        x = shapes.render(shapes.index_to_classes(index.flatten()).to(self.device))
        return x.view(len(self.configs), B, -1)

    def step(self) -> list[dict[str, torch.Tensor]]:
        """One gradient step of every replica; each replica's loss parts, detached."""
        x = self.batch()  # (R, B, 4096)
        with self.autocast:
            logits, mu, logvar = self.model(x, self.noise)
        # (R,)
        recon = objective.reconstruction_nll(logits.float().flatten(0, 1), x.flatten(0, 1),
                                             self.config["likelihood"]).view(x.shape[:2]).mean(1)
        kl_latent = objective.kl_per_latent(mu.float(), logvar.float()).mean(1)  # (R, M)
        loss = recon + self.beta * kl_latent.sum(1)  # (R,) Eq. 4, each replica with its own β
        self.optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()  # replica r's parameters get the gradient of its own loss alone
        self.optimizer.step()
        self.step_count += 1
        return [{"loss": loss[r].detach(), "recon": recon[r].detach(),
                 "kl": kl_latent[r].sum().detach(), "kl_per_latent": kl_latent[r].detach()}
                for r in range(len(self.configs))]


class Replica:
    """Replica r of a StackedTrainer as `Run` sees a trainer: its own checkpoint, in the format of a
    lone train.py run, so metric.py, traverse.py, baselines.py and --resume read it unchanged."""

    def __init__(self, stacked: StackedTrainer, r: int):
        self.stacked, self.r, self.config, self.device = (stacked, r, stacked.configs[r],
                                                          stacked.device)

    @property
    def step_count(self) -> int:
        return self.stacked.step_count

    @property
    def model(self) -> BetaVAE:
        net = BetaVAE(self.config["arch"], self.config["latents"], 1).to(self.stacked.device)
        net.load_state_dict(self.stacked.model.replica_state(self.r))
        return net

    def report(self, mean: dict[str, torch.Tensor]) -> tuple[str, dict[str, float]]:
        return self.stacked.report(mean)

    def state(self) -> dict:
        s, r = self.stacked, self.r
        stacked = s.optimizer.state_dict()
        optimizer = {"param_groups": stacked["param_groups"],
                     "state": {i: {k: v[r].reshape(s.model.shapes[i]).clone() if v.dim() else v
                                   for k, v in state.items()}
                               for i, state in stacked["state"].items()}}
        return {"model": s.model.replica_state(r), "optimizer": optimizer, "step": s.step_count,
                "rng": runs.rng_state(s.noise[r], s.data[r], s.cpu_state[r]), "config": self.config}

    def load_state(self, ckpt: dict) -> None:
        s, r = self.stacked, self.r
        with torch.no_grad():
            for p, name in zip(s.model.params, s.model.names):
                p[r] = ckpt["model"][name].reshape(p.shape[1:])
        stacked = s.optimizer.state_dict()
        for i, state in ckpt["optimizer"]["state"].items():
            into = stacked["state"].setdefault(i, {})
            for k, v in state.items():
                if v.dim():
                    into.setdefault(k, torch.zeros((len(s.configs), *s.model.params[i].shape[1:]),
                                                   dtype=v.dtype))
                    into[k][r] = v.reshape(s.model.params[i].shape[1:])
                else:
                    into[k] = v
        s.optimizer.load_state_dict(stacked)
        s.step_count = ckpt["step"]
        runs.set_rng_state(ckpt["rng"], s.noise[r], s.data[r])


def train_stacked(lone: list, outs: list[str], resume: bool,
                  time_limit: float | None = None) -> None:
    """train() for R replicas stepped together: a log and checkpoint each, one progress line for
    all. `lone`: each replica's train.Trainer as it starts alone."""
    stacked = StackedTrainer(lone)
    configs, device = stacked.configs, stacked.device
    total, log_every = configs[0]["steps"], configs[0]["log_every"]
    score = functools.partial(metric.training_score, device=device)
    # every replica's log open, saved on any stop
    with runs.Stop(time_limit) as stop, ExitStack() as opened:
        replicas = [opened.enter_context(runs.Run(stop, Replica(stacked, r), config, out, resume,
                                                  score, quiet=True))
                    for r, (config, out) in enumerate(zip(configs, outs))]
        if len({run.trainer.step_count for run in replicas}) > 1:
            raise UsageError("--resume of stacked replicas needs every checkpoint at one step; "
                             "give --stack no")
        interval = (time.perf_counter(), stacked.step_count)
        while stacked.step_count < total and not stop.requested():
            for run, parts in zip(replicas, stacked.step()):
                run.record(parts)
            if stacked.step_count % log_every == 0 or stacked.step_count == total:
                interval = protocol_line(replicas, interval)


def protocol_line(replicas: list[runs.Run], interval: tuple[float, int]) -> tuple[float, int]:
    """The stacked replicas' one progress line: samples/s in all and the mean loss of each β, since
    `interval` (time, step); returns the next interval's start."""
    step, total = replicas[0].trainer.step_count, replicas[0].config["steps"]
    samples = len(replicas) * replicas[0].config["batch_size"]
    rate = (step - interval[1]) * samples / (time.perf_counter() - interval[0])
    by_beta = collections.defaultdict(list)
    for run in replicas:
        by_beta[run.config["beta"]].append(run.last_mean["loss"].item())
    losses = ", ".join(f"β = {b:g}: loss {sum(v) / len(v):.2f}" for b, v in by_beta.items())
    print(f"step {step:,}/{total:,} | {len(replicas)} replicas, {rate:,.0f} samples/s in all | "
          f"{losses} | ETA {runs.format_seconds((total - step) * samples / rate)}", flush=True)
    return time.perf_counter(), step


def benchmark(config: dict, device: torch.device, trainer: Callable, seconds: float = 4.0) -> None:
    """Training samples/s, data included, beside the machine's matmul rate: one model at batch 64
    and 256, the protocol's stacked replicas, and the renderer. `trainer(config, device)` starts a
    lone run (train.Trainer)."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def rate(step_fn, batch_size: int) -> float:
        for _ in range(3):
            step_fn()
        sync()
        n, t = 0, time.perf_counter()
        while time.perf_counter() - t < seconds:
            step_fn()
            n += batch_size
        sync()
        return n / (time.perf_counter() - t)

    dtype = torch.bfloat16 if config["bf16"] else torch.float32
    a = torch.randn(2048, 2048, device=device, dtype=dtype)
    matmul = rate(lambda: a @ a, 1) * 2 * 2048 ** 3 / 1e9  # GFLOP/s
    print(f"device {device} ({runs.device_name(device)}), {torch.get_num_threads()} CPU threads, "
          f"torch {torch.__version__}, "
          f"{config['arch']} model, {'bf16 autocast' if config['bf16'] else 'fp32'}; "
          f"2048² matmul: {matmul:,.0f} GFLOP/s", flush=True)
    rates = {}
    for batch_size in (64, 256):
        lone = trainer({**config, "batch_size": batch_size}, device)
        with FlopCounterMode(display=False) as counter:
            lone.step()
        rates[batch_size] = rate(lone.step, batch_size)
        achieved = rates[batch_size] * counter.get_total_flops() / batch_size / 1e9
        print(f"batch {batch_size}: {rates[batch_size]:,.0f} samples/s with rendering | "
              f"{achieved:,.0f} GFLOP/s = {achieved / matmul:.0%} of matmul", flush=True)
    if config["arch"] == "fc":  # the protocol's stacked replicas, at the paper's batch
        stacked = StackedTrainer([trainer({**config, "batch_size": 64, "seed": r}, device)
                                  for r in range(BENCH_REPLICAS)])
        together = rate(stacked.step, 64 * BENCH_REPLICAS)
        print(f"{BENCH_REPLICAS} stacked replicas, batch 64: {together:,.0f} samples/s in all, "
              f"{together / BENCH_REPLICAS:,.0f} per replica; "
              f"{together / rates[64]:.1f}x one model's samples/s at batch 64", flush=True)
    classes = shapes.index_to_classes(torch.arange(4 * 65536, device=device))
    buffer = torch.empty(65536, 1, 64, 64, dtype=torch.uint8, device=device)
    images = rate(lambda: [shapes.render(c, out=buffer) for c in classes.split(65536)], 4 * 65536)
    print(f"renderer: {images:,.0f} images/s on {device} "
          f"(all {shapes.N_IMAGES:,} in {shapes.N_IMAGES / images:.1f} s)")
