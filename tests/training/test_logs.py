"""Metric writers (JSONL and TensorBoard events, process 0 only) and the progress line."""

import io
import pathlib
import re
import struct

import jax
import jax.numpy as jnp
import numpy as np
from tensorboardX.proto import event_pb2

from alignment.training import logs


def _tensorboard_scalars(directory):
  """`[(step, tag, value)]` of the event files under `directory`, read as TFRecords by hand.

  A record is `uint64 length | uint32 crc | length bytes | uint32 crc` (little-endian).
  """
  out = []
  for path in sorted(pathlib.Path(directory).glob("events.out.tfevents.*")):
    data, pos = path.read_bytes(), 0
    while pos < len(data):
      (length,) = struct.unpack("<Q", data[pos:pos + 8])
      event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
      pos += 12 + length + 4
      out += [(event.step, v.tag, v.simple_value) for v in event.summary.value]
  return out


def test_writer_rows_round_trip_with_prefix_and_non_finite_values(tmp_path):
  writer = logs.MetricWriter(str(tmp_path), prefix="eval/", tensorboard=False)
  writer.write(3, {"loss": jnp.float32(0.5), "count": np.int64(7)})
  writer.write(4, {"loss": float("nan"), "grad_norm": float("inf")})
  writer.close()
  assert logs.read_metrics(str(tmp_path)) == [
      {"step": 3, "eval/loss": 0.5, "eval/count": 7.0},
      {"step": 4, "eval/loss": "nan", "eval/grad_norm": "inf"},
  ]
  # A second writer on the same workdir (a resumed run) appends.
  writer = logs.MetricWriter(str(tmp_path), tensorboard=False)
  writer.write(5, {"loss": 0.25})
  writer.close()
  assert [r["step"] for r in logs.read_metrics(str(tmp_path))] == [3, 4, 5]
  assert not (tmp_path / "tb").exists()


def test_read_metrics_of_a_workdir_without_metrics_is_empty(tmp_path):
  assert logs.read_metrics(str(tmp_path / "never_written")) == []


def test_tensorboard_events_hold_the_same_scalars(tmp_path):
  writer = logs.MetricWriter(str(tmp_path), prefix="train/")
  writer.write(1, {"loss": 0.75, "accuracy": 0.5})
  writer.write(2, {"loss": 0.625})
  writer.close()
  assert sorted(_tensorboard_scalars(tmp_path / "tb")) == [
      (1, "train/accuracy", 0.5), (1, "train/loss", 0.75), (2, "train/loss", 0.625)]
  assert len(logs.read_metrics(str(tmp_path))) == 2


def test_only_process_zero_writes(tmp_path, monkeypatch):
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  writer = logs.MetricWriter(str(tmp_path / "w"))
  writer.write(1, {"loss": 1.0})
  writer.close()
  assert not (tmp_path / "w").exists()
  stream = io.StringIO()
  logs.Progress("train", 10, stream=stream).update(10, force=True)
  assert stream.getvalue() == ""


def test_progress_line_and_throttling():
  stream = io.StringIO()
  progress = logs.Progress("train", 100, start=10, every_seconds=3600.0, unit="steps",
                           stream=stream)
  progress.update(20, {"loss": np.float32(0.123456)})  # the first update always prints
  progress.update(30)  # within the hour: skipped
  progress.update(40, force=True)
  progress.update(100)  # the last step always prints
  lines = stream.getvalue().splitlines()
  assert len(lines) == 3
  assert re.fullmatch(r"\[train\] 20/100 \| [0-9.]+ steps/s \| ETA \d+:\d\d:\d\d \| loss 0\.1235",
                      lines[0])
  assert lines[1].startswith("[train] 40/100 | ") and lines[2].startswith("[train] 100/100 | ")
  assert lines[2].split(" | ")[2] == "ETA 0:00:00"


def test_format_seconds_by_hand():
  # 3725 s = 1 h 2 min 5 s; negative times (past the end) are 0.
  assert logs._format_seconds(3725.4) == "1:02:05"
  assert logs._format_seconds(59.6) == "0:01:00"
  assert logs._format_seconds(-3.0) == "0:00:00"
