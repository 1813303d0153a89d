"""``python -m latentforge`` is the CLI (also what ``torchrun -m latentforge`` runs)."""
from .cli import main

if __name__ == "__main__":
    main()
