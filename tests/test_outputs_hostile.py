"""Output paths a user may give: devices, pipes, links, inputs, long names, a full disk."""

import json
import os
import resource
import subprocess
import sys
import threading

import pytest

from kdpipe.errors import KdpipeError
from kdpipe.records import Record, write_records

ROWS = [Record(id=f"r{i}", question=f"What is {i} plus {i}?", task="numeric", gold=str(2 * i)) for i in range(50)]


def kdpipe(*args, **kw):
    return subprocess.run([sys.executable, "-m", "kdpipe", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.getcwd()}, **kw)


def source(tmp_path):
    path = tmp_path / "src.jsonl"
    path.write_text("".join(json.dumps({"question": f"What is {i} plus 1?", "answer": str(i + 1)}) + "\n"
                            for i in range(5)))
    return path


# The tests point links of their own at what /dev/stdout and /dev/full are, so that a kdpipe that
# renamed over the link (as one running as root once did to /dev itself) harms nothing.


def test_stdout_gets_the_records_and_stays_what_it_was(tmp_path):
    stdout = tmp_path / "stdout"
    stdout.symlink_to("/proc/self/fd/1")  # what /dev/stdout is
    proc = kdpipe("seed", source(tmp_path), "-o", stdout, "-q")
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line)["question"] for line in proc.stdout.splitlines()][0] == "What is 0 plus 1?"
    assert stdout.is_symlink() and not (tmp_path / "stdout.meta.json").exists()


def test_a_fifo_is_written_to_directly(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(open(fifo).read()))
    reader.start()
    write_records(fifo, ROWS)
    reader.join(10)
    assert len(got[0].splitlines()) == 50
    assert not fifo.is_file() and fifo.exists()  # still a FIFO, not replaced by a regular file


def test_a_symlink_keeps_pointing_at_its_target_which_is_replaced(tmp_path):
    target = tmp_path / "data" / "real.jsonl"
    target.parent.mkdir()
    target.write_text("old\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    write_records(link, ROWS)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert len(target.read_text().splitlines()) == 50
    assert not list(tmp_path.glob(".link*")) and not list(target.parent.glob(".*tmp"))


def test_eval_refuses_to_overwrite_its_input_before_loading_anything(tmp_path, cli):
    ev = tmp_path / "ev.jsonl"
    write_records(ev, ROWS)
    before = ev.read_bytes()
    for args in (["-o", ev], ["-o", tmp_path / "e.json", "--predictions", ev]):
        code, _, stderr = cli("eval", ev, "--model", tmp_path / "no-such-student", *args)
        assert code != 0 and "would overwrite an input file" in stderr
    assert ev.read_bytes() == before


def test_a_name_over_255_bytes_is_one_line(tmp_path):
    proc = kdpipe("seed", source(tmp_path), "-o", tmp_path / ("x" * 300 + ".jsonl"))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "longer than" in proc.stderr


def test_a_full_device_at_the_final_flush_is_one_line(tmp_path):
    full = tmp_path / "full"
    full.symlink_to("/dev/full")
    with pytest.raises(KdpipeError, match=f"{full}: cannot write: No space left on device"):
        write_records(full, ROWS[:2])
    assert full.is_symlink()


def test_a_file_size_limit_hit_at_the_final_flush_is_one_line_and_leaves_nothing(tmp_path):
    out, big = tmp_path / "out.jsonl", tmp_path / "big.jsonl"
    big.write_text("".join(json.dumps({"question": f"Question number {i} " * 5}) + "\n" for i in range(40)))

    def limit():  # Python ignores SIGXFSZ: a write past the limit fails with EFBIG, as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))

    proc = kdpipe("seed", big, "-o", out, preexec_fn=limit)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"{out}: cannot write: File too large" in proc.stderr
    assert not out.exists() and not list(tmp_path.glob(".out*"))

