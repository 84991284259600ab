"""Data files shipped with c2l (validation prompts)."""
