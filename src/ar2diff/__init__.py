"""ar2diff: autoregressive and SUNDAE-style text diffusion models, and AR2Diff between them."""

__version__ = "0.1.0"
