"""The demo model's tokenizer: byte-level BPE trained on the synthetic generator's own text.

The paper backbone expects a Qwen-style tokenizer: the special tokens ``<|im_start|>``,
``<|im_end|>``, ``<|vision_start|>``, ``<|vision_end|>``, ``<|image_pad|>``, ``<|vision_pad|>``
and a chat template that renders ``<|im_start|>role\\ncontent<|im_end|>\\n`` turns. The demo
tokenizer has all of them, and two choices that help a tiny model:

* every integer 0-1000 is one token (added tokens, matched leftmost-longest before the BPE),
  so a box coordinate on the 0-1000 grid is a single token, as the location tokens of
  Pix2Seq/Kosmos-2/PaliGemma are: the model reads a coordinate out of the attended image
  features with one linear classification instead of spelling it digit by digit. (The first demo
  build split digits one per token; its grounding stayed at Acc@0.5 = 0.07 after 3000 steps,
  with boxes of the right size in the wrong place, on training scenes as on test scenes.)
  Other digits are still split one per token (``Digits(individual_digits=True)``);
* the BPE vocabulary is small (default 1024) and learned from the generator's questions,
  answers, captions, knowledge-base descriptions and the prompt templates, so typical words are
  one token and sequences stay short.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

__all__ = ["CHAT_TEMPLATE", "SPECIAL_TOKENS", "build_tokenizer", "train_tokenizer_json"]

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# The Qwen2.5 chat template reduced to string contents (all GeoLens sends).
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def train_tokenizer_json(
    texts: Iterable[str], vocab_size: int = 1024, max_number_token: int | None = 1000
) -> str:
    """Train the byte-level BPE on ``texts``; returns the ``tokenizers`` JSON (special tokens
    first, ids 0-7; then the BPE vocabulary; then one token per integer 0..``max_number_token``
    unless that is None)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    if max_number_token is not None:
        numbers = range(max_number_token + 1)
        tok.add_tokens([AddedToken(str(n), single_word=False, normalized=False) for n in numbers])
    return tok.to_str()


def build_tokenizer(tokenizer_json: str, out_dir: str | Path | None = None):
    """A left-padding ``PreTrainedTokenizerFast`` with the Qwen special tokens and chat template,
    saved to ``out_dir`` when given."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(tokenizer_json),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(SPECIAL_TOKENS[1:]),
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.padding_side = "left"
    if out_dir is not None:
        tokenizer.save_pretrained(str(out_dir))
    return tokenizer
