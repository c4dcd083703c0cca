"""robustsnn: adversarially robust, low-latency spiking neural networks from PyTorch ANNs."""

__version__ = "0.1.0"
