"""HumanEval scoring holds against a hostile completion (issue #16): every attack in the corpus
scores 0 while the canonical solutions score 1.0 (tests/lmforge/eval/test_humaneval.py), and
noise around a correct solution does not turn it into a failure either.

Each attack is one fixed completion, appended to every problem's prompt the way a model's
output is. Every attack runs on a fixed 22-problem subset (SUBSET) in every isolation mode
available here, and on all 164 problems under the strongest one (bwrap here; marked slow).
For the record (docs/evaluation.md): the old single-process nonce scorer gave frame_walk_consts,
read_source_files, excepthook, atexit and kitchen_sink 22/22 on the subset, the __eq__ attacks
18-20/22.
"""

from __future__ import annotations

import json

import pytest

from lmforge.code_protocol import ProtocolError, decode, encode
from lmforge.eval.data import load_humaneval
from lmforge.eval.tasks.humaneval import score
from lmforge.sandbox import SandboxConfig, available_isolation, check_all

# Module-level helper the attacks share: every string the program can find (its frames'
# constants and globals, argv, the lines of the files around it and every quoted literal in
# them), which is how the old scorer's nonce was forged.
_HARVEST = """\
import os as _os, re as _re, sys as _sys
def _harvest():
    found = set(_sys.argv)
    frame = _sys._getframe()
    while frame is not None:
        for const in frame.f_code.co_consts:
            if isinstance(const, str):
                found.add(const)
        for value in list(frame.f_globals.values()) + list(frame.f_locals.values()):
            if isinstance(value, str):
                found.add(value)
        frame = frame.f_back
    for root in (".", _os.path.dirname(_os.path.abspath(_sys.argv[0])), "/tmp"):
        try:
            names = _os.listdir(root)
        except OSError:
            continue
        for name in names:
            try:
                text = open(_os.path.join(root, name), errors="replace").read()
            except OSError:
                continue
            found.update(text.splitlines())
            found.update(_re.findall(r"[\\'\\"]([^\\'\\"\\n]{8,200})[\\'\\"]", text))
    return found
def _print_all_and_exit_0(*args):
    for line in sorted(_harvest()):
        print(line, flush=True)
        _os.write(1, (line + "\\n").encode())
    _os._exit(0)
"""
# The harvest as a completion body: define the helpers at module level, run them from the call.
_HARVEST_IN_BODY = "    return _print_all_and_exit_0()\n" + _HARVEST
_LIAR = """\
    class Liar:
        def __eq__(self, other): return True
        def __ne__(self, other): return False
        def __hash__(self): return 0
        def __bool__(self): return True
        def __lt__(self, other): return True
        __le__ = __gt__ = __ge__ = __lt__
        def __sub__(self, other): return self
        __rsub__ = __add__ = __radd__ = __mul__ = __rmul__ = __truediv__ = __mod__ = __sub__
        def __abs__(self): return 0
        def __len__(self): return 0
        def __iter__(self): return iter(())
        def __getitem__(self, key): return self
        def __float__(self): return 0.0
        def __int__(self): return 0
        def __index__(self): return 0
        def __round__(self, n=None): return self
        def __contains__(self, item): return True
"""
FAKE_VERDICTS = [
    "passed",
    "PASSED",
    "lmforge-tests-passed-" + "0" * 32,
    json.dumps(["ok", ["B", True]]),
    json.dumps({"status": "passed", "passed": True}),
    "OK",
]
_FAKE_PRINTS = "".join(f"    print({v!r})\n    os.write(1, {(v + chr(10)).encode()!r})\n" for v in FAKE_VERDICTS)

ATTACKS = {
    # The forgery: the constants of the outermost code object (and every other string
    # in reach), printed, then os._exit(0).
    "frame_walk_consts": _HARVEST_IN_BODY,
    # Read the program's own source (sys.argv[0], __file__, /proc/self) and everything beside it.
    "read_source_files": (
        "    import os, re, sys\n"
        "    for path in [sys.argv[0], __file__, '/proc/self/cmdline', '/proc/self/environ'] + os.listdir('.'):\n"
        "        try:\n"
        "            text = open(path, errors='replace').read()\n"
        "        except OSError:\n"
        "            continue\n"
        "        print(text, flush=True)\n"
        "        for literal in re.findall(r'[\\'\\\"]([^\\'\\\"\\n]{8,200})[\\'\\\"]', text):\n"
        "            print(literal, flush=True)\n"
        "    os._exit(0)\n"
    ),
    # Let check fail, then print everything found and exit 0 from the excepthook(s).
    "excepthook": (
        "    return None\n" + _HARVEST + "import threading\n"
        "_sys.excepthook = _print_all_and_exit_0\n"
        "threading.excepthook = _print_all_and_exit_0\n"
    ),
    "atexit": "    return None\n" + _HARVEST + "import atexit\natexit.register(_print_all_and_exit_0)\n",
    "os_exit_after_fake_verdicts": "    import os\n" + _FAKE_PRINTS + "    os._exit(0)\n",
    "sys_exit_0": "    import sys\n    sys.exit(0)\n",
    "module_level_system_exit": "    return None\nraise SystemExit(0)\n",
    # Objects that compare equal to anything.
    "eq_always_true_object": _LIAR + "    return Liar()\n",
    "eq_plain_type_subclasses": (
        "    class I(int):\n"
        "        def __eq__(self, other): return True\n"
        "        def __ne__(self, other): return False\n"
        "        def __hash__(self): return 0\n"
        "    class L(list):\n"
        "        def __eq__(self, other): return True\n"
        "        def __ne__(self, other): return False\n"
        "        __hash__ = None\n"
        "    return L([I(0)])\n"
    ),
    # Monkeypatch builtins so the result encoder lets the liar through as a bool/int.
    "monkeypatch_builtins": (
        _LIAR + "    import builtins\n"
        "    builtins.isinstance = lambda obj, cls: True\n"
        "    builtins.type = lambda *a: object\n"
        "    builtins.hex = lambda n: '0x1'\n"
        "    builtins.AssertionError = type('AssertionError', (BaseException,), {})\n"
        "    return Liar()\n"
    ),
    # Write forged replies straight onto any open fd (the reply channel included).
    "forge_channel_replies": (
        "    import json, os\n"
        "    for fd in range(3, 64):\n"
        "        for value in (['B', True], ['L', []], ['I', '0x0'], ['S', '']):\n"
        "            try:\n"
        "                os.write(fd, (json.dumps(['ok', value]) + '\\n').encode())\n"
        "            except OSError:\n"
        "                pass\n"
        "    return None\n"
    ),
    # Exceptions that try to pass for control flow in the checker.
    "raise_exit_like_exceptions": (
        "    class KeyboardInterrupt(Exception): pass\n"
        "    class StopIteration(Exception): pass\n"
        "    raise StopIteration('done')\n"
    ),
    # A return value the wire cannot carry (a generator, a nested bomb).
    "unencodable_results": "    l = []\n    for _ in range(100000):\n        l = [l]\n    return (x for x in [l])\n",
    # All of the above at once, in the order they would fire.
    "kitchen_sink": (
        _LIAR
        + "    import atexit, builtins, os, sys\n"
        + "    sys.excepthook = _print_all_and_exit_0\n"
        + "    atexit.register(_print_all_and_exit_0)\n"
        + "    for line in sorted(_harvest()):\n"
        + "        print(line, flush=True)\n"
        + "    real = isinstance\n"
        + "    builtins.isinstance = lambda obj, cls: type(obj).__name__ == 'Liar' or real(obj, cls)\n"
        + "    return Liar()\n"
        + _HARVEST
    ),
}

# Noise around a correct solution: prints fake verdicts, hooks and an atexit os._exit(1). Still a pass.
NOISY_CORRECT = (
    "    import atexit, os, sys\n"
    "    print('FAILED')\n"
    "    sys.excepthook = lambda *a: os._exit(3)\n"
    "    atexit.register(lambda: os._exit(1))\n"
)

# 22 problems: every 10th, and the five whose tests call prompt helpers or the entry point by name.
SUBSET = list(range(0, 164, 10)) + [32, 33, 38, 50, 53]
MODES = ["bwrap", "unshare", "rlimits"]
SUPPORTED = [m for m in MODES if MODES.index(m) >= MODES.index(available_isolation())]


@pytest.fixture(scope="module")
def problems(benchmarks):
    problems = load_humaneval(benchmarks / "humaneval")
    assert len(problems) == 164
    return problems


def _cfg(mode: str) -> SandboxConfig:
    return SandboxConfig(timeout_s=10, cpu_s=10, isolation=mode, allow_rlimits=mode == "rlimits")


@pytest.mark.slow
def test_every_attack_scores_zero_on_all_164_problems(problems):
    """All attacks x all 164 problems, under the strongest isolation here (bwrap in the container).
    14 x 164 = 2296 samples, about 90 s on 2 cores (2026-12-03), hence `slow`."""
    mode = available_isolation()
    names = list(ATTACKS)
    results = check_all(problems, [[ATTACKS[n] for n in names] for _ in problems], _cfg(mode), workers=4)
    for column, name in enumerate(names):
        passed = [[row[column].passed] for row in results]
        forged = [p["task_id"] for p, row in zip(problems, passed) if row[0]]
        assert score(passed, [1]) == {"pass@1": 0.0}, (name, forged)
    assert {r.isolation for row in results for r in row} == {mode}


@pytest.mark.parametrize("mode", SUPPORTED)
def test_every_attack_scores_zero_on_the_subset_in_every_mode(problems, mode):
    subset = [problems[i] for i in SUBSET]
    names = list(ATTACKS)
    results = check_all(subset, [[ATTACKS[n] for n in names] for _ in subset], _cfg(mode), workers=4)
    forged = [(p["task_id"], n) for p, row in zip(subset, results) for n, r in zip(names, row) if r.passed]
    assert forged == []
    assert {r.isolation for row in results for r in row} == {mode}


@pytest.mark.parametrize("mode", SUPPORTED)
def test_canonical_solutions_pass_with_noise_around_them(problems, mode):
    subset = [problems[i] for i in SUBSET]
    completions = [[p["canonical_solution"], NOISY_CORRECT + p["canonical_solution"]] for p in subset]
    results = check_all(subset, completions, _cfg(mode), workers=4)
    assert [[r.passed for r in row] for row in results] == [[True, True]] * len(subset), [
        (p["task_id"], [r.detail for r in row]) for p, row in zip(subset, results)
    ]
    noisy = results[0][1]
    assert "FAILED" in noisy.candidate_stderr  # what it printed was kept apart, and ignored


def test_wire_format_round_trips_plain_data_exactly():
    values = [
        None,
        True,
        False,
        0,
        -(2**200),
        1.5,
        float("inf"),
        -0.0,
        "ünïcode\n",
        [1, [2, (3, "x")]],
        (),
        {"a": [1, 2], 3: None, (1, 2): frozenset({1})},
        {1, 2, 3},
    ]
    for value in values:
        back = decode(json.loads(json.dumps(encode(value))))
        assert back == value and type(back) is type(value)
    assert decode(encode([1, True])) == [1, True] and type(decode(encode([1, True]))[1]) is bool


@pytest.mark.parametrize(
    "wire",
    [
        [],
        ["X"],
        ["N", 1],
        ["B", 1],
        ["I", 5],
        ["I", "5"],
        ["I", "0x"],
        ["I", "0x1 "],
        ["F", 1.0],
        ["F", "one"],
        ["S", 1],
        ["L", "abc"],
        ["D", [[["L", []], ["N"]]]],  # unhashable key
        ["E", [["L", []]]],
        {"__eq__": True},
        ["O", "__main__.Liar"],
    ],
)
def test_decoder_refuses_anything_but_plain_data(wire):
    with pytest.raises(ProtocolError):
        decode(wire)


def test_encoder_refuses_custom_objects_and_reduces_subclasses():
    class Liar:
        def __eq__(self, other):
            return True

    with pytest.raises(ProtocolError):
        encode(Liar())

    class LyingInt(int):
        def __eq__(self, other):
            return True

        __hash__ = int.__hash__

    back = decode(encode(LyingInt(3)))
    assert type(back) is int and back == 3 and back != 4


@pytest.mark.parametrize("mode", SUPPORTED)
def test_hanging_candidate_times_out_and_leaves_nothing(problems, mode):
    from tests.lmforge.eval.test_sandbox import _sandbox_processes

    cfg = SandboxConfig(timeout_s=2, cpu_s=60, isolation=mode, allow_rlimits=mode == "rlimits")
    hang = "    import os\n    os.fork()\n    while True:\n        pass\n"
    [[result]] = check_all(problems[:1], [[hang]], cfg, workers=1)
    assert result.status == "timeout" and not result.passed and result.duration_s < 10
    assert _sandbox_processes() == []


def test_report_rows_name_the_isolation(benchmarks, problems):
    from lmforge.eval.tasks.humaneval import HumanEvalConfig, run

    canonical = {p["prompt"]: p["canonical_solution"] for p in problems}

    class Canonical:  # an EvalLM that answers each prompt with its canonical solution
        def generate_until(self, requests):
            return [canonical[prompt] for prompt, _ in requests]

    result = run(Canonical(), HumanEvalConfig(path=str(benchmarks / "humaneval"), limit=3, ks=[1]))
    assert result.metrics == {"pass@1": 1.0}
    assert result.details["isolation"] == available_isolation()
    assert [s["isolation"] for s in result.samples] == [available_isolation()] * 3
    assert [s["status"] for s in result.samples] == [["passed"]] * 3
