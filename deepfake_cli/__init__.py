"""dfd: deepfake detection for face videos (CNN features + bidirectional LSTM)."""

__version__ = "0.1.0"
