"""A backbone plus named heads: the one model class for pre-training, fine-tuning and features.

Replaces the per-task classes of other libraries (`BertForMaskedLM`, `BertForSequenceClassification`,
...): the pre-training BERT is {"mlm", "nsp"} heads on a Backbone, a fine-tuned one a single
classification head on the same Backbone.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmforge.config import WEIGHTS_FILE, CheckpointConfig, ModelConfig
from lmforge.heads import HeadOutput, build_head
from lmforge.models.backbone import BackboneOutput
from lmforge.models.registry import build_backbone
from lmforge.nn.init import init_weights
from lmforge.weights import load_weights, save_weights


@dataclass
class ModelOutput:
    backbone: BackboneOutput
    heads: dict[str, HeadOutput] = field(default_factory=dict)
    loss: torch.Tensor | None = None


class TaskModel(nn.Module):
    def __init__(self, config: ModelConfig, heads: dict[str, dict[str, Any]] | None = None,
                 init: bool = True) -> None:
        super().__init__()
        self.config = config
        self.backbone = build_backbone(config, init=init)
        self.heads = nn.ModuleDict({name: build_head(config, self.backbone, spec)
                                    for name, spec in (heads or {}).items()})
        if init:
            for head in self.heads.values():
                init_weights(head, config)  # tied projections re-initialise the same embedding; harmless
        self.backbone_frozen = False

    def freeze_backbone(self) -> None:
        """Feature-based use (ELMo §3.3, BERT §5.3): the backbone's weights get no gradient and it runs
        in eval mode (no dropout inside it) even while the heads train, so its features are fixed."""
        self.backbone.requires_grad_(False)
        self.backbone_frozen = True
        self.backbone.eval()

    def train(self, mode: bool = True) -> TaskModel:
        super().train(mode)
        if self.backbone_frozen:
            self.backbone.eval()
        return self

    def resize_vocabulary(self, size: int) -> None:
        """Grow the token table to `size` rows for tokens added to the tokenizer (GPT-1 §3.3's start,
        delimiter and extract tokens). Old rows are kept, new rows drawn like the initialisation; heads
        tied to the table follow it, and vocabulary-sized biases grow with zeros."""
        old = self.backbone.input_embeddings()
        if size < old.num_embeddings:
            raise ValueError(f"cannot shrink the vocabulary from {old.num_embeddings} to {size}")
        new = nn.Embedding(size, old.embedding_dim, padding_idx=old.padding_idx,
                           device=old.weight.device, dtype=old.weight.dtype)
        with torch.no_grad():
            nn.init.normal_(new.weight, std=self.config.initializer_range)
            new.weight[: old.num_embeddings] = old.weight
        new.weight.requires_grad_(old.weight.requires_grad)
        self.backbone.set_input_embeddings(new)
        for head in self.heads.values():
            decoder = getattr(head, "decoder", None)
            if decoder is not None and decoder.weight is old.weight:
                decoder.weight = new.weight
            bias = getattr(head, "bias", None)
            if isinstance(bias, nn.Parameter) and bias.shape == (old.num_embeddings,):
                head.bias = nn.Parameter(torch.cat([bias.data, bias.new_zeros(size - old.num_embeddings)]))
        self.config = self.config.replace(vocab_size=size)
        self.backbone.config = self.backbone.config.replace(vocab_size=size)

    def head_specs(self) -> dict[str, dict[str, Any]]:
        return {name: head.spec() for name, head in self.heads.items()}

    def tied_keys(self) -> set[str]:
        """Parameter names that share storage with an earlier name (dropped on save)."""
        first: dict[int, str] = {}
        tied = set()
        for name, param in self.named_parameters(remove_duplicate=False):
            if id(param) in first:
                tied.add(name)
            else:
                first[id(param)] = name
        return tied

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, output_hidden_states: bool = False,
                heads: tuple[str, ...] | None = None, output_attentions: bool = False, **batch: Any) -> ModelOutput:
        """Batch keys the backbone names in `input_names` go to it, shaped by the heads' `backbone_inputs`;
        the rest (labels ...) to the heads. `output_attentions` asks the backbone for its attention scores
        (TinyBERT's layer losses); only backbones that have them take the argument, so it is passed only
        when asked for."""
        batch.update(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        inputs = {k: batch.pop(k) for k in self.backbone.input_names if batch.get(k) is not None}
        for key in ("input_ids", "attention_mask", "token_type_ids"):
            batch.pop(key, None)
        for head in self.heads.values():  # e.g. multiple choice: (B, C, T) -> (B*C, T)
            inputs = head.backbone_inputs(inputs, batch)
        wanted = heads if heads is not None else tuple(self.heads)
        output_hidden_states = output_hidden_states or any(
            getattr(self.heads[name], "reads_hidden_states", False) for name in wanted if name in self.heads)
        extra = {"output_attentions": True} if output_attentions else {}
        out = self.backbone(**inputs, output_hidden_states=output_hidden_states, **extra)
        results: dict[str, HeadOutput] = {}
        loss = None
        for name, head in self.heads.items():
            if heads is not None and name not in heads:
                continue
            result = head(out, batch)
            results[name] = result
            if result.loss is not None:
                weighted = head.loss_weight * result.loss
                loss = weighted if loss is None else loss + weighted
        return ModelOutput(backbone=out, heads=results, loss=loss)


def build_model(config: ModelConfig | str, heads: dict[str, dict[str, Any]] | None = None,
                **overrides: Any) -> TaskModel:
    """A freshly initialised model from a config or a preset name."""
    if isinstance(config, str):
        config = ModelConfig.from_name(config, **overrides)
    elif overrides:
        config = config.replace(**overrides)
    return TaskModel(config, heads)


def save_model(model: TaskModel, directory: str | Path, tokenizer: Any = None) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v for k, v in model.state_dict().items() if k not in model.tied_keys()}
    save_weights(state, directory / WEIGHTS_FILE)
    CheckpointConfig(model=model.config, heads=model.head_specs()).save(directory)
    if tokenizer is not None:
        tokenizer.save(str(directory / "tokenizer.json"))
    return directory


def load_state(model: TaskModel, state: dict[str, torch.Tensor], source: str,
               allow_missing_heads: bool = False) -> None:
    """Load with every tensor accounted for: a missing, unexpected or mis-shaped one names itself."""
    expected = model.state_dict()
    tied = model.tied_keys()
    unexpected = sorted(set(state) - set(expected))
    missing = sorted(set(expected) - set(state) - tied)
    if allow_missing_heads:
        missing = [k for k in missing if not k.startswith("heads.")]
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
             for k in state if k in expected and state[k].shape != expected[k].shape]
    problems = []
    if missing:
        problems.append(f"missing tensors: {missing}")
    if unexpected:
        problems.append(f"unexpected tensors: {unexpected}")
    if wrong:
        problems.append(f"wrong shapes: {wrong}")
    if problems:
        raise ValueError(f"{source}: " + "; ".join(problems))
    model.load_state_dict(state, strict=False)


def with_dropout(model: TaskModel, rate: float | None) -> TaskModel:
    """`model` rebuilt with every dropout rate of its config (residual, attention, FFN inner, classifier)
    set to `rate`, weights unchanged; None: `model` itself. T5 v1.1 is pre-trained without dropout and
    fine-tuned with 0.1 (the v1.1 release notes), as the `t5` recipe pre-trains; HF's T5 likewise has one
    `dropout_rate` for every place it drops out."""
    if rate is None:
        return model
    config = model.config
    rates = {f.name: rate for f in dataclasses.fields(config)
             if f.name.endswith("dropout") and isinstance(getattr(config, f.name), float)}
    if not rates:
        raise ValueError(f"--dropout: a {type(config).__name__} has no dropout rates to set")
    rebuilt = TaskModel(config.replace(**rates), {name: head.spec() for name, head in model.heads.items()},
                        init=False)
    rebuilt.load_state_dict(model.state_dict())
    return rebuilt


def load_model(directory: str | Path, heads: dict[str, dict[str, Any]] | None = None) -> TaskModel:
    """Load an lmforge model directory. `heads` replaces the saved heads (e.g. a new task head on a
    pre-trained backbone); saved head weights that no longer exist are dropped, new heads are initialised."""
    directory = Path(directory)
    ckpt = CheckpointConfig.load(directory)
    specs = ckpt.heads if heads is None else heads
    model = TaskModel(ckpt.model, specs, init=heads is not None)
    state = load_weights(directory / WEIGHTS_FILE)
    if heads is not None:
        kept = {f"heads.{name}." for name in specs if specs[name] == ckpt.heads.get(name)}
        state = {k: v for k, v in state.items() if not k.startswith("heads.") or k.startswith(tuple(kept))}
    load_state(model, state, str(directory / WEIGHTS_FILE), allow_missing_heads=heads is not None)
    return model
