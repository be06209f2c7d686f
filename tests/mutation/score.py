"""Mutation scores of the core, from mutmut's results (``make mutate`` runs this after ``mutmut run``).

Reads ``mutants/**/*.py.meta`` (mutmut 3's own result files: one exit code per mutant) and prints, per
mutated module: mutants, killed (a test failed, or it timed out), survived, no test ran, and the score
``killed / (mutants - equivalent)``. A mutant listed in ``tests/mutation/equivalent.txt`` (one line:
mutant name, then why no test can tell it apart) is left out of the score; anything else that lives is
a survivor and is listed, with how it differs from the code (``mutmut show NAME`` for the diff).

Survivors are sorted into "message text" (only a string literal changed: a log line or an error's wording)
and "behaviour" (anything else), because the second kind is the one that hides a bug.

Exit 1 when a module with a target (engine, gate, policy rules: 90 %) is below it, so a run can gate work.
"""

from __future__ import annotations

import argparse
import ast
import io
import json
import sys
import tokenize
from collections import defaultdict
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[2]
EQUIVALENT = Path(__file__).with_name("equivalent.txt")
# The targets: share of (non-equivalent) mutants killed.
TARGETS = {"automation/rollout/engine.py": 0.90, "automation/gate.py": 0.90, "policies/rules/": 0.90}

KILLED = {1, 3, 36, 24, -24, 152, 255, 37}   # mutmut's exit codes: failed tests, internal error, timeouts
SURVIVED = {0}
NO_TESTS = {5, 33}
NOT_RUN = {None, 2, 34}


def equivalents(path: Path = EQUIVALENT) -> dict[str, str]:
    found: dict[str, str] = {}
    if not path.exists():
        return found
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, why = line.partition(" ")
        if not why.strip():
            raise SystemExit(f"{path}:{number}: {name} has no reason (one line: NAME WHY)")
        found[name] = why.strip()
    return found


def _functions(source: str) -> dict[str, str]:
    """Function name -> its source, for every top-level function and method in mutmut's mutated file."""
    tree = ast.parse(source)
    lines = source.splitlines()
    found = {}
    for node in ast.walk(tree):   # (by line: ast.get_source_segment re-splits the whole file on every call)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found[node.name] = "\n".join(lines[node.lineno - 1:node.end_lineno])
    return found


def _tokens(text: str) -> list[tuple[int, str]]:
    try:
        return [(t.type, t.string) for t in tokenize.generate_tokens(io.StringIO(text).readline)
                if t.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT)]
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return []


def kind_of(mutant: str, functions: dict[str, str]) -> str:
    """``message`` when the mutant differs from the original function in string literals only."""
    function = mutant.rsplit(".", 1)[-1]
    stem, _, _ = function.rpartition("__mutmut_")
    original, mutated = functions.get(f"{stem}__mutmut_orig"), functions.get(function)
    if not original or not mutated:
        return "behaviour"
    a, b = _tokens(original.replace(f"{stem}__mutmut_orig", "F")), _tokens(mutated.replace(function, "F"))
    if len(a) != len(b) or not a:
        return "behaviour"
    changed = [(x, y) for x, y in zip(a, b) if x != y]
    strings = (tokenize.STRING, getattr(tokenize, "FSTRING_MIDDLE", -1))
    if changed and all(x[0] in strings and y[0] in strings for x, y in changed):
        return "message"
    return "behaviour"


def module_of(meta: Path, mutants: Path) -> str:
    return str(meta.relative_to(mutants)).removesuffix(".meta")


def target_for(module: str) -> Optional[float]:
    for prefix, target in TARGETS.items():
        if module == prefix or (prefix.endswith("/") and module.startswith(prefix)):
            return target
    return None


def score(mutants: Path, equivalent: dict[str, str]) -> tuple[list[dict], list[tuple[str, str, str]]]:
    rows, survivors = [], []
    unknown_equivalents = set(equivalent)
    scored_modules = set()      # "automation.gate." for automation/gate.py: equivalents of other modules wait
    for meta in sorted(mutants.rglob("*.py.meta")):
        module = module_of(meta, mutants)
        codes = json.loads(meta.read_text()).get("exit_code_by_key", {})
        if not codes:
            continue
        scored_modules.add(module.removesuffix(".py").replace("/", ".") + ".")
        source = (mutants / module).read_text() if (mutants / module).exists() else ""
        functions = _functions(source) if source else {}
        count = defaultdict(int)
        for name, code in codes.items():
            if name in equivalent:
                unknown_equivalents.discard(name)
                count["equivalent"] += 1
            elif code in KILLED:
                count["killed"] += 1
            elif code in SURVIVED or code in NO_TESTS:
                count["survived" if code in SURVIVED else "no_tests"] += 1
                kind = kind_of(name, functions)
                count[kind] += 1
                survivors.append((module, name, kind))
            elif code in NOT_RUN:
                count["not_run"] += 1
            else:
                count["suspicious"] += 1
                survivors.append((module, name, "suspicious"))
        judged = len(codes) - count["equivalent"] - count["not_run"]
        rows.append({"module": module, "mutants": len(codes), **count,
                     "score": count["killed"] / judged if judged else None, "target": target_for(module)})
    unknown_equivalents = {n for n in unknown_equivalents if any(n.startswith(m) for m in scored_modules)}
    if unknown_equivalents:
        raise SystemExit(f"{EQUIVALENT.name} names mutants mutmut did not make: {sorted(unknown_equivalents)[:5]}")
    return rows, survivors


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mutants", type=Path, default=ROOT / "mutants", help="mutmut's working copy (default ./mutants)")
    parser.add_argument("--survivors", action="store_true", help="list every survivor, not only behaviour ones")
    parser.add_argument("--json", type=Path, help="also write the rows and survivors as JSON")
    parser.add_argument("--equivalent", type=Path, default=EQUIVALENT,
                        help="the equivalent-mutant list (default tests/mutation/equivalent.txt)")
    args = parser.parse_args(argv)
    if not args.mutants.is_dir():
        print(f"--mutants: {args.mutants} does not exist: run `make mutate` (mutmut run) first", file=sys.stderr)
        return 2
    rows, survivors = score(args.mutants, equivalents(args.equivalent))
    below = []
    print(f"{'module':44} {'mutants':>7} {'killed':>7} {'lived':>6} {'no test':>7} {'equiv':>5} "
          f"{'msg':>5} {'behav':>5} {'score':>6}  target")
    for r in rows:
        s = "-" if r["score"] is None else f"{r['score']:.1%}"
        t = "" if r["target"] is None else f"{r['target']:.0%}"
        if r["target"] is not None and (r["score"] or 0) < r["target"]:
            below.append(r["module"])
            t += " BELOW"
        print(f"{r['module']:44} {r['mutants']:7} {r.get('killed', 0):7} {r.get('survived', 0):6} "
              f"{r.get('no_tests', 0):7} {r.get('equivalent', 0):5} {r.get('message', 0):5} {r.get('behaviour', 0):5} "
              f"{s:>6}  {t}")
    shown = [s for s in survivors if args.survivors or s[2] != "message"]
    if shown:
        print(f"\nsurvivors ({len(shown)}; `mutmut show NAME` for the diff):")
        for module, name, kind in shown:
            print(f"  {kind:10} {name}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "survivors": survivors}, indent=1))
    return 1 if below else 0


if __name__ == "__main__":
    sys.exit(main())
