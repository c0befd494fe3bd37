"""Cost control of `kdpipe generate`: --dry-run estimates, --max-usd, price tables and files."""

import json

import pytest

from kdpipe.errors import InputError, UsageError
from kdpipe.generate import GenerateOptions, run_generate
from kdpipe.records import Record, Sample, load_records, meta_path, write_records
from kdpipe.teacher.estimate import ByteCounter, TokenizerCounter
from kdpipe.loopback import running
from kdpipe.teacher.pricing import Price, load_price_file, resolve_price
from support_teacher import palm_script, svamp_seeds

PRICE = dict(price_in=3.0, price_out=12.0)


def opts(url, tmp_path, **kw):
    kw.setdefault("cache", tmp_path / "cache.sqlite")
    return GenerateOptions(model="loopback", base_url=url, timeout=2.0, **{**PRICE, **kw})


def ledger(out):
    return json.loads(meta_path(out).read_text())["usage"]


def within(value, bounds):
    low, _, high = bounds
    return low <= value <= high


@pytest.mark.parametrize("samples, max_n, batch", [(1, None, False), (3, None, False), (3, 1, False),
                                                   (3, None, True)])
def test_the_real_ledger_falls_within_the_dry_runs_range(shared_data, tmp_path, samples, max_n, batch):
    seeds = svamp_seeds(shared_data, tmp_path, limit=120)
    out = tmp_path / "out.jsonl"
    run = dict(samples=samples, batch=batch, poll_interval=0.02)
    with running(palm_script(shared_data, seeds), max_n=max_n) as srv:
        dry = run_generate(seeds, out, opts(srv.base_url, tmp_path, dry_run=True, **run)).extra["estimate"]
        assert srv.stats["requests"] == 0 and not out.exists() and not (tmp_path / "cache.sqlite").exists()
        run_generate(seeds, out, opts(srv.base_url, tmp_path, **run))
        assert srv.stats["batches_created"] == batch
    real = ledger(out)
    assert (dry.requests, dry.samples, dry.cached_requests) == (120, 120 * samples, 0)
    assert within(real["prompt_tokens"], dry.prompt_tokens)
    assert within(real["completion_tokens"], dry.completion_tokens)
    assert within(real["cost_usd"], dry.cost)
    # With no earlier answers the expected output is --max-tokens: the top of the range.
    assert dry.completion_tokens[1] == dry.completion_tokens[2] == 512 * 120 * samples


def test_a_dry_run_after_a_partial_run_counts_the_cache_and_expects_the_observed_length(shared_data, tmp_path):
    seeds = svamp_seeds(shared_data, tmp_path, limit=200)
    records = load_records(seeds)
    first_half = tmp_path / "half.jsonl"
    write_records(first_half, records[:100])
    with running(palm_script(shared_data, seeds)) as srv:
        run_generate(first_half, tmp_path / "half.out.jsonl", opts(srv.base_url, tmp_path))
        dry = run_generate(seeds, tmp_path / "all.jsonl", opts(srv.base_url, tmp_path, dry_run=True)).extra["estimate"]
        real = run_generate(seeds, tmp_path / "all.jsonl", opts(srv.base_url, tmp_path))
    assert (dry.requests, dry.cached_requests, dry.cached_samples) == (100, 100, 100)
    assert "mean of 100 earlier answers" in dry.output_basis
    assert within(real.cost_usd, dry.cost)
    # Observed lengths and the byte estimate put the expected cost close to the real one.
    assert dry.cost[1] == pytest.approx(real.cost_usd, rel=0.25)


def test_dry_run_of_expand_mode_covers_its_first_round(shared_data, tmp_path):
    seeds = svamp_seeds(shared_data, tmp_path, limit=30)
    with running([]) as srv:
        dry = run_generate(seeds, tmp_path / "new.jsonl", opts(srv.base_url, tmp_path, mode="expand", num_new=40,
                                                               dry_run=True)).extra["estimate"]
        assert srv.stats["requests"] == 0
    assert dry.requests == 40 // 8 and dry.prompt_tokens[0] > 0  # 8 new questions asked per request


def test_dry_run_on_the_command_line(cli, shared_data, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # a dry run needs no key: it sends nothing
    seeds = svamp_seeds(shared_data, tmp_path, limit=20)
    code, out, err = cli("generate", seeds, "-o", tmp_path / "o.jsonl", "--model", "gpt-4o-mini",
                         "--base-url", "https://api.openai.com/v1", "--cache", tmp_path / "c.sqlite", "--dry-run",
                         "--samples", "2", "--max-tokens", "300")
    assert code == 0, err
    assert "requests to send: 20 (40 samples); answered by the cache: 0 requests" in out
    assert "at most --max-tokens 300 per sample" in out and "UTF-8 bytes / 4" in out
    assert "$0.15 in / $0.6 out per million tokens" in out
    code, out, _ = cli("generate", seeds, "-o", tmp_path / "o.jsonl", "--model", "gpt-4o-mini", "--batch",
                       "--base-url", "http://127.0.0.1:9/v1", "--cache", tmp_path / "c.sqlite", "--dry-run")
    assert "Batch API price $0.075 in / $0.3 out" in out
    assert not (tmp_path / "o.jsonl").exists() and not (tmp_path / "c.sqlite").exists()


def test_tokenizer_file_counts_prompt_tokens(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(["how many apples are left"], trainers.WordLevelTrainer(special_tokens=["[UNK]"]))
    tok.save(str(tmp_path / "tokenizer.json"))
    messages = [{"role": "user", "content": "how many apples are left ?"}]
    assert TokenizerCounter(tmp_path / "tokenizer.json").count(messages) == (6, 6 + 7, 6 + 14)
    low, mid, high = ByteCounter().count(messages)
    assert low <= 6 + 7 <= high and mid == -(-26 // 4) + 7
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(InputError, match="bad.json: not a tokenizers JSON file"):
        TokenizerCounter(tmp_path / "bad.json")


def test_max_usd_stops_within_one_round_and_a_higher_cap_finishes_from_the_cache(cli, shared_data, tmp_path):
    seeds = svamp_seeds(shared_data, tmp_path, limit=200)
    cap, concurrency = 0.2, 4
    with running(palm_script(shared_data, seeds), latency=0.005) as srv:
        base = ["generate", seeds, "--model", "loopback", "--base-url", srv.base_url, "--cache",
                tmp_path / "cache.sqlite", "--concurrency", str(concurrency), "--price-in", "3", "--price-out", "12"]
        code, _, err = cli(*base, "-o", tmp_path / "out.jsonl", "--max-usd", str(cap))
        sent = srv.stats["requests"]
        assert code == 3, err  # written, but not finished: make runs it again
        assert "stopped at --max-usd 0.2" in err and "rerun the same command with a higher --max-usd" in err
        spent = ledger(tmp_path / "out.jsonl")
        records = load_records(tmp_path / "out.jsonl")
        unsent = [r for r in records if r.samples[0].error == "not_sent"]
        assert spent["stopped_at_max_usd"] and spent["not_sent_samples"] == len(unsent) == 200 - sent
        assert "--max-usd 0.2 reached" in unsent[0].samples[0].detail
        # Never past the cap, and short of it by less than one round of in-flight requests
        # (each at its worst case: the prompt's upper bound plus --max-tokens).
        worst = max(Price(3, 12).cost(ByteCounter().count([{"content": _prompt_of(r)}])[2], 512) for r in records)
        assert spent["cost_usd"] <= cap
        assert cap - spent["cost_usd"] < (concurrency + 1) * worst
        # A higher cap sends only what was not sent, and the output is what one run would write.
        code, _, err = cli(*base, "-o", tmp_path / "out.jsonl", "--max-usd", "100")
        assert code == 0 and "stopped" not in err
        assert srv.stats["requests"] == 200 and set(srv.teacher.paid.values()) == {1}
    done = load_records(tmp_path / "out.jsonl")
    assert not any(s.error == "not_sent" for r in done for s in r.samples)
    assert ledger(tmp_path / "out.jsonl")["cached_samples"] == sent


def _prompt_of(record):
    from kdpipe.label_prompts import PROMPTS_DIR, render_label_prompt

    return render_label_prompt((PROMPTS_DIR / f"{record.task}.txt").read_text(), record)


def test_max_usd_with_batch_submits_only_what_fits(tmp_path):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("".join(json.dumps({"id": f"q{i}", "question": f"What is {i} plus {i}?", "task": "numeric"})
                             + "\n" for i in range(40)))
    worst = Price(1.5, 6).cost(ByteCounter().count([{"content": _prompt_of(load_records(seeds)[0])}])[2], 512)
    with running([]) as srv:
        r = run_generate(seeds, tmp_path / "out.jsonl",
                         opts(srv.base_url, tmp_path, batch=True, poll_interval=0.02, max_usd=10.5 * worst))
        assert srv.stats["batch_answered"] == 10
    assert r.counts["not_sent"] == 30 and r.cost_usd <= 10.5 * worst


def test_cost_options_are_checked_before_anything_is_sent(cli, tmp_path):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(json.dumps({"id": "a", "question": "1+1?", "task": "numeric"}) + "\n")
    bad_prices = tmp_path / "prices.json"
    bad_prices.write_text(json.dumps({"my-model": {"input": 1}, "other": {"input": 1, "output": -2}}))
    code, _, err = cli("generate", seeds, "-o", tmp_path / "o.jsonl", "--model", "my-model", "--base-url",
                       "http://127.0.0.1:9/v1", "--prices", bad_prices, "--tokenizer", tmp_path / "none.json",
                       "--max-usd", "-1", "--poll-interval", "0")
    assert code == 2 and err.count("\n") == 1
    for part in ("prices.json", "'my-model'", "'other'", "--tokenizer", "--max-usd must be positive",
                 "--poll-interval"):
        assert part in err
    code, _, err = cli("generate", seeds, "-o", tmp_path / "o.jsonl", "--model", "my-model", "--base-url",
                       "http://127.0.0.1:9/v1", "--max-usd", "1")
    assert code == 2 and "--max-usd needs a price: 'my-model' is not in the price table" in err


def test_price_table_files_flags_and_batch_discount(tmp_path, monkeypatch):
    assert resolve_price("gpt-4o-mini-2024-07-18") == Price(0.15, 0.60)
    assert resolve_price("openai/gpt-4o", batch=True) == Price(1.25, 5.0)
    assert resolve_price("my-model") is None
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"my-model": {"input": 1, "output": 4},
                                  "gpt-4o": {"input": 2, "output": 8, "batch_input": 0.5}}))
    assert resolve_price("my-model-v2", prices_file=prices) == Price(1, 4)
    assert resolve_price("my-model", prices_file=prices, batch=True) == Price(0.5, 2)
    assert resolve_price("gpt-4o", prices_file=prices, batch=True) == Price(0.5, 4)  # file's batch input
    assert resolve_price("gpt-4o-mini", prices_file=prices) == Price(0.15, 0.60)  # longest prefix still wins
    assert resolve_price("my-model", price_in=7, price_out=9, prices_file=prices) == Price(7, 9)  # flags first
    toml = tmp_path / "prices.toml"
    toml.write_text('["my-model"]\ninput = 1.5\noutput = 6\n')
    assert load_price_file(toml)[0] == {"my-model": Price(1.5, 6)}
    monkeypatch.setenv("KDPIPE_PRICES", str(prices))
    assert GenerateOptions(model="my-model").price() == Price(1, 4)
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(InputError, match="broken.json: not a valid price file"):
        load_price_file(tmp_path / "broken.json")


def test_not_sent_is_a_sample_reason_that_round_trips(tmp_path):
    from kdpipe.records import SAMPLE_ERRORS

    assert "not_sent" in SAMPLE_ERRORS
    rec = Record(id="a", question="q", task="numeric",
                 samples=[Sample(index=0, error="not_sent", detail="not sent: --max-usd 1 reached")])
    write_records(tmp_path / "r.jsonl", [rec])
    (back,) = load_records(tmp_path / "r.jsonl")
    assert back == rec and not back.samples[0].ok


def test_max_usd_at_high_concurrency_spends_up_to_the_cap_and_never_past_it(tmp_path):
    # Uniform requests (same prompt length) that cost most of their worst case: the prompt
    # is billed, the one-token answer nearly free.
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("".join(json.dumps({"id": f"q{i}", "question": f"What is {i:03d} plus {i:03d}?",
                                         "task": "numeric"}) + "\n" for i in range(252)))
    records = load_records(seeds)
    price = Price(1000.0, 0.001)
    worst = max(price.cost(ByteCounter().count([{"content": _prompt_of(r)}])[2], 1) for r in records)
    cap = 30 * worst
    with running([], latency=0.002) as srv:
        r = run_generate(seeds, tmp_path / "out.jsonl",
                         opts(srv.base_url, tmp_path, concurrency=32, max_tokens=1, price_in=1000.0,
                              price_out=0.001, max_usd=cap))
    spent = ledger(tmp_path / "out.jsonl")
    assert spent["stopped_at_max_usd"] and 0 < r.counts["not_sent"] < 252
    assert cap - 2 * worst <= spent["cost_usd"] <= cap


def test_one_price_flag_overrides_its_side_only_and_never_makes_the_other_free(cli, tmp_path, monkeypatch):
    assert resolve_price("gpt-4o-mini", price_in=1.0) == Price(1.0, 0.60)
    assert resolve_price("gpt-4o-mini", price_out=2.0, batch=True) == Price(0.075, 1.0)
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"my-model": {"input": 1, "output": 4}}))
    assert resolve_price("my-model", price_out=9, prices_file=prices) == Price(1, 9)
    with pytest.raises(UsageError, match="--price-in without --price-out: 'my-local' is not in the price table"):
        resolve_price("my-local", price_in=1.0)
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(json.dumps({"id": "a", "question": "1+1?", "task": "numeric"}) + "\n")
    code, _, err = cli("generate", seeds, "-o", tmp_path / "o.jsonl", "--model", "my-local", "--base-url",
                       "http://127.0.0.1:9/v1", "--price-out", "2", "--max-usd", "1")
    assert code == 2 and err.count("\n") == 1 and "--price-out without --price-in" in err
    assert "needs a price" not in err and not (tmp_path / "o.jsonl").exists()
    # eval --teacher follows the same rule, and reads $KDPIPE_PRICES like generate.
    from kdpipe.evaluate.teacher import prepare_teacher
    from kdpipe.teacher.options import TeacherOptions

    base = dict(base_url="http://127.0.0.1:9/v1", cache=tmp_path / "c.sqlite")
    with pytest.raises(UsageError, match="--price-in without --price-out"):
        prepare_teacher(TeacherOptions(model="my-local", price_in=1.0, **base))
    monkeypatch.setenv("KDPIPE_PRICES", str(prices))
    assert prepare_teacher(TeacherOptions(model="my-model", price_in=3.0, **base)).price == Price(3.0, 4)
