"""The SVHN comparison report: markdown tables, PNG plots, and an analysis generated from the numbers.

Every sentence of the analysis is derived from measured values (accuracy, losses, confusions, cost), so the
report cannot claim what the run did not show; results on generated data or with random weights are
labelled as such wherever a number appears.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from jaxdl.report import count, markdown_table, percent, plot_confusion, plot_curves

# The course reports' Q4 numbers (SVHN, 25% subset, 5 epochs, torchvision ImageNet weights, PyTorch).
BASELINE = {
    "source": "course reports (seeds): SVHN 25% subset, 5 epochs, PyTorch with torchvision ImageNet weights",
    "rows": [  # model, report A accuracy/precision/recall/F1, report B accuracy
        ("LeNet-5", 0.7389, 0.7044, 0.7044, 0.7081, None),
        ("VGG-16", 0.1959, 0.0196, 0.1000, 0.0328, 0.9095),
        ("ResNet-18", 0.8933, 0.8877, 0.8837, 0.8844, 0.8845),
        ("ResNet-50", 0.8786, 0.8766, 0.8702, 0.8714, 0.7957),
        ("ResNet-101", 0.8398, 0.8353, 0.8254, 0.8282, 0.4108),
    ],
}
# The baseline's model names for the zoo's architectures.
BASELINE_NAME = {"lenet5": "LeNet-5", "vgg16": "VGG-16", "resnet18": "ResNet-18", "resnet50": "ResNet-50",
                 "resnet101": "ResNet-101"}
DIGITS = [str(d) for d in range(10)]


def comparison_table(results: list[dict[str, Any]]) -> str:
    """The seeds' layout: Model | Test Accuracy | Precision | Recall | F1."""
    return markdown_table(["Model", "Test Accuracy", "Precision", "Recall", "F1"],
                          [(r["arch"], percent(r["accuracy"]), f"{r['precision']:.4f}", f"{r['recall']:.4f}",
                            f"{r['f1']:.4f}") for r in results])


def _top_confusion(result: dict[str, Any]) -> tuple[int, int, int]:
    cm = np.array(result["confusion"])
    np.fill_diagonal(cm, 0)
    i, j = np.unravel_index(int(cm.argmax()), cm.shape)
    return int(i), int(j), int(cm[i, j])


def analysis(results: list[dict[str, Any]]) -> list[str]:
    """Bullet points derived from the measurements (nothing here is fixed text about the models)."""
    ranked = sorted(results, key=lambda r: r["accuracy"], reverse=True)
    best = ranked[0]
    points = [f"Highest test accuracy: {best['arch']} ({percent(best['accuracy'])}, macro F1 {best['f1']:.4f})"
              + (f", {100 * (best['accuracy'] - ranked[1]['accuracy']):.2f} points ahead of {ranked[1]['arch']}."
                 if len(ranked) > 1 else ".")]
    if len(results) > 1:
        close = [r for r in results if best["accuracy"] - r["accuracy"] <= 0.01]
        cheapest = min(close, key=lambda r: r["flops_per_image"])
        if cheapest is not best:
            points.append(f"{cheapest['arch']} is within 1 point of the best at "
                          f"{count(cheapest['flops_per_image'])}FLOP per image vs "
                          f"{count(best['flops_per_image'])}FLOP, "
                          f"and {count(cheapest['params'])} vs {count(best['params'])} parameters: "
                          "the better accuracy-per-cost choice for this data.")
        else:
            points.append(f"No model within 1 point of {best['arch']} is cheaper, so its extra cost "
                          f"({count(best['flops_per_image'])}FLOP per image) buys measurable accuracy here.")
    for r in results:
        losses = [h["train_loss"] for h in r["history"]]
        last_drop = (losses[-2] - losses[-1]) / losses[-2] if len(losses) > 1 and losses[-2] > 0 else 0.0
        gap = r["history"][-1]["train_accuracy"] - r["accuracy"]
        true, pred, n = _top_confusion(r)
        worst = min(range(len(r["confusion"])), key=lambda c: r["per_class"][str(c)]["f1-score"])
        notes = [f"training loss {losses[0]:.3f} -> {losses[-1]:.3f} over {len(losses)} epoch(s)"]
        if last_drop > 0.05:
            notes.append(f"still falling {100 * last_drop:.0f}% in the last epoch, so more epochs would likely help")
        if gap > 0.05:
            notes.append(f"last-epoch training accuracy exceeds test accuracy by {100 * gap:.1f} points (overfitting)")
        elif gap < -0.02:
            notes.append("test accuracy is above the last-epoch training accuracy (augmentation and the averaged "
                         "epoch make training accuracy pessimistic)")
        notes.append(f"weakest digit {worst} (F1 {r['per_class'][str(worst)]['f1-score']:.3f}); most frequent error: "
                     f"{true} read as {pred} ({n} times)")
        if r["weights"]["used"] != "imagenet":
            notes.append("trained from random initialisation" + (" because the ImageNet weights were unavailable"
                                                                 if r["weights"]["requested"] == "imagenet" else ""))
        points.append(f"{r['arch']}: " + "; ".join(notes) + ".")
    if results[0]["data"]["svhn"]:
        for r in results:
            row = next((b for b in BASELINE["rows"] if b[0] == BASELINE_NAME.get(r["arch"])), None)
            if row:
                points.append(f"{r['arch']} vs the course baseline: {percent(r['accuracy'])} vs {percent(row[1])} "
                              "(report A)" + (f" / {percent(row[5])} (report B)" if row[5] is not None else "") + ".")
    else:
        kind = "real digits of another data set" if results[0]["data"]["real"] else "generated digits"
        points.append(f"These numbers are on {kind}, NOT on SVHN: they show the pipeline works and rank the models "
                      "on this stand-in only; they are not comparable with the course baseline below.")
    return points


def baseline_table() -> str:
    table = markdown_table(
        ["Model", "Test Accuracy (A)", "Precision (A)", "Recall (A)", "F1 (A)", "Test Accuracy (B)"],
        [(name, percent(acc), f"{p:.4f}", f"{r:.4f}", f"{f1:.4f}", percent(acc_b) if acc_b else "-")
         for name, acc, p, r, f1, acc_b in BASELINE["rows"]])
    return (f"Source: {BASELINE['source']}.\n\n{table}\n"
            "\nReport A's VGG-16 (19.59%, recall 0.1 = one class predicted) is a failed run, not the model's level.")


def cost_table(results: list[dict[str, Any]]) -> str:
    return markdown_table(
        ["Model", "Parameters", "Forward FLOPs / image", "Train img/s", "Eval img/s", "Train time"],
        [(r["arch"], f"{r['params']:,}", count(r["flops_per_image"]), f"{r['train_images_per_s']:.0f}",
          f"{r['eval_images_per_s']:.0f}", f"{sum(h['seconds'] for h in r['history']):.0f} s") for r in results])


def loss_table(results: list[dict[str, Any]]) -> str:
    longest = max((r["history"] for r in results), key=len)
    return markdown_table(["Model", *(f"epoch {h['epoch']}" for h in longest)],
                          [(r["arch"], *(f"{h['train_loss']:.4f}" for h in r["history"])) for r in results])


def write(results: list[dict[str, Any]], out: Path, command: str) -> Path:
    """report.md, curves.png and confusion_<arch>.png in `out`; returns the report's path."""
    out.mkdir(parents=True, exist_ok=True)
    data = results[0]["data"]
    plot_curves({r["arch"]: r["history"] for r in results}, out / "curves.png", data["name"],
                test_accuracy={r["arch"]: r["accuracy"] for r in results})
    for r in results:
        plot_confusion(r["confusion"], DIGITS, f"{r['arch']}: test accuracy {percent(r['accuracy'])}",
                       out / f"confusion_{r['arch']}.png", noun="digit")
    label = "" if data["svhn"] else " — on a stand-in data set, NOT SVHN"
    md = [f"# SVHN model comparison{label}", "",
          f"Command: `{command}`", "",
          f"Data: **{data['name']}** — {data['train_size']} training / {data['test_size']} test images"
          + ("" if data["svhn"] else ". **These are not SVHN results.**"), ""]
    md += [f"- {r['arch']}: weights {r['weights']['used']}"
           + (f" ({r['weights']['note']})" if r["weights"]["note"] else "")
           + f"; input {r['image_size']}x{r['image_size']}" + (f" ({r['resize_note']})" if r.get("resize_note") else "")
           for r in results]
    md += ["", "## Results", "", comparison_table(results), "",
           "## Cost", "", cost_table(results), "",
           "## Training loss per epoch", "", loss_table(results), "",
           "![training curves](curves.png)", ""]
    md += [f"![{r['arch']} confusion matrix](confusion_{r['arch']}.png)" for r in results]
    md += ["", "## Analysis (generated from the numbers above)", ""] + [f"- {p}" for p in analysis(results)]
    md += ["", "## Baseline: the course reports", "", baseline_table(), ""]
    path = out / "report.md"
    path.write_text("\n".join(md))
    return path
