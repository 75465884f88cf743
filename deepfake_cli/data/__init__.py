"""Videos to stored frames: the HDF5 store and its checks, shards and merge, dataset layouts and
labels, identity-group splits, video decoding, `extract`, `compress`, `explore`, and the images a
model reads from the store. Imports nothing of dfd's other subpackages, and no ML framework."""
