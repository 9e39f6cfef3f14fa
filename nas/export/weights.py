"""Weights as safetensors: a header of names, dtypes and shapes, then raw tensor bytes.

Nothing in the file is code, so loading someone else's export cannot run anything
(unlike a pickled state dict). Loading checks the names and shapes against the module
the space builds, so weights of another arch are a clear error, not a partial load.
"""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from nas.atomic import write_atomic
from nas.errors import NasError
from nas.supernet.checkpoint import check_finite, first_line

FORMAT = "hwnas.export-weights/1"


def save_weights(model: nn.Module, path: Path, metadata: dict[str, str] | None = None) -> None:
    """Every entry of the state dict (BN statistics included), on the CPU, written atomically."""
    state = {name: t.detach().to("cpu").contiguous().clone() for name, t in model.state_dict().items()}
    write_atomic(path, save(state, metadata={"format": FORMAT, **(metadata or {})}))


def load_weights(model: nn.Module, path: Path) -> nn.Module:
    """Fill `model` (as the space builds it) with the tensors in `path`; exact names and shapes."""
    try:
        state = load_file(str(path), device="cpu")
    except FileNotFoundError:
        raise NasError(f"{path}: missing; export again") from None
    except (SafetensorError, OSError, ValueError, MemoryError) as exc:
        raise NasError(f"{path}: not a readable safetensors file ({first_line(exc)}); export again") from None
    check_finite(state, path)
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        detail = f"lacks {missing[0]!r}" if missing else f"has unknown tensor {unexpected[0]!r}"
        raise NasError(f"{path}: weights do not fit the arch's network ({detail}; {len(missing)} missing, "
                       f"{len(unexpected)} unknown)")
    for name, tensor in expected.items():
        if state[name].shape != tensor.shape or state[name].dtype != tensor.dtype:
            raise NasError(f"{path}: tensor {name!r} is {state[name].dtype} {tuple(state[name].shape)}, the network "
                           f"needs {tensor.dtype} {tuple(tensor.shape)}")
    model.load_state_dict(state, strict=True)
    return model


def fresh_model(build, seed: int, input_shape: tuple[int, ...] | None = None, images: int = 8) -> nn.Module:
    """`build()` with torch's default initialisation drawn from `seed`, leaving the caller's
    random state untouched; in eval mode.

    With `input_shape`, BN running statistics are then estimated on `images` seeded
    N(0, 1) inputs. Left at 0 and 1, eval mode does not normalise at all, activations
    grow with depth (a fresh NB201 network's logits reach ~600) and float32 rounding
    alone then exceeds the ONNX check's 1e-4; calibrated, the network has the scale
    it has in training, where fine-tuning starts.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build()
        if input_shape is not None:
            from nas.supernet import recalibrate_bn

            x = torch.randn((images, *input_shape[1:]), device=next(model.parameters()).device)
            recalibrate_bn(model, x, batch_size=images)
    return model.eval()
