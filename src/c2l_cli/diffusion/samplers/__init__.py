"""Samplers: functions of a denoiser callable, one file each."""
