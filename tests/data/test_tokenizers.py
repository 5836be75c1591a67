"""Tests of alignment.data.tokenizers: the three tokenizers and the chat-template hook."""

import json

import hypothesis
from hypothesis import strategies as st
import numpy as np
import pytest

from alignment.data import tokenizers

ALPHABET = "0123456789:+= "
CORPUS = [
    "the cat sat on the mat",
    "a dog ate the red apple",
    "sort the digits 31415 and 92653",
    "preference data for alignment",
    "the quick brown fox jumps over the lazy dog",
] * 20


# ---------------------------------------------------------------------------------------------
# CharTokenizer


def test_char_tokenizer_ids_by_hand():
  tok = tokenizers.CharTokenizer("abc")
  # pad 0, bos 1, eos 2, then a=3, b=4, c=5.
  assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.vocab_size) == (0, 1, 2, 6)
  assert tok.encode("cab") == [5, 3, 4]
  assert tok.encode("") == []


@hypothesis.given(st.text(alphabet=ALPHABET, max_size=30))
@hypothesis.settings(max_examples=100, deadline=None)
def test_char_tokenizer_round_trip(text):
  tok = tokenizers.CharTokenizer(ALPHABET)
  ids = tok.encode(text)
  assert len(ids) == len(text)
  assert all(3 <= i < tok.vocab_size for i in ids)
  assert tok.decode(ids) == text


def test_char_tokenizer_decode_drops_specials_and_does_not_stop_at_eos():
  tok = tokenizers.CharTokenizer("ab")
  # [bos, a, eos, b, pad, pad] -> "ab": EOS in the middle does not end the text.
  assert tok.decode([1, 3, 2, 4, 0, 0]) == "ab"
  assert tok.decode(np.array([3, 4, 0], np.int32)) == "ab"


def test_char_tokenizer_unknown_character_names_character_and_position():
  tok = tokenizers.CharTokenizer("0123456789")
  with pytest.raises(ValueError, match=r"'x' at position 2"):
    tok.encode("12x4")


def test_char_tokenizer_bad_alphabet_and_ids():
  with pytest.raises(ValueError, match="repeats 'a' at position 2"):
    tokenizers.CharTokenizer("aba")
  with pytest.raises(ValueError, match="non-empty"):
    tokenizers.CharTokenizer("")
  tok = tokenizers.CharTokenizer("ab")
  with pytest.raises(ValueError, match="id 5 at position 1"):
    tok.decode([3, 5])
  with pytest.raises(ValueError, match="integers"):
    tok.decode([3.0, 4.0])


# ---------------------------------------------------------------------------------------------
# HFTokenizer


@pytest.fixture(scope="module")
def hf_path(tmp_path_factory):
  """A byte-level BPE tokenizer.json trained in code, with a BOS/EOS post-processor."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
      vocab_size=300, special_tokens=["<pad>", "<s>", "</s>"],
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
  )
  tok.train_from_iterator(CORPUS, trainer=trainer)
  tok.post_processor = processors.TemplateProcessing(
      single="<s> $A </s>", special_tokens=[("<s>", 1), ("</s>", 2)]
  )
  path = tmp_path_factory.mktemp("hf") / "tokenizer.json"
  tok.save(str(path))
  return path


def test_hf_tokenizer_specials(hf_path):
  tok = tokenizers.HFTokenizer(hf_path)
  assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 2)
  vocab = json.loads(hf_path.read_text())["model"]["vocab"]
  assert tok.vocab_size == len(vocab)


@hypothesis.given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz 0123456789.,!?", max_size=40))
@hypothesis.settings(max_examples=50, deadline=None)
def test_hf_tokenizer_round_trip_without_special_tokens(hf_path, text):
  tok = tokenizers.HFTokenizer(hf_path)
  ids = tok.encode(text)
  # The post-processor would add <s> ... </s>; encode must not.
  assert tok.bos_id not in ids and tok.eos_id not in ids
  assert tok.decode(ids) == text


def test_hf_tokenizer_decode_drops_pad_bos_eos(hf_path):
  tok = tokenizers.HFTokenizer(hf_path)
  ids = tok.encode("the cat")
  assert tok.decode([tok.bos_id, *ids, tok.eos_id, 0, 0]) == "the cat"
  with pytest.raises(ValueError, match=f"id {tok.vocab_size} at position 0"):
    tok.decode([tok.vocab_size])


def test_hf_tokenizer_explicit_tokens_and_missing_file(hf_path, tmp_path):
  tok = tokenizers.HFTokenizer(hf_path, bos_token="</s>", eos_token="<s>")
  assert (tok.bos_id, tok.eos_id) == (2, 1)
  with pytest.raises(ValueError, match=r"BOS token '<bos>' is not in the vocabulary"):
    tokenizers.HFTokenizer(hf_path, bos_token="<bos>")
  with pytest.raises(FileNotFoundError, match="no tokenizer file"):
    tokenizers.HFTokenizer(tmp_path / "missing.json")


def test_hf_word_level_tokenizer_without_specials(tmp_path):
  from tokenizers import Tokenizer, models, pre_tokenizers

  tok = Tokenizer(models.WordLevel({"[PAD]": 0, "hello": 1, "world": 2, "[UNK]": 3}, "[UNK]"))
  tok.pre_tokenizer = pre_tokenizers.Whitespace()
  path = tmp_path / "tokenizer.json"
  tok.save(str(path))
  wrapped = tokenizers.HFTokenizer(path)
  assert (wrapped.bos_id, wrapped.eos_id, wrapped.vocab_size) == (None, None, 4)
  assert wrapped.encode("hello world") == [1, 2]
  assert wrapped.encode("hello there") == [1, 3]


# ---------------------------------------------------------------------------------------------
# SentencePieceTokenizer


@pytest.fixture(scope="module")
def sp_paths(tmp_path_factory):
  """Two tiny SentencePiece models: one with pad=0, one with SentencePiece's default ids."""
  import sentencepiece

  root = tmp_path_factory.mktemp("sp")
  corpus = root / "corpus.txt"
  corpus.write_text("\n".join(CORPUS) + "\n")
  paths = {}
  for name, ids in {
      "pad0": dict(pad_id=0, unk_id=1, bos_id=2, eos_id=3),
      "default": dict(),  # unk 0, bos 1, eos 2, no pad
  }.items():
    sentencepiece.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(root / name), vocab_size=60, model_type="bpe",
        character_coverage=1.0, minloglevel=2, **ids,
    )
    paths[name] = root / f"{name}.model"
  return paths


def test_sentencepiece_specials(sp_paths):
  tok = tokenizers.SentencePieceTokenizer(sp_paths["pad0"])
  assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.vocab_size) == (0, 2, 3, 60)
  default = tokenizers.SentencePieceTokenizer(sp_paths["default"])
  assert (default.pad_id, default.bos_id, default.eos_id) == (0, 1, 2)


@pytest.mark.parametrize("text", ["the cat sat on the mat", "sort 31415", "a lazy red fox", ""])
def test_sentencepiece_round_trip(sp_paths, text):
  tok = tokenizers.SentencePieceTokenizer(sp_paths["pad0"])
  ids = tok.encode(text)
  assert tok.bos_id not in ids and tok.eos_id not in ids and 0 not in ids
  assert tok.decode(ids) == text
  assert tok.decode([tok.bos_id, *ids, tok.eos_id, 0, 0]) == text


def test_sentencepiece_missing_file(tmp_path):
  with pytest.raises(FileNotFoundError, match="no model file"):
    tokenizers.SentencePieceTokenizer(tmp_path / "missing.model")


# ---------------------------------------------------------------------------------------------
# Chat templates


def test_plain_template_is_identity_on_a_prompt():
  tok = tokenizers.CharTokenizer(ALPHABET)
  assert tokenizers.apply_chat_template(tok, "3141:") == tok.encode("3141:")
  assert tokenizers.apply_chat_template(tok, "3141:", tokenize=False) == "3141:"


def test_roles_template_and_generation_prompt():
  messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
  text = tokenizers.apply_chat_template(None, messages, template=tokenizers.ROLES, tokenize=False)
  assert text == "user: hi\nassistant: yo\nassistant: "
  text = tokenizers.apply_chat_template(
      None, messages, template=tokenizers.ROLES, add_generation_prompt=False, tokenize=False
  )
  assert text == "user: hi\nassistant: yo\n"


def test_format_string_and_callable_templates():
  tok = tokenizers.CharTokenizer(ALPHABET)
  assert tokenizers.apply_chat_template(tok, "12", template="{content}=") == tok.encode("12=")
  joined = tokenizers.apply_chat_template(
      tok, [{"role": "user", "content": "1"}, {"role": "user", "content": "2"}],
      template=lambda ms: "+".join(m["content"] for m in ms) + "=",
  )
  assert tok.decode(joined) == "1+2="


def test_chat_template_errors():
  with pytest.raises(ValueError, match="message 1 must be a mapping"):
    tokenizers.apply_chat_template(None, [{"role": "user", "content": "a"}, "b"], tokenize=False)
  with pytest.raises(ValueError, match="unknown field 'name'"):
    tokenizers.apply_chat_template(None, "a", template="{name}", tokenize=False)
  with pytest.raises(TypeError, match="not str"):
    tokenizers.apply_chat_template(None, "a", template=lambda ms: 3, tokenize=False)
  with pytest.raises(ValueError, match="'x' at position 0"):
    tokenizers.apply_chat_template(tokenizers.CharTokenizer("0"), "x")
