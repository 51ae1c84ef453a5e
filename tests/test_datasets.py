import json

import numpy as np
import pytest

from loadgen.errors import LoadgenError
from loadgen.workload.datasets import approx_tokens, detect_format, load_dataset, trace_offsets
from loadgen.workload.specs import DatasetWorkload
from scenarios.scenario import DATA_DIR


@pytest.mark.parametrize("name,fmt,count", [
    ("sharegpt-sample.json", "sharegpt", 40), ("messages-sample.jsonl", "sharegpt", 20),
    ("prompts-sample.jsonl", "prompts", 30), ("azure-trace-sample.csv", "azure", 60),
    ("burstgpt-sample.csv", "burstgpt", 60),
])
def test_shipped_samples_parse_cleanly(name, fmt, count):
    d = load_dataset(DATA_DIR / name)
    assert d.format == fmt == detect_format(DATA_DIR / name)
    assert len(d.records) == count and not d.skipped


def test_sharegpt_broken_entries_are_counted_not_fatal(tmp_path):
    good = {"conversations": [{"from": "human", "value": "hello there"}, {"from": "gpt", "value": "hi, how can I help"}]}
    items = [
        good,
        {"conversations": [{"from": "human", "value": ""}, {"from": "gpt", "value": "x"}]},  # empty turn
        {"conversations": [{"from": "human", "value": "only a question"}]},  # no reply
        {"conversations": "not a list"},
        {"conversations": [{"from": "human", "value": 42}, {"from": "gpt", "value": "x"}]},
        {"something": "else"},
        "a string",
    ]
    p = tmp_path / "d.json"
    p.write_text(json.dumps(items))
    d = load_dataset(p, "sharegpt")
    assert len(d.records) == 1
    assert d.records[0].input_tokens == approx_tokens("hello there") == 3
    assert sum(d.skipped.values()) == 6
    assert d.skipped["no non-empty user/assistant turn"] == 2
    assert d.skipped["malformed message"] == 1 and d.skipped["not a JSON object"] == 1


def test_messages_jsonl_with_unparsable_lines(tmp_path):
    lines = [
        json.dumps({"messages": [{"role": "system", "content": "be nice"}, {"role": "user", "content": "q1"},
                                 {"role": "assistant", "content": "a1"}, {"role": "user", "content": "q2"},
                                 {"role": "assistant", "content": "a2 a2"}]}),
        "{this is not json",
        "",
        json.dumps({"messages": [{"role": "user", "content": "solo"}, {"role": "assistant", "content": "reply"}]}),
    ]
    p = tmp_path / "m.jsonl"
    p.write_text("\n".join(lines))
    d = load_dataset(p)
    assert d.format == "sharegpt" and len(d.records) == 2 and d.skipped == {"unparsable line": 1}
    assert len(d.records[0].turns) == 2 and d.records[0].turns[1].assistant == "a2 a2"


def test_prompts_jsonl(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text("\n".join([json.dumps({"prompt": "abcd efgh", "output_len": 5}), json.dumps({"prompt": "x"}),
                            json.dumps({"prompt": "  ", "output_len": 3}), json.dumps({"prompt": "y", "output_len": 0})]))
    d = load_dataset(p)
    assert [(r.prompt, r.input_tokens, r.output_tokens) for r in d.records] == [("abcd efgh", 3, 5)]
    assert sum(d.skipped.values()) == 3
    counted = load_dataset(p, count_tokens=lambda t: len(t.split()))
    assert counted.records[0].input_tokens == 2 and counted.token_count == "tokenizer"


def test_traces_timestamps_and_bad_rows(tmp_path):
    azure = tmp_path / "a.csv"
    azure.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                     "2023-11-16 18:15:47.5000000,100,10\n"
                     "2023-11-16 18:15:46.0000000,200,20\n"
                     "not a time,1,1\n"
                     "2023-11-16 18:15:49.2500000,0,5\n"
                     "2023-11-16 18:15:50.0000000,300,abc\n")
    d = load_dataset(azure)
    assert d.format == "azure"
    assert [(r.timestamp_s, r.input_tokens) for r in d.records] == [(0.0, 200), (1.5, 100)]  # sorted by time
    assert d.skipped == {"unparsable row": 2, "zero-token request or response": 1}
    burst = tmp_path / "b.csv"
    burst.write_text("Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
                     "10.0,ChatGPT,50,5,55,Conversation log\n12.5,GPT-4,60,6,66,API log\n")
    b = load_dataset(burst)
    assert b.format == "burstgpt" and np.allclose(trace_offsets(b.records, 0.5), [0.0, 1.25])


@pytest.mark.parametrize("content,suffix,needle", [
    ("", ".jsonl", "is empty"),
    ("\n\n", ".json", "is empty"),
    ("{\"prompt\": \"\"}\n", ".jsonl", "no usable prompts records"),
    ("a,b,c\n1,2,3\n", ".csv", "unknown CSV columns"),
    ('[{"broken": ', ".json", "not valid JSON"),
    ('{"x": 1}\n', ".jsonl", "cannot tell the dataset format"),
])
def test_unusable_datasets_are_user_errors(tmp_path, content, suffix, needle):
    p = tmp_path / f"d{suffix}"
    p.write_text(content)
    with pytest.raises(LoadgenError, match=needle):
        load_dataset(p)


def test_missing_dataset(tmp_path):
    with pytest.raises(LoadgenError, match="does not exist"):
        load_dataset(tmp_path / "nope.json")


def test_filter_sample_and_multi_turn_workload(tmp_path):
    d = load_dataset(DATA_DIR / "sharegpt-sample.json")
    small = d.filter(max_context=300)
    assert small.skipped["too long for the model's context"] > 0
    assert len(small.records) + small.skipped["too long for the model's context"] == len(d.records)
    a = DatasetWorkload(d, 4096, seed=1).take(10)
    b = DatasetWorkload(d, 4096, seed=1).take(10)
    c = DatasetWorkload(d, 4096, seed=2).take(10)
    assert [s.prompt for s in a] == [s.prompt for s in b] != [s.prompt for s in c]
    multi = DatasetWorkload(d, 4096, multi_turn=True).take(40)
    chains = [list(s.chain()) for s in multi if s.next_turn is not None]
    assert chains, "the sample has multi-turn conversations"
    for chain in chains:
        for prev, nxt in zip(chain, chain[1:]):
            assert nxt.prompt.startswith(prev.prompt)  # the history is resent
            assert nxt.input_tokens > prev.input_tokens + prev.output_tokens
    w = DatasetWorkload(load_dataset(DATA_DIR / "prompts-sample.jsonl"), 4096)
    w.take(45)
    assert w.reused == 15


def test_shared_prefix_and_synthetic_turns():
    from loadgen.workload.distributions import LengthDistribution as L
    from loadgen.workload.specs import Workload

    specs = Workload(L.parse("40"), L.parse("8"), 4096, prefix_groups=3, prefix_len=100, seed=5).take(60)
    prefixes = {" ".join(s.prompt.split()[:100]) for s in specs}
    assert len(prefixes) == 3 and all(s.input_tokens == 140 for s in specs)
    conv = Workload(L.parse("30"), L.parse("10"), 4096, turns=4).take(2)
    chain = list(conv[0].chain())
    assert [t.turn for t in chain] == [0, 1, 2, 3]
    assert [t.input_tokens for t in chain] == [30, 70, 110, 150]  # history: + 30 in + 10 out per turn
    assert all(t.conversation == 0 for t in chain) and conv[1].conversation == 1
