"""SFT data: assistant-only loss, packing equivalence, the public-format loaders."""

from __future__ import annotations

import json

import pytest
import torch

from lmforge.data.chat import (
    encode_all,
    encode_conversation,
    gsm8k_conversations,
    gsm8k_to_conversation,
    load_messages_jsonl,
    packed_batch,
    pad_batch,
    shifted_labels,
)
from lmforge.data.labels import IGNORE_INDEX
from lmforge.losses import per_segment_cross_entropy
from lmforge.stages.sft import SFTStage


def make_sft_stage(model_cfg, task_tokenizer_dir) -> SFTStage:
    stage = SFTStage(model=model_cfg, optim={}, tokenizer_path=task_tokenizer_dir)
    stage.configure_model()
    return stage


def test_sft_loss_is_cross_entropy_over_assistant_tokens_only(model_cfg, task_tokenizer_dir, tokenizer, conversations):
    stage = make_sft_stage(model_cfg, task_tokenizer_dir)
    examples = [encode_conversation(tokenizer, c, 128) for c in conversations]
    batch = pad_batch(examples, tokenizer.pad_id)
    loss, _ = stage.compute_loss(batch, "train")

    # By hand: run each conversation alone; sum -log p(next token) where the next token is
    # assistant output according to encode_chat's mask, then average over those tokens.
    nll, count = 0.0, 0
    with torch.no_grad():
        for messages in conversations:
            ids, is_assistant = tokenizer.encode_chat(messages)
            logp = stage.model(torch.tensor([ids]))[0].log_softmax(-1)
            for t in range(len(ids) - 1):
                if is_assistant[t + 1]:
                    nll -= logp[t, ids[t + 1]].item()
                    count += 1
    assert loss.item() == pytest.approx(nll / count, rel=1e-5)
    assert count < sum(len(e.input_ids) for e in examples) / 2  # the prompt really is excluded


def test_prompt_labels_do_not_matter_but_assistant_labels_do(model_cfg, task_tokenizer_dir, tokenizer, conversations):
    stage = make_sft_stage(model_cfg, task_tokenizer_dir)
    ids, is_assistant = tokenizer.encode_chat(conversations[0])
    batch = pad_batch([encode_conversation(tokenizer, conversations[0], 128)], tokenizer.pad_id)
    base_loss = stage.compute_loss(batch, "train")[0].item()

    prompt_pos = next(i for i in range(2, len(ids)) if not is_assistant[i])
    answer_pos = next(i for i in range(1, len(ids)) if is_assistant[i])
    for pos, should_change in ((prompt_pos, False), (answer_pos, True)):
        changed = list(ids)
        changed[pos] = (changed[pos] + 7) % tokenizer.vocab_size
        labels = torch.tensor([shifted_labels(changed, is_assistant)])
        loss = stage.compute_loss({**batch, "labels": labels}, "train")[0].item()
        assert (loss != pytest.approx(base_loss, rel=1e-6)) is should_change


@pytest.mark.parity
def test_packed_and_unpacked_batches_give_the_same_loss_per_example(
    model_cfg, task_tokenizer_dir, tokenizer, conversations
):
    # float64: packing only reorders the same sums, so in exact arithmetic the losses are equal;
    # in float32 the CPU's kernels (AVX2 vs AVX-512) would decide how far apart they land.
    stage = make_sft_stage(model_cfg, task_tokenizer_dir)
    stage.model.double()
    examples = encode_all(tokenizer, conversations, 128, "test")
    padded = pad_batch(examples, tokenizer.pad_id)
    packed = packed_batch(examples, capacity=128, pad_id=tokenizer.pad_id)
    assert packed["input_ids"].shape[0] < len(examples)  # several conversations share a row

    def per_example(batch):
        with torch.no_grad():
            logits = stage.model(
                batch["input_ids"], position_ids=batch.get("position_ids"), attn_mask=batch.get("attn_mask")
            )
        return per_segment_cross_entropy(logits, batch["labels"], batch["segment_ids"], len(examples))

    torch.testing.assert_close(per_example(packed), per_example(padded), rtol=1e-12, atol=1e-12)
    # Without the block mask, attention crosses conversations and the losses differ.
    leaky = {k: v for k, v in packed.items() if k != "attn_mask"}
    assert not torch.allclose(per_example(leaky), per_example(padded), atol=1e-4)


def test_messages_jsonl_loader_counts_corrupt_lines(tmp_path, conversations, caplog):
    path = tmp_path / "chat.jsonl"
    lines = [json.dumps({"messages": c}) for c in conversations[:3]]
    lines += ["{not json", json.dumps({"messages": [{"role": "robot", "content": "x"}]}), json.dumps({"text": "x"})]
    path.write_text("\n".join(lines) + "\n")
    loaded = load_messages_jsonl(path)
    assert loaded == conversations[:3]
    assert "skipped 3 corrupt" in caplog.text


def test_gsm8k_rewritten_to_answer_line(tmp_path):
    record = {"question": "Q?", "answer": "2 apples + 3 = <<2+3=5>>5 apples.\n#### 5"}
    conv = gsm8k_to_conversation(record["question"], record["answer"])
    assert conv[1]["content"] == "2 apples + 3 = 5 apples.\nAnswer: 5"
    path = tmp_path / "gsm.jsonl"
    path.write_text(json.dumps(record) + "\n" + json.dumps({"question": "no answer"}) + "\n")
    assert gsm8k_conversations(path) == [conv]


def test_truncation_keeps_labels_aligned(tokenizer, conversations):
    full = encode_conversation(tokenizer, conversations[0], 1000)
    cut = encode_conversation(tokenizer, conversations[0], len(full.input_ids) - 2)
    assert cut.input_ids == full.input_ids[:-2]
    assert cut.labels[:-1] == full.labels[: len(cut.labels) - 1] and cut.labels[-1] == IGNORE_INDEX
