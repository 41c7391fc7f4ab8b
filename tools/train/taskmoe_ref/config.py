"""The checkpoint's config.json as Python dataclasses, validated as docs/checkpoint-format.md says."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Dict, List, Optional

ROUTINGS = ("dense", "token", "task:target", "task:pair")


@dataclass
class ModelConfig:
    d_model: int = 256
    n_heads: int = 4
    d_ff: int = 1024
    encoder_layers: int = 4
    decoder_layers: int = 4
    vocab_size: int = 8000
    max_positions: int = 256
    norm: str = "pre"
    activation: str = "relu"
    positional_encoding: str = "sinusoidal"
    shared_embeddings: bool = True
    scale_embeddings: bool = True
    layer_norm_eps: float = 1e-5
    pad_id: int = 0
    unk_id: int = 1
    bos_id: int = 2
    eos_id: int = 3


@dataclass
class StackMoE:
    routing: str = "dense"
    layers: List[int] = field(default_factory=list)
    task_keys: List[str] = field(default_factory=list)


@dataclass
class MoEConfig:
    num_experts: int = 8
    top_k: int = 2
    d_ff_expert: int = 1024
    task_embedding_dim: int = 64
    encoder: StackMoE = field(default_factory=StackMoE)
    decoder: StackMoE = field(default_factory=StackMoE)

    def stack(self, name: str) -> StackMoE:
        return self.encoder if name == "encoder" else self.decoder


@dataclass
class Task:
    name: str
    source: str
    target: str


@dataclass
class Config:
    model: ModelConfig
    moe: MoEConfig
    tasks: List[Task]
    target_tags: Dict[str, str]
    weights_dtype: str = "float32"
    training: dict = field(default_factory=dict)

    # --- routing helpers -------------------------------------------------
    def task_index(self, name: str) -> int:
        for i, t in enumerate(self.tasks):
            if t.name == name:
                return i
        raise KeyError(f"unknown task '{name}'; valid tasks: {', '.join(t.name for t in self.tasks)}")

    def task_key_index(self, stack: str, task: Task) -> int:
        s = self.moe.stack(stack)
        key = task.target if s.routing == "task:target" else task.name
        return s.task_keys.index(key)

    # --- (de)serialisation -------------------------------------------------
    def to_dict(self) -> dict:
        d = {
            "format": "taskmoe-checkpoint",
            "format_version": 1,
            "model": dataclasses.asdict(self.model),
            "moe": dataclasses.asdict(self.moe),
            "tasks": [dataclasses.asdict(t) for t in self.tasks],
            "target_tags": dict(self.target_tags),
            "weights_dtype": self.weights_dtype,
        }
        for s in ("encoder", "decoder"):
            if not self.moe.stack(s).routing.startswith("task:"):
                d["moe"][s].pop("task_keys")
        if self.training:
            d["training"] = self.training
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    @staticmethod
    def from_dict(d: dict) -> "Config":
        if d.get("format") != "taskmoe-checkpoint":
            raise ValueError("config.json: 'format' must be 'taskmoe-checkpoint'")
        if d.get("format_version") != 1:
            raise ValueError(f"config.json: unsupported format_version {d.get('format_version')}")
        m = ModelConfig(**d["model"])
        md = dict(d.get("moe", {}))
        stacks = {s: StackMoE(**md.pop(s, {})) for s in ("encoder", "decoder")}
        moe = MoEConfig(**md, **stacks)
        cfg = Config(model=m, moe=moe, tasks=[Task(**t) for t in d["tasks"]],
                     target_tags=dict(d["target_tags"]), weights_dtype=d.get("weights_dtype", "float32"),
                     training=d.get("training", {}))
        cfg.validate()
        return cfg

    @staticmethod
    def from_json(text: str) -> "Config":
        return Config.from_dict(json.loads(text))

    def validate(self) -> None:
        m = self.model
        if m.d_model % m.n_heads:
            raise ValueError("model.d_model must be a multiple of model.n_heads")
        if m.norm not in ("pre", "post"):
            raise ValueError("model.norm must be 'pre' or 'post'")
        if m.activation not in ("relu", "gelu"):
            raise ValueError("model.activation must be 'relu' or 'gelu'")
        if m.positional_encoding not in ("sinusoidal", "learned"):
            raise ValueError("model.positional_encoding must be 'sinusoidal' or 'learned'")
        if self.moe.top_k > self.moe.num_experts:
            raise ValueError("moe.top_k must be <= moe.num_experts")
        names = [t.name for t in self.tasks]
        if not names or len(set(names)) != len(names):
            raise ValueError("tasks must be non-empty with unique names")
        for s, n in (("encoder", m.encoder_layers), ("decoder", m.decoder_layers)):
            st = self.moe.stack(s)
            if st.routing not in ROUTINGS:
                raise ValueError(f"moe.{s}.routing must be one of {ROUTINGS}")
            if st.layers != sorted(set(st.layers)) or any(i < 0 or i >= n for i in st.layers):
                raise ValueError(f"moe.{s}.layers must be sorted, unique, < {s}_layers")
            if (st.routing == "dense") != (not st.layers):
                raise ValueError(f"moe.{s}: routing 'dense' iff no MoE layers")
            if st.routing.startswith("task:"):
                for t in self.tasks:
                    key = t.target if st.routing == "task:target" else t.name
                    if key not in st.task_keys:
                        raise ValueError(f"moe.{s}.task_keys lacks '{key}'")
        for t in self.tasks:
            if t.target not in self.target_tags:
                raise ValueError(f"target_tags lacks a tag for '{t.target}'")
