"""The human oracle fed scripted terminal input, including invalid input."""

import io
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignment import zo

CANDIDATES = jnp.array([[0.0], [10.0], [20.0], [30.0]])


def _ask(script, *, k, shuffle=False, seed=0):
  out = io.StringIO()
  oracle = zo.human_oracle(k=k, input_stream=io.StringIO(script), output_stream=out,
                           shuffle=shuffle, seed=seed, summarize=lambda c: f"value={c[0]:.0f}")
  return oracle(CANDIDATES), out.getvalue()


def test_invalid_input_is_explained_and_asked_again():
  script = "\n".join([
      "",            # empty line
      "two three",   # not integers
      "1 1",         # repeated id
      "0 2",         # out of range (ids are 1..4)
      "5 1",         # out of range
      "1 2 3",       # wrong count
      "1.5 2",       # not an integer
      " 3, 1 ",      # valid: candidate 3 best, then 1 (commas and spaces allowed)
  ]) + "\n"
  ranking, text = _ask(script, k=2)
  np.testing.assert_array_equal(ranking, [2, 0])  # 1-based display ids -> 0-based candidates
  errors = re.findall(r"Invalid ranking: (.*?) Please", text)
  assert len(errors) == 7, text
  assert "no ids" in errors[0]
  assert "'two' is not an integer" in errors[1]
  assert "id 1 is repeated" in errors[2]
  assert "id 0 is out of range 1..4" in errors[3]
  assert "id 5 is out of range" in errors[4]
  assert "expected exactly 2 id(s), got 3" in errors[5]
  assert "'1.5' is not an integer" in errors[6]
  assert "value=30" in text and text.count("Enter the ids of the best 2") == 8


def test_shuffled_display_maps_back_to_candidates():
  # The person picks by what is shown: find the line showing value=20 (candidate 2).
  out = io.StringIO()
  oracle = zo.human_oracle(k=1, input_stream=io.StringIO("1\n"), output_stream=out, seed=3,
                           summarize=lambda c: f"value={c[0]:.0f}")
  ranking = oracle(CANDIDATES)
  first_value = int(re.search(r"  1: value=(\d+)", out.getvalue()).group(1))
  np.testing.assert_array_equal(ranking, [first_value // 10])
  # Across seeds the display order changes.
  orders = set()
  for seed in range(6):
    out = io.StringIO()
    zo.human_oracle(k=1, input_stream=io.StringIO("1\n"), output_stream=out, seed=seed,
                    summarize=lambda c: f"value={c[0]:.0f}")(CANDIDATES)
    orders.add(tuple(re.findall(r"value=(\d+)", out.getvalue())))
  assert len(orders) > 1


def test_end_of_input_raises_eof_error():
  with pytest.raises(EOFError, match="input ended"):
    _ask("7\n", k=1)


def test_human_oracle_in_jitted_optimizer_step_via_host_callback():
  # A person always answers "1 2" with shuffle off: candidates 0 and 1 are "best".
  human = zo.human_oracle(k=2, input_stream=io.StringIO("1 2\n" * 3),
                          output_stream=io.StringIO(), shuffle=False)
  oracle = zo.host_oracle(human, k=2)
  opt = zo.zo_rank_sgd(0.5, m=4, mu=0.1)
  step = jax.jit(lambda x, key: opt.step(x, key, oracle))
  x, key = jnp.zeros(3), jax.random.PRNGKey(0)
  for _ in range(3):
    x_new, key, info = step(x, key)
    np.testing.assert_array_equal(info["ranking"], [0, 1])
    np.testing.assert_allclose(jnp.linalg.norm(x_new - x), 0.5, rtol=1e-5)
    x = x_new
