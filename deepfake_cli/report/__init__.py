"""What a model's scores look like to a person: `evaluate` over a store, its tables and plots,
per-clip HTML reports, heatmaps and annotated videos."""
