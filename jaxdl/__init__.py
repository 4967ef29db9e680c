"""jaxdl: torchvision's classic classifiers in Flax NNX, exact and fast."""
