"""quantfake: what quantization does to detectability, fidelity, latency and memory of image generators."""

__version__ = "0.1.0"
