"""SVHN digit classification with the zoo's models, fine-tuned from ImageNet weights or from scratch.

    python -m experiments.svhn --arch resnet18                 # what `make svhn` runs
    python -m experiments.svhn --arch lenet5,resnet18,vgg16 --data svhn --fraction 0.25 --epochs 5

Writes DIR/metrics.json, DIR/report.md, DIR/curves.png and DIR/confusion_<arch>.png and prints the comparison
table. Offline, `--data auto` falls back to generated digits and `--weights imagenet` to random weights, each
with one warning, and the report labels the results accordingly.

A run owns its --out directory (locked while it runs); a directory holding an earlier run is continued with
--resume (which refuses changed settings, naming each) or replaced with --overwrite, never silently. A killed
or interrupted run continues exactly with --resume; after a diverging loss, --resume-with-lr LR continues from
the last good checkpoint at a new learning rate, recorded in the history. Exit statuses (jaxdl.cli): 0 done,
1 the run failed (diverged, disk full, no good checkpoint), 2 a mistake in the arguments or files (one line on
stderr), 130 interrupted (with the command that continues it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from experiments.svhn import report
from jaxdl import cli, metrics
from jaxdl import data as jdata
from jaxdl import models as zoo
from jaxdl.cli import UsageError
from jaxdl.runtime import use_fast_cpu_flags
from jaxdl.train import (CheckpointCorrupt, CheckpointMismatch, Checkpoints, NonFiniteLoss, TrainConfig, Trainer,
                         initialize_distributed)
from jaxdl.train import cost, rundir
from jaxdl.train import mesh as make_mesh

# --data choices and the jaxdl.data source each one loads ("auto" is resolved at run time).
DATA = {"auto": "auto", "svhn": "svhn", "tfds": "tfds:svhn_cropped", "synthetic": "synthetic", "digits": "digits"}
# Generated data is unlimited; these sizes and DEFAULTS keep the default run (resnet18, random weights offline)
# to ~5 minutes on an idle 2-core CPU, and it reaches 96.5% test accuracy (BENCHMARKS.md). Measured in the same
# budget: one-cycle SGD at peak lr 0.05 22.6% (3 epochs; loss above chance early), AdamW 1e-3 65.8% (3 epochs),
# 92.2% (8 epochs), AdamW 2e-3 96.5% (10 epochs), all with AdamW's decoupled weight decay 0.05.
SYNTHETIC_SIZE = {"train": 6_000, "test": 2_000}
DEFAULTS = TrainConfig(epochs=10, batch_size=128, optimizer="adamw", lr=2e-3, momentum=0.9, weight_decay=0.05,
                       schedule="onecycle")
# The default weight decay of the optimizers that add it to the gradient as L2 (sgd, nesterov, adam): the usual
# SGD value. AdamW decays the weights directly, by lr * weight_decay per step, hence DEFAULTS' larger value.
L2_WEIGHT_DECAY = 5e-4
EVAL_BATCH = 256


PROG = "python -m experiments.svhn"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = cli.Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="resnet18", help="NAME[,NAME...] or 'all' (%s)" % ", ".join(zoo.names()))
    p.add_argument("--weights", default=None, help="imagenet | none | PATH (.safetensors or .pth); default: imagenet "
                                                     "for torchvision architectures, none for the others")
    p.add_argument("--data", default="auto", help="auto | svhn | tfds | synthetic | digits")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--fraction", type=cli.fraction, default=1.0, help="stratified share of the training set to use")
    p.add_argument("--epochs", type=cli.positive_int, default=DEFAULTS.epochs)
    p.add_argument("--batch-size", type=cli.positive_int, default=DEFAULTS.batch_size)
    p.add_argument("--lr", type=cli.positive_float, default=DEFAULTS.lr)
    p.add_argument("--optimizer", default=DEFAULTS.optimizer, help="sgd | nesterov | adamw")
    p.add_argument("--schedule", default=DEFAULTS.schedule, help="constant | cosine | onecycle")
    p.add_argument("--weight-decay", type=cli.natural_float, default=None,
                   help=f"default {DEFAULTS.weight_decay:g} (AdamW) or {L2_WEIGHT_DECAY:g} (SGD, Nesterov, Adam)")
    p.add_argument("--label-smoothing", type=cli.natural_float, default=0.0)
    p.add_argument("--mixed-precision", action="store_true", help="bfloat16 compute, float32 master weights")
    p.add_argument("--image-size", type=cli.positive_int, default=None,
                   help="resize inputs (default: native, 32 for SVHN)")
    p.add_argument("--seed", type=cli.natural_int, default=0)
    p.add_argument("--out", default="runs/svhn")
    p.add_argument("--resume", action="store_true", help="continue the run in --out (its checkpoints DIR/ckpt/<arch>)")
    p.add_argument("--resume-with-lr", type=cli.positive_float, metavar="LR",
                   help="continue from the last good checkpoint with this learning rate (e.g. after a diverging loss)")
    p.add_argument("--overwrite", action="store_true", help="replace the run that --out holds")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.resume_with_lr is not None:
        args.resume, args.lr = True, args.resume_with_lr
    if args.data not in DATA:
        raise UsageError(f"unknown --data {args.data!r}: choose one of {', '.join(DATA)}")
    if args.resume and args.overwrite:
        raise UsageError("--resume continues the run in --out and --overwrite replaces it: choose one")
    if args.data_dir is not None and Path(args.data_dir).exists() and not Path(args.data_dir).is_dir():
        raise UsageError(f"--data-dir {args.data_dir} is a file: name the directory that holds (or will hold) the data")
    return args


def archs(text: str) -> list[str]:
    chosen = zoo.names() if text == "all" else [a.strip() for a in text.split(",") if a.strip()]
    unknown = [a for a in chosen if a not in zoo.names()]
    if unknown or not chosen:
        raise UsageError(f"unknown architecture {', '.join(unknown) or repr(text)}: "
                         f"choose from {', '.join(zoo.names())} or all")
    return chosen


def train_config(args: argparse.Namespace) -> TrainConfig:
    wd = args.weight_decay
    if wd is None:
        wd = DEFAULTS.weight_decay if args.optimizer == DEFAULTS.optimizer else L2_WEIGHT_DECAY
    try:
        return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
                           momentum=DEFAULTS.momentum, weight_decay=wd, schedule=args.schedule,
                           label_smoothing=args.label_smoothing, mixed_precision=args.mixed_precision, seed=args.seed)
    except ValueError as e:
        raise UsageError(str(e)) from None


@dataclass
class Data:
    train: jdata.Dataset
    test: jdata.Dataset
    source: str


def load_data(args: argparse.Namespace) -> Data:
    with warnings.catch_warnings(record=True) as caught:  # reprinted as one line each, without source lines
        warnings.simplefilter("always")
        source = jdata.resolve(DATA[args.data], "svhn", args.data_dir)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    sizes = SYNTHETIC_SIZE if source == "synthetic" else {}
    try:
        train, test = (jdata.load(source, split, data_dir=args.data_dir, seed=args.seed,
                                  **({"n": sizes[split]} if sizes else {})) for split in ("train", "test"))
    except (jdata.DataUnavailable, jdata.DataCorrupt) as e:
        raise UsageError(str(e)) from None
    kept = int(args.fraction * len(train))  # what the stratified subset keeps (scikit-learn rounds down)
    if kept < max(args.batch_size, 10):
        raise UsageError(f"--fraction {args.fraction:g} leaves {kept} training images, fewer than one batch of "
                         f"{args.batch_size} (or one per class): raise --fraction or lower --batch-size")
    return Data(jdata.stratified_subset(train, args.fraction, args.seed), test, source)


@dataclass
class Weights:
    model: nnx.Module
    requested: str
    used: str
    note: str


def build_model(arch: str, weights: str | None, image_size: int, channels: int, seed: int) -> Weights:
    """The model to train and which weights it really starts from (the report must not overclaim)."""
    requested = weights or ("imagenet" if arch in zoo.TORCHVISION else "none")
    # the small models size their layers from the input; torchvision's adapt to any size
    options = {"image_size": image_size, "in_channels": channels} if arch not in zoo.TORCHVISION else {}
    if requested == "imagenet":
        if arch not in zoo.TORCHVISION:
            note = f"{arch} has no torchvision twin, so no ImageNet weights: random initialisation"
            print(f"warning: {note}", file=sys.stderr)
            return Weights(zoo.create(arch, 10, rngs=nnx.Rngs(seed), **options), requested, "random init", note)
        import convert

        try:
            return Weights(convert.pretrained(arch, 10, seed=seed), requested, "imagenet", "torchvision IMAGENET1K_V1")
        except convert.WeightsUnavailable as e:
            note = "ImageNet weights unavailable offline: random initialisation"
            print(f"warning: {e}; training {arch} from random initialisation", file=sys.stderr)
            return Weights(zoo.create(arch, 10, rngs=nnx.Rngs(seed), **options), requested, "random init", note)
    if requested == "none":
        return Weights(zoo.create(arch, 10, rngs=nnx.Rngs(seed), **options), requested, "random init", "")
    return Weights(_from_file(Path(requested), arch, seed), requested, str(requested), "loaded from file")


def _from_file(path: Path, arch: str, seed: int) -> nnx.Module:
    import convert
    from jaxdl import weights as jweights

    try:
        if path.suffix == ".safetensors":
            model = jweights.load(path, 10, seed=seed)
        else:
            model = convert.convert_file(path, arch, 10)
    except (ValueError, OSError) as e:
        raise UsageError(f"--weights {path}: {e}") from None
    if model.spec.arch != arch:
        raise UsageError(f"--weights {path} holds {model.spec.arch} weights, not {arch}")
    return model


def input_size(arch: str, requested: int | None, native: int) -> tuple[int, str]:
    """The input size `arch` trains at, and a note when the native size had to grow to its minimum."""
    minimum = zoo.architecture(arch).min_input_size
    if requested is not None and requested < minimum:
        raise UsageError(f"--image-size {requested} is too small for {arch}: it needs at least {minimum} px")
    size = max(requested or native, minimum)
    note = "" if size == (requested or native) else f"resized {native}->{size} px: {arch} needs >= {minimum} px input"
    return size, note


def resume_command(argv: list[str]) -> str:
    """The command that continues this run: the same arguments, with --resume instead of --overwrite."""
    kept = [a for a in argv if a not in ("--overwrite", "--resume")]
    return f"{PROG} {shlex.join(kept)} --resume".replace("  ", " ")


def check_memory(arch: str, trainer: Trainer, batch_size: int, size: int) -> None:
    """Refuse, before anything is compiled or a batch is built, a step that cannot fit in memory."""
    need, free = cost.step_memory(trainer.graphs, trainer.state, batch_size, (size, size, 3)), cost.available_memory()
    if free is not None and need > free:
        raise UsageError(f"{arch} at {size} px, batch {batch_size}: a training step needs about {need / 1e9:.1f} GB "
                         f"(estimated), more than the {free / 1e9:.1f} GB available: lower --image-size or --batch-size")


def run_arch(arch: str, args: argparse.Namespace, data: Data, config: TrainConfig, mesh, argv: list[str]) -> dict[str, Any]:
    size, resize_note = input_size(arch, args.image_size, data.train.image_shape[0])
    if resize_note:
        print(f"note: {resize_note}", file=sys.stderr)
    w = build_model(arch, args.weights, size, 3, args.seed)
    mean, std = jdata.IMAGENET_MEAN, jdata.IMAGENET_STD
    if w.used == "random init":  # nothing ties a random model to ImageNet statistics
        mean, std = jdata.dataset_mean_std(data.train)
    resize = size if size != data.train.image_shape[0] else None
    train = jdata.Loader(data.train, config.batch_size, train=True, mean=mean, std=std, seed=config.seed,
                         image_size=resize, channels=3)
    eval_batch = EVAL_BATCH - EVAL_BATCH % mesh.size
    test = jdata.Loader(data.test, eval_batch, train=False, mean=mean, std=std, image_size=resize, channels=3)
    trainer = Trainer(w.model, config, len(train), mesh=mesh, progress=not args.no_progress, name=arch)
    check_memory(arch, trainer, config.batch_size, size)
    # What defines the run beyond its TrainConfig: a resume must see the same, or it would report data, inputs
    # or weights that most epochs never saw.
    identity = {"arch": arch, "data": data.train.name, "train_images": len(data.train), "fraction": args.fraction,
                "image_size": size, "weights": w.used if w.used == "random init" else w.requested}
    checkpoints = Checkpoints(Path(args.out) / "ckpt" / arch)
    try:
        history = trainer.fit(train, checkpoints, resume=args.resume, overwrite=args.overwrite, identity=identity,
                              may_change=("lr",) if args.resume_with_lr else ())
    except KeyboardInterrupt:
        raise cli.Interrupted(f"completed epochs are kept in {args.out}; continue with: {resume_command(argv)}") from None
    except NonFiniteLoss as e:
        raise cli.RunFailed(f"{e}; continue from it with --resume-with-lr LR (a lower learning rate), or start "
                            "afresh with --overwrite and a lower --lr or --weight-decay") from None
    except CheckpointMismatch as e:
        raise UsageError(str(e)) from None
    except CheckpointCorrupt as e:
        raise cli.RunFailed(str(e)) from None
    finally:
        checkpoints.close()
    result = trainer.evaluate(test)
    summary = metrics.summary(result.labels, result.predictions)
    print(f"{arch}: test accuracy {100 * summary['accuracy']:.2f}% (train {history[-1]['train_accuracy'] * 100:.2f}%, "
          f"{sum(h['seconds'] for h in history):.0f} s)", file=sys.stderr)
    return {
        "arch": arch, **summary,
        "per_class": metrics.per_class(result.labels, result.predictions, classes=data.test.classes),
        "confusion": metrics.confusion(result.labels, result.predictions, classes=data.test.classes).tolist(),
        "history": history, "test_loss": result.loss,
        "data": {"name": data.train.name, "test_name": data.test.name, "source": data.source, "real": data.train.real,
                 "svhn": data.source in ("svhn", "tfds:svhn_cropped"),
                 "train_size": len(data.train), "test_size": len(data.test)},
        "weights": {"requested": w.requested, "used": w.used, "note": w.note},
        "image_size": size, "resize_note": resize_note,
        "train_images_per_s": float(np.median([h["images_per_s"] for h in history])),
        "eval_images_per_s": result.images_per_s,
        "params": cost.param_count(trainer.state),
        "flops_per_image": cost.flops_per_image(trainer.graphs, trainer.state, (size, size, 3)),
        "config": config.to_dict(),
    }


def run(argv: list[str] | None = None) -> None:
    """The study; every mistake raises `cli.UsageError` before work starts, a failed run `cli.RunFailed`."""
    use_fast_cpu_flags()
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    chosen = archs(args.arch)
    if args.weights not in (None, "imagenet", "none") and len(chosen) > 1:
        raise UsageError("--weights PATH names one model's weights: use it with a single --arch")
    if args.weights not in (None, "imagenet", "none") and not Path(args.weights).is_file():
        raise UsageError(f"--weights {args.weights}: no such file (use imagenet, none or a .safetensors/.pth file)")
    for arch in chosen:
        input_size(arch, args.image_size, 1)
    config = train_config(args)
    initialize_distributed()
    mesh = make_mesh()
    if config.batch_size % mesh.size:
        raise UsageError(f"--batch-size {config.batch_size} does not split over {mesh.size} devices")
    out = cli.writable_dir(Path(args.out))
    lead = jax.process_index() == 0  # one process holds the directory and writes the reports
    try:
        with rundir.claim(out, resume=args.resume, overwrite=args.overwrite) if lead else contextlib.nullcontext():
            data = load_data(args)
            start = time.perf_counter()
            results = [run_arch(arch, args, data, config, mesh, argv) for arch in chosen]
            if lead:
                command = f"{PROG} {shlex.join(argv)}".strip()
                (out / "metrics.json").write_text(json.dumps({
                    "command": command, "devices": [str(d) for d in jax.devices()],
                    "seconds": time.perf_counter() - start, "results": {r["arch"]: r for r in results}}, indent=1))
                path = report.write(results, out, command)
                print(report.comparison_table(results))
                print(f"\nreport: {path}  (data: {results[0]['data']['name']})")
    except (rundir.RunInUse, rundir.RunExists) as e:
        raise UsageError(str(e)) from None


def main(argv: list[str] | None = None) -> int:
    """The exit status of the study on `argv` (see the module docstring); mistakes are one line on stderr."""
    return cli.run(run, "svhn", argv)


if __name__ == "__main__":
    sys.exit(main())
