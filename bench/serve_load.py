"""Load run of ``ar2diff serve``: latency and throughput at 1 and at 8 concurrent requests.

Starts the server in this process on a free localhost port, then sends completion requests
(each with its own seed) from a pool of client threads and writes p50 / p95 latency, requests
and completion tokens per second, errors and the batcher's group sizes to a JSON file:

    python bench/serve_load.py --model smollm2-135m --out bench/results/serve_load.json

Phases: diffusion alone at concurrency 1, diffusion at concurrency 8, then AR and diffusion
mixed at concurrency 8 (``--requests-at-1``, ``--diffusion-requests`` and ``--requests``). Prompts come from
one template with a one-token slot, so they have the same length and diffusion requests may
share forward passes (prompts of different lengths never do; see docs/serve.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from ar2diff.atomic import write_json_atomic
from ar2diff.generation import TextGenerator
from ar2diff.provenance import git_commit, version
from ar2diff.serving.app import ServeSettings, create_app
from ar2diff.serving.local import LocalServer

TEMPLATE = "Write one sentence about the {}."
SUBJECTS = ["sea", "sun", "moon", "river", "city", "forest", "train", "garden"]


def _post(url: str, body: dict) -> tuple[float, int]:
    """(seconds, completion tokens) of one request; raises on an error status."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    with urllib.request.urlopen(req, timeout=600) as resp:
        reply = json.loads(resp.read())
    return time.perf_counter() - start, reply["usage"]["completion_tokens"]


def _phase(url: str, bodies: list[dict], concurrency: int, batcher) -> dict:
    groups_before = len(batcher.groups)
    errors: list[str] = []

    def one(body):
        try:
            return _post(url, body)
        except Exception as exc:  # noqa: BLE001  (counted, reported)
            errors.append(repr(exc))
            return None

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = [r for r in pool.map(one, bodies) if r is not None]
    wall = time.perf_counter() - start
    lat = sorted(r[0] for r in results)
    groups = batcher.groups[groups_before:]
    return {
        "concurrency": concurrency, "requests": len(bodies), "errors": len(errors),
        "error_samples": errors[:3], "wall_s": round(wall, 3),
        "requests_per_s": round(len(results) / wall, 4),
        "completion_tokens_per_s": round(sum(r[1] for r in results) / wall, 2),
        "latency_p50_s": round(statistics.median(lat), 3) if lat else None,
        "latency_p95_s": round(lat[min(len(lat) - 1, int(0.95 * len(lat)))], 3) if lat else None,
        "modes": sorted({b["mode"] for b in bodies}),
        "group_sizes": {str(k): groups.count(k) for k in sorted(set(groups))},
    }


def _bodies(n: int, modes: list[str], args, offset: int = 0) -> list[dict]:
    out = []
    for i in range(offset, offset + n):
        mode = modes[i % len(modes)]
        body = {"model": "m", "prompt": TEMPLATE.format(SUBJECTS[i % len(SUBJECTS)]), "mode": mode,
                "seed": i, "max_tokens": args.tokens}
        if mode == "diffusion":
            body.update(steps=args.steps, candidates=args.candidates, temperature=0.7)
        out.append(body)
    return out


def _run(url: str, batcher, args: argparse.Namespace) -> tuple[dict, tuple[float, ...]]:
    """The three phases against a running server: their stats, and the load average before."""
    load_before = os.getloadavg()
    _post(url, _bodies(1, ["diffusion"], args)[0])  # warm up
    plan = {
        "diffusion_c1": (_bodies(args.requests_at_1, ["diffusion"], args), 1),
        "diffusion_c8": (_bodies(args.diffusion_requests, ["diffusion"], args), 8),
        "mixed_c8": (_bodies(args.requests, ["ar", "diffusion"], args, 1000), 8),
    }
    phases = {}
    for name, (bodies, concurrency) in plan.items():
        phases[name] = _phase(url, bodies, concurrency, batcher)
        print(name, {k: phases[name][k] for k in ("requests", "errors", "requests_per_s",
                                                  "latency_p50_s", "latency_p95_s", "group_sizes")},
              flush=True)
    return phases, load_before


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--requests", type=int, default=64, help="mixed requests at concurrency 8")
    p.add_argument("--diffusion-requests", type=int, default=32,
                   help="diffusion requests at concurrency 8")
    p.add_argument("--requests-at-1", type=int, default=8, help="diffusion requests at concurrency 1")
    p.add_argument("--batch-wait", type=float, default=0.05)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--candidates", type=int, default=4)
    p.add_argument("--tokens", type=int, default=16)
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--out", default="bench/results/serve_load.json")
    args = p.parse_args()

    gen = TextGenerator.load(args.model, args.dtype, "auto")
    app = create_app(gen, ServeSettings(model_name="m", max_batch=args.max_batch, max_queue=256,
                                        timeout=600, batch_wait=args.batch_wait))
    with LocalServer(app) as server:
        url = f"{server.url}/v1/completions"
        phases, load_before = _run(url, app.state.batcher, args)
    speedup = phases["diffusion_c8"]["requests_per_s"] / phases["diffusion_c1"]["requests_per_s"]
    result = {
        "model": args.model, "dtype": args.dtype, "device": str(gen.backbone.device),
        "cpu_threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
        "diffusion": {"steps": args.steps, "candidates": args.candidates, "target_length": args.tokens},
        "ar": {"max_tokens": args.tokens, "strategy": "greedy"},
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "max_batch": args.max_batch, "batch_wait_s": args.batch_wait, "prompts": TEMPLATE, "phases": phases,
        "diffusion_throughput_c8_over_c1": round(speedup, 3),
        "ar2diff_version": version(), "commit": git_commit(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(Path(args.out), result)
    print(json.dumps({k: v for k, v in result.items() if k != "phases"}, indent=1))


if __name__ == "__main__":
    main()
