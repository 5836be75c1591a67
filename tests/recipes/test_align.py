"""Aligning a Hugging Face checkpoint on a preference file: the README's command end to end.

Tiny random checkpoints are built with transformers and a BPE tokenizer with a chat template is
trained locally (`tests/hf_fixtures.py`); the README's "Bring your own model" command runs as
written (its shell variables substituted); the exported `$OUT/hf` must load in transformers,
generate, differ from the initial weights, and give our logits within 1e-5 (float32).
"""

import json
import os
import re
import subprocess

import numpy as np
import pytest

from alignment.recipes import align
from alignment.recipes.config import replace_in
from tests import hf_fixtures

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VOCAB = 400  # the fixture tokenizers' size


def readme_command() -> str:
  """The first shell block of the README's "Bring your own model" section."""
  with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
    text = f.read()
  section = text[text.index("## Bring your own model"):]
  return re.search(r"```bash\n(.*?)\n```", section, re.S).group(1).strip()


def conversational_pairs(n: int) -> list[dict]:
  """TRL's conversational layout: prompt / chosen / rejected message lists."""
  rng = np.random.default_rng(0)
  rows = []
  for i in range(n):
    digits = "".join(map(str, rng.integers(0, 10, 4)))
    rows.append({
        "prompt": [{"role": "user", "content": f"sort the digits {digits}"}],
        "chosen": [{"role": "assistant", "content": "".join(sorted(digits))}],
        "rejected": [{"role": "assistant", "content": digits[::-1] + " maybe"}],
    })
  return rows


def write_jsonl(rows, path) -> str:
  with open(path, "w", encoding="utf-8") as f:
    for row in rows:
      f.write(json.dumps(row) + "\n")
  return str(path)


def checkpoint(folder, family: str, tokenizer: str):
  hf_fixtures.write_checkpoint(folder, family, vocab_size=VOCAB)
  hf_fixtures.write_tokenizer(folder, tokenizer)
  return str(folder)


def our_logits(folder, tokens):
  from alignment.models import hf, transformer  # pylint: disable=import-outside-toplevel

  config, params = hf.load_hf_checkpoint(folder)
  positions = np.broadcast_to(np.arange(tokens.shape[1]), tokens.shape)
  hidden = transformer.apply(config, params, tokens, positions, np.ones_like(tokens))
  return np.asarray(transformer.logits(config, params, hidden))


def test_readme_command_names_the_three_variables():
  command = readme_command()
  assert command.startswith("python -m experiments.align ")
  for variable in ("$MODEL", "$DATA", "$OUT"):
    assert variable in command


def test_bad_settings_are_reported_before_any_work(tmp_path):
  with pytest.raises(ValueError, match=r"model.path is empty.*--config.model.path"):
    align.run(align.Config(), str(tmp_path))
  with pytest.raises(ValueError, match="not a Hugging Face checkpoint folder"):
    align.run(replace_in(align.Config(), "model", path=str(tmp_path)), str(tmp_path))
  config = replace_in(align.Config(), "model", path=checkpoint(tmp_path / "m", "llama", "llama3"))
  with pytest.raises(ValueError, match=r"train.data is empty.*--config.train.data"):
    align.run(config, str(tmp_path / "out"))


@pytest.mark.slow
def test_readme_command_aligns_a_llama_checkpoint_on_conversational_pairs(tmp_path):
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel

  model = checkpoint(tmp_path / "model", "llama", "llama3")
  data = write_jsonl(conversational_pairs(16), tmp_path / "prefs.jsonl")
  out = str(tmp_path / "out")
  command = readme_command().replace("$MODEL", model).replace("$DATA", data).replace("$OUT", out)
  proc = subprocess.run(command, shell=True, cwd=ROOT, capture_output=True, text=True,
                        timeout=900, env=dict(os.environ, PYTHONPATH=ROOT))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "layout: conversational" in proc.stdout, proc.stdout[-2000:]

  exported = os.path.join(out, "hf")
  aligned = transformers.AutoModelForCausalLM.from_pretrained(exported, dtype=torch.float32)
  tokenizer = transformers.AutoTokenizer.from_pretrained(exported)
  initial = transformers.AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
  assert any(not torch.equal(a, b) for a, b in zip(aligned.state_dict().values(),
                                                    initial.state_dict().values()))
  with open(os.path.join(exported, "config.json"), encoding="utf-8") as f:
    hf_config = json.load(f)
  assert (hf_config["model_type"], hf_config["eos_token_id"]) == ("llama", tokenizer.eos_token_id)
  # The chat template travelled with the tokenizer; generation runs.
  prompt = tokenizer.apply_chat_template([{"role": "user", "content": "sort the digits 3141"}],
                                         add_generation_prompt=True, return_tensors="pt",
                                         return_dict=True)
  generated = aligned.generate(**prompt, max_new_tokens=4, do_sample=False,
                               pad_token_id=tokenizer.eos_token_id)
  assert generated.shape[1] == prompt["input_ids"].shape[1] + 4
  # Our logits of the exported model equal transformers'.
  tokens = np.asarray(prompt["input_ids"])
  with torch.no_grad():
    theirs = aligned(torch.as_tensor(tokens)).logits.numpy()
  np.testing.assert_allclose(our_logits(exported, tokens), theirs, atol=1e-5, rtol=0)


def layout_rows(layout: str, n: int = 8) -> list[dict]:
  """`n` rows of `layout` (docs/data.md's examples, numbered so that no two are equal)."""
  user = lambda i: [{"role": "user", "content": f"What color is sky {i}?"}]
  said = lambda text: [{"role": "assistant", "content": text}]
  make = {
      "pairwise": lambda i: {"prompt": f"The sky {i} is", "chosen": " blue.",
                             "rejected": " green."},
      "pairwise_implicit": lambda i: {"chosen": f"The sky {i} is blue.",
                                      "rejected": f"The sky {i} is green."},
      "transcript": lambda i: {"chosen": f"\n\nHuman: Hi {i}\n\nAssistant: Hello!",
                               "rejected": f"\n\nHuman: Hi {i}\n\nAssistant: Go away."},
      "conversational": lambda i: {"prompt": user(i), "chosen": said("It is blue."),
                                   "rejected": said("It is green.")},
      "listwise": lambda i: {"prompt": f"Rank these {i}.", "responses": ["best", "good", "bad"],
                             "scores": [3, 2, 1]},
      "ultrafeedback": lambda i: {"instruction": f"Add 3 and {i}.", "completions": [
          {"response": str(3 + i), "overall_score": 10.0},
          {"response": "12 or so", "overall_score": 1.0},
          {"response": "no idea", "overall_score": 4.0}]},
      "unpaired": lambda i: {"prompt": f"Greet me {i}.", "completion": "Hello!" if i % 2 else "No.",
                             "label": bool(i % 2)},
  }[layout]
  return [make(i) for i in range(n)]


# (layout, objective, hyper-parameters, train changes): every layout reaches a trained export.
LAYOUT_RUNS = [
    ("pairwise", "sigmoid", {"beta": 0.1}, {}),
    ("pairwise_implicit", "dpo", {"beta": 0.1}, {}),
    ("transcript", "ipo", {"beta": 0.1}, {}),
    ("conversational", "dpo", {"beta": 0.1}, {"reference": "lora", "lora_rank": 4}),
    ("listwise", "lipo_lambda", {"beta": 0.1}, {}),
    ("ultrafeedback", "dpo", {"beta": 0.1}, {"pairs": "all_pairs"}),
    ("unpaired", "kto", {"beta": 0.1}, {"reference": "forward"}),
]


@pytest.mark.slow
@pytest.mark.parametrize("layout,name,hyper,changes", LAYOUT_RUNS, ids=[r[0] for r in LAYOUT_RUNS])
def test_every_layout_trains_a_qwen2_checkpoint(tmp_path, layout, name, hyper, changes):
  import dataclasses  # pylint: disable=import-outside-toplevel

  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel

  from alignment.recipes import config as config_lib  # pylint: disable=import-outside-toplevel
  from alignment.recipes import preference_training  # pylint: disable=import-outside-toplevel

  model = checkpoint(tmp_path / "model", "qwen2", "chatml")
  data = write_jsonl(layout_rows(layout), tmp_path / f"{layout}.jsonl")
  changes = dict(changes)
  rank = changes.pop("lora_rank", 0)
  if rank:  # a held-out file too: its metrics are logged at the start and the end
    changes["eval_data"] = write_jsonl(layout_rows(layout, 5), tmp_path / "heldout.jsonl")
  config = align.Config(
      model=align.Checkpoint(path=model, logprob_chunk=128),
      loss=config_lib.Loss(name, hyper),
      train=dataclasses.replace(
          align.Config().train, data=data, batch_size=4, num_steps=2,
          optimizer=config_lib.Optimizer(learning_rate=1e-3),
          lora=preference_training.Lora(rank=rank), **changes))
  result = align.run(config, str(tmp_path / "out"))

  exported = transformers.AutoModelForCausalLM.from_pretrained(result.export_path,
                                                               dtype=torch.float32)
  initial = transformers.AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
  assert any(not torch.equal(a, b) for a, b in zip(exported.state_dict().values(),
                                                    initial.state_dict().values()))
  tokens = np.array([[5, 17, 42, 99, 7]])
  with torch.no_grad():
    theirs = exported(torch.as_tensor(tokens)).logits.numpy()
  np.testing.assert_allclose(our_logits(result.export_path, tokens), theirs, atol=1e-5, rtol=0)
  if rank:
    from alignment.training import logs  # pylint: disable=import-outside-toplevel

    held = [r for r in logs.read_metrics(str(tmp_path / "out")) if "heldout/loss" in r]
    assert [r["step"] for r in held] == [0, 2]
    # Step 0: the adapters are zero, so the policy is its reference: DPO's loss is ln 2 on every
    # pair, every margin 0 and no pair ranked right (strict accuracy).
    assert held[0]["heldout/loss"] == pytest.approx(np.log(2.0), abs=1e-6)
    assert held[0]["heldout/rewards/margins"] == pytest.approx(0.0, abs=1e-6)
    assert held[0]["heldout/rewards/accuracies"] == 0.0
    assert held[1]["heldout/loss"] != held[0]["heldout/loss"]
  if rank:  # the adapters in PEFT's format, on the original checkpoint, are the same model
    import peft  # pylint: disable=import-outside-toplevel

    with torch.no_grad():
      adapted = peft.PeftModel.from_pretrained(initial, result.adapter_path)(
          torch.as_tensor(tokens)).logits.numpy()
    np.testing.assert_allclose(adapted, theirs, atol=1e-5, rtol=0)
  else:
    assert result.adapter_path is None


def test_fitted_encoding_takes_the_data_s_lengths_under_the_limits_and_counts_cuts(tmp_path):
  from alignment.data import tokenizers  # pylint: disable=import-outside-toplevel

  hf_fixtures.write_tokenizer(tmp_path, "llama3")
  tok = tokenizers.load_tokenizer(tmp_path)  # adds BOS; EOS ends every completion
  records = [{"prompt": "the cat sat on the mat", "responses": ["a dog", "the quick brown fox"],
              "scores": [1.0, 0.0]},
             {"prompt": "sort", "responses": ["31415", "9"], "scores": [1.0, 0.0]}]
  prompts = [1 + len(tok.encode(r["prompt"])) for r in records]
  completions = [[1 + len(tok.encode(x)) for x in r["responses"]] for r in records]
  longest = max(max(c) for c in completions)
  # Limits above the data: the shapes are the data's, nothing is cut.
  encoding, cut = align.fitted_encoding(records, tok, None, align.Lengths())
  assert (encoding.max_prompt_tokens, encoding.max_response_tokens) == (max(prompts), longest)
  assert encoding.max_length is None and encoding.add_bos and encoding.render is None
  assert cut == {"records": 2, "truncated_prompts": 0, "truncated_completions": 0}
  # Tight limits: the first prompt and every completion longer than 2 tokens are cut, and
  # max_length cuts a completion after its (kept) prompt.
  limits = align.Lengths(max_prompt_length=prompts[1], max_completion_length=3,
                         max_length=prompts[1] + 2)
  encoding, cut = align.fitted_encoding(records, tok, None, limits)
  assert (encoding.max_prompt_tokens, encoding.max_response_tokens) == (prompts[1], 3)
  assert encoding.max_length == prompts[1] + 2
  assert prompts[0] > prompts[1]  # so both prompts keep prompts[1] tokens, leaving 2 for a
  # completion under max_length: every completion of more than 2 tokens is cut.
  assert cut == {"records": 2, "truncated_prompts": 1,
                 "truncated_completions": sum(c > 2 for cs in completions for c in cs)}
