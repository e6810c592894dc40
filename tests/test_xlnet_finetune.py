"""Fine-tuning XLNet through the existing tasks: A <sep> B <sep> <cls> features padded on the left,
classification from the final <cls>, QA's "no answer" at <cls>, per-token logits unpadded from the
left, and a model whose outputs do not depend on how much padding a batch adds."""

from __future__ import annotations

import numpy as np
import torch
from tokenizers import Tokenizer, models, pre_tokenizers

from lmforge.features import pool
from lmforge.heads import IGNORE
from lmforge.models.task_model import TaskModel
from lmforge.tasks import get_task
from lmforge.tasks.classification import TextExample
from lmforge.tasks.multiple_choice import ChoiceExample
from lmforge.tasks.qa import QAExample
from lmforge.tasks.tagging import Sentence
from lmforge.tasks.text import summary_last
from lmforge.tokenizers.families import template
from lmforge.xlnet_config import XLNetConfig

WORDS = "the a cat dog sat on mat ran far away where is it under bridge oakwood treasure lies tonight".split()


def xlnet_tokenizer() -> Tokenizer:
    specials = template("xlnet").specials
    vocab = {t: i for i, t in enumerate([*specials, *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(list(specials))
    tok.post_processor = template("xlnet").post_processor(tok.token_to_id)
    return tok


TOK = xlnet_tokenizer()
CLS, SEP, PAD = TOK.token_to_id("<cls>"), TOK.token_to_id("<sep>"), TOK.token_to_id("<pad>")


def test_layout_is_a_sep_b_sep_cls():
    enc = TOK.encode("the cat", "sat on")
    assert enc.ids[-3:] == [TOK.token_to_id("on"), SEP, CLS] and enc.ids[2] == SEP
    assert enc.type_ids == [0, 0, 0, 1, 1, 1, 2]
    assert summary_last(TOK)


def test_classification_pads_left_and_keeps_cls_last():
    task = get_task("sst2")
    examples = [TextExample("the cat sat on the mat", None, "1", 1, "x"), TextExample("a dog", None, "0", 2, "x")]
    encoded = task.encode(examples, TOK, 32, ["0", "1"], train=True)
    batch = task.collate(encoded.features, PAD)
    assert (batch["input_ids"][:, -1] == CLS).all()
    assert batch["attention_mask"].tolist()[1] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert (batch["input_ids"][1, :4] == PAD).all()


def test_multiple_choice_pads_every_choice_left():
    task = get_task("swag")
    example = ChoiceExample("the cat sat", "on", ["the mat", "a dog ran far away", "it", "the bridge"], 1, 1, "x")
    batch = task.collate(task.encode([example], TOK, 32, None, train=True).features, PAD)
    assert batch["input_ids"].shape[:2] == (1, 4)
    assert (batch["input_ids"][0, :, -1] == CLS).all()
    assert batch["attention_mask"][0, :, 0].tolist() == [0, 1, 0, 0]  # only the longest choice starts at 0


def test_qa_positions_follow_the_padding_and_no_answer_is_cls():
    task = get_task("squad")
    context = "the treasure lies under oakwood bridge tonight"
    answered = QAExample("1", "where is it", context, [{"text": "oakwood bridge",
                                                         "answer_start": context.index("oakwood")}], False, "x")
    short = QAExample("2", "where", "it ran", [], True, "x")
    encoded = task.encode([answered, short], TOK, 32, None, train=True)
    first, second = encoded.features
    assert second["start_positions"] == second["end_positions"] == len(second["input_ids"]) - 1  # <cls>
    batch = task.collate(encoded.features, PAD)
    shift = len(first["input_ids"]) - len(second["input_ids"])
    assert batch["start_positions"][1] == second["start_positions"] + shift
    assert batch["input_ids"][1, batch["start_positions"][1]] == CLS
    s = int(batch["start_positions"][0])
    assert batch["input_ids"][0, s] == TOK.token_to_id("oakwood")
    # decoding reads the feature's own tokens: the padded logits are unpadded from the left
    logits = torch.zeros(2, batch["input_ids"].shape[1], 2)
    logits[0, s, 0] = logits[0, s + 1, 1] = 10.0
    trimmed = [task.trim_logits(f, logits[i]) for i, f in enumerate(encoded.features)]
    assert [len(t) for t in trimmed] == [len(f["input_ids"]) for f in encoded.features]
    assert task.decode([answered, short], encoded, trimmed, None)[0] == "oakwood bridge"


def test_tagging_labels_pad_left_and_logits_unpad():
    task = get_task("ner")
    sentences = [Sentence(["the", "cat", "sat"], ["O", "B-PER", "O"], 1, "x"), Sentence(["dog"], ["B-LOC"], 5, "x")]
    labels = ["O", "B-PER", "B-LOC"]
    encoded = task.encode(sentences, TOK, 32, labels, train=True)
    batch = task.collate(encoded.features, PAD)
    assert batch["labels"][1].tolist() == [IGNORE, IGNORE, 2, IGNORE, IGNORE]
    logits = torch.arange(10.0).view(2, 5, 1).expand(2, 5, 3)
    assert task.trim_logits(encoded.features[1], logits[1])[:, 0].tolist() == [7.0, 8.0, 9.0]


def test_model_output_does_not_depend_on_padding():
    """The <cls> summary of an example is the same alone and in a left-padded batch (relative
    positions and masked padding); the features code's last-token pooling finds it too."""
    torch.manual_seed(0)
    config = XLNetConfig(vocab_size=TOK.get_vocab_size(), hidden_size=32, num_layers=2, num_heads=4,
                         intermediate_size=37, pad_token_id=PAD)
    model = TaskModel(config, {"cls": {"kind": "classification", "num_labels": 3}}).eval()
    task = get_task("sst2")
    examples = [TextExample("the cat sat on the mat far away", None, "1", 1, "x"),
                TextExample("a dog", None, "0", 2, "x")]
    features = task.encode(examples, TOK, 32, ["0", "1"], train=False).features
    with torch.no_grad():
        batch = task.collate(features, PAD)
        both = model(**batch, output_hidden_states=True)
        alone = model(**task.collate(features[1:], PAD)).heads["cls"].logits
    torch.testing.assert_close(both.heads["cls"].logits[1], alone[0], atol=1e-5, rtol=1e-5)
    hidden = both.backbone.last_hidden_state
    np.testing.assert_array_equal(pool(hidden, batch["attention_mask"], "last").numpy(), hidden[:, -1].numpy())
