"""The Lightning run: the CLI front, the LightningModule, checkpoints, the run record and the
callbacks (`orbitbench.run.callbacks`)."""
