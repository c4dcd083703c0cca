"""``python -m robustsnn``: the same command line as the ``robustsnn`` script."""

from robustsnn.cli import main

main()
