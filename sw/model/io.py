"""Hugging Face format folders: ``config.json`` plus ``model.safetensors`` (or a sharded index).

Checkpoints are read with safetensors, or a ``pytorch_model.bin`` with ``torch.load(weights_only=True)``;
nothing is ever unpickled. Key names are the official ones, unchanged.
"""

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import HGRNBitConfig, ConfigError

__all__ = ["load_pretrained", "save_pretrained", "load_state_dict", "CheckpointError"]


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be loaded."""


_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def load_state_dict(folder):
    folder = Path(folder)
    single = folder / "model.safetensors"
    index = folder / "model.safetensors.index.json"
    pt = folder / "pytorch_model.bin"
    try:
        if single.is_file():
            return load_file(str(single))
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
            state = {}
            for shard in sorted(set(weight_map.values())):
                part = load_file(str(folder / shard))
                state.update(part)
            missing = set(weight_map) - set(state)
            if missing:
                raise CheckpointError(f"{index}: tensor {sorted(missing)[0]} is not in any shard")
            return state
        if pt.is_file():
            return torch.load(str(pt), map_location="cpu", weights_only=True)
    except (SafetensorError, OSError, KeyError, json.JSONDecodeError, RuntimeError) as e:
        raise CheckpointError(f"{folder}: cannot read the weights ({str(e).splitlines()[0]})") from None
    raise CheckpointError(f"{folder}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")


def load_pretrained(cls, folder, torch_dtype=None):
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not a model folder")
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{folder}: no config.json")
    config = HGRNBitConfig.from_json_file(folder / "config.json")
    state = load_state_dict(folder)
    if isinstance(torch_dtype, str):
        if torch_dtype not in _DTYPES:
            raise ConfigError(f"unknown dtype {torch_dtype!r}")
        torch_dtype = _DTYPES[torch_dtype]
    with torch.device("meta"):
        model = cls(config)
    expected = dict(model.state_dict())
    missing = sorted(set(expected) - set(state))
    if missing:
        raise CheckpointError(f"{folder}: tensor {missing[0]} is missing ({len(missing)} missing in all)")
    unexpected = sorted(k for k in set(state) - set(expected) if not k.endswith("rotary_emb.inv_freq"))
    if unexpected:
        raise CheckpointError(f"{folder}: unexpected tensor {unexpected[0]} (the config does not describe "
                              f"this checkpoint)")
    for key, ref in expected.items():
        if tuple(state[key].shape) != tuple(ref.shape):
            raise CheckpointError(f"{folder}: tensor {key} has shape {list(state[key].shape)}, "
                                  f"the config implies {list(ref.shape)}")
        if not state[key].is_floating_point():
            raise CheckpointError(f"{folder}: tensor {key} is not floating point ({state[key].dtype})")
    if torch_dtype is not None:
        state = {k: v.to(torch_dtype) for k, v in state.items()}
    model.load_state_dict({k: state[k] for k in expected}, assign=True)
    model.eval()
    return model


def save_pretrained(model, folder):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.config.to_json_file(folder / "config.json")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
