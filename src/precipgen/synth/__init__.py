"""Synthetic training days from a trained cVAE: the library behind ``precipgen sample``.

- :mod:`.select`   which days to sample (heavy_only | split:NAME | all | file:PATH)
- :mod:`.noise`    reproducible noise per (day, k), independent of batching
- :mod:`.generate` load a cVAE from any URI, check it fits the dataset, batched generation
- :mod:`.quality`  the quality gate and per-sample statistics (manifest rows)
- :mod:`.writer`   the output directory: per-sample files, consolidated arrays, samples.nc
- :mod:`.augment`  SRDRN-layout augmented training arrays
"""
