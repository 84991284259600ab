"""``python -m c2l_cli`` runs the CLI."""

from .cli.app import main

if __name__ == "__main__":
    main()
