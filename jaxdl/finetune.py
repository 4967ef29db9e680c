"""Fine-tune a zoo model on a data source, the way practitioners do: the engine behind
`python -m experiments.finetune` and the SVHN study (`python -m experiments.svhn`, the same engine with the
seeds' defaults, no validation split and its own report).

One run per architecture: the data (train, validation when asked for, test; any number of classes, their names
carried along), the model (fresh, torchvision's ImageNet weights or a file; a new head for the data's classes),
`jaxdl.train.Trainer` (validation every epoch, the best epoch saved as OUT/<arch>/best.safetensors with its
class names and preprocessing, OUT/<arch>/log.csv (and TensorBoard event files in OUT/<arch>/tensorboard when
a writer is installed), early stopping, per-epoch checkpoints, exact resume), then
the test evaluation of the best model (the last one without validation). Every mistake is one line before any
work starts (`jaxdl.cli`).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import shlex
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from jaxdl import cli, metrics
from jaxdl import data as jdata
from jaxdl import models as zoo
from jaxdl import weights as jweights
from jaxdl.cli import UsageError
from jaxdl.runtime import use_fast_cpu_flags
from jaxdl.train import (FREEZE, CheckpointCorrupt, CheckpointMismatch, Checkpoints, NonFiniteLoss, TrainConfig,
                         Trainer, cost, initialize_distributed, parallel, rundir)
from jaxdl.train import mesh as make_mesh

EVAL_BATCH = 256
LOG_COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds", "images_per_s")


@dataclass(frozen=True)
class Study:
    """What a command built on this engine fixes: its name, defaults, data shortcuts and report."""

    prog: str
    name: str
    defaults: TrainConfig
    l2_weight_decay: float  # the default for the optimizers that add decay to the gradient (sgd, nesterov, adam)
    data: Mapping[str, str]  # --data shortcuts -> jaxdl.data sources; any other source string is taken as is
    default_data: str
    auto: str  # the data set "auto" resolves (real when obtainable, else its offline stand-in)
    val_fraction: float  # the default validation share of the training data (0: no validation)
    report: Callable[[list[dict[str, Any]], Path, str], Path]
    synthetic_size: Mapping[str, int] = field(default_factory=dict)
    description: str = ""


def parser(study: Study) -> cli.Parser:
    d = study.defaults
    p = cli.Parser(prog=study.prog, description=study.description)
    p.add_argument("--arch", default="resnet18", help="NAME[,NAME...] or 'all' (%s)" % ", ".join(zoo.names()))
    p.add_argument("--weights", default=None, help="imagenet | none | PATH (.safetensors or .pth); default: imagenet "
                                                     "for torchvision architectures, none for the others")
    p.add_argument("--data", default=study.default_data,
                   help=f"{' | '.join(study.data)} | folder:DIR | npz:FILE | tfds:NAME | mnist5k | digits")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--fraction", type=cli.fraction, default=1.0, help="stratified share of the training set to use")
    p.add_argument("--val-fraction", type=cli.natural_float, default=study.val_fraction,
                   help="stratified share of the training set held out for validation, when the data has no "
                        "validation split (0: none)")
    p.add_argument("--epochs", type=cli.positive_int, default=d.epochs)
    p.add_argument("--early-stop", type=cli.natural_int, default=0, metavar="N",
                   help="stop after N epochs without a better validation accuracy (0: never)")
    p.add_argument("--batch-size", type=cli.positive_int, default=d.batch_size)
    p.add_argument("--lr", type=cli.positive_float, default=d.lr)
    p.add_argument("--optimizer", default=d.optimizer, help="sgd | nesterov | adam | adamw")
    p.add_argument("--schedule", default=d.schedule, help="constant | cosine | onecycle")
    p.add_argument("--warmup-epochs", type=cli.natural_float, default=d.warmup_epochs)
    p.add_argument("--weight-decay", type=cli.natural_float, default=None,
                   help=f"default {d.weight_decay:g} ({d.optimizer}) or {study.l2_weight_decay:g} (the others)")
    p.add_argument("--label-smoothing", type=cli.natural_float, default=d.label_smoothing)
    p.add_argument("--freeze", default="none", help=f"{' | '.join(FREEZE)}: train the head only with 'backbone'")
    p.add_argument("--freeze-bn", action="store_true", help="BatchNorm in inference mode, its statistics frozen")
    p.add_argument("--head-lr-mult", type=cli.positive_float, default=1.0, help="the head's learning rate, x lr")
    p.add_argument("--clip-grad-norm", type=cli.natural_float, default=0.0, help="clip the gradient norm (0: off)")
    p.add_argument("--ema", type=cli.natural_float, default=0.0, metavar="DECAY",
                   help="evaluate and save a moving average of the weights (e.g. 0.999; 0: off)")
    p.add_argument("--augment", default="crop", help=f"crop | none | {' | '.join(jdata.augment.NAMES)}")
    p.add_argument("--mixed-precision", action="store_true", help="bfloat16 compute, float32 master weights")
    p.add_argument("--image-size", type=cli.positive_int, default=None, help="resize inputs (default: native)")
    p.add_argument("--seed", type=cli.natural_int, default=0)
    p.add_argument("--out", default=f"runs/{study.name}")
    p.add_argument("--resume", action="store_true", help="continue the run in --out (its checkpoints DIR/ckpt/<arch>)")
    p.add_argument("--resume-with-lr", type=cli.positive_float, metavar="LR",
                   help="continue from the last good checkpoint with this learning rate (e.g. after a diverging loss)")
    p.add_argument("--overwrite", action="store_true", help="replace the run that --out holds")
    p.add_argument("--no-progress", action="store_true")
    many = p.add_argument_group("many processes (default: JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, "
                                "JAX_PROCESS_ID, else JAX's cluster detection: SLURM, TPU pods)")
    many.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address, the same for every process")
    many.add_argument("--num-processes", type=cli.positive_int, metavar="N")
    many.add_argument("--process-id", type=cli.natural_int, metavar="I", help="this process's id, 0..N-1")
    return p


def parse_args(study: Study, argv: list[str]) -> argparse.Namespace:
    args = parser(study).parse_args(argv)
    if args.resume_with_lr is not None:
        args.resume, args.lr = True, args.resume_with_lr
    if args.resume and args.overwrite:
        raise UsageError("--resume continues the run in --out and --overwrite replaces it: choose one")
    if args.data_dir is not None and Path(args.data_dir).exists() and not Path(args.data_dir).is_dir():
        raise UsageError(f"--data-dir {args.data_dir} is a file: name the directory that holds (or will hold) the data")
    if args.augment not in ("crop", "none", *jdata.augment.NAMES):
        raise UsageError(f"unknown --augment {args.augment!r}: choose crop, none or {', '.join(jdata.augment.NAMES)}")
    if not args.val_fraction < 0.9:
        raise UsageError(f"--val-fraction {args.val_fraction:g} leaves too little to train on: use less than 0.9")
    source = study.data.get(args.data, args.data)
    if source != "auto":
        try:
            jdata.check_source(source)
        except ValueError as e:
            if ":" in source:  # a source of a known kind, named wrongly: its own message says how
                raise UsageError(f"--data {args.data}: {e}") from None
            raise UsageError(f"unknown --data {args.data!r}: choose one of {', '.join(study.data)}, or a source: "
                             "folder:DIR, npz:FILE, tfds:NAME, mnist5k, digits, synthetic") from None
    return args


def archs(text: str) -> list[str]:
    chosen = zoo.names() if text == "all" else [a.strip() for a in text.split(",") if a.strip()]
    unknown = [a for a in chosen if a not in zoo.names()]
    if unknown or not chosen:
        raise UsageError(f"unknown architecture {', '.join(unknown) or repr(text)}: "
                         f"choose from {', '.join(zoo.names())} or all")
    return chosen


def train_config(study: Study, args: argparse.Namespace) -> TrainConfig:
    d, wd = study.defaults, args.weight_decay
    if wd is None:
        wd = d.weight_decay if args.optimizer == d.optimizer else study.l2_weight_decay
    try:
        return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
                           momentum=d.momentum, weight_decay=wd, schedule=args.schedule,
                           warmup_epochs=args.warmup_epochs, label_smoothing=args.label_smoothing,
                           mixed_precision=args.mixed_precision, seed=args.seed, freeze=args.freeze,
                           freeze_bn=args.freeze_bn, head_lr_mult=args.head_lr_mult,
                           clip_grad_norm=args.clip_grad_norm, ema=args.ema)
    except ValueError as e:
        raise UsageError(str(e)) from None


# ------------------------------------------------------------------------------------------------------ data


Split = jdata.Dataset | jdata.FolderSplit  # in memory, or files decoded on the fly


@dataclass
class Data:
    train: Split
    val: Split | None
    test: Split
    source: str

    def native_size(self, requested: int | None) -> int:
        """The side the images come in (a folder's vary: the one asked for)."""
        if isinstance(self.train, jdata.FolderSplit):
            if requested is None:
                raise UsageError("folder data holds images of any size: give --image-size (e.g. 32 for lenet5, "
                                 "224 with ImageNet weights)")
            return requested
        return self.train.image_shape[0]


def load_data(study: Study, args: argparse.Namespace) -> Data:
    source = jdata.resolve(study.data.get(args.data, args.data), study.auto, args.data_dir)
    sizes = study.synthetic_size if source == "synthetic" else {}
    try:
        train, test = (jdata.load(source, split, data_dir=args.data_dir, seed=args.seed,
                                  **({"n": sizes[split]} if sizes else {})) for split in ("train", "test"))
    except (jdata.DataUnavailable, jdata.DataCorrupt, ValueError) as e:
        raise UsageError(str(e)) from None
    kept = int(args.fraction * len(train))  # what the stratified subset keeps (scikit-learn rounds down)
    if kept < max(args.batch_size, train.num_classes):
        raise UsageError(f"--fraction {args.fraction:g} leaves {kept} training images, fewer than one batch of "
                         f"{args.batch_size} (or one per class): raise --fraction or lower --batch-size")
    train, val = jdata.stratified_subset(train, args.fraction, args.seed), None
    if isinstance(train, jdata.FolderSplit):  # a folder has its own validation split (DIR/val, or a fixed share)
        val = jdata.load(source, "val") if args.val_fraction else None
    elif args.val_fraction:
        train, val = jdata.train_val_split(train, args.val_fraction, args.seed)
        if len(train) < args.batch_size:
            raise UsageError(f"--val-fraction {args.val_fraction:g} leaves {len(train)} training images, fewer than "
                             f"one batch of {args.batch_size}: lower --val-fraction or --batch-size")
    return Data(train, val, test, source)


# ----------------------------------------------------------------------------------------------------- model


@dataclass
class Weights:
    model: nnx.Module
    requested: str
    used: str
    note: str


def build_model(arch: str, weights: str | None, num_classes: int, image_size: int, seed: int) -> Weights:
    """The model to train and which weights it really starts from (the report must not overclaim)."""
    requested = weights or ("imagenet" if arch in zoo.TORCHVISION else "none")
    # the small models size their layers from the input; torchvision's adapt to any size
    options = {"image_size": image_size, "in_channels": 3} if arch not in zoo.TORCHVISION else {}

    def fresh() -> nnx.Module:
        return zoo.create(arch, num_classes, rngs=nnx.Rngs(seed), **options)

    if requested == "imagenet":
        if arch not in zoo.TORCHVISION:
            note = f"{arch} has no torchvision twin, so no ImageNet weights: random initialisation"
            print(f"warning: {note}", file=sys.stderr)
            return Weights(fresh(), requested, "random init", note)
        import convert

        try:
            model = convert.pretrained(arch, num_classes, seed=seed)
            return Weights(model, requested, "imagenet", "torchvision IMAGENET1K_V1")
        except convert.WeightsUnavailable as e:
            print(f"warning: {e}; training {arch} from random initialisation", file=sys.stderr)
            return Weights(fresh(), requested, "random init", "ImageNet weights unavailable offline: random initialisation")
    if requested == "none":
        return Weights(fresh(), requested, "random init", "")
    return Weights(_from_file(Path(requested), arch, num_classes, seed), requested, str(requested), "loaded from file")


def _from_file(path: Path, arch: str, num_classes: int, seed: int) -> nnx.Module:
    import convert

    try:
        if path.suffix == ".safetensors":
            model = jweights.load(path, num_classes, seed=seed)
        else:
            model = convert.convert_file(path, arch, num_classes)
    except (ValueError, OSError) as e:
        raise UsageError(f"--weights {path}: {e}") from None
    if zoo.spec(model).arch != arch:
        raise UsageError(f"--weights {path} holds {zoo.spec(model).arch} weights, not {arch}")
    return model


def input_size(arch: str, requested: int | None, native: int) -> tuple[int, str]:
    """The input size `arch` trains at, and a note when the native size had to grow to its minimum."""
    minimum = zoo.architecture(arch).min_input_size
    if requested is not None and requested < minimum:
        raise UsageError(f"--image-size {requested} is too small for {arch}: it needs at least {minimum} px")
    size = max(requested or native, minimum)
    note = "" if size == (requested or native) else f"resized {native}->{size} px: {arch} needs >= {minimum} px input"
    return size, note


def check_memory(arch: str, trainer: Trainer, batch_size: int, size: int) -> None:
    """Refuse, before anything is compiled or a batch is built, a step that cannot fit in memory."""
    need, free = cost.step_memory(trainer.graphs, trainer.state, batch_size, (size, size, 3)), cost.available_memory()
    if free is not None and need > free:
        raise UsageError(f"{arch} at {size} px, batch {batch_size}: a training step needs about {need / 1e9:.1f} GB "
                         f"(estimated), more than the {free / 1e9:.1f} GB available: lower --image-size or --batch-size")


# ------------------------------------------------------------------------------------------------------- run


def resume_command(prog: str, argv: list[str]) -> str:
    """The command that continues this run: the same arguments, with --resume instead of --overwrite."""
    kept = [a for a in argv if a not in ("--overwrite", "--resume")]
    return f"{prog} {shlex.join(kept)} --resume".replace("  ", " ")


def write_log(history: list[dict[str, Any]], file: Path) -> None:
    """log.csv, rewritten whole from the history each epoch (so a resumed run's log is the uninterrupted one's)."""
    part = file.with_name(file.name + ".part")
    with open(part, "w", newline="") as f:
        writer = csv.DictWriter(f, LOG_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(history)
    part.replace(file)


def tensorboard(directory: Path) -> Any | None:
    """A TensorBoard event writer when one is installed (tensorboardX, or PyTorch's with tensorboard), else None."""
    import importlib.util

    for module, needs in (("tensorboardX", "tensorboardX"), ("torch.utils.tensorboard", "tensorboard")):
        if importlib.util.find_spec(needs) is not None:
            return importlib.import_module(module).SummaryWriter(str(directory))
    return None


def run_arch(study: Study, arch: str, args: argparse.Namespace, data: Data, config: TrainConfig, mesh,
             argv: list[str]) -> dict[str, Any]:
    native = data.native_size(args.image_size)
    size, resize_note = input_size(arch, args.image_size, native)
    if resize_note:
        print(f"note: {resize_note}", file=sys.stderr)
    classes = data.train.classes
    w = build_model(arch, args.weights, len(classes), size, args.seed)
    folder = isinstance(data.train, jdata.FolderSplit)
    mean, std = jdata.IMAGENET_MEAN, jdata.IMAGENET_STD
    if w.used == "random init":  # nothing ties a random model to ImageNet statistics
        mean, std = data.train.mean_std(size) if folder else jdata.dataset_mean_std(data.train)
        if len(mean) == 1:  # grey images, replicated to the 3 channels the models take
            mean, std = tuple(mean) * 3, tuple(std) * 3
    resize = size if folder or size != native else None
    autoaugment = args.augment if args.augment not in ("crop", "none") else None
    eval_batch = EVAL_BATCH - EVAL_BATCH % mesh.size
    sharded = parallel.batch_sharded(mesh)  # each process builds only its rows of every global batch
    train_rows, eval_rows = (parallel.local_rows(sharded, b) for b in (config.batch_size, eval_batch))
    if folder:
        train = jdata.FolderLoader(data.train, config.batch_size, train=True, mean=mean, std=std, image_size=size,
                                   seed=config.seed, augment=args.augment != "none", autoaugment=autoaugment,
                                   rows=train_rows)
    else:
        train = jdata.Loader(data.train, config.batch_size, train=True, mean=mean, std=std, seed=config.seed,
                             image_size=resize, channels=3, augment=args.augment != "none", autoaugment=autoaugment,
                             rows=train_rows)

    def evaluation(ds: Split) -> jdata.Loader | jdata.FolderLoader:
        if folder:
            return jdata.FolderLoader(ds, eval_batch, train=False, mean=mean, std=std, image_size=size, rows=eval_rows)
        return jdata.Loader(ds, eval_batch, train=False, mean=mean, std=std, image_size=resize, channels=3,
                            rows=eval_rows)

    val = evaluation(data.val) if data.val is not None else None
    try:
        trainer = Trainer(w.model, config, len(train), mesh=mesh, progress=not args.no_progress, name=arch)
    except ValueError as e:  # e.g. --freeze for a model whose head is unknown
        raise UsageError(str(e)) from None
    check_memory(arch, trainer, config.batch_size, size)
    # What defines the run beyond its TrainConfig: a resume must see the same, or it would report data, inputs,
    # augmentations or weights that most epochs never saw.
    identity = {"arch": arch, "data": data.train.name, "train_images": len(data.train), "fraction": args.fraction,
                "val_fraction": args.val_fraction, "image_size": size, "augment": args.augment,
                "weights": w.used if w.used == "random init" else w.requested,
                **({"files": data.train.fingerprint} if folder else {})}
    out = Path(args.out) / arch
    best_file = out / "best.safetensors"
    preprocessing = {"resize": [size, size], "crop": None, "mean": list(map(float, mean)), "std": list(map(float, std))}

    events = tensorboard(out / "tensorboard") if jax.process_index() == 0 else None

    def after_epoch(t: Trainer, record: dict[str, Any]) -> None:
        if jax.process_index() != 0:
            return
        write_log(t.history, out / "log.csv")
        if events is not None:
            for name in LOG_COLUMNS[1:]:
                if name in record:
                    events.add_scalar(name, record[name], record["epoch"])
            events.flush()
        if t.best_epoch() == record["epoch"]:
            jweights.save(t.model, best_file, source=f"{study.prog} epoch {record['epoch']}", classes=classes,
                          preprocessing=preprocessing)

    out.mkdir(parents=True, exist_ok=True)
    checkpoints = Checkpoints(Path(args.out) / "ckpt" / arch)
    try:
        history = trainer.fit(train, checkpoints, resume=args.resume, overwrite=args.overwrite, identity=identity,
                              may_change=("lr",) if args.resume_with_lr else (), validation=val,
                              early_stop=args.early_stop, on_epoch=after_epoch)
    except KeyboardInterrupt:
        raise cli.Interrupted(f"completed epochs are kept in {args.out}; continue with: "
                              f"{resume_command(study.prog, argv)}") from None
    except NonFiniteLoss as e:
        raise cli.RunFailed(f"{e}; continue from it with --resume-with-lr LR (a lower learning rate), or start "
                            "afresh with --overwrite and a lower --lr or --weight-decay") from None
    except CheckpointMismatch as e:
        raise UsageError(str(e)) from None
    except CheckpointCorrupt as e:
        raise cli.RunFailed(str(e)) from None
    except jdata.DataCorrupt as e:  # a folder's unreadable image shows when its batch is built
        raise UsageError(str(e)) from None
    finally:
        checkpoints.close()
        if events is not None:
            events.close()
    best = trainer.best_epoch()
    if best is None:  # no validation: the last model is the one tested, and the one saved
        if jax.process_index() == 0:
            jweights.save(trainer.model, best_file, source=f"{study.prog} epoch {len(history)}", classes=classes,
                          preprocessing=preprocessing)
        tester = trainer
    else:
        parallel.barrier(f"{arch} best model saved")  # process 0 wrote it; the others read it now
        tester = Trainer(jweights.load(best_file), config, len(train), mesh=mesh, progress=False, name=arch)
    try:
        result = tester.evaluate(evaluation(data.test))
    except jdata.DataCorrupt as e:
        raise UsageError(str(e)) from None
    summary = metrics.summary(result.labels, result.predictions)
    chosen = f"best epoch {best} of {len(history)}" if best is not None else f"last epoch {len(history)}"
    if jax.process_index() == 0:
        print(f"{arch}: test accuracy {100 * summary['accuracy']:.2f}% ({chosen}, train "
              f"{history[-1]['train_accuracy'] * 100:.2f}%, {sum(h['seconds'] for h in history):.0f} s)", file=sys.stderr)
    return {
        "arch": arch, **summary, "classes": list(classes), "best_epoch": best, "epochs_run": len(history),
        "model_file": str(best_file),
        "per_class": metrics.per_class(result.labels, result.predictions, classes=classes),
        "confusion": metrics.confusion(result.labels, result.predictions, classes=classes).tolist(),
        "history": history, "test_loss": result.loss,
        "data": {"name": data.train.name, "test_name": data.test.name, "source": data.source, "real": data.train.real,
                 "svhn": data.source in ("svhn", "tfds:svhn_cropped"), "train_size": len(data.train),
                 "val_size": len(data.val) if data.val is not None else 0, "test_size": len(data.test)},
        "weights": {"requested": w.requested, "used": w.used, "note": w.note},
        "image_size": size, "resize_note": resize_note,
        "train_images_per_s": float(np.median([h["images_per_s"] for h in history])),
        "eval_images_per_s": result.images_per_s,
        "params": cost.param_count(trainer.state),
        "flops_per_image": cost.flops_per_image(trainer.graphs, trainer.state, (size, size, 3)),
        "config": config.to_dict(),
    }


def run(study: Study, argv: list[str] | None = None) -> list[dict[str, Any]]:
    """The whole command: every mistake raises `cli.UsageError` before work starts, a failed run `cli.RunFailed`."""
    use_fast_cpu_flags()
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(study, argv)
    chosen = archs(args.arch)
    if args.weights not in (None, "imagenet", "none") and len(chosen) > 1:
        raise UsageError("--weights PATH names one model's weights: use it with a single --arch")
    if args.weights not in (None, "imagenet", "none") and not Path(args.weights).is_file():
        raise UsageError(f"--weights {args.weights}: no such file (use imagenet, none or a .safetensors/.pth file)")
    for arch in chosen:
        input_size(arch, args.image_size, 1)  # too small for one of them: refused before any work
    config = train_config(study, args)
    try:
        initialize_distributed(args.coordinator, args.num_processes, args.process_id)
    except parallel.DistributedConfigError as e:
        raise UsageError(str(e)) from None
    except parallel.DistributedJoinError as e:
        raise cli.RunFailed(str(e)) from None
    mesh = make_mesh()
    if config.batch_size % mesh.size:
        raise UsageError(f"--batch-size {config.batch_size} does not split over {mesh.size} devices")
    out = cli.writable_dir(Path(args.out))
    lead = jax.process_index() == 0  # one process holds the directory and writes the reports
    try:
        with rundir.claim(out, resume=args.resume, overwrite=args.overwrite) if lead else contextlib.nullcontext():
            data = load_data(study, args)
            start = time.perf_counter()
            results = [run_arch(study, arch, args, data, config, mesh, argv) for arch in chosen]
            if lead:
                command = f"{study.prog} {shlex.join(argv)}".strip()
                (out / "metrics.json").write_text(json.dumps({
                    "command": command, "devices": [str(d) for d in jax.devices()],
                    "seconds": time.perf_counter() - start, "results": {r["arch"]: r for r in results}}, indent=1))
                path = study.report(results, out, command)
                print(f"\nreport: {path}  (data: {results[0]['data']['name']})")
    except (rundir.RunInUse, rundir.RunExists) as e:
        raise UsageError(str(e)) from None
    return results
