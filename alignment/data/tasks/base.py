"""The `Task` interface of the synthetic tasks, and helpers the tasks share.

A task is a prompt distribution with a known, graded, multi-attribute reward:

- `prompts(split, n, seed)`: `n` distinct prompts of the "train" or "heldout" split. The splits
  are disjoint by construction: a prompt belongs to "heldout" iff the CRC-32 of its split key
  (`_split_key`, e.g. the digit multiset for sorting) falls in the held-out fifth.
- `attributes(prompt, response) -> dict[str, float]` and the batched `attributes_batch`;
  `reward = Σ_a weights[a] · attributes[a]` (`reward`, `reward_batch`).
- `optimum(prompt)`: the unique response of maximal reward.
- `demonstration(prompt, rng)` / `demonstrations(n, seed, split)`: responses of mixed quality,
  for supervised fine-tuning (a model fitted to them is neither random nor optimal).
- `tokenizer`, `max_prompt_length`, `max_response_length` (token counts of the text, without
  BOS/EOS: add one for each the pipeline uses).
"""

from __future__ import annotations

import abc
import zlib
from typing import ClassVar, Literal, Mapping, Sequence

import numpy as np

from alignment.data import tokenizers

Split = Literal["train", "heldout"]
SPLITS: tuple[str, ...] = ("train", "heldout")
# A prompt is held out iff crc32(split key) % _HELDOUT_MODULUS < _HELDOUT_BUCKETS (a fifth).
_HELDOUT_MODULUS = 5
_HELDOUT_BUCKETS = 1


def check_split(split: str) -> int:
  """Index of `split` in `SPLITS`; an unknown split raises a ValueError naming the known ones."""
  if split not in SPLITS:
    raise ValueError(f"Unknown split {split!r}; expected one of {SPLITS}.")
  return SPLITS.index(split)


def lcs_length_batch(a: Sequence[str], b: Sequence[str]) -> np.ndarray:
  """Lengths of the longest common subsequences of `a[i]` and `b[i]`, shape `[N]` int64.

  The dynamic programme `L[i, j] = L[i-1, j-1] + 1 if a_i = b_j else max(L[i-1, j], L[i, j-1])`
  runs over string positions, vectorised over the N pairs (strings are padded with codes that
  never match).
  """
  if len(a) != len(b):
    raise ValueError(f"lcs_length_batch: {len(a)} first strings but {len(b)} second strings.")
  n = len(a)
  len_a = max((len(s) for s in a), default=0)
  len_b = max((len(s) for s in b), default=0)
  codes_a = np.full((n, len_a), -1, np.int64)
  codes_b = np.full((n, len_b), -2, np.int64)
  for i, (s, t) in enumerate(zip(a, b)):
    codes_a[i, : len(s)] = [ord(c) for c in s]
    codes_b[i, : len(t)] = [ord(c) for c in t]
  previous = np.zeros((n, len_b + 1), np.int64)
  for i in range(len_a):
    match = codes_a[:, i : i + 1] == codes_b
    current = np.zeros_like(previous)
    for j in range(len_b):
      current[:, j + 1] = np.where(
          match[:, j], previous[:, j] + 1, np.maximum(previous[:, j + 1], current[:, j])
      )
    previous = current
  return previous[:, len_b]


class Task(abc.ABC):
  """A synthetic task with a known reward (see the module docstring for the contract).

  Subclasses define `name`, `weights`, `tokenizer`, `max_prompt_length`, `max_response_length`,
  `_sample_prompt`, `_split_key`, `attributes_batch`, `optimum` and `demonstration`; prompt
  sampling, splitting and the reward sums are shared here.
  """

  name: ClassVar[str]
  # Attribute name -> weight in the total reward.
  weights: ClassVar[Mapping[str, float]]

  @property
  @abc.abstractmethod
  def tokenizer(self) -> tokenizers.Tokenizer:
    """The tokenizer of prompts and responses."""

  @property
  @abc.abstractmethod
  def max_prompt_length(self) -> int:
    """Tokens in the longest prompt (no BOS)."""

  @property
  @abc.abstractmethod
  def max_response_length(self) -> int:
    """Tokens in the longest demonstration or optimum (no EOS)."""

  @abc.abstractmethod
  def _sample_prompt(self, rng: np.random.Generator) -> str:
    """One prompt of either split."""

  @abc.abstractmethod
  def _split_key(self, prompt: str) -> str:
    """The string whose hash decides the split (prompts sharing it share a split)."""

  @abc.abstractmethod
  def attributes_batch(
      self, prompts: Sequence[str], responses: Sequence[str]
  ) -> dict[str, np.ndarray]:
    """Attribute name -> values `[N]` float64 for the N (prompt, response) pairs."""

  @abc.abstractmethod
  def optimum(self, prompt: str) -> str:
    """The unique response of maximal reward for `prompt`."""

  @abc.abstractmethod
  def demonstration(self, prompt: str, rng: np.random.Generator) -> str:
    """One response of the (mixed-quality) demonstration policy."""

  def split_of(self, prompt: str) -> str:
    """"train" or "heldout": the split `prompt` belongs to."""
    bucket = zlib.crc32(self._split_key(prompt).encode("utf-8")) % _HELDOUT_MODULUS
    return "heldout" if bucket < _HELDOUT_BUCKETS else "train"

  def prompts(self, split: Split, n: int, seed: int) -> list[str]:
    """`n` distinct prompts of `split`, a deterministic function of `(split, n, seed)`.

    Prompts are drawn i.i.d. from the task's distribution restricted to the split, duplicates
    skipped; `prompts(s, m, seed=k)` is a prefix of `prompts(s, n, seed=k)` for m < n.
    """
    split_index = check_split(split)
    if n < 0:
      raise ValueError(f"{self.name}.prompts: n must be >= 0, got {n}.")
    rng = np.random.default_rng([seed, split_index])
    out, seen = [], set()
    budget = 100 * n + 10_000
    while len(out) < n:
      if budget == 0:
        raise ValueError(
            f"{self.name}.prompts: found only {len(out)} distinct {split!r} prompts of the "
            f"{n} requested; the task's prompt space is too small for n={n}."
        )
      budget -= 1
      prompt = self._sample_prompt(rng)
      if prompt not in seen and self.split_of(prompt) == split:
        seen.add(prompt)
        out.append(prompt)
    return out

  def demonstrations(self, n: int, seed: int, split: Split = "train") -> list[tuple[str, str]]:
    """`n` (prompt, response) pairs of mixed quality: the prompts of `prompts(split, n, seed)`."""
    rng = np.random.default_rng([seed, check_split(split), 1])
    return [(p, self.demonstration(p, rng)) for p in self.prompts(split, n, seed=seed)]

  def reward_batch(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
    """True rewards `Σ_a weights[a] · attribute_a`, shape `[N]` float64."""
    attributes = self.attributes_batch(prompts, responses)
    return sum(w * attributes[a] for a, w in self.weights.items())

  def attributes(self, prompt: str, response: str) -> dict[str, float]:
    """Attribute name -> value for one (prompt, response)."""
    return {a: float(v[0]) for a, v in self.attributes_batch([prompt], [response]).items()}

  def reward(self, prompt: str, response: str) -> float:
    """The true reward of one (prompt, response)."""
    return float(self.reward_batch([prompt], [response])[0])

  def _check_batch(self, prompts: Sequence[str], responses: Sequence[str]) -> None:
    """Raises unless prompts and responses are equally long sequences of strings."""
    if isinstance(prompts, str) or isinstance(responses, str):
      raise TypeError(f"{self.name}: prompts and responses must be sequences of strings.")
    if len(prompts) != len(responses):
      raise ValueError(
          f"{self.name}: got {len(prompts)} prompts but {len(responses)} responses."
      )
    for index, response in enumerate(responses):
      if not isinstance(response, str):
        raise TypeError(f"{self.name}: response {index} is {type(response)}, not str.")
