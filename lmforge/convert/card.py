"""The model card of a HuggingFace export: `README.md` with the YAML front matter the Hub reads
(library_name, pipeline_tag, language, license, datasets, base_model, tags), then what the run
directory says about the model: the recipe, the data, and the scores it measured.

Everything is read from files lmforge wrote: a pre-training run's `config.yaml`, `metrics.jsonl` and
the prepared data's `manifest.json`; a fine-tuning run's `args.json`, `summary.json` and
`metrics.jsonl`; `lmforge_source.json`, which `convert --from-hf` leaves with the provenance of a
HuggingFace checkpoint (its front matter and, when given, its Hub id). What is not known is left out.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

SOURCE_FILE = "lmforge_source.json"
CARD_FILE = "README.md"
SENTENCE_TRANSFORMERS_FILES = ("modules.json", "config_sentence_transformers.json", "sentence_bert_config.json")

AUTO_CLASSES = {"mlm": "AutoModelForMaskedLM", "clm": "AutoModelForCausalLM",
                "classification": "AutoModelForSequenceClassification",
                "token_classification": "AutoModelForTokenClassification", "qa": "AutoModelForQuestionAnswering",
                "multiple_choice": "AutoModelForMultipleChoice"}
PIPELINE_TAGS = {"mlm": "fill-mask", "clm": "text-generation", "classification": "text-classification",
                 "token_classification": "token-classification", "qa": "question-answering",
                 "multiple_choice": "multiple-choice"}

# the public corpora and benchmarks lmforge's recipes use, recognised by a folder name in a data
# path: (folder, Hub dataset id, language)
KNOWN_DATASETS = (
    ("wikitext-2", "Salesforce/wikitext", "en"),
    ("wikitext-103", "Salesforce/wikitext", "en"),
    ("glue", "nyu-mll/glue", "en"),
    ("squad", "rajpurkar/squad", "en"),
    ("conll2003", "eriktks/conll2003", "en"),
    ("nsmc", "e9t/nsmc", "ko"),
    ("tinyshakespeare", "karpathy/tiny_shakespeare", "en"),
    ("multi30k", "bentrevett/multi30k", None),
)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _read_yaml(path: Path) -> dict[str, Any] | None:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    records = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut by a kill
        if isinstance(record, dict):
            records.append(record)
    return records


def front_matter(readme: Path) -> dict[str, Any]:
    """The YAML block between the leading `---` lines of a Hub README (empty if none)."""
    try:
        text = readme.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.S)
    if not match:
        return {}
    try:
        data = yaml.safe_load(match.group(1))
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def source_record(hf_dir: Path, hub_id: str | None) -> dict[str, Any]:
    """What `convert --from-hf` keeps of a checkpoint's provenance (lmforge_source.json)."""
    card = front_matter(hf_dir / CARD_FILE)
    keep = ("license", "language", "datasets", "library_name", "pipeline_tag", "base_model")
    return {"hf_dir": str(hf_dir.resolve()), "hub_id": hub_id, "card": {k: card[k] for k in keep if k in card}}


def provenance(model_dir: Path | None) -> dict[str, Any]:
    """The source record of a model directory: lmforge_source.json, or a Hub README's front matter."""
    if model_dir is None:
        return {}
    record = _read_json(model_dir / SOURCE_FILE)
    if record is not None:
        return record
    card = front_matter(model_dir / CARD_FILE)
    return {"hub_id": None, "card": card} if card else {}


def datasets_of(paths: list[str]) -> tuple[list[str], list[str]]:
    """Hub dataset ids and languages of the known corpora among data paths."""
    ids, languages = [], []
    for path in paths:
        parts = {p.lower() for p in Path(path).parts}
        for folder, hub_id, language in KNOWN_DATASETS:
            if folder in parts:
                if hub_id not in ids:
                    ids.append(hub_id)
                if language and language not in languages:
                    languages.append(language)
    return ids, languages


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _run_files(model_dir: Path) -> dict[str, Any]:
    """The run's own records: a fine-tuning run is the model directory; a pre-training run is the
    parent of its `final/`."""
    info: dict[str, Any] = {}
    args = _read_json(model_dir / "args.json")
    if args is not None and "task" in args:
        info["finetune"] = args
        info["summary"] = _read_json(model_dir / "summary.json") or {}
        info["metrics"] = _read_metrics(model_dir / "metrics.jsonl")
        return info
    run_dir = model_dir.parent
    config = _read_yaml(run_dir / "config.yaml") if model_dir.name.startswith("final") else None
    if config is not None and "objective" in config:
        info["pretrain"] = config
        info["metrics"] = _read_metrics(run_dir / "metrics.jsonl")
        prepared = (config.get("data") or {}).get("prepared_dir")
        info["manifest"] = _read_json(Path(prepared) / "manifest.json") if prepared else None
    return info


def _pretrain_section(config: dict[str, Any], metrics: list[dict[str, Any]],
                      manifest: dict[str, Any] | None) -> tuple[list[str], list[str]]:
    model, objective = config.get("model") or {}, config.get("objective") or {}
    optim, schedule = config.get("optim") or {}, config.get("schedule") or {}
    start = f"continued from `{model['init_from']}`" if model.get("init_from") else f"preset `{model.get('preset')}`"
    lines = ["## Training", "",
             f"Pre-trained with lmforge `pretrain`: objective `{objective.get('kind')}`, "
             f"{start}, sequences of {objective.get('max_seq_len')} tokens, batch {optim.get('batch_size')} "
             f"x {optim.get('grad_accum', 1)} accumulation, peak learning rate {optim.get('lr')}, "
             f"{schedule.get('kind')} schedule"
             + (f", a {schedule['time_budget_minutes']}-minute wall-clock budget" if schedule.get("time_budget_minutes")
                else f", {schedule.get('max_steps') or schedule.get('epochs')} "
                     f"{'steps' if schedule.get('max_steps') else 'epochs'}") + "."]
    paths: list[str] = []
    if manifest:
        inputs = (manifest.get("config") or {}).get("inputs", []) + (manifest.get("config") or {}).get("valid", [])
        paths = [str(p) for p in inputs]
        splits = manifest.get("splits", {})
        tokens = ", ".join(f"{name} {info.get('tokens', 0):,} tokens" for name, info in splits.items())
        lines += ["", f"Data: {', '.join(f'`{Path(p).name}`' for p in paths)} ({tokens}); "
                      f"vocabulary {manifest.get('vocab_size')} tokens."]
    train = [r for r in metrics if "loss" in r]
    evals = [r for r in metrics if any(k.startswith("eval_") for k in r)]
    if train:
        last = train[-1]
        rows = [("step", last.get("step")), ("tokens seen", f"{last.get('tokens', 0):,}"),
                ("training time (s)", round(last.get("elapsed_s", 0.0))), ("final training loss", last.get("loss"))]
        if evals:
            rows += [(key.replace("eval_", "held-out "), value) for key, value in evals[-1].items()
                     if key.startswith("eval_")]
        lines += ["", "## Measured", "", "| | |", "|---|---|"]
        lines += [f"| {name} | {_fmt(value)} |" for name, value in rows]
    return lines, paths


def _finetune_section(args: dict[str, Any], summary: dict[str, Any]) -> tuple[list[str], list[str]]:
    lines = ["## Training", "",
             f"Fine-tuned with lmforge `finetune --task {args.get('task')}` from `{args.get('model')}` on "
             f"`{args.get('data')}`: learning rate {args.get('lr')}, batch {args.get('batch_size')}, "
             f"{args.get('epochs')} epochs, warm-up {args.get('warmup_ratio')}, seed {args.get('seed')}."]
    selected = summary.get("selected") or {}
    scores = {k: v for k, v in selected.items() if k != "step" and isinstance(v, (int, float))}
    if scores:
        lines += ["", "## Measured", "",
                  f"On the dev set ({summary.get('dev_examples')} examples), the model kept "
                  f"(step {selected.get('step')} of {summary.get('steps')}):", "", "| metric | value |", "|---|---|"]
        lines += [f"| {name} | {_fmt(value)} |" for name, value in scores.items()]
    return lines, [str(args.get("data", ""))]


def model_card(model_dir: Path, head_kinds: list[str], family: str, sentence_transformers: bool) -> str:
    """The README.md text for the export of `model_dir`."""
    run = _run_files(model_dir)
    body: list[str] = []
    data_paths: list[str] = []
    base_dir = None
    if "finetune" in run:
        body, data_paths = _finetune_section(run["finetune"], run["summary"])
        base_dir = Path(run["finetune"]["model"]) if run["finetune"].get("model") else None
    elif "pretrain" in run:
        body, data_paths = _pretrain_section(run["pretrain"], run["metrics"], run.get("manifest"))
        init_from = (run["pretrain"].get("model") or {}).get("init_from")
        base_dir = Path(init_from) if init_from else None
    own = provenance(model_dir)  # a checkpoint converted from HF and exported back
    base = provenance(base_dir)
    source_card = (base or own).get("card", {})

    datasets, languages = datasets_of(data_paths)
    meta: dict[str, Any] = {"library_name": "sentence-transformers" if sentence_transformers else "transformers"}
    tag = "sentence-similarity" if sentence_transformers else next(
        (PIPELINE_TAGS[k] for k in head_kinds if k in PIPELINE_TAGS), None if head_kinds else "feature-extraction")
    if tag:
        meta["pipeline_tag"] = tag
    language = languages or _as_list(source_card.get("language"))
    if language:
        meta["language"] = language
    meta["license"] = source_card.get("license", "unknown")
    datasets = datasets or ([] if base else _as_list(source_card.get("datasets")))
    if datasets:
        meta["datasets"] = datasets
    if base.get("hub_id"):
        meta["base_model"] = base["hub_id"]
    meta["tags"] = ["lmforge", family] + (["sentence-transformers"] if sentence_transformers else [])

    title = model_dir.name if not model_dir.name.startswith("final") else model_dir.resolve().parent.name
    lines = ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).strip(), "---", "",
             f"# {title}", "",
             f"A {family} model ({', '.join(head_kinds) or 'no head: hidden states / embeddings'}) "
             "trained with lmforge and exported to the HuggingFace format.", ""]
    if base_dir is not None:
        lines += [f"Base model: `{base.get('hub_id') or base_dir}`.", ""]
    if not body and own:
        lines += [f"Converted from `{own.get('hub_id') or own.get('hf_dir')}` without further training.", ""]
    lines += body
    lines += ["", "## Use", ""] + _usage(head_kinds, sentence_transformers)
    return "\n".join(lines).rstrip() + "\n"


def _usage(head_kinds: list[str], sentence_transformers: bool) -> list[str]:
    if sentence_transformers:
        return ["```python", "from sentence_transformers import SentenceTransformer", "",
                'model = SentenceTransformer("path/to/this/folder")',
                'vectors = model.encode(["A sentence.", "Another one."])', "```"]
    auto = next((AUTO_CLASSES[k] for k in head_kinds if k in AUTO_CLASSES), "AutoModel")
    return ["```python", f"from transformers import AutoTokenizer, {auto}", "",
            'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")',
            f'model = {auto}.from_pretrained("path/to/this/folder")', "```"]
