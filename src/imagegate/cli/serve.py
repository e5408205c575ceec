"""`imagegate serve`: prepare the data once (migrations, crash recovery, the first admin
key), then serve it with uvicorn, forking workers."""

from __future__ import annotations

import dataclasses
import socket
import sys
from typing import Any

import click

from imagegate.cli._shared import settings_from, settings_options, with_imagegate


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@settings_options("store", "serve")
def serve(host: str, port: int, **options: Any) -> None:
    """Run the server (by default SQLite + files in the user data dir, `local/...` models,
    no keys). Every setting is a flag here and an IMAGEGATE_* variable (see the README)."""
    from imagegate.app import create_app
    from imagegate.httpserver import serve as serve_http
    from imagegate.metrics import SharedMetrics
    from imagegate.startup import ServerLock, prepare

    settings = settings_from(options)
    workers = settings.worker_count()
    check_can_listen(host, port)
    # Migrations, crash recovery and the first admin key: once, here, under a lock, not
    # in each worker. The lock stays claimed while this process serves (imagegate.startup).
    lock = ServerLock.for_url(settings.resolved_database_url)
    with lock.preparing():
        prepared = with_imagegate(
            options, lambda ig: prepare(ig, lock), announce=False, migrate=False
        )
    key = prepared.admin_key
    url = f"http://{host}:{port}"
    click.echo(f"Serving {url} from {settings.describe_storage()} ({workers} workers)")
    if key:
        click.echo("Created user 'admin' in entity 'admin'. Its API key (shown only once):\n")
        click.echo(f"    {key}\n")
        click.echo("Try it:\n")
        click.echo(
            f"    curl -s -u api:{key} {url}/image/create \\\n"
            '      -d \'{"project_id": "admin/demo", "inputs": '
            '{"model": "local/procedural", "prompt": "a red fox in a blue forest"}}\'\n'
        )
    sys.stdout.flush()
    shared = None
    if workers > 1:  # /metrics sums every worker's values (imagegate.metrics)
        shared = SharedMetrics.enable(settings.data_dir)
        shared.count_interrupted(prepared.interrupted)
        prepared = dataclasses.replace(prepared, interrupted=0)  # counted once, above
    try:
        serve_http(
            lambda: create_app(settings, prepared=prepared),
            host=host,
            port=port,
            limits=settings.http_limits(),
            workers=workers,
        )
    finally:
        if shared is not None:
            shared.remove()


def check_can_listen(host: str, port: int) -> None:
    """A port another process holds is refused before anything is prepared: a first
    start would otherwise create the database and print an admin key, then fail. (A probe,
    closed at once: the server binds its own sockets later. Without SO_REUSEPORT, so a
    running imagegate's port group is not joined but found taken.)"""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server
            probe.bind(address)
    except OSError as exc:
        raise click.ClickException(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from None
