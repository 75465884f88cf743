"""Verdicts for users' files: `predict` and its batch pipeline, the choice of model and runtime,
the evidence rules, result files, and the bundled default model. Never imports
deepfake_cli.train, and no ML framework at module level."""
