"""precipgen: an experiment platform for generative precipitation downscaling."""

__version__ = "0.1.0"
