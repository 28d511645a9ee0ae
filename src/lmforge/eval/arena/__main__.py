"""CLI of the blind side-by-side arena.

    python -m lmforge.eval.arena generate --ckpt runs/sft --name new --out new.jsonl [--prompts q.jsonl]
    python -m lmforge.eval.arena add-annotator --db runs/arena.sqlite --name alice   # prints alice's invite
    python -m lmforge.eval.arena serve --db runs/arena.sqlite --responses new.jsonl base.jsonl [--port 8765]
    python -m lmforge.eval.arena stats --db runs/arena.sqlite --new new --baseline base [--alpha 0.05]

Response files are JSONL rows {prompt_id, prompt, response[, model]} (model defaults to the
file stem), e.g. written by `python src/eval.py` (samples/mt_bench.jsonl) or any generator.
Only invited annotators vote: `add-annotator` prints a secret token (and a link holding it) once;
each annotator judges each pair once. Statistics are printed here, never served: the page must
not learn which model is which.
"""

from __future__ import annotations

import argparse
import json
import logging

from lmforge.eval.arena.app import make_server
from lmforge.eval.arena.stats import arena_stats
from lmforge.eval.arena.store import ArenaStore


def write_responses(args: argparse.Namespace) -> None:
    from lmforge.eval.data import read_jsonl
    from lmforge.eval.lm import EvalLM, GenParams
    from lmforge.eval.loading import load_checkpoint

    rows = read_jsonl(args.prompts)[: args.limit]
    prompts = [(str(r.get("prompt_id", r.get("question_id"))), r.get("prompt") or r["turns"][0]) for r in rows]
    loaded = load_checkpoint(args.ckpt)
    lm = EvalLM(loaded.model, loaded.tokenizer)
    replies = lm.generate_chat(
        [[{"role": "user", "content": p}] for _, p in prompts], GenParams(max_new_tokens=args.max_new_tokens)
    )
    with open(args.out, "w") as handle:
        for (prompt_id, prompt), reply in zip(prompts, replies):
            handle.write(
                json.dumps({"prompt_id": prompt_id, "prompt": prompt, "model": args.name, "response": reply}) + "\n"
            )
    print(f"wrote {len(replies)} responses of {args.name} to {args.out}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lmforge.eval.arena")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the voting page")
    serve.add_argument("--db", required=True)
    serve.add_argument("--responses", nargs="*", default=[], help="JSONL response files to load first")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8765)
    invite = sub.add_parser("add-annotator", help="invite an annotator: prints their secret token once")
    invite.add_argument("--db", required=True)
    invite.add_argument("--name", required=True, help="who votes with this token (stored with each vote)")
    invite.add_argument("--reissue", action="store_true", help="replace a lost token (the old one stops working)")
    invite.add_argument("--url", default="http://127.0.0.1:8765", help="the arena's address, for the printed link")
    gen = sub.add_parser("generate", help="write a model's responses to the arena prompts")
    gen.add_argument("--ckpt", required=True)
    gen.add_argument("--name", required=True, help="model name stored in the database (never served)")
    gen.add_argument("--out", required=True)
    gen.add_argument(
        "--prompts",
        default="../shared/benchmarks/mt_bench/question.jsonl",
        help="JSONL with {question_id, turns} (MT-Bench) or {prompt_id, prompt}",
    )
    gen.add_argument("--max-new-tokens", type=int, default=512)
    gen.add_argument("--limit", type=int)
    stats = sub.add_parser("stats", help="print win rate, sign test and Bradley-Terry scores")
    stats.add_argument("--db", required=True)
    stats.add_argument("--new")
    stats.add_argument("--baseline")
    stats.add_argument("--alpha", type=float, default=0.05)
    stats.add_argument("--bootstrap", type=int, default=1000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    if args.command == "generate":
        write_responses(args)
        return
    store = ArenaStore(args.db)
    if args.command == "add-annotator":
        try:
            token = store.add_annotator(args.name, reissue=args.reissue)
        except ValueError as error:
            parser.error(f"{args.db}: {error}")
        print(f"invite for {args.name} (shown once; send it privately):\n  token: {token}")
        print(f"  link:  {args.url.rstrip('/')}/?invite={token}")
        return
    if args.command == "serve":
        for path in args.responses:
            logging.info("loaded %d responses from %s", store.load_jsonl(path), path)
        if len(store.models()) < 2:
            parser.error(f"{args.db} holds responses of {len(store.models())} model(s); need at least 2")
        if not store.annotators():
            parser.error(f"{args.db} has no invited annotators; run add-annotator --db {args.db} --name <who> first")
        server = make_server(store, args.host, args.port)
        print(f"arena: http://{args.host}:{server.server_address[1]}/  (Ctrl-C to stop)")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
        return
    result = arena_stats(store.votes(), store.models(), args.new, args.baseline, args.alpha, args.bootstrap)
    print(json.dumps(result, indent=2))
    h2h = result.get("head_to_head")
    if h2h:
        verdict = "WINS statistically" if h2h["wins_statistically"] else "does not win statistically"
        print(
            f"{args.new} {verdict} over {args.baseline} at alpha={args.alpha} "
            f"(sign test p={h2h['p_value']:.4g}; {h2h['wins']}-{h2h['losses']}, {h2h['ties']} ties, "
            f"{h2h['both_bad']} both bad)"
        )


if __name__ == "__main__":
    main()
