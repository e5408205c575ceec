"""`python -m imagegate.cli`: the `imagegate` command."""

from imagegate.cli import main

main()
