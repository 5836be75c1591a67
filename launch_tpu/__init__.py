"""Scripts that create Cloud TPU VMs (or GPU SLURM jobs) and run a binary on every host."""
