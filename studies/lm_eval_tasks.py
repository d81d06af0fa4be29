"""Local lm-evaluation-harness tasks built from the shared data, and held-out books text.

Writes into ``--out`` (not into the repository: the data stay in the shared folder):

* ``books_next`` (multiple choice): a paragraph of *The Adventures of Tom Sawyer* (74-0.txt,
  beyond what ``ar2diff adapt`` reads of the books) up to its last sentence, and four endings:
  that sentence and three last sentences of other paragraphs; ``acc`` / ``acc_norm``.
* ``squad_short`` (generate until a newline): a SQuAD v1.1 dev paragraph (at most 600
  characters), a question and ``Answer:``; exact match after trimming and case folding.
* ``books_heldout.txt``: paragraphs of *The Mysterious Affair at Styles* (863-0.txt, also never
  read by adapt), for ``ar2diff evaluate --task perplexity``.

    python studies/lm_eval_tasks.py --out runs/lm_eval_tasks
    python -m ar2diff.evaluation.lm_eval_model --model ar2diff --model_args pretrained=smollm2-135m \\
        --tasks books_next squad_short --include_path runs/lm_eval_tasks --limit 100
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

from ar2diff.data.corpus import strip_gutenberg
from ar2diff.paths import shared_data_dir

SENTENCE_END = re.compile(r"(?<=[.!?])[\"'”’]?\s+(?=[A-Z\"“])")

MC_YAML = """task: books_next
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
target_delimiter: " "
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
"""

GEN_YAML = """task: squad_short
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{context}}}}\\n\\nQuestion: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{answer}}}}"
target_delimiter: " "
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 16
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
    ignore_case: true
    ignore_punctuation: true
    regexes_to_ignore: ["^\\\\s+", "\\\\s+$"]
"""


def paragraphs(path: Path) -> list[str]:
    """The book's paragraphs (blank-line separated), whitespace collapsed."""
    text = strip_gutenberg(path.read_text(encoding="utf-8", errors="replace"))
    return [" ".join(p.split()) for p in text.split("\n\n") if p.strip()]


def books_next(book: Path, n: int, seed: int) -> list[dict]:
    """Next-sentence multiple choice from ``book``'s paragraphs of 3 to 8 sentences."""
    rng = random.Random(seed)
    items = []
    for para in paragraphs(book):
        sents = SENTENCE_END.split(para)
        if 3 <= len(sents) <= 8 and all(20 <= len(s) <= 200 for s in sents):
            items.append((" ".join(sents[:-1]), sents[-1]))
    docs = []
    for i, (context, ending) in enumerate(items[:n]):
        others = [e for j, (_, e) in enumerate(items) if j != i]
        choices = [ending, *rng.sample(others, 3)]
        rng.shuffle(choices)
        docs.append({"context": context, "choices": choices, "answer": choices.index(ending)})
    return docs


def squad_short(path: Path, n: int) -> list[dict]:
    """The first ``n`` SQuAD dev questions whose paragraph has at most 600 characters."""
    docs = []
    for article in json.loads(path.read_text(encoding="utf-8"))["data"]:
        for para in article["paragraphs"]:
            if len(para["context"]) > 600:
                continue
            for qa in para["qas"]:
                docs.append({"context": para["context"], "question": qa["question"],
                             "answer": qa["answers"][0]["text"]})
    return docs[:n]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/lm_eval_tasks", help="folder for the tasks and texts")
    p.add_argument("--n", type=int, default=500, help="documents per task")
    p.add_argument("--heldout", type=int, default=40, help="held-out paragraphs for perplexity")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    data = shared_data_dir()
    if data is None:
        raise SystemExit("the shared data folder (../shared/data or AR2DIFF_DATA) is absent")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    books = data / "corpus" / "books"
    (out / "books_next.json").write_text(json.dumps(books_next(books / "74-0.txt", args.n,
                                                               args.seed)))
    (out / "squad_short.json").write_text(json.dumps(squad_short(data / "squad" / "dev-v1.1.json",
                                                                 args.n)))
    (out / "books_next.yaml").write_text(MC_YAML.format(data=out / "books_next.json"))
    (out / "squad_short.yaml").write_text(GEN_YAML.format(data=out / "squad_short.json"))
    held = [t for t in paragraphs(books / "863-0.txt")
            if len(t) >= 200 and "CHAPTER" not in t][:args.heldout]
    (out / "books_heldout.txt").write_text("\n\n".join(held) + "\n", encoding="utf-8")
    print(f"tasks books_next and squad_short and books_heldout.txt written to {out}")


if __name__ == "__main__":
    main()
