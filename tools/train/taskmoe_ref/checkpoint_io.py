"""Export to / import from the full multi-task checkpoint format (docs/checkpoint-format.md).

safetensors is written by hand (a u64 header length, a JSON header, raw little-endian data) so the
only dependencies are Debian's python3-torch and numpy.
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from typing import Dict

import numpy as np
import torch

from .config import Config
from .model import TaskMoEModel

_DT = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}
_TORCH = {v: k for k, v in _DT.items()}
_SIZE = {"F32": 4, "F16": 2, "BF16": 2}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _raw(t: torch.Tensor) -> bytes:
    t = t.detach().contiguous().cpu()
    if t.dtype == torch.bfloat16:   # numpy has no bfloat16: reinterpret the bits
        return t.view(torch.int16).numpy().astype("<i2").tobytes()
    return t.numpy().astype(t.numpy().dtype.newbyteorder("<")).tobytes()


def write_safetensors(path: str, tensors: Dict[str, torch.Tensor], metadata: Dict[str, str] = None) -> None:
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name]
        raw = _raw(t)
        header[name] = {"dtype": _DT[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    if metadata:
        header["__metadata__"] = metadata
    hj = json.dumps(header, separators=(",", ":")).encode()
    hj += b" " * (-len(hj) % 8)  # keep the data 8-byte aligned, as the reference library does
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for raw in blobs:
            f.write(raw)


def read_safetensors(path: str) -> Dict[str, torch.Tensor]:
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        dt = info["dtype"]
        buf = bytearray(data[base + b: base + e])
        if dt == "BF16":
            t = torch.from_numpy(np.frombuffer(buf, dtype="<i2").copy()).view(torch.bfloat16)
        else:
            t = torch.from_numpy(np.frombuffer(buf, dtype={"F32": "<f4", "F16": "<f2"}[dt]).copy())
        out[name] = t.reshape(info["shape"])
    return out


def export_checkpoint(model: TaskMoEModel, spm_model: str, out_dir: str, dtype: str = "float32",
                      training: dict = None) -> None:
    """Write config.json + model.safetensors + sentencepiece.model atomically (temp dir, rename)."""
    cfg = model.cfg
    cfg.weights_dtype = dtype
    if training is not None:
        cfg.training = training
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".export-", dir=parent)
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; a checkpoint is meant to be shared
    try:
        sd = {k: v.to(DTYPES[dtype]) for k, v in model.state_dict().items()}
        write_safetensors(os.path.join(tmp, "model.safetensors"), sd, {"format": "pt"})
        with open(os.path.join(tmp, "config.json"), "w", encoding="utf-8") as f:
            f.write(cfg.to_json())
        shutil.copyfile(spm_model, os.path.join(tmp, "sentencepiece.model"))
        if os.path.exists(out_dir):
            shutil.rmtree(out_dir)
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_checkpoint(path: str, dtype: torch.dtype = torch.float32) -> TaskMoEModel:
    """Rebuild the reference model from a checkpoint directory (single or sharded safetensors)."""
    with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
        cfg = Config.from_json(f.read())
    index = os.path.join(path, "model.safetensors.index.json")
    tensors: Dict[str, torch.Tensor] = {}
    if os.path.exists(index):
        with open(index, encoding="utf-8") as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        for s in shards:
            tensors.update(read_safetensors(os.path.join(path, s)))
    else:
        tensors = read_safetensors(os.path.join(path, "model.safetensors"))
    model = TaskMoEModel(cfg)
    model.load_state_dict({k: v.to(dtype) for k, v in tensors.items()}, strict=True)
    return model.to(dtype).eval()
