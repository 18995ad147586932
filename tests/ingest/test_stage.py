"""The ingest stage on the real YouTube spam CSVs, on the user's own CSVs, and on bad input."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from mlsys.datasets import GOLD, TEST, UNLABELED
from mlsys.errors import DataError, SpecError
from mlsys.ingest.stage import IngestSpec, run
from mlsys.storage import DatasetStore
from mlsys.storage.dataset import DATA_FILE

NAMES = (UNLABELED, GOLD, TEST)
HEADER = "COMMENT_ID,AUTHOR,DATE,CONTENT,label\n"


@pytest.fixture
def youtube(data_dir) -> Path:
    return data_dir / "youtube-spam"


def _raw(youtube: Path) -> pd.DataFrame:
    frames = []
    for path in sorted(youtube.glob("*.csv")):
        df = pd.read_csv(path, dtype={"COMMENT_ID": str, "CONTENT": str})
        df["video"] = path.stem
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def _snapshot(store: DatasetStore) -> dict[str, dict[str, str]]:
    """Every committed version of the three datasets and the SHA-256 of its data file."""
    out = {}
    for name in NAMES:
        out[name] = {
            ref.version: hashlib.sha256(store.path(ref).read_bytes()).hexdigest() for ref in store.versions(name)
        }
    return out


# -- the shipped data ------------------------------------------------------------


def test_three_splits_of_the_youtube_data(mlsys_home, youtube):
    result = run(IngestSpec(source=str(youtube), gold_size=200))
    store = DatasetStore()
    raw = _raw(youtube)
    unlabeled, gold, test = (store.read(n) for n in NAMES)

    # test: exactly the comments of the held-out file (one row per distinct id)
    held_out = raw[raw["video"] == "Youtube05-Shakira"]
    assert set(test["id"]) == set(held_out["COMMENT_ID"])
    assert len(test) == held_out["COMMENT_ID"].nunique()
    assert set(test["group"]) == {"Youtube05-Shakira"}
    assert set(test["label_true"]) <= {0, 1}

    # gold: labels, gold_size rows, none from the test file
    assert len(gold) == 200 == result.gold.rows
    assert "label_true" in gold.columns and gold["label_true"].isin([0, 1]).all()
    truth = raw.drop_duplicates("COMMENT_ID").set_index("COMMENT_ID")["label"]
    assert (gold.set_index("id")["label_true"] == truth.loc[gold["id"]]).all()

    # unlabeled: no label column at all
    assert not {"label", "label_true"} & set(unlabeled.columns)
    assert {"id", "group", "text"} <= set(unlabeled.columns)

    # disjoint splits that together hold every distinct comment
    ids = [set(df["id"]) for df in (unlabeled, gold, test)]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert len(ids[0] | ids[1] | ids[2]) == raw["COMMENT_ID"].nunique()
    for df in (unlabeled, gold, test):
        assert df["id"].is_unique

    # duplicates dropped, counted
    assert result.duplicates_dropped == len(raw) - raw["COMMENT_ID"].nunique() > 0
    assert result.unlabeled.rows + result.gold.rows + result.test.rows == len(raw) - result.duplicates_dropped
    assert len(result.files) == 5


def test_rerun_gives_the_same_versions_and_nothing_new(mlsys_home, youtube):
    first = run(IngestSpec(source=str(youtube)))
    store = DatasetStore()
    before = _snapshot(store)
    second = run(IngestSpec(source=str(youtube)))
    assert [r.version for r in (first.unlabeled, first.gold, first.test)] == [
        r.version for r in (second.unlabeled, second.gold, second.test)
    ]
    assert _snapshot(store) == before
    assert all(len(v) == 1 for v in before.values())


def test_seed_and_gold_size_change_the_gold_split(mlsys_home, youtube):
    a = run(IngestSpec(source=str(youtube), gold_size=50, seed=0))
    b = run(IngestSpec(source=str(youtube), gold_size=50, seed=1))
    assert a.gold.rows == b.gold.rows == 50
    assert a.gold.version != b.gold.version
    assert a.test.version == b.test.version  # the held-out file does not depend on the seed


def test_default_source_is_the_data_dir(mlsys_home, data_dir, monkeypatch):
    monkeypatch.setenv("MLSYS_DATA_DIR", str(data_dir))
    result = run(IngestSpec(gold_size=20))
    assert result.gold.rows == 20 and len(result.files) == 5


def test_result_round_trips_through_json(mlsys_home, youtube):
    import json

    result = run(IngestSpec(source=str(youtube), gold_size=20))
    data = json.loads(json.dumps(result.to_json()))
    assert data["gold"]["version"] == result.gold.version
    assert data["duplicates_dropped"] == result.duplicates_dropped


@pytest.mark.parametrize(
    "kwargs, field",
    [({"gold_size": 9}, "gold_size"), ({"test_group": ""}, "test_group")],
)
def test_bad_spec_names_the_field(kwargs, field):
    with pytest.raises(SpecError, match=rf"IngestSpec\.{field}="):
        IngestSpec(**kwargs)


# -- the user's own data -----------------------------------------------------------


def _user_data(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = {
        "shop": [(f"s{i}", f"buy cheap watches {i} now" if i % 2 else f"nice shop {i}", i % 2) for i in range(30)],
        "forum": [(f"f{i}", f"visit my site {i}" if i % 3 == 0 else f"thanks {i}", int(i % 3 == 0)) for i in range(25)],
        "holdout": [(f"h{i}", f"holdout message {i}", i % 2) for i in range(8)],
    }
    rows["forum"].append(("s1", "duplicate id of a shop message", 1))  # one duplicate id
    for group, items in rows.items():
        pd.DataFrame(items, columns=["msg_id", "body", "is_spam"]).to_csv(folder / f"{group}.csv", index=False)
    return folder


def test_users_own_data_with_other_column_names(mlsys_home, tmp_path):
    src = _user_data(tmp_path / "mine")
    spec = IngestSpec(source=str(src), id_column="msg_id", text_column="body", label_column="is_spam",
                      test_group="holdout", gold_size=10)
    result = run(spec)
    store = DatasetStore()
    test, gold, unlabeled = store.read(TEST), store.read(GOLD), store.read(UNLABELED)
    assert sorted(test["id"]) == sorted(f"h{i}" for i in range(8))
    assert len(gold) == 10 and gold["label_true"].isin([0, 1]).all()
    assert "label_true" not in unlabeled.columns and "is_spam" not in unlabeled.columns
    assert set(unlabeled["group"]) | set(gold["group"]) == {"shop", "forum"}
    # "s1" appears in shop and in forum with different texts: both rows are quarantined, neither is kept
    assert result.duplicates_dropped == 0
    assert result.quarantined == {"missing_id": 0, "missing_text": 0, "conflicting_id": 2}
    assert "s1" not in set(unlabeled["id"]) | set(gold["id"])
    assert result.unlabeled.rows + result.gold.rows + result.test.rows == 30 + 26 + 8 - 2
    assert not set(unlabeled["id"]) & set(gold["id"])


def test_a_single_csv_file_as_source(mlsys_home, tmp_path):
    src = _user_data(tmp_path / "mine")
    with pytest.raises(DataError, match="test_group 'holdout' is not among the groups"):
        run(IngestSpec(source=str(src / "shop.csv"), id_column="msg_id", text_column="body",
                       label_column="is_spam", test_group="holdout", gold_size=10))


def test_unknown_test_group_lists_the_groups(mlsys_home, youtube):
    with pytest.raises(DataError, match="Youtube01-Psy"):
        run(IngestSpec(source=str(youtube), test_group="no-such-video"))


def test_gold_size_larger_than_the_data(mlsys_home, tmp_path):
    src = _user_data(tmp_path / "mine")
    with pytest.raises(DataError, match="lower gold_size"):
        run(IngestSpec(source=str(src), id_column="msg_id", text_column="body", label_column="is_spam",
                       test_group="holdout", gold_size=500))


def test_missing_source_and_folder_without_csvs(mlsys_home, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        run(IngestSpec(source=str(tmp_path / "nowhere")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no \\*\\.csv files"):
        run(IngestSpec(source=str(tmp_path / "empty")))


# -- bad input -----------------------------------------------------------------------

GOOD_ROWS = 'a1,ann,2015-01-01,"check out my channel",1\na2,bob,2015-01-01,nice song,0\n'

BAD_FILES = {
    "missing_column": "COMMENT_ID,AUTHOR,DATE,label\na1,ann,2015-01-01,1\n",
    "empty": "",
    "header_only": HEADER,
    "unclosed_quote": HEADER + GOOD_ROWS + 'a3,cat,2015-01-01,"this quote never closes,1\n',
    "too_many_fields": HEADER + GOOD_ROWS + "a3,cat,2015-01-01,hello,1,surplus\n",
    "bad_label_value": HEADER + GOOD_ROWS + "a3,cat,2015-01-01,hello,2\n",
    "text_label_value": HEADER + GOOD_ROWS + "a3,cat,2015-01-01,hello,spam\n",
    "missing_label_value": HEADER + GOOD_ROWS + "a3,cat,2015-01-01,hello,\n",
}
EXPECTED = {
    "missing_column": r"missing column\(s\) \['CONTENT'\]",
    "empty": "empty",
    "header_only": "no rows",
    "unclosed_quote": "malformed CSV",
    "too_many_fields": "malformed CSV",
    "bad_label_value": "'label' must be 0 or 1",
    "text_label_value": "'label' must be 0 or 1",
    "missing_label_value": "'label' must be 0 or 1",
}


def _bad_source(tmp_path: Path, youtube: Path, case: str) -> tuple[Path, Path]:
    """A copy of the real data plus one bad file; returns (folder, bad file)."""
    src = tmp_path / f"bad-{case}"
    src.mkdir()
    for path in youtube.glob("*.csv"):
        (src / path.name).write_bytes(path.read_bytes())
    bad = src / "Youtube03-LMFAO.csv"  # replace a real file, so the bad one is not the first read
    bad.write_text(BAD_FILES[case])
    return src, bad


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_input_is_a_data_error_naming_the_file(mlsys_home, tmp_path, youtube, case):
    src, bad = _bad_source(tmp_path, youtube, case)
    with pytest.raises(DataError, match=EXPECTED[case]) as info:
        run(IngestSpec(source=str(src)))
    assert str(bad) in str(info.value)
    if case == "missing_column":
        assert "CONTENT" in str(info.value)


@pytest.mark.parametrize("case", ["missing_column", "empty", "unclosed_quote", "too_many_fields", "bad_label_value"])
def test_bad_input_loses_and_overwrites_nothing(mlsys_home, tmp_path, youtube, case):
    good = run(IngestSpec(source=str(youtube)))
    store = DatasetStore()
    before = _snapshot(store)
    latest = {n: store.ref(n).version for n in NAMES}

    src, _ = _bad_source(tmp_path, youtube, case)
    with pytest.raises(DataError):
        run(IngestSpec(source=str(src)))

    assert _snapshot(store) == before  # same versions, byte-identical data files, nothing new
    assert {n: store.ref(n).version for n in NAMES} == latest
    for ref in (good.unlabeled, good.gold, good.test):
        assert store.backend.exists(f"datasets/{ref.name}/{ref.version}/{DATA_FILE}")
        assert store.read(ref.name, ref.version).shape[0] == ref.rows


def test_non_utf8_file_is_a_data_error_naming_the_file(mlsys_home, tmp_path, youtube):
    src = tmp_path / "latin1"
    src.mkdir()
    (src / "Youtube05-Shakira.csv").write_bytes((youtube / "Youtube05-Shakira.csv").read_bytes())
    bad = src / "Youtube01-Psy.csv"
    rows = "a1,ann,2015-01-01,caf\u00e9 con leche,0\na2,bob,2015-01-01,ol\u00e9,0\n"
    bad.write_bytes((HEADER + rows).encode("latin-1"))
    with pytest.raises(DataError, match="Youtube01-Psy.csv"):
        run(IngestSpec(source=str(src), gold_size=10))


# -- one ingest, one snapshot; nothing rewritten silently ------------------------------


def test_ingest_commits_one_snapshot(mlsys_home, youtube):
    from mlsys.datasets import COMMENTS

    result = run(IngestSpec(source=str(youtube), gold_size=50))
    store = DatasetStore()
    snap = result.snapshot
    assert snap.name == COMMENTS and snap.sequence == 1 and snap.move.moved
    assert snap.members == {UNLABELED: result.unlabeled.version, GOLD: result.gold.version, TEST: result.test.version}
    assert store.snapshot(f"{COMMENTS}@latest") == snap
    assert all(ref.snapshot == snap.id for ref in (result.unlabeled, result.gold, result.test))
    assert [m["version"] for m in store.snapshot_history(COMMENTS)] == [snap.id]  # one pointer move
    data = json.loads(json.dumps(result.to_json()))
    assert data["snapshot"]["id"] == snap.id and data["snapshot"]["moved"] is True
    assert data["quarantined"] == {"missing_id": 0, "missing_text": 0, "conflicting_id": 0}
    assert data["quarantine"] is None and result.duplicates_dropped == 3  # the shipped data: exact duplicates only


def test_evaluate_finds_the_test_split_of_the_snapshot_it_descends_from(mlsys_home, youtube):
    first = run(IngestSpec(source=str(youtube), gold_size=50))
    second = run(IngestSpec(source=str(youtube), gold_size=50, test_group="Youtube01-Psy"))
    store = DatasetStore()
    assert store.ref(TEST).version == second.test.version != first.test.version
    labeled = store.write("comments_labeled", store.read(UNLABELED, first.unlabeled.version),
                          sources={UNLABELED: first.unlabeled.version, GOLD: first.gold.version})
    snap = store.snapshot_of("comments_labeled", labeled.version)
    assert snap == first.snapshot and store.ref(TEST, snap.id) == first.test


def test_rerun_of_an_older_ingest_moves_no_pointer_back(mlsys_home, youtube):
    from mlsys.datasets import COMMENTS

    run(IngestSpec(source=str(youtube), gold_size=50, seed=0))
    newer = run(IngestSpec(source=str(youtube), gold_size=50, seed=1))
    cleared = run(IngestSpec(source=str(youtube), gold_size=50, seed=0))  # an old run cleared after a newer one
    store = DatasetStore()
    assert not cleared.snapshot.move.moved and cleared.to_json()["snapshot"]["moved"] is False
    assert store.snapshot(f"{COMMENTS}@latest") == newer.snapshot
    assert {n: store.ref(n).version for n in NAMES} == {n: v for n, v in newer.snapshot.members.items()}


def _messy_data(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "shop.csv").write_text(
        "msg_id,body,is_spam\n"
        + "".join(f"s{i},shop message {i},{i % 2}\n" for i in range(20))
        + 's20,,0\n'  # row 20: missing text
        + 's21,"   ",1\n'  # row 21: blank text
        + "s3,shop message 3,1\n"  # row 22: an exact duplicate of row 3
        + ",no id at all,0\n"  # row 23: missing id
    )
    (folder / "forum.csv").write_text(
        "msg_id,body,is_spam\n"
        + "".join(f"f{i},forum message {i},{i % 2}\n" for i in range(20))
        + "s5,shop message 5 but edited,1\n"  # row 20: s5 again with other content
    )
    (folder / "holdout.csv").write_text("msg_id,body,is_spam\n" + "".join(f"h{i},held out {i},{i % 2}\n" for i in range(6)))
    return folder


def test_rows_with_missing_text_or_conflicting_ids_are_quarantined_with_a_reason(mlsys_home, tmp_path):
    from mlsys.datasets import INGEST_QUARANTINE

    src = _messy_data(tmp_path / "messy")
    result = run(IngestSpec(source=str(src), id_column="msg_id", text_column="body", label_column="is_spam",
                            test_group="holdout", gold_size=10))
    assert result.quarantined == {"missing_id": 1, "missing_text": 2, "conflicting_id": 2}
    assert result.duplicates_dropped == 1
    store = DatasetStore()
    q = store.read(INGEST_QUARANTINE)
    assert result.quarantine == store.ref(INGEST_QUARANTINE) and result.quarantine.rows == 5
    got = {(g, r): reason for g, r, reason in zip(q["group"], q["row"], q["reason"])}
    assert got[("shop", 20)] == got[("shop", 21)] == "missing text"
    assert got[("shop", 23)] == "missing id"
    assert got[("shop", 5)] == got[("forum", 20)] == "conflicting duplicate id: 2 rows differ in group, text"
    assert q.loc[q["row"] == 21, "text"].tolist() == ["   "]  # kept as it came, not rewritten
    kept = pd.concat([store.read(n) for n in NAMES])
    assert not {"s5", "s20", "s21"} & set(kept["id"]) and kept["id"].is_unique and kept["text"].str.strip().all()
    assert len(kept) == 24 + 21 + 6 - 5 - 1  # every row but the quarantined ones and the exact duplicate
    assert result.snapshot.members[INGEST_QUARANTINE] == result.quarantine.version
    assert json.loads(json.dumps(result.to_json()))["quarantine"]["rows"] == 5


# -- confinement (docs/security.md) ------------------------------------------------------


def test_a_source_outside_the_data_roots_is_refused_without_reading_it(mlsys_home, tmp_path, monkeypatch):
    monkeypatch.setenv("MLSYS_DATA_ROOTS", str(tmp_path / "data"))
    with pytest.raises(SpecError, match=r"IngestSpec\.source='/etc/passwd'.*MLSYS_DATA_ROOTS") as info:
        run(IngestSpec(source="/etc/passwd"))
    assert "root:" not in str(info.value)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "escape").symlink_to("/etc")  # a link inside a root to outside it is outside
    with pytest.raises(SpecError, match=r"IngestSpec\.source=.*escape/passwd"):
        IngestSpec(source=str(tmp_path / "data" / "escape" / "passwd"))
    with pytest.raises(SpecError, match=r"IngestSpec\.source=.*\.\./"):
        IngestSpec(source=str(tmp_path / "data" / ".." / "elsewhere.csv"))


def test_errors_never_echo_the_files_content(mlsys_home, tmp_path):
    secret_header = "s3cr3t_token_abc,another_secret_column\nx,y\n"
    (tmp_path / "file.csv").write_text(secret_header)
    with pytest.raises(DataError, match=r"missing column\(s\) \['COMMENT_ID', 'CONTENT', 'label'\] among its 2") as info:
        run(IngestSpec(source=str(tmp_path / "file.csv")))
    assert "s3cr3t" not in str(info.value) and "another_secret" not in str(info.value)
    (tmp_path / "file.csv").write_text(HEADER + 'a1,ann,2015-01-01,"hi",password123\n')
    with pytest.raises(DataError, match=r"'label' must be 0 or 1; 1 rows are not, e\.g\. data rows \[0\]") as info:
        run(IngestSpec(source=str(tmp_path / "file.csv")))
    assert "password123" not in str(info.value)


def test_integer_ids_stay_integers_and_text_ids_stay_text(mlsys_home, tmp_path, youtube):
    src = tmp_path / "ints"
    src.mkdir()
    for i, path in enumerate(sorted(youtube.glob("*.csv"))):
        df = pd.read_csv(path, dtype=str)
        df["COMMENT_ID"] = [str(i * 100_000 + j) for j in range(len(df))]
        df.to_csv(src / path.name, index=False)
    run(IngestSpec(source=str(src)))
    store = DatasetStore()
    for name in (UNLABELED, GOLD, TEST):
        assert store.read(name)["id"].dtype == "int64", name
    (src / "Youtube01-Psy.csv").write_text(HEADER + 'a1,ann,2015-01-01,"hi",0\n007,bob,2015-01-01,"yo",1\n')
    run(IngestSpec(source=str(src)))
    assert store.read(GOLD)["id"].dtype != "int64", "one non-integer id keeps them all text"
    assert "007" in set(store.read(UNLABELED)["id"]) | set(store.read(GOLD)["id"]) | set(store.read(TEST)["id"])
