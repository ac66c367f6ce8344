"""``python -m visionkit_core`` runs the CLI (also usable under torchrun)."""

from visionkit_core.cli import main

if __name__ == "__main__":
    main()
