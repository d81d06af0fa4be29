"""Benchmark plumbing (no timings asserted): cases run in child processes and agree with HF."""

from __future__ import annotations

import json

from ar2diff.speed.bench import plot_decode, run_case


def test_decode_cases_produce_the_same_tokens_as_transformers(tmp_path):
    rows = [run_case({"kind": "decode", "model": "tiny", "method": m, "length": 8,
                      "prompt_tokens": 16, "dtype": "float32"})
            for m in ("hf_generate", "ar_greedy", "diffusion_n1", "forward_floor")]
    assert all("error" not in r for r in rows), rows
    assert rows[0]["tokens_digest"] == rows[1]["tokens_digest"]
    assert all(r["peak_rss_mb"] > 50 and r["generated"] <= 8 for r in rows)
    assert rows[3]["generated"] == 8 and all(r["device"] == "cpu" for r in rows)
    path = tmp_path / "decode.json"
    path.write_text(json.dumps({"results": rows}))
    plot_decode(path, tmp_path / "decode.png")
    assert (tmp_path / "decode.png").stat().st_size > 1000
