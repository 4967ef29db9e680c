"""End-to-end training throughput, jaxdl vs PyTorch, same data, same batches, same weights, same machine, same run.

    python -m experiments.bench.train [--arch resnet18] [--n 1024] [--batch-size 128] [--epochs 2] [--json FILE]

Both frameworks train `arch` (random init, 10 classes; PyTorch's twin gets jaxdl's initial weights) with SGD
momentum on the same Loader batches of generated 32x32 digits; each epoch's wall time includes the input
pipeline. Epoch 1 of jaxdl includes XLA compilation, so the steady-state figure is the last epoch. Prints a
markdown table for BENCHMARKS.md, and the rate of the input pipeline alone (`jaxdl.data.throughput`) against
the training rate (it must keep ahead of training).
"""

from __future__ import annotations

import torch

from experiments.bench import harness, twins
from jaxdl import cli
from jaxdl.data import Loader, dataset_mean_std, load, throughput
from jaxdl.runtime import use_fast_cpu_flags
from jaxdl.train import TrainConfig, Trainer

MODULE = "experiments.bench.train"


def torch_epochs(net: torch.nn.Module, config: TrainConfig, loader: Loader) -> list[float]:
    """Seconds per epoch of PyTorch training `net` as `config` says (SGD with momentum, constant rate), eager,
    on NCHW copies of the loader's batches."""
    sgd = torch.optim.SGD(net.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    net.train()

    def epoch(index: int) -> None:
        for batch in loader.epoch(index):
            x = twins.torch_images(batch["image"]).contiguous()
            sgd.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(net(x), torch.from_numpy(batch["label"]).long()).backward()
            sgd.step()

    return [harness.timed(lambda: epoch(index)) for index in range(config.epochs)]


def main(argv: list[str] | None = None) -> None:
    use_fast_cpu_flags()
    p = harness.parser(MODULE, __doc__)
    p.add_argument("--arch", type=harness.arch, default="resnet18")
    p.add_argument("--n", type=cli.positive_int, default=1024, help="training images per epoch")
    p.add_argument("--batch-size", type=cli.positive_int, default=128)
    p.add_argument("--epochs", type=cli.positive_int, default=2)
    p.add_argument("--json", type=harness.output_file, help="also write the results here")
    args = p.parse_args(argv)
    ds = load("synthetic", "train", n=args.n)
    mean, std = dataset_mean_std(ds)
    loader = Loader(ds, args.batch_size, train=True, mean=mean, std=std)
    images = len(loader) * args.batch_size
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, optimizer="sgd", lr=0.05, schedule="constant")
    model = twins.create(args.arch)
    twin = twins.torch_twin(model)  # before training: the Trainer's donated steps free `model`'s buffers
    trainer = Trainer(model, config, len(loader), progress=False)
    jax_times = [h["seconds"] for h in trainer.fit(loader)]
    torch_times = torch_epochs(twin, config, loader)
    pipeline = throughput(loader, len(loader))
    header = harness.header(MODULE, argv)

    print(harness.describe(header["machine"]))
    print(f"{args.arch}, {images} images/epoch of 32x32, batch {args.batch_size}, SGD momentum\n")
    harness.print_header("framework", *(f"epoch {i + 1} s" for i in range(args.epochs)), "last-epoch img/s")
    for name, times in (("jaxdl (JAX/Flax NNX)", jax_times), ("PyTorch", torch_times)):
        harness.print_row(name, *(f"{t:.1f}" for t in times), f"{images / times[-1]:.0f}")
    print(f"\njaxdl / PyTorch last-epoch throughput: {torch_times[-1] / jax_times[-1]:.2f}x")
    print(f"input pipeline alone: {pipeline:.0f} img/s = {pipeline * jax_times[-1] / images:.1f}x jaxdl's training rate")
    if args.json:
        harness.write_json(args.json, header | {
            "arch": args.arch, "images_per_epoch": images, "batch_size": args.batch_size, "config": config.to_dict(),
            "jax_epoch_s": jax_times, "torch_epoch_s": torch_times, "pipeline_img_s": pipeline})


if __name__ == "__main__":
    harness.run(main, MODULE)
