"""Face crops to a calibrated video probability: the one rule every stage shares (scorer), the
same models on onnxruntime, scores of stored faces, the ensembles' combination rule, and the
metrics. No ML framework at module level: `predict` imports this."""
