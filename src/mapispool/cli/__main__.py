"""``python -m mapispool.cli``: the same as the ``mapispool`` command."""

from mapispool.cli import main

main()
