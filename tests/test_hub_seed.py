"""`kdpipe seed` from a dataset that `datasets` loads: a local dataset folder and a script-free
dataset repo layout (what a Hub dataset repository holds) go through the same path as a Hub id."""

import json
import os
import subprocess
import sys

import pytest

from kdpipe.records import load_records, meta_path

ROWS = [{"question": f"Ann has {i} apples and buys {i + 3} more. How many now?", "answer": str(2 * i + 3),
         "difficulty": i % 3} for i in range(12)]
CHOICE_ROWS = [{"question": f"Which colour is sky number {i}?", "choices": {"label": ["A", "B"],
                "text": ["blue", "green"]}, "answerKey": "A"} for i in range(6)]

README = """---
license: mit
configs:
- config_name: main
  data_files:
  - split: train
    path: data/main/train-*
  - split: test
    path: data/main/test-*
- config_name: choice
  data_files:
  - split: train
    path: data/choice/train-*
---
# A toy dataset in the layout of a Hub dataset repository
"""


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path, monkeypatch):
    """Keep `datasets`' prepared copies out of the user's cache."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


def write_parquet(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


@pytest.fixture
def repo(tmp_path):
    """A script-free dataset repository: Parquet shards under data/ and a README declaring two configs."""
    root = tmp_path / "toy-repo"
    write_parquet(root / "data/main/train-00000-of-00001.parquet", ROWS[:9])
    write_parquet(root / "data/main/test-00000-of-00001.parquet", ROWS[9:])
    write_parquet(root / "data/choice/train-00000-of-00001.parquet", CHOICE_ROWS)
    (root / "README.md").write_text(README)
    return root


def strip_provenance(recs):
    return [{**r.to_dict(), "provenance": None} for r in recs]


def test_repo_layout_reads_like_the_same_rows_in_a_file(repo, tmp_path, cli):
    code, _, err = cli("seed", repo, "--config", "main", "-o", tmp_path / "hub.jsonl")
    assert code == 0, err
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS[:9]))
    assert cli("seed", tmp_path / "train.jsonl", "-o", tmp_path / "file.jsonl")[0] == 0
    hub, file = load_records(tmp_path / "hub.jsonl"), load_records(tmp_path / "file.jsonl")
    # Same field detection, task typing, ids and extra fields as the file.
    assert strip_provenance(hub) == strip_provenance(file)
    assert [r.task for r in hub] == ["numeric"] * 9 and hub[0].meta == {"difficulty": 0}
    assert hub[0].provenance == {"source": str(repo), "config": "main", "split": "train", "row": 1}
    meta = json.loads(meta_path(tmp_path / "hub.jsonl").read_text())
    from kdpipe.outputs import file_digest

    shard = "data/main/train-00000-of-00001.parquet"
    assert meta["params"]["source"] == {"kind": "local dataset folder", "source": str(repo), "config": "main",
                                        "split": "train", "requested_revision": None, "rows": 9,
                                        "files": {shard: file_digest(repo / shard)}}
    assert "9 written" in err


def test_repo_layout_config_split_and_eval_hold_out(repo, tmp_path, cli):
    code, _, err = cli("seed", repo, "--config", "main", "--split", "test", "-o", tmp_path / "t.jsonl")
    assert code == 0, err
    assert [r.gold for r in load_records(tmp_path / "t.jsonl")] == [str(2 * i + 3) for i in range(9, 12)]
    code, _, err = cli("seed", repo, "--config", "choice", "-o", tmp_path / "c.jsonl",
                       "--eval-out", tmp_path / "c-eval.jsonl", "--eval-frac", "0.34")
    assert code == 0, err
    train, held = load_records(tmp_path / "c.jsonl"), load_records(tmp_path / "c-eval.jsonl")
    assert len(train) + len(held) == 6 and len(held) == 2
    assert {r.task for r in train + held} == {"choice"} and train[0].choices == ["blue", "green"]
    assert train[0].gold == "blue"


def test_plain_folder_of_data_files_defaults_to_train(tmp_path, cli):
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS[:5]))
    (folder / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS[5:]))
    code, _, err = cli("seed", folder, "-o", tmp_path / "s.jsonl", "--limit", "3")
    assert code == 0, err
    recs = load_records(tmp_path / "s.jsonl")
    assert len(recs) == 3 and recs[2].provenance["split"] == "train" and recs[2].provenance["row"] == 3


@pytest.mark.parametrize("args, message", [
    (["--config", "main", "--split", "dev"], "has no split 'dev' (splits: train, test)"),
    (["--config", "nope"], "'nope' not found"),
    (["--config", "main", "--revision", "v1"], "--revision applies to Hub datasets, not to a local folder"),
])
def test_repo_layout_mistakes_are_one_line(repo, tmp_path, cli, args, message):
    code, _, err = cli("seed", repo, *args, "-o", tmp_path / "s.jsonl")
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "s.jsonl").exists()


def test_config_on_a_file_is_refused(tmp_path, cli):
    (tmp_path / "a.jsonl").write_text(json.dumps(ROWS[0]) + "\n")
    code, _, err = cli("seed", tmp_path / "a.jsonl", "--config", "main", "-o", tmp_path / "s.jsonl")
    assert code == 2 and "--config and --revision apply to a Hub dataset" in err


def test_hub_id_offline_is_one_line(tmp_path, cli):
    # The tests run with HF_HUB_OFFLINE=1 (conftest): a Hub id that is not cached cannot be read.
    code, _, err = cli("seed", "kdpipe-test/no-such-dataset", "--config", "main", "-o", tmp_path / "s.jsonl")
    assert code == 1, err
    assert err.strip() == ("kdpipe: error: kdpipe-test/no-such-dataset: not a local file or folder, and the "
                           "Hub cannot be reached to find it (offline, or HF_HUB_OFFLINE=1)")
    assert not (tmp_path / "s.jsonl").exists()


def test_missing_file_is_not_taken_for_a_hub_id(tmp_path, cli):
    code, _, err = cli("seed", "questions.jsonl", "-o", tmp_path / "s.jsonl")
    assert code == 1 and "questions.jsonl: no such file or folder" in err


@pytest.mark.slow
def test_hub_id_without_network_is_one_line(tmp_path):
    """No network (an endpoint that refuses connections), offline mode off: one line after the retries."""
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path)}
    p = subprocess.run([sys.executable, "-m", "kdpipe", "seed", "someone/questions", "-o", tmp_path / "s.jsonl"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1
    assert p.stderr.strip().splitlines() == [
        "kdpipe: error: someone/questions: not a local file or folder, and the Hub cannot be reached to find "
        "it (offline, or HF_HUB_OFFLINE=1)"]
