"""``ar2diff experiment CONFIG``: the paper's grid as data, run cell by cell, resumable.

An experiment YAML names *models* (how each is made: pretrained from scratch, adapted from
another, or fine-tuned from another or from one of its kept checkpoints with ``from_step`` —
each an ordinary training run) and *evaluations* (a model, or with ``step`` one of its kept
checkpoints, for a fine-tuning curve from one run; a task and a decoding setup), plus optional
*timing* (decode time against output length). Every model folder and result file is written
atomically and reused when it exists, so a rerun only does what is missing. Each stored cell
carries a fingerprint of its spec (and of the models it starts from); a cell whose spec changed
since it was stored is redone. The report
(``REPORT.md``, ``results.json``, PNG plots) is rebuilt from the stored results each time.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from ar2diff.atomic import write_json_atomic
from ar2diff.config import load_config
from ar2diff.decoding import decode_options
from ar2diff.devices import resolve_device, resolve_dtype
from ar2diff.errors import Ar2DiffError
from ar2diff.evaluation.run import evaluate_model
from ar2diff.experiments.report import write_report
from ar2diff.models.checkpoint import is_ar2diff_folder, load_meta
from ar2diff.recipes import preset
from ar2diff.speed.bench import run_case
from ar2diff.training.assemble import run_training


def load_experiment(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise Ar2DiffError(f"experiment config {path} not found")
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise Ar2DiffError(f"experiment config {path} is not valid YAML: {exc}".splitlines()[0]) from exc
    for key in ("name", "models", "evaluations"):
        if not isinstance(spec, dict) or key not in spec:
            raise Ar2DiffError(f"experiment config {path}: missing top-level key {key!r}")
    return spec


LABELS = ("table", "row", "col", "paper")  # report-only fields of an evaluation


class Experiment:
    """Runs the models and evaluations of an experiment spec under ``out``."""

    def __init__(self, spec: dict[str, Any], out: Path, spec_path: Path, device: str = "auto",
                 dtype: str | None = None):
        self.spec, self.out, self.spec_path = spec, out, spec_path
        self.device, self.dtype = device, dtype
        self.common: list[str] = list(spec.get("common", []))
        self.log: list[str] = []
        self.done: dict[str, dict] = {}  # evaluation results by fingerprint

    def fingerprint(self, name: str) -> str:
        """A hash of how model ``name`` is made, including the models it starts from."""
        if name not in self.spec["models"]:
            return name
        entry = self.spec["models"][name]
        parts = {"entry": entry, "common": self.common if entry.get("common", True) else [],
                 "from": self.fingerprint(entry["from"]) if "from" in entry else None}
        return _digest(parts)

    def _stored(self, cell: Path, fingerprint: str) -> bool:
        """Whether ``cell`` holds what ``fingerprint`` describes (a cell without one is adopted)."""
        stamp = cell / "cell.json"
        if stamp.is_file():
            if json.loads(stamp.read_text(encoding="utf-8")).get("fingerprint") == fingerprint:
                return True
            print(f"[experiment] {cell.name}: its spec changed since it was built; rebuilding",
                  flush=True)
            shutil.rmtree(cell)
            return False
        write_json_atomic(stamp, {"fingerprint": fingerprint})
        return True

    def model_dir(self, name: str) -> Path:
        """Build model ``name`` (and what it starts from) unless it is already there."""
        if name not in self.spec["models"]:
            if is_ar2diff_folder(name) or "/" in name or name.endswith("-135m"):
                return Path(name)  # an external model spec, used as is
            raise Ar2DiffError(f"experiment: unknown model {name!r}")
        folder = self.out / "models" / name / "model"
        fingerprint = self.fingerprint(name)
        if is_ar2diff_folder(folder) and self._stored(folder.parent, fingerprint):
            return folder
        entry = self.spec["models"][name]
        common = self.common if entry.get("common", True) else []
        overrides = [*common, *entry.get("overrides", [])]
        start_from = self.start_dir(name, entry) if "from" in entry else None
        if start_from is not None:
            overrides.append(f"model.pretrained={start_from}")
        config_path = preset(entry["preset"]) if entry.get("preset") else None
        config = load_config(config_path, [*overrides, f"train.out_dir={folder.parent}"])
        _check_noise(name, entry, config, start_from)
        start = time.perf_counter()
        print(f"[experiment] training {name} ({config.train.steps} steps)", flush=True)
        run_training(config, resume=True)
        write_json_atomic(folder.parent / "cell.json", {"fingerprint": fingerprint})
        self.log.append(f"trained {name} in {time.perf_counter() - start:.0f} s")
        return folder

    def start_dir(self, name: str, entry: dict[str, Any]) -> Path:
        """The folder model ``name`` starts from: its ``from`` model, or that model's kept
        checkpoint at step ``from_step`` (an adaptation curve from one run)."""
        return self.kept(f"model {name}", entry["from"], entry.get("from_step"), "from_step")

    def kept(self, who: str, model: str, step: Any, field: str) -> Path:
        """Model ``model``'s folder, or its kept checkpoint at ``step`` when one is named."""
        folder = self.model_dir(model)
        if step is None:
            return folder
        if not isinstance(step, int) or isinstance(step, bool) or step < 1:
            raise Ar2DiffError(f"experiment: {who}: {field} {step!r} is not a positive "
                               f"step number")
        ckpt = folder.parent / "checkpoints" / f"step-{step:08d}"
        if not is_ar2diff_folder(ckpt):
            raise Ar2DiffError(f"experiment: {who}: {model} kept no checkpoint at "
                               f"step {step} ({ckpt}); save it with train.save_every and "
                               f"train.keep_last, or pick a kept step")
        return ckpt

    def stored_result(self, name: str, entry: dict[str, Any]
                      ) -> tuple[Path, dict[str, Any], str, dict[str, Any] | None]:
        """Evaluation ``name``'s result path, effective entry, fingerprint, and its stored
        result when one matches the spec (else None)."""
        path = self.out / "results" / f"{name}.json"
        if self.dtype not in (None, "float32") and "dtype" not in entry:
            entry = {**entry, "dtype": self.dtype}  # a distinct cell from the float32 one
        fingerprint = _digest({"entry": {k: v for k, v in entry.items() if k not in LABELS},
                               "model": self.fingerprint(entry["model"])})
        if path.is_file():
            stored = json.loads(path.read_text(encoding="utf-8"))
            if stored.get("fingerprint", fingerprint) == fingerprint:
                return path, entry, fingerprint, stored
        return path, entry, fingerprint, None

    def evaluate(self, name: str, entry: dict[str, Any]) -> dict[str, Any]:
        """Run (or reuse) one evaluation; returns its stored result."""
        path, entry, fingerprint, stored = self.stored_result(name, entry)
        if stored is not None:
            self.done[fingerprint] = stored
            return stored
        if path.is_file():
            print(f"[experiment] {name}: its spec changed since it was run; rerunning", flush=True)
        if fingerprint in self.done:  # the same evaluation under another name (another table)
            result = {**self.done[fingerprint], "setup": {**self.done[fingerprint]["setup"],
                                                          **entry}}
            write_json_atomic(path, result)
            return result
        model = self.kept(f"evaluation {name}", entry["model"], entry.get("step"), "step")
        print(f"[experiment] evaluating {name}", flush=True)
        try:
            opts = decode_options(entry.get("decode", {}))
        except TypeError as exc:
            raise Ar2DiffError(f"evaluation {name}: bad decode field ({exc})") from exc
        result = evaluate_model(
            model, entry["task"], opts, split=entry.get("split", "test"),
            limit=entry.get("limit"), ks=entry.get("k", [1]),
            batch_size=entry.get("batch_size", 8), dtype=entry.get("dtype", "float32"),
            device=self.device, progress=False)
        result["setup"] = {**result["setup"], **entry, "model_dir": str(model)}
        result["fingerprint"] = fingerprint
        self.done[fingerprint] = result
        write_json_atomic(path, result)
        return result

    def timing(self) -> list[dict]:
        """Decode time against output length (AR with KV cache vs diffusion T = 10)."""
        spec = self.spec.get("timing")
        if not spec:
            return []
        path = self.out / "results" / "timing.json"
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))

        rows = []
        for length in spec["lengths"]:
            for method in ("ar_greedy", "diffusion_n1"):
                rows.append(run_case({"kind": "decode", "model": spec.get("model", "tiny"),
                                      "method": method, "length": length,
                                      "prompt_tokens": spec.get("prompt_tokens", 64),
                                      "dtype": spec.get("dtype", "float32")}))
                print(f"[experiment] timing {method} {length}: {rows[-1].get('seconds')}",
                      flush=True)
        write_json_atomic(path, rows)
        return rows

    def run(self, report_only: bool = False) -> dict[str, Any]:
        """Build what is missing and write the report; ``report_only``: build nothing, report
        the stored evaluations that match the spec and list the others as not run."""
        self.out.mkdir(parents=True, exist_ok=True)
        if report_only:
            results = {name: self.stored_result(name, entry)[3] or {}
                       for name, entry in self.spec["evaluations"].items()}
            timing = self.timing() if (self.out / "results" / "timing.json").is_file() else []
        else:
            results = {name: self.evaluate(name, entry)
                       for name, entry in self.spec["evaluations"].items()}
            timing = self.timing()
        return write_report(self.spec, self.spec_path, self.out, results, timing)


def _check_noise(name: str, entry: dict[str, Any], config: Any, start_from: Path | None) -> None:
    """Refuse a diffusion cell that would silently train a diffusion model with another noise
    than it was trained with (a preset's default); naming ``objective.noise`` says it is meant."""
    if start_from is None or config.objective.kind != "diffusion" or not is_ar2diff_folder(start_from):
        return
    meta = load_meta(start_from)
    if meta.mode != "diffusion" or (meta.noise or "uniform") == config.objective.noise:
        return
    if any(o.startswith("objective.noise=") for o in entry.get("overrides", [])):
        return
    raise Ar2DiffError(f"experiment: model {name} would train {entry['from']} ({meta.noise} noise) "
                       f"with objective.noise={config.objective.noise} from its preset; add "
                       f"objective.noise=… (and objective.unroll) to its overrides to say which")


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def run_experiment(config: str | Path, out: str | Path | None = None, device: str = "auto",
                   dtype: str | None = None, report_only: bool = False) -> dict[str, Any]:
    """Run an experiment YAML; returns the report's summary.

    ``device`` runs the evaluations (training follows each config's ``train.device``);
    ``dtype`` is the dtype of evaluations whose spec names none; ``report_only`` reports what
    is stored without building anything (a long grid's progress).
    """
    resolve_device(device), resolve_dtype(dtype)  # bad values fail before any work
    spec = load_experiment(config)
    out_dir = Path(out or Path("runs") / "experiments" / spec["name"])
    return Experiment(spec, out_dir, Path(config), device, dtype).run(report_only)



