"""torchvision state_dicts to jaxdl models and back: `from_torch`, `to_torch`, `pretrained`."""

from convert.core import ConversionError, from_torch, to_torch
from convert.hub import WeightsUnavailable, convert_file, load_pth, pretrained

__all__ = ["ConversionError", "WeightsUnavailable", "convert_file", "from_torch", "load_pth", "pretrained", "to_torch"]
