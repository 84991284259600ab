"""Diffusion: noise schedules, the training objective and samplers (functions of a denoiser)."""
