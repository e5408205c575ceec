"""Time to first paint of a web gallery page of 50 generations, in headless Chromium.

Starts `imagegate serve` on a temporary data dir, makes 50 generations (1024x1024,
local/procedural), signs in, then loads the gallery page in fresh browser contexts (an
empty HTTP cache each time) and reads the browser's own timings:

- first paint / first contentful paint (`performance.getEntriesByType('paint')`),
- DOMContentLoaded and the load event,
- all 50 thumbnails loaded (a viewport tall enough to show every card), with the
  server's thumbnail cache cold (deleted before each run) and warm.

Usage: python bench/gallery_paint.py [--runs 5] [--chromium /usr/bin/chromium]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Browser, sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

from bench._harness import admin_key, start_imagegate

ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
COLOURS = ["red", "blue", "teal", "gold", "purple", "green", "orange", "pink", "grey", "black"]
TIMINGS = """() => {
  const nav = performance.getEntriesByType('navigation')[0];
  const paint = Object.fromEntries(
    performance.getEntriesByType('paint').map(e => [e.name, e.startTime]));
  const visible = new Set([...document.querySelectorAll('.card img')]
    .filter(i => i.getBoundingClientRect().top < innerHeight).map(i => i.currentSrc));
  const thumbs = performance.getEntriesByType('resource')
    .filter(e => e.name.includes('/ui/thumb/'));
  const done = (list) => Math.max(...list.map(e => e.responseEnd));
  return {
    html_ttfb: nav.responseStart - nav.requestStart,
    first_paint: paint['first-paint'],
    first_contentful_paint: paint['first-contentful-paint'],
    dom_content_loaded: nav.domContentLoadedEventEnd,
    load: nav.loadEventEnd,
    visible: visible.size,
    visible_thumbs: done(thumbs.filter(e => visible.has(e.name))),
    thumbs: thumbs.length,
    all_thumbs: done(thumbs),
    html_bytes: nav.transferSize,
  };
}"""
VISIBLE_LOADED = """() => [...document.querySelectorAll('.card img')]
  .filter(i => i.getBoundingClientRect().top < innerHeight)
  .every(i => i.complete && i.naturalWidth)"""


def seed(url: str, key: str, count: int) -> None:
    with httpx.Client(auth=("api", key), timeout=120) as client:
        for i in range(count):
            a, b = COLOURS[i % 10], COLOURS[(i * 3 + 1) % 10]
            res = client.post(
                f"{url}/image/create",
                json={
                    "project_id": "admin/bench",
                    "inputs": {"model": "local/procedural", "prompt": f"{a} and {b} #{i}"},
                },
            )
            res.raise_for_status()


def session_cookies(browser: Browser, url: str, key: str) -> list[Any]:
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{url}/ui/signin")
    page.fill("#api_key", key)
    page.click("button[type=submit]")
    page.wait_for_url("**/ui/projects")
    cookies = context.cookies()
    context.close()
    return cookies


def measure(browser: Browser, url: str, cookies: list[Any], height: int) -> dict[str, float]:
    """One load of the gallery in a fresh context (an empty HTTP cache), `height` px tall:
    900 for what a person sees first, 9000 to show (and so fetch) all 50 thumbnails."""
    context = browser.new_context(viewport={"width": 1280, "height": height})
    context.add_cookies(cookies)
    page = context.new_page()
    page.goto(f"{url}/ui/p/admin/bench", wait_until="load")
    page.wait_for_function(VISIBLE_LOADED, timeout=120_000)
    cards = page.locator(".card").count()
    timings: dict[str, float] = page.evaluate(TIMINGS)
    context.close()
    # Thumbnails requested past the screen may still be rendering on the server: let them
    # finish so they do not slow the next run.
    time.sleep(1.5)
    assert cards == 50, cards
    return timings


def report(label: str, screen: list[dict[str, float]], tall: list[dict[str, float]]) -> None:
    print(f"\n{label} ({len(screen)} runs, median (min); ms from navigation start)")
    rows = [
        (name, screen)
        for name in (
            "html_ttfb",
            "first_paint",
            "first_contentful_paint",
            "dom_content_loaded",
            "load",
            "visible_thumbs",
        )
    ] + [("all_thumbs", tall)]
    for name, runs in rows:
        values = [r[name] for r in runs]
        shown = name
        if name == "visible_thumbs":
            shown = f"visible_thumbs ({int(runs[0]['visible'])} on screen)"
        elif name == "all_thumbs":
            shown = f"all_thumbs ({int(runs[0]['thumbs'])}, 9000 px viewport)"
        print(f"  {shown:<40} {statistics.median(values):8.1f}  ({min(values):.1f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="imagegate-bench-"))
    data = tmp / "data"
    server = start_imagegate(data, env={}, models=None)
    url, key = server.url, admin_key(server)
    try:
        started = time.perf_counter()
        seed(url, key, 50)
        print(f"seeded 50 generations (1024x1024) in {time.perf_counter() - started:.1f} s")
        thumbs = data / "cache" / "thumbs"
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=ARGS)
            cookies = session_cookies(browser, url, key)
            measure(browser, url, cookies, 900)  # warm-up: imports, SQLite pages, Chromium
            runs: dict[str, list[dict[str, float]]] = {k: [] for k in ("cs", "ct", "ws", "wt")}
            for _ in range(args.runs):
                for height, cold, warm in ((900, "cs", "ws"), (9000, "ct", "wt")):
                    shutil.rmtree(thumbs, ignore_errors=True)
                    runs[cold].append(measure(browser, url, cookies, height))
                    runs[warm].append(measure(browser, url, cookies, height))
            browser.close()
        print(f"gallery page: {runs['cs'][0]['html_bytes'] / 1024:.0f} KiB of HTML, 50 cards")
        report("thumbnails cold (made on request)", runs["cs"], runs["ct"])
        report("thumbnails warm (from the disk cache)", runs["ws"], runs["wt"])
        sizes = [p.stat().st_size for p in thumbs.rglob("*.webp")]
        mean_kib = statistics.mean(sizes) / 1024
        print(f"\nthumbnails: {len(sizes)} WebP files, mean {mean_kib:.1f} KiB")
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
