"""Tokenizers behind one small interface (docs/interfaces.md#tokenizers), and chat templates.

Every tokenizer here has

- `encode(text: str) -> list[int]`: ids of `text`, no special tokens added;
- `decode(ids) -> str`: the text of `ids`; it stops at nothing (an EOS in the middle does not
  end the text) and drops the special ids `pad_id`, `bos_id` and `eos_id`, which carry no text;
- `vocab_size: int`, `pad_id: int` (the id padded slots hold: 0 for the built-in tokenizers, a
  checkpoint's own pad token for `load_tokenizer`), `bos_id: int | None`, `eos_id: int | None`.

Four implementations: `CharTokenizer` (one id per character of a fixed alphabet, for the
synthetic tasks), `HFTokenizer` (a bare local `tokenizer.json` of the Hugging Face `tokenizers`
package), `SentencePieceTokenizer` (a local SentencePiece `.model`) and `CheckpointTokenizer`
(a Hugging Face checkpoint folder's own tokenizer, special tokens and Jinja chat templates, read
by `load_tokenizer` as transformers reads them). Nothing is downloaded.

Padding is positional: the batch layer pads with `pad_id` and keeps the true lengths, so the pad
id never changes a score. In vocabularies where id 0 is an ordinary token (GPT-2, Llama 3 and
Qwen 2 use id 0 for "!"), `HFTokenizer.decode` still drops it, as the contract says, so decode
`ids[:length]`, never a padded row, when the text matters.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import logging
import os
from typing import Any, Callable, Iterable, Mapping, Optional, Protocol, Sequence, Union

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


def _raise_exception(message: str):
  """The template global `raise_exception(message)`: stops rendering with `message`."""
  import jinja2  # pylint: disable=g-import-not-at-top

  raise jinja2.exceptions.TemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: Optional[int] = None,
            separators: Optional[tuple[str, str]] = None, sort_keys: bool = False) -> str:
  """The template filter `tojson`: `json.dumps` with these options, no HTML escaping."""
  return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                    sort_keys=sort_keys)


def _strftime_now(format_: str) -> str:
  """The template global `strftime_now(format)`: the local time now, formatted."""
  return datetime.datetime.now().strftime(format_)


@functools.lru_cache(maxsize=32)
def _compile_jinja(source: str):
  """`source` compiled in transformers' chat-template environment (cached by source).

  An `ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)` with the loop-control
  extension, the globals `raise_exception` and `strftime_now` and the `tojson` filter, as in
  `transformers.utils.chat_template_utils`. The `{% generation %}...{% endgeneration %}` block
  (transformers' assistant-mask marker) renders its body, as transformers does without masks.
  """
  from jinja2 import ext, sandbox  # pylint: disable=g-import-not-at-top

  class Generation(ext.Extension):
    tags = {"generation"}

    def parse(self, parser):
      next(parser.stream)
      return parser.parse_statements(("name:endgeneration",), drop_needle=True)

  environment = sandbox.ImmutableSandboxedEnvironment(
      trim_blocks=True, lstrip_blocks=True, extensions=[ext.loopcontrols, Generation])
  environment.filters["tojson"] = _tojson
  environment.globals["raise_exception"] = _raise_exception
  environment.globals["strftime_now"] = _strftime_now
  return environment.from_string(source)


@dataclasses.dataclass(frozen=True)
class JinjaTemplate:
  """A Hugging Face chat template (Jinja), rendered the way transformers renders it.

  The template sees `messages` (plain dicts; keys whose value is None are dropped),
  `add_generation_prompt`, `tools` and `documents` (None), the checkpoint's special tokens
  (`bos_token`, `eos_token`, ... as strings) and any extra `variables` given at the call;
  `raise_exception(message)`, `strftime_now(format)` and the `tojson` filter (with
  `ensure_ascii`, `indent`, `separators`, `sort_keys`) are available.

  Attributes:
    source: the Jinja text.
    origin: where it came from (a file, or a key of a file), named in errors.
    special_tokens: template variables such as `{"bos_token": "<s>"}`.

  An error raised while compiling or rendering (a syntax error, `raise_exception`, an undefined
  operation) surfaces as a `ValueError` naming `origin`.

  >>> template = JinjaTemplate(
  ...     "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{{ eos_token }}{% endfor %}"
  ...     "{% if add_generation_prompt %}<|assistant|>{% endif %}", origin="example",
  ...     special_tokens={"eos_token": "</s>"})
  >>> template([{"role": "user", "content": "hi"}])
  '<|user|>hi</s><|assistant|>'
  """

  source: str
  origin: str = "<string>"
  special_tokens: Mapping[str, str] = dataclasses.field(default_factory=dict, hash=False)

  def __post_init__(self):
    self._compiled()  # a syntax error is reported when the template is made, not used

  def _compiled(self):
    import jinja2  # pylint: disable=g-import-not-at-top

    try:
      return _compile_jinja(self.source)
    except jinja2.TemplateError as e:
      raise ValueError(f"chat template from {self.origin}: {type(e).__name__}: {e}") from e

  def __call__(self, messages: Sequence[Message], add_generation_prompt: bool = True,
               **variables: Any) -> str:
    import jinja2  # pylint: disable=g-import-not-at-top

    compiled = self._compiled()
    plain = [{k: v for k, v in m.items() if v is not None} for m in messages]
    try:
      return compiled.render(**{"tools": None, "documents": None, **self.special_tokens,
                                **variables}, messages=plain,
                             add_generation_prompt=add_generation_prompt)
    except jinja2.TemplateError as e:
      raise ValueError(f"chat template from {self.origin}: {e}") from e

# Named special tokens of a transformers tokenizer, in its order (`special_tokens_map`).
_SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token",
                        "cls_token", "mask_token")


@dataclasses.dataclass(frozen=True, eq=False)
class CheckpointTokenizer:
  """A Hugging Face checkpoint folder's own tokenizer; made by `load_tokenizer(folder)`.

  `encode` / `decode` follow this module's contract (no special tokens added; pad, BOS and EOS
  ids dropped when decoding, other added tokens kept), so that
  `[bos_id] * add_bos_token + encode(text) + [eos_id] * add_eos_token` equals the ids of
  `transformers.AutoTokenizer.from_pretrained(folder)(text)`.

  Attributes:
    folder: the checkpoint folder.
    backend: the `tokenizers.Tokenizer` of its `tokenizer.json`, post-processor as transformers
      sets it, padding and truncation off.
    vocab_size: vocabulary size with added tokens (`len(tokenizer)` in transformers).
    special_tokens: the named special tokens, e.g. `{"bos_token": "<|begin_of_text|>", ...}`
      (transformers' `special_tokens_map`; these are the chat templates' variables).
    bos_id, eos_id, unk_id: ids of those tokens, or None where the checkpoint has none.
    pad_id: id of `pad_token`; where the checkpoint has no pad token, the EOS id (as TRL does;
      `load_tokenizer` logs it), else 0.
    add_bos_token, add_eos_token: whether transformers' encoding of plain text starts with BOS /
      ends with EOS.
    stop_ids: ids that end a generated reply: `eos_id`, then `generation_config.json`'s
      `eos_token_id` (an int or a list).
    chat_templates: the checkpoint's chat templates by name (a single template is `"default"`).
  """

  folder: str
  backend: Any
  vocab_size: int
  special_tokens: Mapping[str, str]
  bos_id: Optional[int]
  eos_id: Optional[int]
  unk_id: Optional[int]
  pad_id: int
  add_bos_token: bool
  add_eos_token: bool
  stop_ids: tuple[int, ...]
  chat_templates: Mapping[str, JinjaTemplate]

  @property
  def chat_template(self) -> Optional[JinjaTemplate]:
    """The default chat template (transformers' choice without a name), or None."""
    return self.chat_templates.get("default")

  def encode(self, text: str) -> list[int]:
    """Ids of `text`; special-token strings in it (e.g. `<|eot_id|>`) map to their ids."""
    return list(self.backend.encode(text, add_special_tokens=False).ids)

  def decode(self, ids: Iterable[int]) -> str:
    """The text of `ids` with pad, BOS and EOS dropped; other added tokens are kept."""
    ids = _check_ids(ids, self.vocab_size, "CheckpointTokenizer")
    text_ids = _text_ids(ids, (self.pad_id, self.bos_id, self.eos_id))
    return self.backend.decode(text_ids, skip_special_tokens=False)

  def __repr__(self) -> str:
    return f"load_tokenizer({self.folder!r})"


def _read_json(path: str) -> dict:
  """The JSON object in `path`, or {} where there is no such file."""
  if not os.path.isfile(path):
    return {}
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def _token_text(value: Any) -> Optional[str]:
  """A special token as written in the configs (a string or `{"content": ...}`) as text."""
  return value.get("content") if isinstance(value, Mapping) else value


def _named_special_tokens(folder: str, config: Mapping[str, Any]) -> dict[str, str]:
  """The named special tokens of `tokenizer_config.json` as transformers resolves them.

  `special_tokens_map.json` overrides the config only when the config has no
  `added_tokens_decoder` (transformers' legacy path); an `extra_special_tokens` mapping adds
  model-specific names. Tokens that are null or absent are left out.
  """
  config = dict(config)
  if "added_tokens_decoder" not in config:
    config.update(_read_json(os.path.join(folder, "special_tokens_map.json")))
  names = list(_SPECIAL_TOKEN_NAMES)
  if isinstance(config.get("extra_special_tokens"), Mapping):
    config.update(config["extra_special_tokens"])
    names += list(config["extra_special_tokens"])
  tokens = {name: _token_text(config.get(name)) for name in names}
  return {name: token for name, token in tokens.items() if token is not None}


def _token_id(backend: Any, token: Optional[str], name: str, folder: str) -> Optional[int]:
  """Id of `token` in `backend` (None for None); a token outside the vocabulary is an error."""
  if token is None:
    return None
  token_id = backend.token_to_id(token)
  if token_id is None:
    raise ValueError(f"load_tokenizer({folder!r}): {name} {token!r} of tokenizer_config.json is "
                     "not in the vocabulary of tokenizer.json.")
  return token_id


def _added_bos_eos(backend: Any, bos_id: Optional[int], eos_id: Optional[int],
                   folder: str) -> tuple[bool, bool]:
  """Whether the post-processor puts BOS before / EOS after a text, read off one encoding.

  The post-processor of `tokenizer.json` decides, as in transformers 5, which ignores the
  `add_bos_token` / `add_eos_token` of `tokenizer_config.json` when `tokenizer.json` exists.
  """
  plain = backend.encode("a", add_special_tokens=False).ids
  full = backend.encode("a", add_special_tokens=True).ids
  start = next((i for i in range(len(full) - len(plain) + 1)
                if full[i:i + len(plain)] == plain), None)
  prefix = None if start is None else full[:start]
  suffix = None if start is None else full[start + len(plain):]
  if prefix not in ([], [bos_id]) or suffix not in ([], [eos_id]):
    raise ValueError(
        f"load_tokenizer({folder!r}): the post-processor of tokenizer.json adds {full} around "
        f"{plain}; only a BOS ({bos_id}) before and an EOS ({eos_id}) after are supported.")
  return bool(prefix), bool(suffix)


def _chat_templates(folder: str, config: Mapping[str, Any],
                    special_tokens: Mapping[str, str]) -> dict[str, JinjaTemplate]:
  """The checkpoint's chat templates by name, from the files transformers reads.

  `chat_template.jinja` (named "default") and `additional_chat_templates/NAME.jinja` take
  precedence over `tokenizer_config.json`'s `chat_template`, which is a string ("default") or a
  list of `{"name": ..., "template": ...}`.
  """
  sources = {}
  jinja_path = os.path.join(folder, "chat_template.jinja")
  if os.path.isfile(jinja_path):
    sources["default"] = jinja_path
  extra = os.path.join(folder, "additional_chat_templates")
  if os.path.isdir(extra):
    for name in sorted(os.listdir(extra)):
      if name.endswith(".jinja"):
        sources[name[:-len(".jinja")]] = os.path.join(extra, name)
  templates = {}
  for name, path in sources.items():
    with open(path, encoding="utf-8") as f:
      templates[name] = JinjaTemplate(f.read(), origin=path, special_tokens=special_tokens)
  if templates:
    return templates
  config_path = os.path.join(folder, "tokenizer_config.json")
  value = config.get("chat_template")
  if isinstance(value, str):
    return {"default": JinjaTemplate(value, origin=f"{config_path} (chat_template)",
                                     special_tokens=special_tokens)}
  return {
      item["name"]: JinjaTemplate(
          item["template"], origin=f"{config_path} (chat_template {item['name']!r})",
          special_tokens=special_tokens)
      for item in value or ()
  }


def load_tokenizer(folder: Union[str, os.PathLike]) -> CheckpointTokenizer:
  """The tokenizer of a local Hugging Face checkpoint folder, as transformers loads it.

  Reads `tokenizer.json` (through `tokenizers`; its post-processor decides whether BOS / EOS are
  added), `tokenizer_config.json` (special tokens, `chat_template`), `special_tokens_map.json`,
  `chat_template.jinja` and `generation_config.json` where present; nothing is downloaded. Named
  special tokens come from the configs; transformers' class-specific defaults for tokens a config
  omits are not applied, and a named token missing from the vocabulary is an error (transformers
  would add it as a new token). A checkpoint without a pad token pads with its EOS, as TRL does,
  and this is logged.

  Args:
    folder: the checkpoint folder.

  Returns:
    a `CheckpointTokenizer`.

  Raises:
    FileNotFoundError: no folder, or no `tokenizer.json` in it (a folder with only a
      SentencePiece `tokenizer.model` is named as such: saving it once with transformers'
      `AutoTokenizer.from_pretrained(folder).save_pretrained(folder)` writes the file).
    ValueError: a special token outside the vocabulary, a post-processor adding tokens other
      than BOS / EOS, or a chat template that does not compile.
  """
  import tokenizers  # pylint: disable=g-import-not-at-top

  folder = os.fspath(folder)
  path = os.path.join(folder, "tokenizer.json")
  if not os.path.isfile(path):
    sentencepiece_only = os.path.isfile(os.path.join(folder, "tokenizer.model"))
    raise FileNotFoundError(
        f"load_tokenizer: no tokenizer.json in {folder!r}"
        + (" (it has a SentencePiece tokenizer.model: write tokenizer.json once with "
           "transformers' AutoTokenizer.from_pretrained(folder).save_pretrained(folder))."
           if sentencepiece_only else "."))
  backend = tokenizers.Tokenizer.from_file(path)
  config = _read_json(os.path.join(folder, "tokenizer_config.json"))
  special_tokens = _named_special_tokens(folder, config)
  if "pad_token" not in special_tokens and backend.padding:
    special_tokens["pad_token"] = backend.padding["pad_token"]
  backend.no_padding()
  backend.no_truncation()
  ids = {name: _token_id(backend, token, name, folder) for name, token in special_tokens.items()}
  eos = special_tokens.get("eos_token")
  bos_id, eos_id = ids.get("bos_token"), ids.get("eos_token")
  add_bos, add_eos = _added_bos_eos(backend, bos_id, eos_id, folder)
  pad_id = ids.get("pad_token")
  if pad_id is None:
    pad_id = PAD_ID if eos_id is None else eos_id
    logging.warning("load_tokenizer(%r): no pad token; padding with %s (id %d).", folder,
                    "the EOS token " + repr(eos) if eos_id is not None else "id 0", pad_id)
  generation_eos = _read_json(os.path.join(folder, "generation_config.json")).get("eos_token_id")
  if not isinstance(generation_eos, list):
    generation_eos = [] if generation_eos is None else [generation_eos]
  stop_ids = tuple(dict.fromkeys([i for i in [eos_id, *generation_eos] if i is not None]))
  return CheckpointTokenizer(
      folder=folder, backend=backend,
      vocab_size=backend.get_vocab_size(with_added_tokens=True), special_tokens=special_tokens,
      bos_id=bos_id, eos_id=eos_id, unk_id=ids.get("unk_token"), pad_id=pad_id,
      add_bos_token=add_bos, add_eos_token=add_eos, stop_ids=stop_ids,
      chat_templates=_chat_templates(folder, config, special_tokens),
  )


Template = Union[ChatTemplate, JinjaTemplate, str, Callable[[Sequence[Message]], str]]


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
    template: a `ChatTemplate`; a checkpoint's `JinjaTemplate` (e.g. `tokenizer.chat_template`
      of `load_tokenizer`); a per-message format string with `{role}` and `{content}` (no
      generation prompt); or a callable `messages -> str` (called with the message list only).
    add_generation_prompt: append the template's generation prompt (`ChatTemplate` and
      `JinjaTemplate`).
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
  if isinstance(template, (ChatTemplate, JinjaTemplate)):
    text = template(messages, add_generation_prompt)
  elif callable(template):
    text = template(list(messages))
    if not isinstance(text, str):
      raise TypeError(f"apply_chat_template: the template returned {type(text)}, not str.")
  else:
    raise TypeError(
        "apply_chat_template: template must be a ChatTemplate, a JinjaTemplate, a format string "
        f"or a callable, got {type(template)}."
    )
  return tokenizer.encode(text) if tokenize else text


def render_prompt_completion(
    prompt: Sequence[Message], completion: Sequence[Message], *, template: Template
) -> tuple[str, str]:
  """Renders a conversational `(prompt, completion)` pair as two texts, as TRL does.

  The prompt is rendered with the generation prompt; the completion text is the rendering of
  the whole conversation `prompt + completion` (without a generation prompt) minus that prefix
  (`maybe_apply_chat_template` of TRL, "TRL: Transformer Reinforcement Learning", von Werra et
  al., 2020). Concatenated, the two texts are exactly the rendered conversation.

  Args:
    prompt: messages ending with a user turn.
    completion: the reply's messages (usually one assistant message).
    template: as in `apply_chat_template`.

  Returns:
    `(prompt_text, completion_text)`.

  Raises:
    ValueError: a prompt not ending with a user turn, or a template whose rendering of the prompt
      is not a prefix of its rendering of the whole conversation.

  >>> render_prompt_completion([{"role": "user", "content": "hi"}],
  ...                          [{"role": "assistant", "content": "yo"}], template=ROLES)
  ('user: hi\\nassistant: ', 'yo\\n')
  """
  if not prompt or prompt[-1].get("role") != "user":
    raise ValueError("render_prompt_completion: the prompt must end with a user message, got "
                     f"{prompt[-1].get('role') if prompt else 'no message'!r}.")
  prompt_text = apply_chat_template(None, prompt, template=template, tokenize=False)
  full_text = apply_chat_template(None, [*prompt, *completion], template=template,
                                  add_generation_prompt=False, tokenize=False)
  if not full_text.startswith(prompt_text):
    origin = getattr(template, "origin", repr(template))
    raise ValueError(
        f"render_prompt_completion: the chat template from {origin} renders the prompt as "
        f"{prompt_text!r}, which is not a prefix of the whole conversation {full_text!r}; the "
        "completion cannot be split off.")
  return prompt_text, full_text[len(prompt_text):]
