"""Cards in the format the Hub reads (YAML metadata between `---` lines, then Markdown):
the model card of a run directory and the dataset card of an exported dataset.

A card is written from files kdpipe already keeps, never from memory: the run's
train_config.json (which holds the data's lineage, lineage.py) and, once `eval` has
scored the run, its eval_results.json. Rewriting a card from the same files gives
the same card. The metadata goes through huggingface_hub's card-data classes, so
what the Hub validates is what kdpipe writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kdpipe.outputs import atomic_file

CARD = "README.md"
EVAL_RESULTS = "eval_results.json"  # the latest scorecard of the run, written by `eval`
TRAIN_CONFIG = "train_config.json"
LICENCE_NOTE = ("The completions were written by the teacher model(s) named above: their provider's terms of use "
                "apply to them (several forbid using outputs to train competing models), as does the licence of "
                "the seed questions' source. kdpipe sets no licence of its own; check both before publishing.")


def _front(data) -> str:
    return f"---\n{data.to_yaml()}\n---\n"


def _table(rows: list[tuple[Any, ...]], head: tuple[str, ...]) -> list[str]:
    return (["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            + ["| " + " | ".join("-" if v is None else str(v) for v in r) + " |" for r in rows])


def _is_local(student: str) -> bool:
    return student.startswith("/") or Path(student).exists()


def _data_lines(lin: dict[str, Any]) -> list[str]:
    """Sources, teachers, prompts, filter drops and format: shared by both cards."""
    lines: list[str] = []
    for s in lin.get("sources") or []:
        where = s["source"] + (f" (config {s['config']}, split {s['split']}" if s.get("config") or s.get("split")
                               else "") + (f", revision {s['revision']}" if s.get("revision") else "") + \
            (")" if s.get("config") or s.get("split") else "")
        lines.append(f"- Seed questions: {where}, {s.get('written')} written")
    for t in lin.get("teachers") or []:
        lines.append(f"- Teacher: `{t['model']}` ({t['mode']}, {t['samples']} sample(s) per question at temperature "
                     f"{t['temperature']}{', Batch API' if t.get('batch') else ''}), {t['records']} records"
                     + (f", cost ${t['cost_usd']:.4f}" if t.get("cost_usd") else ""))
    for name, digest in (lin.get("prompts") or {}).items():
        lines.append(f"- Prompt `{name}`: {digest}")
    f = lin.get("filter")
    if f:
        lines.append(f"- Filter: {f['kept']} of {f['input']} records kept ({f['samples_kept']} of "
                     f"{f['samples_input']} samples)"
                     + (f"; checked against {', '.join(Path(a).name for a in f['against'])}" if f["against"]
                        else ""))
        lines += ["", *_table([(r["rule"], r["records"], r["samples"]) for r in f["rules"]],
                              ("filter rule", "records dropped", "samples dropped")), ""]
    fm = lin.get("format")
    if fm:
        lines.append(f"- Format: style `{fm['style']}`, {'chat' if fm['chat'] else 'plain'} prompts, {fm['rows']} "
                     f"rows ({fm['train']} train, {fm['val']} validation)")
    return lines


def model_card(run_dir: str | Path) -> str:
    """The model card text of a kdpipe run directory."""
    from huggingface_hub import EvalResult, ModelCardData

    run_dir = Path(run_dir)
    config = json.loads((run_dir / TRAIN_CONFIG).read_text(encoding="utf-8"))
    opts, resolved, data = config["options"], config["resolved"], config["data"]
    results, lin = config["results"], config.get("lineage") or {}
    student = config["student"]
    full = bool(opts.get("full"))
    scores = _read_eval(run_dir)
    evals = [EvalResult(task_type="text-generation", dataset_type=s["eval_file"], dataset_name=s["eval_file"],
                        metric_type=s["metric"], metric_value=round(s["value"], 4),
                        metric_name=f"{s['metric']} ({s['asked']})")
             for s in scores.get("student", [])]
    meta = ModelCardData(
        base_model=None if _is_local(student) else student, library_name="transformers" if full else "peft",
        pipeline_tag="text-generation", model_name=run_dir.resolve().name,
        tags=["kdpipe", "knowledge-distillation", resolved.get("trainer") or "sft"] + ([] if full else ["lora"]),
        datasets=[s["source"] for s in lin.get("sources") or [] if s.get("kind") == "hub dataset"] or None,
        eval_results=evals or None)
    method = "full fine-tuning" if full else ("QLoRA" if opts.get("qlora") else "LoRA") + \
        f" (r={opts.get('lora_r')}, alpha={opts.get('lora_alpha')}, targets {resolved.get('lora_targets')})"
    lines = [f"# {run_dir.resolve().name}", "",
             "A student distilled from a teacher model with kdpipe "
             "(seed -> generate -> filter -> format -> train -> eval).", "",
             "## Base model", "",
             f"- `{student}`" + (" (a local folder; file digests in train_config.json)" if _is_local(student) else ""),
             "", "## Method and loss", "",
             f"- {method}, trainer `{resolved.get('trainer')}`, {resolved.get('device')}"
             f"{' bf16' if resolved.get('bf16') else ''}",
             f"- Loss: {resolved.get('loss')}", "",
             "## Data", "",
             f"- Training file: `{Path(data['path']).name}`, {data.get('digest')}",
             f"- Rows: {data.get('train_rows')} train, {data.get('val_rows')} validation; tasks "
             + ", ".join(f"{k} {v}" for k, v in (data.get("tasks") or {}).items()),
             *_data_lines(lin), "",
             "## Training options", "",
             *_table([(k, f"`{v}`") for k, v in _shown_options(opts, resolved)], ("option", "value")), "",
             "## Results", "",
             f"- {results.get('steps')} steps, train loss {_num(results.get('train_loss'))}, validation loss "
             f"{_num(results.get('eval_loss'))}, {results.get('seconds')} s", ""]
    if scores.get("markdown"):
        lines += ["## Evaluation", "", scores["markdown"], ""]
    else:
        lines += ["## Evaluation", "", "Not evaluated yet: `kdpipe eval EVAL.jsonl --model RUN_DIR` adds the "
                                       "scorecard here.", ""]
    return _front(meta) + "\n".join(lines)


def _num(v: Any) -> str:
    return "-" if v is None else f"{v:.4f}"


def _shown_options(opts: dict[str, Any], resolved: dict[str, Any]) -> list[tuple[str, Any]]:
    keep = [(k, v) for k, v in opts.items() if k not in ("student", "overwrite", "resume") and v not in (None, "")]
    return keep + [("learning_rate (resolved)", resolved.get("learning_rate"))]


def _read_eval(run_dir: Path) -> dict[str, Any]:
    path = run_dir / EVAL_RESULTS
    if not path.is_file():
        return {}
    report = json.loads(path.read_text(encoding="utf-8"))
    name = Path(report["eval"]).name
    # Gold-answer records are scored by accuracy; instruction records by ROUGE-L against the
    # references (None without any) and the judge's pairwise rates, which the Markdown table holds.
    metric = "accuracy" if report.get("task") != "instruction" else "rouge_l"
    return {"markdown": report.get("markdown"),
            "student": [{"eval_file": name, "metric": metric, "value": m[metric], "asked": m.get("asked_task")}
                        for m in report["models"] if m["role"] == "student" and m.get(metric) is not None]}


def write_model_card(run_dir: str | Path) -> Path:
    out = Path(run_dir) / CARD
    with atomic_file(out) as fp:
        fp.write(model_card(run_dir))
    return out


def record_eval(report: dict[str, Any], markdown: str) -> list[Path]:
    """`eval` scored kdpipe run directories: keep the scorecard in each (eval_results.json) and
    rewrite its model card with it. Returns the cards rewritten."""
    cards = []
    for m in report["models"]:
        run_dir = Path(m["model"])
        if m["role"] != "student" or not _written_by_train(run_dir):
            continue
        with atomic_file(run_dir / EVAL_RESULTS) as fp:
            json.dump({**report, "markdown": markdown}, fp, indent=2, ensure_ascii=False)
            fp.write("\n")
        cards.append(write_model_card(run_dir))
    return cards


def _written_by_train(run_dir: Path) -> bool:
    """A run directory whose train_config.json `kdpipe train` wrote (a model folder made otherwise has no card)."""
    try:
        config = json.loads((run_dir / TRAIN_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and {"options", "resolved", "data", "results"} <= config.keys()


def dataset_card(name: str, lin: dict[str, Any], splits: dict[str, int], kind: str, license: str) -> str:
    """The dataset card of an exported dataset: its data layout (configs) and how it was made."""
    from huggingface_hub import DatasetCardData

    n = sum(splits.values())
    size = "n<1K" if n < 1000 else "1K<n<10K" if n < 10_000 else "10K<n<100K" if n < 100_000 else "100K<n<1M"
    meta = DatasetCardData(
        license=license, pretty_name=name, size_categories=size, task_categories=["text-generation"],
        tags=["kdpipe", "knowledge-distillation", "synthetic"],
        source_datasets=[s["source"] for s in lin.get("sources") or [] if s.get("kind") == "hub dataset"] or None,
        configs=[{"config_name": "default",
                  "data_files": [{"split": s, "path": f"data/{s}.jsonl"} for s in splits]}])
    what = {"records": "kdpipe records (question, gold answer, the teacher's samples with rationale and answer)",
            "sft": "prompt/completion rows for supervised fine-tuning"}[kind]
    lines = [f"# {name}", "", f"{what[0].upper() + what[1:]}, made with kdpipe from a teacher model's answers.", "",
             "## Splits", "", *_table(list(splits.items()), ("split", "rows")), "",
             "## How the data were made", "", *_data_lines(lin), "",
             "Files behind this dataset (kdpipe stage, file, digest):", "",
             *_table([(s["stage"], s["file"], s["digest"]) for s in lin.get("stages") or []],
                     ("stage", "file", "digest")), "",
             "## Licence notes", "", LICENCE_NOTE, ""]
    return _front(meta) + "\n".join(lines)
