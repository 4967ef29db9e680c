"""Hessian spectra of models trained briefly on scikit-learn's real digits: an MLP small enough for the
exact Hessian (the ground truth for Lanczos and Hutchinson), the course's CNN, and optionally ResNet-18."""

from __future__ import annotations

import numpy as np
from flax import nnx

from jaxdl import data, models
from jaxdl.hessian import model_spectrum
from jaxdl.train import TrainConfig, Trainer

BATCH = 64


def train(model: nnx.Module, ds: data.Dataset, epochs: int, lr: float, seed: int) -> tuple[nnx.Module, list[float]]:
    """A few epochs of Adam (constant lr, no augmentation, inputs in [0,1]): enough to leave the random
    initialisation, cheap on a shared CPU.  Returns the trained model (eval mode) and each epoch's mean loss."""
    c = ds.images.shape[-1]
    loader = data.Loader(ds, BATCH, train=True, mean=(0.0,) * c, std=(1.0,) * c, augment=False, seed=seed)
    config = TrainConfig(epochs=epochs, batch_size=BATCH, optimizer="adam", lr=lr, weight_decay=0.0,
                         schedule="constant", seed=seed)
    trainer = Trainer(model, config, len(loader), progress=False)
    history = trainer.fit(loader)
    return trainer.model, [h["train_loss"] for h in history]


def run(*, seed: int, epochs: int, resnet_epochs: int, hessian_images: int, resnet_images: int,
        lanczos_iters: int, probes: int, slq_probes: int, chunk: int | None) -> dict:
    """Train each model, then measure its eval-mode mean-CE Hessian on the same `hessian_images` digits
    (the first `resnet_images` of them for ResNet-18, skipped at 0)."""
    settings = {"lanczos_iters": lanczos_iters, "probes": probes, "slq_probes": slq_probes, "chunk": chunk, "seed": seed}
    out = {}
    rng = np.random.default_rng(seed)
    # 1) small enough for the exact Hessian: MLP on the native 8x8 grey digits.
    ds8 = data.load("digits", "train", image_size=8, channels=1)
    idx = rng.choice(len(ds8), hessian_images, replace=False)
    mlp, losses = train(models.MLP(10, in_channels=1, image_size=8, hidden=(8,), rngs=nnx.Rngs(seed)), ds8, epochs, 1e-2, seed)
    out["mlp_8x8"] = model_spectrum(mlp, _inputs(ds8, idx), ds8.labels[idx], exact=True, **settings) | {
        "data": ds8.name, "train_loss_per_epoch": losses}
    # 2) the course's small CNN and 3) ResNet-18, both on 32x32 RGB digits.
    ds32 = data.load("digits", "train", image_size=32, channels=3)
    cnn, losses = train(models.CNN(10, in_channels=3, image_size=32, rngs=nnx.Rngs(seed)), ds32, epochs, 1e-3, seed)
    out["cnn"] = model_spectrum(cnn, _inputs(ds32, idx), ds32.labels[idx], **settings) | {
        "data": ds32.name, "train_loss_per_epoch": losses}
    if resnet_images > 0:
        res, losses = train(models.create("resnet18", rngs=nnx.Rngs(seed)), ds32, resnet_epochs, 1e-3, seed)
        ridx = idx[:resnet_images]
        out["resnet18"] = model_spectrum(res, _inputs(ds32, ridx), ds32.labels[ridx], **settings) | {
            "data": ds32.name, "train_loss_per_epoch": losses}
    return out


def _inputs(ds: data.Dataset, idx: np.ndarray) -> np.ndarray:
    """The digits `idx` on the [0,1] scale the models were trained on."""
    return ds.images[idx].astype(np.float32) / 255.0
