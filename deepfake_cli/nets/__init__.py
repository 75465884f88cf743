"""The networks and their files: backbones (EfficientNet-Lite ported from PyTorch), the CNN and
BiLSTM builders, and the bundle format on disk (config.json, hashed weights). Keras is imported
only when a model is built, so reading a bundle needs no framework."""
