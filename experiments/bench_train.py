"""End-to-end training throughput, jaxdl vs PyTorch, same data, same batches, same machine, same run.

    python -m experiments.bench_train [--arch resnet18] [--n 1024] [--batch-size 128] [--epochs 2]

Both frameworks train `arch` (random init, 10 classes) with SGD momentum on the same Loader batches of
generated 32x32 digits; each epoch's wall time includes the input pipeline. Epoch 1 of jaxdl includes XLA
compilation, so the steady-state figure is the last epoch. Prints a markdown table for BENCHMARKS.md, and the
rate of the input pipeline alone against the training rate (it must keep ahead of training).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import jax
import numpy as np
import torch
import torchvision
from flax import nnx

from jaxdl.data import Loader, dataset_mean_std, load
from jaxdl.models import create
from jaxdl.train import TrainConfig, Trainer


def torch_epochs(arch: str, loader: Loader, epochs: int, lr: float) -> list[float]:
    model = torchvision.models.get_model(arch, num_classes=10)
    model.train()
    sgd = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    times = []
    for epoch in range(epochs):
        start = time.perf_counter()
        for batch in loader.epoch(epoch):
            x = torch.from_numpy(batch["image"]).permute(0, 3, 1, 2).contiguous()
            sgd.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(x), torch.from_numpy(batch["label"]).long())
            loss.backward()
            sgd.step()
        times.append(time.perf_counter() - start)
    return times


def pipeline_rate(loader: Loader, epochs: int = 2) -> float:
    """Images per second the input pipeline alone delivers (augmentation, normalisation, batching)."""
    start = time.perf_counter()
    images = sum(len(batch["label"]) for epoch in range(epochs) for batch in loader.epoch(epoch))
    return images / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--n", type=int, default=1024, help="training images per epoch")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=2)
    args = p.parse_args()
    ds = load("synthetic", "train", n=args.n)
    mean, std = dataset_mean_std(ds)
    loader = Loader(ds, args.batch_size, train=True, mean=mean, std=std)
    images = len(loader) * args.batch_size
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=0.05, schedule="constant")
    trainer = Trainer(create(args.arch, 10, rngs=nnx.Rngs(0)), config, len(loader), progress=False)
    jax_times = [h["seconds"] for h in trainer.fit(loader)]
    torch_times = torch_epochs(args.arch, loader, args.epochs, 0.05)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible; "
          f"jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__} ({torch.get_num_threads()} threads)")
    print(f"{args.arch}, {images} images/epoch of 32x32, batch {args.batch_size}, SGD momentum\n")
    print("| framework | " + " | ".join(f"epoch {i + 1} s" for i in range(args.epochs)) + " | last-epoch img/s |")
    print("|---|" + "---|" * (args.epochs + 1))
    for name, times in (("jaxdl (JAX/Flax NNX)", jax_times), ("PyTorch", torch_times)):
        print(f"| {name} | " + " | ".join(f"{t:.1f}" for t in times) + f" | {images / times[-1]:.0f} |")
    print(f"\njaxdl / PyTorch last-epoch throughput: {torch_times[-1] / jax_times[-1]:.2f}x")
    rate = pipeline_rate(loader)
    print(f"input pipeline alone: {rate:.0f} img/s = {rate * jax_times[-1] / images:.1f}x jaxdl's training rate")


if __name__ == "__main__":
    main()
