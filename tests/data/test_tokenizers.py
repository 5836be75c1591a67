"""Tests of alignment.data.tokenizers: the tokenizers, checkpoint folders and chat templates."""

import json

import hypothesis
from hypothesis import strategies as st
import numpy as np
import pytest

from alignment.data import tokenizers
from tests import hf_fixtures

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


# ---------------------------------------------------------------------------------------------
# Checkpoint tokenizers and Jinja chat templates, against transformers on locally built folders

CONVERSATIONS = [
    [{"role": "user", "content": "hi there"}],
    [{"role": "system", "content": "Be nice."}, {"role": "user", "content": "hi there"},
     {"role": "assistant", "content": "hello, how are you?"},
     {"role": "user", "content": "I am fine, thanks!"}],
    [{"role": "user", "content": "sort the digits 31415"},
     {"role": "assistant", "content": "11345"}, {"role": "user", "content": "and 92653?"},
     {"role": "assistant", "content": "23569 "}],
]
TEXTS = ["the cat sat on the mat", " leading space", "Café 31415!\n\nnew  lines",
         "<|eot_id|> and <|im_end|> inside", ""]


@pytest.fixture(scope="module", params=["llama3", "chatml"])
def checkpoint(request, tmp_path_factory):
  """`(family, folder, ours, theirs)`: a tiny tokenizer folder, our tokenizer, AutoTokenizer."""
  transformers = pytest.importorskip("transformers")
  folder = hf_fixtures.write_tokenizer(tmp_path_factory.mktemp(request.param), request.param)
  return (request.param, folder, tokenizers.load_tokenizer(folder),
          transformers.AutoTokenizer.from_pretrained(str(folder)))


def test_checkpoint_special_tokens_equal_transformers(checkpoint):
  family, _, ours, theirs = checkpoint
  assert dict(ours.special_tokens) == theirs.special_tokens_map
  assert (ours.bos_id, ours.eos_id, ours.unk_id) == (
      theirs.bos_token_id, theirs.eos_token_id, theirs.unk_token_id)
  assert ours.vocab_size == len(theirs)
  if family == "llama3":  # no pad token: EOS pads, as in TRL.
    assert theirs.pad_token_id is None and ours.pad_id == ours.eos_id == 4
    assert (ours.add_bos_token, ours.add_eos_token) == (True, False)
  else:
    assert ours.pad_id == theirs.pad_token_id == 0 and ours.bos_id is None
    assert (ours.add_bos_token, ours.add_eos_token) == (False, False)
  assert ours.stop_ids == (ours.eos_id,)


@pytest.mark.parametrize("text", TEXTS)
def test_checkpoint_plain_text_ids_equal_transformers(checkpoint, text):
  _, _, ours, theirs = checkpoint
  ids = ([ours.bos_id] * ours.add_bos_token + ours.encode(text)
         + [ours.eos_id] * ours.add_eos_token)
  assert ids == theirs(text).input_ids
  assert ours.encode(text) == theirs(text, add_special_tokens=False).input_ids


@pytest.mark.parametrize("conversation", range(len(CONVERSATIONS)))
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_checkpoint_chat_template_equals_transformers(checkpoint, conversation,
                                                      add_generation_prompt):
  _, _, ours, theirs = checkpoint
  messages = CONVERSATIONS[conversation]
  kwargs = dict(template=ours.chat_template, add_generation_prompt=add_generation_prompt)
  text = tokenizers.apply_chat_template(ours, messages, tokenize=False, **kwargs)
  assert text == theirs.apply_chat_template(
      messages, tokenize=False, add_generation_prompt=add_generation_prompt)
  assert tokenizers.apply_chat_template(ours, messages, **kwargs) == theirs.apply_chat_template(
      messages, tokenize=True, return_dict=False, add_generation_prompt=add_generation_prompt)


@pytest.mark.parametrize("text", TEXTS)
def test_checkpoint_decode_round_trip(checkpoint, text):
  _, _, ours, theirs = checkpoint
  ids = ours.encode(text)
  dropped = {ours.pad_id, ours.bos_id, ours.eos_id}
  assert ours.decode(ids) == theirs.decode([i for i in ids if i not in dropped])
  if not dropped & set(ids):  # text without the EOS string (<|eot_id|>, <|im_end|>) comes back
    assert ours.decode(ids) == text
  # pad, BOS and EOS carry no text; other special tokens (<|im_start|>, headers) are kept.
  chat = tokenizers.apply_chat_template(ours, CONVERSATIONS[1], template=ours.chat_template)
  assert ours.decode(chat + [ours.pad_id] * 3) == theirs.decode(
      [i for i in chat if i not in dropped])


def test_checkpoint_prompt_completion_split(checkpoint):
  _, _, ours, theirs = checkpoint
  prompt, completion = CONVERSATIONS[1][:2], CONVERSATIONS[1][2:3]
  prompt_text, completion_text = tokenizers.render_prompt_completion(
      prompt, completion, template=ours.chat_template)
  assert prompt_text == theirs.apply_chat_template(prompt, tokenize=False,
                                                   add_generation_prompt=True)
  assert prompt_text + completion_text == theirs.apply_chat_template(prompt + completion,
                                                                     tokenize=False)
  assert completion_text.startswith("hello, how are you?")


def test_checkpoint_pad_token_and_generation_config(tmp_path, caplog):
  folder = hf_fixtures.write_tokenizer(
      tmp_path, "llama3", config_overrides={"pad_token": "<|finetune_right_pad_id|>"})
  (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [1, 4, 1]}))
  with caplog.at_level("WARNING"):
    tok = tokenizers.load_tokenizer(folder)
  assert "no pad token" not in caplog.text
  assert (tok.pad_id, tok.eos_id, tok.stop_ids) == (5, 4, (4, 1))


def test_checkpoint_missing_pad_is_reported(tmp_path, caplog):
  folder = hf_fixtures.write_tokenizer(tmp_path, "llama3")
  with caplog.at_level("WARNING"):
    tok = tokenizers.load_tokenizer(folder)
  assert tok.pad_id == tok.eos_id
  assert "no pad token; padding with the EOS token '<|eot_id|>' (id 4)" in caplog.text


@pytest.mark.parametrize("flags", [{"add_bos_token": False}, {"add_eos_token": True}])
def test_checkpoint_bos_eos_come_from_the_post_processor(tmp_path, flags):
  transformers = pytest.importorskip("transformers")
  folder = hf_fixtures.write_tokenizer(tmp_path, "llama3", config_overrides=flags)
  ours = tokenizers.load_tokenizer(folder)
  # transformers 5 ignores the config's flags when tokenizer.json exists: the file's
  # post-processor adds <|begin_of_text|> (id 0) and nothing after.
  assert (ours.add_bos_token, ours.add_eos_token) == (True, False)
  theirs = transformers.AutoTokenizer.from_pretrained(str(folder))
  assert [ours.bos_id, *ours.encode("the cat")] == theirs("the cat").input_ids


def test_checkpoint_post_processor_adding_other_tokens_is_an_error(tmp_path):
  from tokenizers import Tokenizer, processors

  folder = hf_fixtures.write_tokenizer(tmp_path, "chatml")
  backend = Tokenizer.from_file(str(folder / "tokenizer.json"))
  backend.post_processor = processors.TemplateProcessing(
      single="<|im_start|> $A", special_tokens=[("<|im_start|>", 1)])
  backend.save(str(folder / "tokenizer.json"))
  with pytest.raises(ValueError, match=r"adds \[1, .*only a BOS \(None\) before"):
    tokenizers.load_tokenizer(folder)


@pytest.mark.parametrize("location", ["file", "list"])
def test_checkpoint_template_locations_equal_transformers(tmp_path, location):
  transformers = pytest.importorskip("transformers")
  folder = hf_fixtures.write_tokenizer(tmp_path, "chatml", template_location=location)
  ours = tokenizers.load_tokenizer(folder)
  theirs = transformers.AutoTokenizer.from_pretrained(str(folder))
  names = {"file": ["default"], "list": ["default", "tool_use"]}[location]
  assert sorted(ours.chat_templates) == names
  for name in names:
    text = tokenizers.apply_chat_template(ours, CONVERSATIONS[1], tokenize=False,
                                          template=ours.chat_templates[name])
    # transformers takes a name only where there are several templates.
    assert text == theirs.apply_chat_template(
        CONVERSATIONS[1], tokenize=False, add_generation_prompt=True,
        chat_template=name if location == "list" else None)
  if location == "file":
    assert ours.chat_template.origin == str(folder / "chat_template.jinja")


def test_checkpoint_without_template(tmp_path):
  tok = tokenizers.load_tokenizer(
      hf_fixtures.write_tokenizer(tmp_path, "chatml", template_location="none"))
  assert tok.chat_template is None and not tok.chat_templates


def test_jinja_raise_exception_names_the_template_file(tmp_path):
  folder = hf_fixtures.write_tokenizer(tmp_path, "llama3", template_location="file")
  tok = tokenizers.load_tokenizer(folder)
  messages = [{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}]
  with pytest.raises(ValueError, match=r"chat_template\.jinja: Only user and assistant roles "
                     r"follow the system message, got tool"):
    tokenizers.apply_chat_template(tok, messages, template=tok.chat_template)
  with pytest.raises(ValueError, match=r"from bad\.jinja: TemplateSyntaxError"):
    tokenizers.JinjaTemplate("{% for m in messages %}", origin="bad.jinja")


def test_jinja_globals_and_tojson_options():
  chat_template_utils = pytest.importorskip("transformers.utils.chat_template_utils")
  template = tokenizers.JinjaTemplate(
      "{{ messages[0] | tojson }}|{{ messages[0] | tojson(indent=1, sort_keys=True) }}|"
      "{{ '<é>' | tojson }}|{{ bos_token }}{{ extra }}|{{ tools is none }}|"
      "{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}{{ m.role }}"
      "{% endfor %}|{{ strftime_now('%Y') | length }}|{% generation %}g{% endgeneration %}",
      special_tokens={"bos_token": "<s>"})
  text = template([{"role": "u", "content": "x", "name": None}], extra="!")
  # None-valued keys are dropped; tojson keeps '<é>' as is (no HTML escaping, no \\u escapes).
  assert text == ('{"role": "u", "content": "x"}|{\n "content": "x",\n "role": "u"\n}|'
                  '"<é>"|<s>!|True|u|4|g')
  rendered, _ = chat_template_utils.render_jinja_template(
      [[{"role": "u", "content": "x"}]], chat_template=template.source,
      add_generation_prompt=True, bos_token="<s>", extra="!")
  assert text == rendered[0]


def test_render_prompt_completion_errors():
  prompt = [{"role": "user", "content": "hi"}]
  with pytest.raises(ValueError, match="must end with a user message, got 'assistant'"):
    tokenizers.render_prompt_completion(
        [*prompt, {"role": "assistant", "content": "a"}], [], template=tokenizers.ROLES)
  # A template that renders the last message differently when it is last: no prefix.
  odd = tokenizers.JinjaTemplate(
      "{% for m in messages %}{{ m.content }}{% if loop.last %}.{% endif %}{% endfor %}",
      origin="odd.jinja")
  with pytest.raises(ValueError, match="from odd.jinja renders the prompt as 'hi.'"):
    tokenizers.render_prompt_completion(prompt, [{"role": "assistant", "content": "yo"}],
                                        template=odd)


def test_load_tokenizer_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
    tokenizers.load_tokenizer(tmp_path)
  (tmp_path / "tokenizer.model").write_bytes(b"")
  with pytest.raises(FileNotFoundError, match="SentencePiece tokenizer.model"):
    tokenizers.load_tokenizer(tmp_path)
  folder = hf_fixtures.write_tokenizer(tmp_path / "bad", "chatml",
                                       config_overrides={"bos_token": "<bos>"})
  with pytest.raises(ValueError, match="bos_token '<bos>' of tokenizer_config.json is not in"):
    tokenizers.load_tokenizer(folder)


def test_special_tokens_map_fills_legacy_configs(tmp_path):
  transformers = pytest.importorskip("transformers")
  folder = hf_fixtures.write_tokenizer(
      tmp_path, "chatml", config_overrides={"added_tokens_decoder": None, "pad_token": None})
  (folder / "special_tokens_map.json").write_text(json.dumps(
      {"pad_token": {"content": "<|im_start|>", "lstrip": False}, "eos_token": "<|endoftext|>"}))
  ours = tokenizers.load_tokenizer(folder)
  theirs = transformers.AutoTokenizer.from_pretrained(str(folder))
  assert dict(ours.special_tokens) == theirs.special_tokens_map
  assert (ours.pad_id, ours.eos_id) == (theirs.pad_token_id, theirs.eos_token_id) == (1, 0)
