"""`kdpipe export-dataset`: filter and format outputs as Hub-loadable datasets with a dataset card,
and `--push-to-hub` (export and train) against a local stand-in for the Hub API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from support_hub import running_hub  # noqa: E402

from kdpipe.loopback import ScriptLine, running  # noqa: E402
from kdpipe.records import load_records  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TOKEN = "hf_standin_secret_0123456789"
QUESTIONS = [(f"A box holds {a} pens and {b} more are added. How many pens are in the box?", a + b)
             for a, b in [(3, 4), (5, 9), (12, 7), (8, 8), (21, 2), (6, 15), (30, 11), (9, 9)]]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """seed -> generate (loopback teacher, one question answered wrongly) -> filter -> format, real stages."""
    from typer.testing import CliRunner

    from kdpipe.cli import app

    d = tmp_path_factory.mktemp("export")
    (d / "q.jsonl").write_text("".join(json.dumps({"question": q, "answer": str(a)}) + "\n" for q, a in QUESTIONS))
    script = [ScriptLine(q, [f"{q.split()[3]} pens plus the new ones makes {a + (i == 0)}. The answer is "
                             f"{a + (i == 0)}."]) for i, (q, a) in enumerate(QUESTIONS)]
    runner = CliRunner()

    def ok(*args):
        r = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
        assert r.exit_code == 0, r.stderr
        return r

    ok("seed", d / "q.jsonl", "-o", d / "seeds.jsonl")
    with running(script) as srv:
        ok("generate", d / "seeds.jsonl", "-o", d / "teacher.jsonl", "--mode", "label", "--model", "loopback",
           "--base-url", srv.base_url, "--cache", d / "cache.sqlite", "--samples", "1", "-q")
    ok("filter", d / "teacher.jsonl", "-o", d / "filtered.jsonl", "-q")
    ok("format", d / "filtered.jsonl", "-o", d / "sft.jsonl", "--style", "dss", "-q")
    return d


def test_filtered_records_export_loads_and_its_card_says_how_they_were_made(pipeline, cli, tmp_path):
    import datasets
    from huggingface_hub import DatasetCard

    code, _, err = cli("export-dataset", pipeline / "filtered.jsonl", "-o", tmp_path / "ds", "--license", "mit")
    assert code == 0, err
    ds = datasets.load_dataset(str(tmp_path / "ds"), cache_dir=str(tmp_path / "cache"))
    kept = load_records(pipeline / "filtered.jsonl")
    assert list(ds) == ["train"] and list(ds["train"]["id"]) == [r.id for r in kept] and len(kept) == 6
    card = DatasetCard.load(tmp_path / "ds" / "README.md")
    assert card.data.license == "mit" and "kdpipe" in card.data.tags
    assert card.data.configs == [{"config_name": "default",
                                  "data_files": [{"split": "train", "path": "data/train.jsonl"}]}]
    text = card.text
    assert "- Teacher: `loopback` (label, 1 sample(s) per question at temperature 0.0), 8 records" in text
    prompt_digest = json.loads((pipeline / "teacher.jsonl.meta.json").read_text())["prompts"]["numeric.txt"]
    assert f"- Prompt `numeric.txt`: {prompt_digest}" in text
    # One wrong answer, one templated question too like another: both drops in the card.
    assert "- Filter: 6 of 8 records kept" in text and "| gold_mismatch | 1 | 1 |" in text
    assert "| near_duplicate | 1 | 1 |" in text
    assert "- Seed questions: q.jsonl, 8 written" in text
    assert "terms of use" in text


def test_sft_rows_export_has_train_and_validation_splits(pipeline, cli, tmp_path):
    import datasets
    from huggingface_hub import DatasetCard

    code, _, err = cli("export-dataset", pipeline / "sft.jsonl", "-o", tmp_path / "sft-ds")
    assert code == 0, err
    counts = json.loads((pipeline / "sft.jsonl.meta.json").read_text())["counts"]
    ds = datasets.load_dataset(str(tmp_path / "sft-ds"), cache_dir=str(tmp_path / "cache"))
    assert {s: len(ds[s]) for s in ds} == {"train": counts["train"], "validation": counts["val"]}
    assert ds["train"][0]["completion"][0]["role"] == "assistant"
    card = DatasetCard.load(tmp_path / "sft-ds" / "README.md")
    assert card.data.license == "other" and "- Format: style `dss`" in card.text


def test_export_refuses_what_it_cannot_do(pipeline, cli, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("mine")
    code, _, err = cli("export-dataset", pipeline / "sft.jsonl", "-o", tmp_path / "taken")
    assert code == 1 and "exists; pass --overwrite" in err and (tmp_path / "taken" / "x").read_text() == "mine"
    code, _, err = cli("export-dataset", pipeline / "sft.jsonl", "-o", tmp_path / "d", "--push-to-hub", "nope")
    assert code == 2 and "--push-to-hub must be a Hub repository id owner/name" in err
    (tmp_path / "other.jsonl").write_text('{"a": 1}\n')
    code, _, err = cli("export-dataset", tmp_path / "other.jsonl", "-o", tmp_path / "d")
    assert code == 1 and "neither kdpipe records" in err and not (tmp_path / "d").exists()


def kdpipe(hub_url: str, *args, token: str | None = TOKEN, home: Path) -> subprocess.CompletedProcess:
    """The CLI in a process of its own, pointed at the stand-in (huggingface_hub reads HF_ENDPOINT at import)."""
    env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}
    env.update(HF_ENDPOINT=hub_url, HF_HUB_OFFLINE="0", HF_HOME=str(home), PYTHONPATH=str(REPO))
    if token:
        env["HF_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "kdpipe", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=300)


def files_under(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_export_pushes_the_folder_with_the_environment_token(pipeline, tmp_path):
    with running_hub(TOKEN) as hub:
        r = kdpipe(hub.url, "export-dataset", pipeline / "sft.jsonl", "-o", tmp_path / "ds", "--push-to-hub",
                   "me/distilled", "--private", home=tmp_path / "home")
        assert r.returncode == 0, r.stderr
        (commit,) = hub.commits
        assert commit.repo == "datasets/me/distilled" and hub.repos[commit.repo] == {"private": True}
        assert commit.files == files_under(tmp_path / "ds")
        assert [(kind, meta["license"]) for kind, meta in hub.validated] == [("dataset", "other")]
        sent = [h.get("Authorization") or h.get("authorization") for m, p, h in hub.requests if m == "POST"
                and "validate" not in p]
        assert sent and all(a == f"Bearer {TOKEN}" for a in sent)
    assert "pushed to me/distilled" in r.stderr
    # The token went to the Hub only: not into the dataset, the card or any file kdpipe wrote.
    for folder in (tmp_path, pipeline):
        assert not [p for p in folder.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]


@pytest.mark.parametrize("token, why", [(None, "no Hub token; set HF_TOKEN or run `hf auth login`"),
                                        ("hf_wrong", "the token may not write to it")])
def test_push_without_a_good_token_is_one_line(pipeline, tmp_path, token, why):
    with running_hub(TOKEN) as hub:
        r = kdpipe(hub.url, "export-dataset", pipeline / "filtered.jsonl", "-o", tmp_path / "ds", "--push-to-hub",
                   "me/distilled", token=token, home=tmp_path / "home")
        assert not hub.commits
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [f"kdpipe: error: --push-to-hub me/distilled: {why}"]


@pytest.mark.slow
def test_train_pushes_the_run_without_its_checkpoints(pipeline, tmp_path):
    import support_tiny as st

    student = st.build_student(tmp_path / "student")
    with running_hub(TOKEN) as hub:
        r = kdpipe(hub.url, "train", pipeline / "sft.jsonl", "-o", tmp_path / "run", "--student", student,
                   "--max-steps", "2", "--save-every", "1", "--push-to-hub", "me/student", home=tmp_path / "home")
        assert r.returncode == 0, r.stderr
        (commit,) = hub.commits
    run = tmp_path / "run"
    assert (run / "checkpoints").is_dir()
    assert commit.repo == "models/me/student"
    assert commit.files == {k: v for k, v in files_under(run).items() if not k.startswith("checkpoints/")}
    assert {"README.md", "adapter_model.safetensors", "adapter_config.json", "train_config.json"} <= set(commit.files)
    assert not [p for p in run.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
