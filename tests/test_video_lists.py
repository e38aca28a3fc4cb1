"""The class-name, template and split data of the video tasks (issue 10): Kinetics-400/600/700,
UCF-101 and ER-ZSAR's Kinetics-600 "220 new classes" splits. Sources are in tasks/SOURCES.md."""

from __future__ import annotations

from pathlib import Path

import pytest

TASKS = Path(__file__).resolve().parents[1] / "tasks"
SPLITS = TASKS / "video" / "splits"


def lines(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n") and "\r" not in text, f"{path}: one item a line, LF, trailing newline"
    out = text[:-1].split("\n")
    assert all(x and x == x.strip() for x in out), f"{path}: empty line or stray whitespace"
    return out


def classnames(name: str) -> list[str]:
    return lines(TASKS / "classnames" / f"{name}.txt")


def templates(name: str) -> list[str]:
    return lines(TASKS / "templates" / f"{name}.txt")


def norm(name: str) -> str:
    return name.lower().replace(" ", "").replace("_", "")


def ucf_folders() -> list[str]:
    rows = [r.split(" ") for r in classnames("ucf101_folders")]
    assert all(len(r) == 2 for r in rows)
    assert [int(i) for i, _ in rows] == list(range(1, len(rows) + 1)), "classInd indices are 1..N"
    return [f for _, f in rows]


@pytest.mark.parametrize(
    "name, n",
    [
        ("kinetics400", 400),
        ("kinetics600", 600),
        ("kinetics700", 700),
        ("ucf101", 101),
        ("ucf101_folders", 101),
    ],
)
def test_class_lists_have_their_counts_and_no_duplicates(name, n):
    names = classnames(name)
    assert len(names) == n
    assert len(set(names)) == n, "duplicate names"


@pytest.mark.parametrize("name, n", [("kinetics700", 28), ("ucf101", 48)])
def test_templates(name, n):
    ts = templates(name)
    assert len(ts) == n and len(set(ts)) == n
    assert all(t.count("{c}") == 1 and t.replace("{c}", "").count("{") == 0 for t in ts)
    assert all(t.startswith(("a photo of", "a video of", "a example of", "a demonstration of")) for t in ts)


def test_openai_kinetics700_list_is_alphabetical_with_known_spellings():
    k700 = classnames("kinetics700")
    assert k700 == sorted(k700)
    assert k700[0] == "abseiling" and k700[-1] == "zumba"
    assert "massaging person's head" in k700


def test_kinetics400_and_600_names_not_in_kinetics700():
    k400, k600, k700 = (set(classnames(f"kinetics{n}")) for n in (400, 600, 700))
    only400 = k400 - k700
    only600 = k600 - k700
    assert len(only400) == 22
    assert {"dying hair", "skiing (not slalom or crosscountry)", "balloon blowing", "vault"} <= only400
    assert only600 == {
        "bull fighting",
        "chopping vegetables",
        "passing american football (not in game)",
        "picking fruit",
    }
    assert "passing American football (not in game)" in k400  # K400 capitalises, K600 does not
    assert len(k600 - k400) == 232  # by string; only 220 are new classes (the rest are renames)


def test_ucf101_openai_names_map_one_to_one_onto_classind_folders():
    openai, folders = classnames("ucf101"), ucf_folders()
    by_norm = {}
    for i, f in enumerate(folders):
        by_norm.setdefault(norm(f), []).append(i)
    assert all(len(v) == 1 for v in by_norm.values()), "normalised folder names collide"
    matches = [by_norm.get(norm(n), []) for n in openai]
    assert all(len(m) == 1 for m in matches), [n for n, m in zip(openai, matches, strict=True) if len(m) != 1]
    index = [m[0] for m in matches]
    assert sorted(index) == list(range(101)), "every folder is hit exactly once"
    differ = [(i, openai[i], folders[i]) for i in range(101) if index[i] != i]
    assert differ == [
        (34, "Hammer Throw", "Hammering"),
        (35, "Hammering", "HammerThrow"),
        (46, "Jump Rope", "JumpingJack"),
        (47, "Jumping Jack", "JumpRope"),
    ]
    assert folders[36] == "HandstandPushups" and "Hand Stand Pushups" in openai  # files: v_HandStandPushups_*


def split(kind: str, k: int) -> list[int]:
    return [int(x) for x in lines(SPLITS / f"{kind}_class_idxs_split{k}.txt")]


def test_er_zsar_class_index_list():
    c620 = lines(SPLITS / "classes620.txt")
    assert len(c620) == 620 and len(set(c620)) == 620
    assert c620[:400] == classnames("kinetics400"), "indices 0-399 are K400, in label order"
    new = c620[400:]
    k600 = set(classnames("kinetics600"))
    assert set(new) <= k600 and not set(new) & set(classnames("kinetics400"))
    # K600's 232 names absent from K400 = these 220 new classes + 12 renamed K400 classes
    renamed = (k600 - set(classnames("kinetics400"))) - set(new)
    assert len(renamed) == 12 and "dyeing hair" in renamed and "tying necktie" in renamed


@pytest.mark.parametrize("k", [1, 2, 3])
def test_er_zsar_split(k):
    c620 = lines(SPLITS / "classes620.txt")
    test, val = split("tst", k), split("val", k)
    assert len(test) == 160 and len(set(test)) == 160 and test == sorted(test)
    assert len(val) == 60 and len(set(val)) == 60
    assert all(400 <= i < 620 for i in test + val)
    assert set(test).isdisjoint(val) and set(test) | set(val) == set(range(400, 620))
    names = [c620[i] for i in test]
    assert set(names) <= set(classnames("kinetics600"))
    assert set(names).isdisjoint(classnames("kinetics400"))


def test_er_zsar_splits_differ():
    assert len({tuple(split("tst", k)) for k in (1, 2, 3)}) == 3
