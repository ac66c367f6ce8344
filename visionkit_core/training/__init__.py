"""Training machinery: atomic checkpoints and safe loading, SIGTERM, resume, distributed, run callbacks."""
