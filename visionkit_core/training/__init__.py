"""Training machinery: guards, atomic checkpoints and safe loading, resume, distributed, weights."""
