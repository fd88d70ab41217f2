#!/usr/bin/env python3
"""Goldens for A1111's prompt editing and alternation: runs A1111's own
`modules/prompt_parser.get_learned_conditioning_prompt_schedules` (no hires fix) on A1111's doctest
prompts, hand-picked edge cases and seeded random prompts made of brackets, colons, pipes, numbers
and words, and writes test/fixtures/goldens/a1111_prompt_schedules.json.

Upstream: AUTOMATIC1111/stable-diffusion-webui at 82a973c04367123ae98bd9abdf80d9eda9b910e2 (v1.10.1);
prompt_parser.py there has git blob 4e393d2866f6bc93a527d5eb6827a1613ca08097. The script records the
blob id of the file it ran (and says so when it differs).

Usage (from the repository root, offline):
  python3 -m venv /tmp/ref-venv
  /tmp/ref-venv/bin/pip install --no-index --find-links /opt/pypi/files lark==1.3.1
  /tmp/ref-venv/bin/python scripts/reference/a1111_prompt_schedules.py A1111_CHECKOUT

Stubs: `torch` (prompt_parser imports it at module level for its tensor functions, which are not
called). Nothing else of A1111 is imported.
"""
import hashlib
import json
import random
import sys
import types
from pathlib import Path

OUT = Path("test/fixtures/goldens/a1111_prompt_schedules.json")
A1111_COMMIT = "82a973c04367123ae98bd9abdf80d9eda9b910e2"
A1111_BLOB = "4e393d2866f6bc93a527d5eb6827a1613ca08097"


def git_blob(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def main() -> None:
    checkout = Path(sys.argv[1])
    source = checkout / "modules" / "prompt_parser.py"
    data = source.read_bytes()
    sys.modules["torch"] = types.ModuleType("torch")  # only the tensor helpers use it
    sys.path.insert(0, str(checkout / "modules"))
    import lark
    import prompt_parser

    doctests = [
        ("test", 10), ("a [b:3]", 10), ("a [b: 3]", 10), ("a [[[b]]:2]", 10), ("[(a:2):3]", 10),
        ("a [b : c : 1] d", 10), ("a[b:[c:d:2]:1]e", 10), ("a [unbalanced", 10), ("a [b:.5] c", 10),
        ("a [{b|d{:.5] c", 10), ("((a][:b:c [d:3]", 10), ("[a|(b:1.1)]", 10), ("[fe|]male", 10), ("[fe|||]male", 10),
    ]
    handpicked = [
        ("fantasy landscape with a [mountain:lake:0.25] and [an oak:a christmas tree:0.75][ in foreground::0.6][ in background:0.25] [shoddy:masterful:0.5]", 100),
        ("a [winter:summer:0.5] landscape", 20), ("[cat|dog|bird] in a field", 7), ("a photo of a [dog:cat:5]", 20),
        ("a (red:1.2) [ball:cube:0.3] BREAK on a [table|chair]", 12), ("[a:b:0]", 10), ("[a:b:-1]", 10), ("[a:b:1e1]", 10),
        ("[a:b:15]", 10), ("[a:b:1.0]", 10), ("[a:b:0.999]", 10), ("a | b", 10), ("a \\| b [c:2]", 10), ("trailing \\", 10),
        ("\\[a:b:3\\]", 10), ("[a:b:3", 10), ("a]b[c:d:4]", 10), ("(a:[b:c:2])", 10), ("[(a|b):3]", 10), ("[[a|b]|c]", 6),
        ("[a:b: 3 ]", 10), ("[a:b:+3]", 10), ("[a:b:.3]", 10), ("[a::3]", 10), ("[::3]", 10), ("[:b:3]", 10), ("[a|]", 4),
        ("[|]", 4), ("[a|b:3]", 10), ("(a:b)", 10), ("(a:b:c)", 10), ("", 10), ("   ", 10), ("[a:b:2][c:d:4][e|f]", 5),
    ]
    rng = random.Random(11)
    alphabet = ["[", "]", "(", ")", ":", "|", "a", "b ", " c", "1", "2", ".5", "0.3", " ", "\\", "x y"]
    fuzz = []
    while len(fuzz) < 300:
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 14)))
        fuzz.append((text, rng.choice([1, 3, 10, 20])))

    cases = []
    for group, items in (("doctest", doctests), ("handpicked", handpicked), ("fuzz", fuzz)):
        for text, steps in items:
            schedule = prompt_parser.get_learned_conditioning_prompt_schedules([text], steps)[0]
            cases.append({"group": group, "prompt": text, "steps": steps, "schedule": [[int(t), s] for t, s in schedule]})

    blob = git_blob(data)
    out = {
        "format": "a1111-prompt-schedules/1",
        "provenance": {
            "a1111_repo": "https://github.com/AUTOMATIC1111/stable-diffusion-webui",
            "a1111_commit": A1111_COMMIT,
            "function": "modules.prompt_parser.get_learned_conditioning_prompt_schedules([prompt], steps) (hires_steps=None, use_old_scheduling=False)",
            "prompt_parser_git_blob": blob,
            "prompt_parser_is_the_commits_file": blob == A1111_BLOB,
            "lark": lark.__version__,
            "python": sys.version.split()[0],
            "stubs": {"torch": "an empty module (prompt_parser imports it at module level; its tensor functions are not called)"},
            "fuzz": "random.Random(11): 300 prompts of 1-14 pieces from " + json.dumps(alphabet) + ", steps from [1, 3, 10, 20]",
        },
        "cases": cases,
    }
    OUT.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {OUT}: {len(cases)} cases; prompt_parser blob {blob}{'' if blob == A1111_BLOB else ' (NOT the commit file)'}")


if __name__ == "__main__":
    main()
