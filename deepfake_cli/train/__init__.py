"""Fitting models: the training loop and its checkpoints, the CNN and LSTM stages, their datasets
and augmentation, self-blended pseudo-fakes, bagging, calibration and ensemble fitting, ONNX
export. Only deepfake_cli.cli imports this."""

from deepfake_cli.errors import DfdError


class TrainingDataError(DfdError, ValueError):
    """The store does not hold what a training or fitting run needs (both labels in train and
    val, faces or features, videos sampled and cropped alike); the message says which command
    makes it. A ValueError too, as these were before they had their own class."""
