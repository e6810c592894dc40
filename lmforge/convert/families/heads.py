"""Head rules and architecture tables that several HF families share (their heads are built alike).

Head templates are full HF names; `{head}` in ours is the lmforge head's name.
"""

from __future__ import annotations

from lmforge.convert.rules import Rules, params, rename

H = "heads.{head}"

# the task heads every encoder family has, by HF class-name suffix
ENCODER_TASKS: dict[str, tuple[str, ...]] = {
    "ForSequenceClassification": ("classification",),
    "ForTokenClassification": ("token_classification",),
    "ForQuestionAnswering": ("qa",),
    "ForMultipleChoice": ("multiple_choice",),
}
ENCODER_AS_DECODER = "an encoder used as a causal decoder (is_decoder=True) is not a model lmforge builds"


def mlm(dense: str, norm: str, decoder: str, bias_names: tuple[str, ...]) -> Rules:
    """dense -> act -> LayerNorm -> decoder (tied to the token embedding) + bias; HF may store the
    bias under several names (aliases of one tensor)."""
    rules = params(dense, f"{H}.dense") + params(norm, f"{H}.norm") + rename(f"{decoder}.weight", f"{H}.decoder.weight")
    for name in bias_names:
        rules += rename(name, f"{H}.bias")
    return rules


def linear_head(hf: str) -> Rules:
    return params(hf, f"{H}.out")


def mlp_head(dense: str, out: str) -> Rules:
    return params(dense, f"{H}.dense") + params(out, f"{H}.out")


TASKS: dict[str, Rules] = {
    "token_classification": linear_head("classifier"),
    "qa": linear_head("qa_outputs"),
}
