"""Run assembly: the run config (defaults < --config < --set < flags), option types, resolve + build."""
