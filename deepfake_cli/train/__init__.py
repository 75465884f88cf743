"""Fitting models: the training loop and its checkpoints, the CNN and LSTM stages, their datasets
and augmentation, self-blended pseudo-fakes, bagging, calibration and ensemble fitting, ONNX
export. Only deepfake_cli.cli imports this."""
