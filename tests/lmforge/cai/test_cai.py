"""Constitutional AI: the prompts sent follow the constitution, records carry the right fields,
judging is order-symmetric, and the audit logs resume. A deterministic stub stands in for the
model here only; test_stage_cai.py runs the real model through the whole loop."""

from __future__ import annotations

import json
import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from lmforge.cai.chat import completion_logprobs
from lmforge.cai.constitution import ConstitutionError, load_constitution
from lmforge.cai.critique import critique_and_revise, sample_principle
from lmforge.cai.judge import (
    OPTIONS,
    Comparison,
    LogprobJudge,
    TextJudge,
    comparison_records,
    judge_conversation,
    parse_option,
)
from lmforge.cai.records import AppendOnlyLog, PromptRecord, load_prompts, split_by_id
from lmforge.cai.runner import build_models, generate_cai_data
from lmforge.config_schema import CAIConfig
from lmforge.model import ModelConfig, build_model
from lmforge.tokenizer import Tokenizer


class StubChat:
    """Deterministic replies that name the turn they answer; every conversation sent is recorded."""

    name = "stub"

    def __init__(self) -> None:
        self.calls: list[list[dict]] = []

    def reply(self, conversations):
        self.calls += [list(c) for c in conversations]
        # later turns get longer replies, so a length-preferring judge prefers revisions
        return [f"reply to turn {len(c)} of {c[0]['content']!r}" + "!" * len(c) for c in conversations]


class PreferLonger:
    """A text judge stub: prefers the longer option, in the "(A)"/"(B)" format."""

    name = "prefer-longer"

    def reply(self, conversations):
        out = []
        for c in conversations:
            text = c[0]["content"]
            a = text.split("\n(A) ")[1].split("\n(B) ")[0]
            b = text.split("\n(B) ")[1].split("\n\nReply with")[0]
            out.append("(A)" if len(a) > len(b) else "(B)")
        return out


class AlwaysA:
    name = "always-a"

    def reply(self, conversations):
        return ["(A) for sure"] * len(conversations)


def prompts(n: int = 5) -> list[PromptRecord]:
    return [PromptRecord(f"p{i}", f"question number {i}?", "test", "unit") for i in range(n)]


def test_default_constitution_and_prompt_sets_load():
    constitution = load_constitution("default")
    assert len(constitution.principles) >= 6 and len(set(constitution.names())) == len(constitution.principles)
    for p in constitution.principles:
        assert p.critique_request and p.revision_request and p.preference_question.endswith("?")
    sets = load_prompts(["red_team", "helpful"])
    assert {p.set for p in sets} == {"red_team", "helpful"} and len({p.id for p in sets}) == len(sets)


def test_constitution_errors_name_file_and_entry(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("principles:\n  - name: a\n    critique_request: c\n    preference_question: q?\n")
    with pytest.raises(ConstitutionError, match=r"broken.yaml: principles\[0\] \(a\) lacks \['revision_request'\]"):
        load_constitution(path)


@pytest.mark.parametrize("rounds", [1, 2])
def test_critique_conversations_follow_the_constitution(rounds):
    constitution = load_constitution("default")
    chat = StubChat()
    batch = prompts(5)
    records = critique_and_revise(chat, batch, constitution, rounds=rounds, seed=3)
    # One call per turn: the answer, then critique and revision per round; each batched over prompts.
    assert len(chat.calls) == len(batch) * (1 + 2 * rounds)
    for prompt, record in zip(batch, records):
        conversation = record["conversation"]
        assert [m["role"] for m in conversation] == ["user", "assistant"] * (1 + 2 * rounds)
        assert conversation[0]["content"] == prompt.prompt
        for r in range(rounds):
            principle = sample_principle(constitution, 3, prompt.id, r)
            critique_turn, revision_turn = conversation[2 + 4 * r], conversation[4 + 4 * r]
            assert critique_turn["content"] == principle.critique_request
            assert revision_turn["content"] == principle.revision_request
            # the model saw exactly the conversation so far when it answered each request
            assert conversation[: 3 + 4 * r] in chat.calls and conversation[: 5 + 4 * r] in chat.calls
            assert record["steps"][r]["principle"] == principle.name
        assert record["initial"] == conversation[1]["content"]
        assert record["revision"] == conversation[-1]["content"]
        assert record["principles"] == [s["principle"] for s in record["steps"]]
        assert record["constitution_sha256"] == constitution.sha256 and record["id"] == prompt.id


def test_principles_are_sampled_across_the_constitution():
    constitution = load_constitution("default")
    names = {sample_principle(constitution, 0, f"id{i}", 0).name for i in range(200)}
    assert names == set(constitution.names())


@pytest.mark.parametrize(
    "reply,expected",
    [
        ("(A)", "A"),
        ("The better answer is (B).", "B"),
        ("B", "B"),
        ("( A )", "A"),
        ("(A) or (B)", None),
        ("neither", None),
        ("", None),
    ],
)
def test_parse_option(reply, expected):
    assert parse_option(reply) == expected


def test_text_judge_asks_both_orders_and_cancels_position_bias():
    constitution = load_constitution("default")
    principle = constitution.principles[0]
    pairs = [
        Comparison("x", "q?", principle, "short", "a much longer answer"),
        Comparison("y", "q?", principle, "a much longer answer", "short"),
    ]
    records = comparison_records(TextJudge(PreferLonger()), pairs, min_margin=0.0, pair_source="revision")
    for record in records:
        assert record["chosen"] == "a much longer answer" and record["rejected"] == "short"
        assert record["principle"] == principle.name and record["preference_probability"] == 1.0
    biased = comparison_records(TextJudge(AlwaysA()), pairs, min_margin=0.0, pair_source="revision")
    assert all(r["chosen"] is None and r["p_first_better"] == 0.5 for r in biased)


def test_judge_prompt_holds_the_principle_question_and_both_answers():
    principle = load_constitution("default").principles[1]
    text = judge_conversation("the prompt", principle, "first answer", "second answer")[0]["content"]
    assert "the prompt" in text and principle.preference_question in text
    assert "(A) first answer" in text and "(B) second answer" in text


@pytest.mark.parity
def test_logprob_judge_matches_direct_logprobs_and_is_order_symmetric(rl_tokenizer_dir, rl_model_cfg):
    tokenizer = Tokenizer.load(rl_tokenizer_dir)
    model = build_model(ModelConfig(**rl_model_cfg)).eval()
    principle = load_constitution("default").principles[0]
    judge = LogprobJudge(model, tokenizer)
    forward, backward = judge.judge(
        [
            Comparison("a", "Sort 3, 1", principle, "1, 3", "3, 1"),
            Comparison("a", "Sort 3, 1", principle, "3, 1", "1, 3"),
        ]
    )
    assert forward.p_first == pytest.approx(1.0 - backward.p_first, abs=1e-6)
    # direct: log p(option tokens | rendered judge prompt), by a full forward over each row
    conversation = judge_conversation("Sort 3, 1", principle, "1, 3", "3, 1")
    prefix = tokenizer.encode(tokenizer.apply_chat_template(conversation, add_generation_prompt=True))
    for option, got in zip(OPTIONS, completion_logprobs(model, tokenizer, conversation, OPTIONS)):
        ids = prefix + tokenizer.encode(option)
        with torch.no_grad():
            logps = torch.log_softmax(model(torch.tensor([ids]))[0].float(), -1)
        want = sum(logps[t - 1, ids[t]].item() for t in range(len(prefix), len(ids)))
        assert got == pytest.approx(want, abs=1e-4)


def test_split_by_id_is_stable_disjoint_and_keeps_a_val_record():
    records = [{"id": f"r{i}"} for i in range(50)]
    train, val = split_by_id(records, 0.1)
    assert {r["id"] for r in train} | {r["id"] for r in val} == {r["id"] for r in records}
    assert not {r["id"] for r in train} & {r["id"] for r in val}
    shuffled = records[:]
    random.Random(0).shuffle(shuffled)
    assert split_by_id(shuffled, 0.1) == (train, val)
    assert len(split_by_id(records[:2], 0.1)[1]) == 1


def test_generate_cai_data_writes_fields_and_resumes(tmp_path):
    constitution = load_constitution("default")
    cfg = CAIConfig(data_dir=str(tmp_path), batch_size=2, val_fraction=0.25)
    chat = StubChat()
    batch = prompts(6)
    counts = generate_cai_data(chat, TextJudge(PreferLonger()), batch[:4], constitution, cfg, tmp_path)
    assert counts["critiques"] == 4 and counts["sft_train"] + counts["sft_val"] == 4
    # an interrupted append leaves half a line: it is dropped, and its prompt is not counted as done
    with (tmp_path / "critiques.jsonl").open("a") as f:
        f.write('{"id": "p4", "prompt": "trunc')
    chat.calls.clear()
    counts = generate_cai_data(chat, TextJudge(PreferLonger()), batch, constitution, cfg, tmp_path)
    assert {c[0]["content"] for c in chat.calls} == {batch[4].prompt, batch[5].prompt}
    assert counts["critiques"] == 6 and counts["comparisons"] == 6 and counts["corrupt_log_lines"] == 0

    critiques = {r["id"]: r for r in AppendOnlyLog(tmp_path / "critiques.jsonl").records()}
    sft = [json.loads(line) for name in ("sft_train", "sft_val") for line in (tmp_path / f"{name}.jsonl").open()]
    assert sorted(r["id"] for r in sft) == [p.id for p in batch]
    for record in sft:
        assert set(record) == {"id", "messages", "principles", "set"}
        source = critiques[record["id"]]
        assert record["messages"] == [
            {"role": "user", "content": source["prompt"]},
            {"role": "assistant", "content": source["revision"]},
        ]
        assert record["principles"] == source["principles"] and set(record["principles"]) <= set(constitution.names())

    prefs = [
        json.loads(line)
        for name in ("preferences_train", "preferences_val")
        for line in (tmp_path / f"{name}.jsonl").open()
    ]
    assert counts["preference_pairs"] == len(prefs) > 0
    for record in prefs:
        assert set(record) == {"id", "prompt", "chosen", "rejected", "principle", "preference_probability"}
        source = critiques[record["id"]]
        assert {record["chosen"], record["rejected"]} == {source["initial"], source["revision"]}
        assert len(record["chosen"]) >= len(record["rejected"]) and record["principle"] in constitution.names()
    manifest_counts = counts["critiques_by_principle"]
    assert sum(manifest_counts.values()) == 6


class _JudgeServer(BaseHTTPRequestHandler):
    """OpenAI-style chat endpoint: answers prompts, and as a judge prefers the longer option."""

    keys: list = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _JudgeServer.keys.append(self.headers.get("Authorization"))
        text = body["messages"][-1]["content"]
        if "Reply with (A) or (B)" in text:
            content = PreferLonger().reply([body["messages"]])[0]
        else:
            content = f"endpoint reply to turn {len(body['messages'])}" + "." * len(body["messages"])
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_endpoint_generator_and_judge_through_the_openai_client(tmp_path, monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _JudgeServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("CAI_TEST_KEY", "sk-cai")
    _JudgeServer.keys = []
    try:
        endpoint = {
            "base_url": f"http://127.0.0.1:{server.server_address[1]}/v1",
            "model": "judge-x",
            "api_key_env": "CAI_TEST_KEY",
            "concurrency": 2,
            "max_retries": 0,
        }
        cfg = CAIConfig(data_dir=str(tmp_path), generator="endpoint", judge="endpoint", endpoint=endpoint, batch_size=3)
        generator, judge = build_models(cfg, init_from=None, tokenizer_path="unused")
        counts = generate_cai_data(generator, judge, prompts(4), load_constitution("default"), cfg, tmp_path)
    finally:
        server.shutdown()
    assert set(_JudgeServer.keys) == {"Bearer sk-cai"}
    assert counts["critiques"] == 4 and counts["preference_pairs"] == 4
    comparisons = AppendOnlyLog(tmp_path / "comparisons.jsonl").records()
    for record in comparisons:
        assert record["judge"] == "endpoint:judge-x" and record["chosen"] == record["second"]  # the revision is longer
        assert set(record["judge_details"]) == {"reply_first_as_a", "reply_first_as_b"}
