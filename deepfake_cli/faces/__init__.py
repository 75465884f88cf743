"""Frames to face crops: detectors (MTCNN on onnxruntime), landmarks, alignment, identity
tracks, and the `crop` stage. Imports only deepfake_cli.data among the subpackages, and no ML
framework at module level."""
