"""Readers of foreign weight files (NVIDIA pickles, clip2latent checkpoints) and of our own
(safetensors + JSON). Nothing here runs code from a file."""
