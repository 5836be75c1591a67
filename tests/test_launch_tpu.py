"""The launch scripts' `--dry_run` output is exactly what launch_tpu/README.md documents.

Every ```console block of the README that starts with `$ python -m launch_tpu.NAME ...` is run
in-process (`launch_tpu.NAME.main(argv)`) and its printed commands must equal the block's lines.
The blocks are those of a 4-worker v5e slice (v5litepod-16); the facts a slice needs are also
checked directly.
"""

import contextlib
import importlib
import io
import os
import re
import shlex

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "launch_tpu", "README.md")


def _documented():
  with open(README, encoding="utf-8") as f:
    text = f.read()
  blocks = []
  for body in re.findall(r"```console\n(.*?)```", text, flags=re.S):
    lines = body.rstrip("\n").split("\n")
    if lines[0].startswith("$ python -m launch_tpu."):
      argv = shlex.split(lines[0][2:])
      blocks.append((argv[2].split(".")[1], argv[3:], "\n".join(lines[1:]) + "\n"))
  return blocks


def _dry_run(script, argv):
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    importlib.import_module(f"launch_tpu.{script}").main(argv)
  return out.getvalue()


DOCUMENTED = _documented()


def test_every_script_is_documented_with_a_dry_run():
  assert sorted({script for script, _, _ in DOCUMENTED}) == [
      "create", "delete", "install", "logs", "run", "slurm"]
  assert all("--dry_run" in argv for _, argv, _ in DOCUMENTED)


@pytest.mark.parametrize("script,argv,expected", DOCUMENTED,
                         ids=[f"{s}{i}" for i, (s, _, _) in enumerate(DOCUMENTED)])
def test_dry_run_prints_the_documented_commands(script, argv, expected):
  assert _dry_run(script, argv) == expected


def test_four_worker_slice_commands():
  flags = ["--name=align", "--zone=us-west4-a", "--project=my-project", "--dry_run"]
  install = _dry_run("install", flags + ["--repo=."]).splitlines()
  assert all("--worker=all" in line for line in install[1:])  # copy and install on every worker
  run = _dry_run("run", flags + ["--run_name=r", "--", "experiments.sft", "--workdir=/w"])
  assert run.count("\n") == 1 and "--worker=all" in run
  assert "python -m experiments.sft --workdir=/w 2>&1 | tee ~/logs/r.log" in run
  logs = _dry_run("logs", flags + ["--run_name=r", "--num_workers=4"]).splitlines()
  assert [line.split("--worker=")[1] for line in logs[1:]] == ["0", "1", "2", "3"]
  # A direct (not queued) slice is created and deleted with tpu-vm commands.
  assert _dry_run("create", flags + ["--accelerator_type=v5p-32"]) == (
      "gcloud compute tpus tpu-vm create align --zone=us-west4-a --project=my-project "
      "--accelerator-type=v5p-32 --version=v2-alpha-tpuv5\n")
  assert _dry_run("delete", flags) == (
      "gcloud compute tpus tpu-vm delete align --zone=us-west4-a --project=my-project --quiet\n")


def test_slurm_script_runs_one_process_per_gpu():
  script = _dry_run("slurm", ["--nodes=4", "--gpus_per_node=4", "--script=/s.sbatch",
                              "--dry_run", "--", "experiments.train", "--workdir=/w"])
  assert "#SBATCH --nodes=4\n#SBATCH --ntasks-per-node=4\n#SBATCH --gpus-per-node=4\n" in script
  assert "--partition" not in script
  assert script.endswith("srun python -m experiments.train --workdir=/w\nsbatch /s.sbatch\n")


def test_bad_arguments_are_clear_errors():
  flags = ["--name=a", "--zone=z", "--project=p", "--dry_run"]
  with pytest.raises(ValueError, match="name the binary after `--`"):
    _dry_run("run", flags + ["--run_name=r"])
  with pytest.raises(ValueError, match="No default runtime version for 'v9-8'"):
    _dry_run("create", flags + ["--accelerator_type=v9-8"])
