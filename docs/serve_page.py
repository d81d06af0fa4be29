"""Make docs/serve_page.png: the step viewer after a diffusion decoding, in headless Chromium.

    python docs/serve_page.py --model runs/demo/adapted/model --prompt "The cat sat on"
"""

from __future__ import annotations

import argparse
import shutil

from playwright.sync_api import sync_playwright

from ar2diff.generation import TextGenerator
from ar2diff.serving.app import ServeSettings, create_app
from ar2diff.serving.local import LocalServer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--prompt", default="The best thing about the summer is")
    p.add_argument("--steps", default="8")
    p.add_argument("--candidates", default="4")
    p.add_argument("--tokens", default="24")
    p.add_argument("--seed", default="1")
    p.add_argument("--out", default="docs/serve_page.png")
    args = p.parse_args()

    app = create_app(TextGenerator.load(args.model, device="cpu"), ServeSettings(model_name="m"))
    with LocalServer(app) as server, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1000, "height": 700})
        page.goto(f"{server.url}/")
        page.fill("#prompt", args.prompt)
        page.select_option("#mode", "diffusion")
        for field in ("steps", "candidates", "seed"):
            page.fill(f"#{field}", getattr(args, field))
        page.fill("#max_tokens", args.tokens)
        page.click("#run")
        page.wait_for_function("document.getElementById('status').textContent.startsWith('done')",
                               timeout=600_000)
        page.fill("#slider", str(int(args.steps) // 2))  # half way: some positions still masked
        page.screenshot(path=args.out, full_page=True)
        browser.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
