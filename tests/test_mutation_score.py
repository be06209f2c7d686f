"""`make mutate`'s score (tests/mutation/score.py) over a mutmut result directory made by hand in mutmut 3's
format: what counts as killed, what survives, what an equivalent-mutant entry removes, and which survivors
only changed a message."""

import json

import pytest

from tests.mutation import score

SOURCE = '''
def x_f__mutmut_orig(a):
    if a > 1:
        raise ValueError("a too big")
    return a
def x_f__mutmut_1(a):
    if a > 1:
        raise ValueError("XXa too bigXX")
    return a
def x_f__mutmut_2(a):
    if a >= 1:
        raise ValueError("a too big")
    return a
def x_f__mutmut_3(a):
    if a > 2:
        raise ValueError("a too big")
    return a
def x_f__mutmut_4(a):
    if a > 1:
        raise ValueError(None)
    return a
'''


@pytest.fixture
def mutants(tmp_path):
    root = tmp_path / "mutants"
    (root / "automation").mkdir(parents=True)
    (root / "automation" / "gate.py").write_text(SOURCE)
    codes = {"automation.gate.x_f__mutmut_1": 0, "automation.gate.x_f__mutmut_2": 1,
             "automation.gate.x_f__mutmut_3": 0, "automation.gate.x_f__mutmut_4": 36}
    (root / "automation" / "gate.py.meta").write_text(json.dumps({"exit_code_by_key": codes}))
    return root


def test_killed_timeouts_survivors_and_kinds(mutants):
    [row], survivors = score.score(mutants, {})
    assert (row["module"], row["mutants"], row["killed"], row["survived"]) == ("automation/gate.py", 4, 2, 2)
    assert row["score"] == 0.5 and row["target"] == 0.9
    assert sorted(survivors) == [("automation/gate.py", "automation.gate.x_f__mutmut_1", "message"),
                                 ("automation/gate.py", "automation.gate.x_f__mutmut_3", "behaviour")]


def test_an_equivalent_mutant_leaves_the_score_and_needs_a_reason(mutants, tmp_path):
    [row], survivors = score.score(mutants, {"automation.gate.x_f__mutmut_3": "2 and 1 agree on integers"})
    assert row["equivalent"] == 1 and row["score"] == pytest.approx(2 / 3)
    assert [s[1] for s in survivors] == ["automation.gate.x_f__mutmut_1"]
    listed = tmp_path / "equivalent.txt"
    listed.write_text("# comment\nautomation.gate.x_f__mutmut_3\n")
    with pytest.raises(SystemExit, match="no reason"):
        score.equivalents(listed)
    with pytest.raises(SystemExit, match="did not make"):
        score.score(mutants, {"automation.gate.x_gone__mutmut_9": "stale entry"})


def test_main_exits_1_below_a_target_and_2_without_results(mutants, tmp_path, capsys):
    none = tmp_path / "equivalent.txt"     # not the project's list: it names mutants of the real modules
    none.write_text("")
    assert score.main(["--mutants", str(mutants), "--equivalent", str(none)]) == 1
    out = capsys.readouterr().out
    assert "BELOW" in out and "x_f__mutmut_3" in out and "x_f__mutmut_1" not in out   # messages only with --survivors
    assert score.main(["--mutants", str(tmp_path / "none")]) == 2
