"""Constitutional AI (Bai et al. 2022, arXiv:2212.08073): critique/revision data for SFT (SL-CAI)
and AI-judged preference pairs for DPO (RLAIF), then both stages. `stage=cai` runs it all
(`lmforge.cai.runner.run_cai`)."""

from lmforge.cai.chat import ChatModel, EndpointChatModel, LocalChatModel
from lmforge.cai.constitution import Constitution, ConstitutionError, Principle, load_constitution
from lmforge.cai.critique import critique_and_revise, sample_principle
from lmforge.cai.judge import Comparison, LogprobJudge, TextJudge, comparison_records, parse_option
from lmforge.cai.records import AppendOnlyLog, PromptRecord, load_prompts

__all__ = [
    "AppendOnlyLog",
    "ChatModel",
    "Comparison",
    "Constitution",
    "ConstitutionError",
    "EndpointChatModel",
    "LocalChatModel",
    "LogprobJudge",
    "Principle",
    "PromptRecord",
    "TextJudge",
    "comparison_records",
    "critique_and_revise",
    "load_constitution",
    "load_prompts",
    "parse_option",
    "sample_principle",
]
