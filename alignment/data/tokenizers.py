"""Tokenizers behind one small interface (docs/interfaces.md#tokenizers), and a chat-template hook.

Every tokenizer here has

- `encode(text: str) -> list[int]`: ids of `text`, no special tokens added;
- `decode(ids) -> str`: the text of `ids`; it stops at nothing (an EOS in the middle does not
  end the text) and drops the special ids `pad_id`, `bos_id` and `eos_id`, which carry no text;
- `vocab_size: int`, `pad_id: int` (always 0: batches are right-padded with 0),
  `bos_id: int | None`, `eos_id: int | None`.

Three implementations: `CharTokenizer` (one id per character of a fixed alphabet, for the
synthetic tasks), `HFTokenizer` (a local `tokenizer.json` of the Hugging Face `tokenizers`
package) and `SentencePieceTokenizer` (a local SentencePiece `.model`). Nothing is downloaded.

Padding is positional: the batch layer pads with id 0 and keeps the true lengths. In vocabularies
where id 0 is an ordinary token (GPT-2, Llama 3 and Qwen 2 use id 0 for "!"), `decode` still drops
it, as the contract says, so decode `ids[:length]`, never a padded row, when the text matters.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Iterable, Mapping, Optional, Protocol, Sequence, Union

import numpy as np

PAD_ID = 0


class Tokenizer(Protocol):
  """The tokenizer interface of docs/interfaces.md#tokenizers."""

  vocab_size: int
  pad_id: int
  bos_id: Optional[int]
  eos_id: Optional[int]

  def encode(self, text: str) -> list[int]:
    ...

  def decode(self, ids: Iterable[int]) -> str:
    ...


def _check_ids(ids: Iterable[int], vocab_size: int, owner: str) -> list[int]:
  """`ids` (any 1-D integer sequence) as Python ints in `[0, vocab_size)`; errors name the id."""
  array = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids)
  if array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
    raise ValueError(
        f"{owner}.decode: ids must be a 1-D sequence of integers, got dtype {array.dtype} and "
        f"shape {array.shape}."
    )
  for position, i in enumerate(array.tolist()):
    if not 0 <= i < vocab_size:
      raise ValueError(
          f"{owner}.decode: id {i} at position {position} is outside the vocabulary "
          f"[0, {vocab_size})."
      )
  return array.tolist()


def _text_ids(ids: Sequence[int], special: Iterable[Optional[int]]) -> list[int]:
  """`ids` without the special ids (pad, bos, eos) that carry no text."""
  drop = {i for i in special if i is not None}
  return [i for i in ids if i not in drop]


class CharTokenizer:
  """One id per character of `alphabet`; ids 0, 1, 2 are pad, BOS and EOS.

  `CharTokenizer("0123456789")` maps "0" -> 3, ..., "9" -> 12; `vocab_size` = 3 + len(alphabet).
  Encoding a character outside the alphabet raises a `ValueError` naming the character and its
  position.

  >>> tok = CharTokenizer("abc")
  >>> tok.encode("cab")
  [5, 3, 4]
  >>> tok.decode([1, 5, 3, 4, 2, 0, 0])
  'cab'
  """

  pad_id = PAD_ID
  bos_id = 1
  eos_id = 2

  def __init__(self, alphabet: str):
    if not isinstance(alphabet, str) or not alphabet:
      raise ValueError(f"CharTokenizer: alphabet must be a non-empty string, got {alphabet!r}.")
    seen = set()
    for position, char in enumerate(alphabet):
      if char in seen:
        raise ValueError(
            f"CharTokenizer: alphabet {alphabet!r} repeats {char!r} at position {position}."
        )
      seen.add(char)
    self.alphabet = alphabet
    self._offset = 3
    self._ids = {char: self._offset + i for i, char in enumerate(alphabet)}
    self.vocab_size = self._offset + len(alphabet)

  def encode(self, text: str) -> list[int]:
    """Ids of the characters of `text` (no BOS/EOS added)."""
    ids = []
    for position, char in enumerate(text):
      try:
        ids.append(self._ids[char])
      except KeyError:
        raise ValueError(
            f"CharTokenizer.encode: character {char!r} at position {position} of {text!r} is "
            f"not in the alphabet {self.alphabet!r}."
        ) from None
    return ids

  def decode(self, ids: Iterable[int]) -> str:
    """The characters of `ids`; pad, BOS and EOS are dropped (decoding does not stop at EOS)."""
    ids = _check_ids(ids, self.vocab_size, "CharTokenizer")
    text_ids = _text_ids(ids, (self.pad_id, self.bos_id, self.eos_id))
    return "".join(self.alphabet[i - self._offset] for i in text_ids)

  def __repr__(self) -> str:
    return f"CharTokenizer({self.alphabet!r})"


# Names under which common tokenizer.json files store their BOS / EOS tokens, in lookup order.
_BOS_NAMES = ("<s>", "<bos>", "<|begin_of_text|>", "[CLS]", "<|startoftext|>")
_EOS_NAMES = ("</s>", "<eos>", "<|end_of_text|>", "<|endoftext|>", "<|im_end|>", "[SEP]")


def _find_special(
    vocab: Mapping[str, int], token: Optional[str], candidates: Sequence[str], what: str, path: str
) -> Optional[int]:
  """Id of `token` (must exist), else of the first of `candidates` in `vocab`, else None."""
  if token is not None:
    if token not in vocab:
      raise ValueError(f"HFTokenizer({path!r}): {what} token {token!r} is not in the vocabulary.")
    return vocab[token]
  return next((vocab[name] for name in candidates if name in vocab), None)


class HFTokenizer:
  """A local Hugging Face `tokenizer.json`, through the `tokenizers` package.

  Args:
    path: path to a `tokenizer.json` file (no hub access).
    bos_token, eos_token: names of the BOS / EOS tokens; by default the first of the usual names
      (`<s>`, `<bos>`, `<|begin_of_text|>`, ... / `</s>`, `<eos>`, `<|endoftext|>`, ...) present
      in the vocabulary, or None.

  `encode` adds no special tokens (the post-processor's BOS/EOS are not inserted).
  """

  pad_id = PAD_ID

  def __init__(
      self, path: Union[str, os.PathLike], *, bos_token: Optional[str] = None,
      eos_token: Optional[str] = None,
  ):
    import tokenizers  # pylint: disable=g-import-not-at-top

    self.path = os.fspath(path)
    if not os.path.isfile(self.path):
      raise FileNotFoundError(f"HFTokenizer: no tokenizer file at {self.path!r}.")
    self._tokenizer = tokenizers.Tokenizer.from_file(self.path)
    vocab = self._tokenizer.get_vocab(with_added_tokens=True)
    self.vocab_size = self._tokenizer.get_vocab_size(with_added_tokens=True)
    self.bos_id = _find_special(vocab, bos_token, _BOS_NAMES, "BOS", self.path)
    self.eos_id = _find_special(vocab, eos_token, _EOS_NAMES, "EOS", self.path)

  def encode(self, text: str) -> list[int]:
    """Ids of `text`, without the special tokens the post-processor would add."""
    return list(self._tokenizer.encode(text, add_special_tokens=False).ids)

  def decode(self, ids: Iterable[int]) -> str:
    """The text of `ids` with pad, BOS and EOS dropped; other added tokens are kept."""
    ids = _check_ids(ids, self.vocab_size, "HFTokenizer")
    text_ids = _text_ids(ids, (self.pad_id, self.bos_id, self.eos_id))
    return self._tokenizer.decode(text_ids, skip_special_tokens=False)

  def __repr__(self) -> str:
    return f"HFTokenizer({self.path!r})"


class SentencePieceTokenizer:
  """A local SentencePiece model (`.model` file).

  `bos_id` / `eos_id` are the model's own (None where the model has none); `pad_id` is 0, the
  batch padding id, whatever piece id 0 is in the model (SentencePiece's default puts `<unk>`
  there; train with `pad_id=0` to make it a true pad piece).
  """

  pad_id = PAD_ID

  def __init__(self, model_path: Union[str, os.PathLike]):
    import sentencepiece  # pylint: disable=g-import-not-at-top

    self.path = os.fspath(model_path)
    if not os.path.isfile(self.path):
      raise FileNotFoundError(f"SentencePieceTokenizer: no model file at {self.path!r}.")
    self._processor = sentencepiece.SentencePieceProcessor(model_file=self.path)
    self.vocab_size = self._processor.get_piece_size()
    self.bos_id = self._processor.bos_id() if self._processor.bos_id() >= 0 else None
    self.eos_id = self._processor.eos_id() if self._processor.eos_id() >= 0 else None

  def encode(self, text: str) -> list[int]:
    """Piece ids of `text` (no BOS/EOS added)."""
    return list(self._processor.encode(text, out_type=int))

  def decode(self, ids: Iterable[int]) -> str:
    """The text of `ids` with pad, BOS and EOS dropped."""
    ids = _check_ids(ids, self.vocab_size, "SentencePieceTokenizer")
    return self._processor.decode(_text_ids(ids, (self.pad_id, self.bos_id, self.eos_id)))

  def __repr__(self) -> str:
    return f"SentencePieceTokenizer({self.path!r})"


Message = Mapping[str, str]


@dataclasses.dataclass(frozen=True)
class ChatTemplate:
  """A chat format made of two format strings.

  Attributes:
    message: rendered once per message with the fields `{role}` and `{content}`; the renderings
      are concatenated in order.
    generation_prompt: appended after the messages when a reply is to be generated.
  """

  message: str = "{content}"
  generation_prompt: str = ""

  def __call__(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
    parts = []
    for index, m in enumerate(messages):
      try:
        parts.append(self.message.format(role=m["role"], content=m["content"]))
      except KeyError as e:
        raise ValueError(
            f"ChatTemplate: message {index} or the template {self.message!r} uses the unknown "
            f"field {e}; messages have 'role' and 'content', templates may use {{role}} and "
            "{content}."
        ) from None
    return "".join(parts) + (self.generation_prompt if add_generation_prompt else "")


# The template of the synthetic tasks: a bare prompt is its own rendering.
PLAIN = ChatTemplate()
# A readable turn format for word-level tokenizers.
ROLES = ChatTemplate(message="{role}: {content}\n", generation_prompt="assistant: ")

Template = Union[ChatTemplate, str, Callable[[Sequence[Message]], str]]


def apply_chat_template(
    tokenizer: Tokenizer,
    messages: Union[str, Sequence[Message]],
    *,
    template: Template = PLAIN,
    add_generation_prompt: bool = True,
    tokenize: bool = True,
) -> Union[list[int], str]:
  """Renders a conversation with `template` and (by default) encodes it.

  Args:
    tokenizer: any tokenizer of this module.
    messages: a bare prompt (treated as one `{"role": "user", "content": prompt}` message) or a
      sequence of `{"role": ..., "content": ...}` mappings.
    template: a `ChatTemplate`; a per-message format string with `{role}` and `{content}` (no
      generation prompt); or a callable `messages -> str` (called with the message list only).
    add_generation_prompt: append the template's generation prompt (`ChatTemplate` only).
    tokenize: return `tokenizer.encode(text)` (no special tokens) rather than the text.

  Returns:
    `list[int]` ids, or the rendered `str` when `tokenize=False`.

  >>> apply_chat_template(CharTokenizer("0123456789:"), "3141:", tokenize=False)
  '3141:'
  >>> apply_chat_template(None, [{"role": "user", "content": "hi"}], template=ROLES,
  ...                     tokenize=False)
  'user: hi\\nassistant: '
  """
  if isinstance(messages, str):
    messages = [{"role": "user", "content": messages}]
  for index, m in enumerate(messages):
    if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
      raise ValueError(
          f"apply_chat_template: message {index} must be a mapping with 'role' and 'content', "
          f"got {m!r}."
      )
  if isinstance(template, str):
    template = ChatTemplate(message=template)
  if isinstance(template, ChatTemplate):
    text = template(messages, add_generation_prompt)
  elif callable(template):
    text = template(list(messages))
    if not isinstance(text, str):
      raise TypeError(f"apply_chat_template: the template returned {type(text)}, not str.")
  else:
    raise TypeError(
        "apply_chat_template: template must be a ChatTemplate, a format string or a callable, "
        f"got {type(template)}."
    )
  return tokenizer.encode(text) if tokenize else text
