"""The `imagegate` command: serve, keys, secrets, generate; one module per command (group),
and what they share in _shared.py."""

from __future__ import annotations

import os

import click

from imagegate.cli.generate import generate
from imagegate.cli.keys import keys
from imagegate.cli.secrets import secrets
from imagegate.cli.serve import serve

# Commands that are clients of a running server: they write only where their user says
# (generate's --out), so what they save keeps that user's umask.
CLIENT_COMMANDS = frozenset({"generate"})


@click.group()
@click.version_option(package_name="imagegate")
@click.pass_context
def main(ctx: click.Context) -> None:
    """imagegate: self-hosted image generation with the Weave trace-server API."""
    if ctx.invoked_subcommand not in CLIENT_COMMANDS:
        # The database, the secret and every image are the service user's alone: files
        # this process creates are 0600 and directories 0700, whatever its umask was.
        os.umask(0o077)


main.add_command(serve)
main.add_command(keys)
main.add_command(secrets)
main.add_command(generate)
