"""What the HTTP limits cost: the same app behind uvicorn's own httptools protocol and
behind imagegate's (httpserver.py: header size, timeouts, connection cap), measured in
alternating rounds so both see the same machine load.

    .venv/bin/python bench/http_ab.py [--rounds 3]

Rows: requests/s and the server's CPU ms per request for /calls/query_stats (c=64) and
POST /image/create with local/procedural 256x256 (c=16).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._harness import Server, free_port, run_load, spawn

SERVE = """
import sys
from imagegate.app import create_app
from imagegate.config import Settings
from imagegate.httpserver import serve
settings = Settings.from_env()
app = create_app(settings)
if sys.argv[2] == "guarded":
    serve(app, host="127.0.0.1", port=int(sys.argv[1]), limits=settings.http_limits())
else:
    import uvicorn
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), http="httptools", log_level="warning")
"""


def start(kind: str, data_dir: Path) -> Server:
    port = free_port()
    log = data_dir.parent / f"{kind}.log"
    env = {"IMAGEGATE_DATA_DIR": str(data_dir)}
    return spawn(
        [sys.executable, "-c", SERVE, str(port), kind], log, f"http://127.0.0.1:{port}", env=env
    )


def measure(server: Server, path: str, body: dict, c: int, total: int, auth: tuple | None):
    cpu = server.cpu_seconds()
    result = asyncio.run(
        run_load(server.url, path, body, concurrency=c, total=total, auth=auth,
                 ok=lambda status, _data: status == 200)
    )  # fmt: skip
    cpu_ms = (server.cpu_seconds() - cpu) * 1000 / max(1, len(result.latencies_ms))
    return result.rate, cpu_ms, result.errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="imagegate-http-ab-") as tmp:
        data = Path(tmp) / "data"
        out = subprocess.run(
            [str(Path(sys.executable).parent / "imagegate"), "keys", "create", "--user", "admin",
             "--data-dir", str(data)], check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        key = re.findall(r"ig_\S+", out)[-1]
        body = {"project_id": "admin/ab", "inputs": {"model": "local/procedural", "prompt": "x",
                                                      "size": "256x256"}}  # fmt: skip
        figures: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for _ in range(args.rounds):
            for kind in ("uvicorn", "guarded"):
                server = start(kind, data)
                try:
                    for name, path, payload, c, total in (
                        (
                            "POST /calls/query_stats c=64",
                            "/calls/query_stats",
                            {"project_id": "admin/ab"},
                            64,
                            2000,
                        ),
                        ("POST /image/create c=16", "/image/create", body, 16, 300),
                    ):
                        rate, cpu_ms, errors = measure(
                            server, path, payload, c, total, ("api", key)
                        )
                        assert errors == 0, f"{kind} {name}: {errors} errors"
                        figures.setdefault((name, kind), []).append((rate, cpu_ms))
                finally:
                    server.stop()
        print(f"{'case':28} {'server':8} {'req/s (median)':>15} {'CPU ms/req':>11}  rounds")
        for (name, kind), values in figures.items():
            rate = statistics.median(v[0] for v in values)
            cpu = statistics.median(v[1] for v in values)
            rounds = ", ".join(f"{v[0]:.0f}" for v in values)
            print(f"{name:28} {kind:8} {rate:15.0f} {cpu:11.2f}  {rounds}")


if __name__ == "__main__":
    main()
