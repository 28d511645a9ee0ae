"""SL-CAI data: answer, then critique and revise against sampled principles, in one conversation.

For each prompt (Bai et al. 2022, sec. 3.1):

    user:      <prompt>
    assistant: <initial answer>
    user:      <principle.critique_request>
    assistant: <critique>
    user:      <principle.revision_request>
    assistant: <revision>
    ... (`rounds` > 1 repeats the last four turns with a fresh principle)

The final revision becomes the SFT target for the bare prompt. Every step is batched across
prompts: one `ChatModel.reply` call per turn.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from lmforge.cai.chat import ChatModel, Conversation
from lmforge.cai.constitution import Constitution, Principle
from lmforge.cai.records import PromptRecord


def sample_principle(constitution: Constitution, seed: int, prompt_id: str, round_index: int) -> Principle:
    """Seeded by (seed, prompt id, round): a resumed run samples what the first run would have."""
    return constitution.sample(random.Random(f"{seed}:{prompt_id}:{round_index}"))


def critique_and_revise(
    model: ChatModel, prompts: Sequence[PromptRecord], constitution: Constitution, rounds: int = 1, seed: int = 0
) -> list[dict]:
    """One audit record per prompt: the whole conversation, each round's principle, critique and revision."""
    if rounds < 1:
        raise ValueError(f"cai.rounds={rounds} must be >= 1")
    conversations: list[Conversation] = [[{"role": "user", "content": p.prompt}] for p in prompts]
    initial = model.reply(conversations)
    for conversation, answer in zip(conversations, initial, strict=True):
        conversation.append({"role": "assistant", "content": answer})
    steps: list[list[dict]] = [[] for _ in prompts]
    for round_index in range(rounds):
        principles = [sample_principle(constitution, seed, p.id, round_index) for p in prompts]
        for conversation, principle in zip(conversations, principles):
            conversation.append({"role": "user", "content": principle.critique_request})
        critiques = model.reply(conversations)
        for conversation, principle, critique in zip(conversations, principles, critiques):
            conversation += [
                {"role": "assistant", "content": critique},
                {"role": "user", "content": principle.revision_request},
            ]
        revisions = model.reply(conversations)
        for i, (conversation, principle, revision) in enumerate(zip(conversations, principles, revisions)):
            conversation.append({"role": "assistant", "content": revision})
            steps[i].append(
                {
                    "principle": principle.name,
                    "critique_request": principle.critique_request,
                    "critique": critiques[i],
                    "revision_request": principle.revision_request,
                    "revision": revision,
                }
            )
    return [
        {
            "id": prompt.id,
            "prompt": prompt.prompt,
            "category": prompt.category,
            "set": prompt.set,
            "initial": initial[i],
            "revision": steps[i][-1]["revision"],
            "principles": [step["principle"] for step in steps[i]],
            "steps": steps[i],
            "conversation": conversations[i],
            "model": model.name,
            "constitution": constitution.name,
            "constitution_sha256": constitution.sha256,
        }
        for i, prompt in enumerate(prompts)
    ]
