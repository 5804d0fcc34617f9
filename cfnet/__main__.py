"""`python -m cfnet` is the `cfnet` command."""

from cfnet.cli import main

main()
