"""The page as a browser gets it: first-load size, outside hosts asked, server time of a harmonization.

    python -m benchmarks.page [--tune data/tunes/waltz.mid] [--screenshot docs/page.png] [--threads 1]
    python -m benchmarks.page --analysis --screenshot docs/page_analysis.png   # the analysis shown

Serves the app on the model pair in models/ (uvicorn, a free local port), opens it in headless
Chromium through Playwright (the operating system's chromium, or BACHSFORMER_CHROMIUM), and prints
the bytes of every response of the first load, the requests to any host but the server, and the
time the server took to harmonize the tune: uploaded as a file, loaded into the editor, harmonized
by the Harmonize button. With --screenshot, the page is pictured with the result and bar 2 chosen
(--analysis: with the analysis shown instead, the roll, numerals and score alone).
"""

import argparse
import os
import shutil
import socket
import threading
import time
from urllib.parse import urlparse

import torch
import uvicorn
from playwright.sync_api import sync_playwright

from bachsformer.config import load_config
from bachsformer.server import create_app


def serve(app) -> tuple[uvicorn.Server, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{port}/"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tune", default="data/tunes/waltz.mid", help="the MIDI file or MusicXML score to harmonize")
    parser.add_argument("--screenshot", help="write a PNG of the page with the result here")
    parser.add_argument("--analysis", action="store_true", help="picture the page with the analysis shown")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (serve.py uses 1)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config key")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    chromium = os.environ.get("BACHSFORMER_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("error: no Chromium: apt-get install chromium (or set BACHSFORMER_CHROMIUM)")

    server, url = serve(create_app(load_config("config.yaml", args.set)))
    responses, outside = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium)
        page = browser.new_page(viewport={"width": 1200, "height": 900}, device_scale_factor=1)
        page.on("request", lambda r: urlparse(r.url).netloc != urlparse(url).netloc and outside.append(r.url))
        page.on("response", lambda r: responses.append(r))
        page.goto(url, wait_until="networkidle")
        first_load = {urlparse(r.url).path: len(r.body()) for r in responses}
        page.set_input_files("#upload", args.tune)
        page.wait_for_function("document.querySelectorAll('#grid rect.note').length > 0")
        started = time.perf_counter()
        page.click("#harmonize")
        page.wait_for_selector("#score svg", timeout=600_000)
        round_trip = time.perf_counter() - started
        facts = page.inner_text("#result-facts")
        if args.screenshot and args.analysis:
            page.check("#show-analysis")
            page.locator("#message").evaluate("box => box.hidden = true")
            page.locator("#result-panel").screenshot(path=args.screenshot)
        elif args.screenshot:
            width = page.locator("#roll").bounding_box()["width"]
            page.locator("#roll").click(position={"x": width * 0.1, "y": 40})
            page.locator("#message").evaluate("box => box.hidden = true")
            page.screenshot(path=args.screenshot, full_page=True)
        browser.close()
    server.should_exit = True

    for path, size in first_load.items():
        print(f"{path:<22} {size:>9,} bytes")
    print(f"first load: {sum(first_load.values()):,} bytes in {len(first_load)} responses")
    print(f"requests to other hosts: {len(outside)}" + "".join(f"\n  {u}" for u in outside))
    print(f"{args.tune}: {facts}; {round_trip:.2f} s from the click to the score, {args.threads} thread(s)")
    if args.screenshot:
        print(f"wrote {args.screenshot}")


if __name__ == "__main__":
    main()
