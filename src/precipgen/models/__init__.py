"""The networks (cvae, vae3d, srdrn), their checkpoints, and the one opener from a path or
model URI to a physical-units generator (:mod:`precipgen.models.registry`)."""
