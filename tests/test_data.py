"""Data for the fine-tuning job: the embedded corpus, user files, splits."""

from __future__ import annotations

import json

import pytest

from graphopt.data import few_shot, load_bbc_news, load_table, stratified_split


@pytest.fixture(scope="module")
def bbc():
    return load_bbc_news()


def test_embedded_bbc_news_has_its_published_size_and_classes():
    # The BBC News corpus (Greene & Cunningham, 2006): 2,225 articles in 5 classes.
    raw = load_bbc_news(deduplicate=False)
    assert len(raw) == 2225
    assert raw.label_names == ("business", "entertainment", "politics", "sports", "tech")
    assert raw.class_counts() == {
        "business": 510,
        "entertainment": 386,
        "politics": 417,
        "sports": 511,
        "tech": 401,
    }


def test_default_corpus_drops_exact_duplicates(bbc):
    raw = load_bbc_news(deduplicate=False)
    assert len(bbc) == len(set(raw.texts)) < len(raw)
    assert len(set(bbc.texts)) == len(bbc)


def test_split_is_stratified_disjoint_and_reproducible(bbc):
    first, second = stratified_split(bbc, seed=0), stratified_split(bbc, seed=0)
    assert first.test.texts == second.test.texts
    sizes = [len(first.train), len(first.dev), len(first.test)]
    assert sum(sizes) == len(bbc)
    assert sizes == pytest.approx([0.6 * len(bbc), 0.2 * len(bbc), 0.2 * len(bbc)], abs=2)
    overall = bbc.class_counts()["sports"] / len(bbc)
    for part in (first.train, first.dev, first.test):
        assert part.class_counts()["sports"] / len(part) == pytest.approx(overall, abs=0.01)
    assert not set(first.train.texts) & set(first.test.texts)


def test_few_shot_draws_exactly_n_per_class(bbc):
    chosen = few_shot(stratified_split(bbc).train, 16, seed=3)
    assert set(chosen.class_counts().values()) == {16}
    assert few_shot(stratified_split(bbc).train, 16, seed=3).texts == chosen.texts


def test_csv_and_jsonl_give_the_same_dataset(tmp_path, topic_csv):
    from_csv = load_table(topic_csv)
    lines = [
        json.dumps({"text": t, "label": from_csv.label_names[y]})
        for t, y in zip(from_csv.texts, from_csv.labels, strict=True)
    ]
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("\n".join(lines))
    assert load_table(jsonl) == from_csv
    assert from_csv.label_names == ("alpha", "beta", "gamma")


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [
        ("text,label\n", ".csv", "has no rows"),
        ("body,label\nhello,a\n", ".csv", "has no column 'text'"),
        ("text,label\nhello,\n", ".csv", "'label' is empty"),
        ('{"text": "a", "label": "x"}\nnot json\n', ".jsonl", "line 2 is not valid JSON"),
        ("text,label\nhello,a\n", ".txt", "must be .csv or .jsonl"),
    ],
)
def test_ill_formed_files_are_rejected(tmp_path, content, suffix, message):
    path = tmp_path / f"data{suffix}"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_table(path)


def test_missing_file_and_unknown_labels(tmp_path, topic_csv):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_table(tmp_path / "nope.csv")
    with pytest.raises(ValueError, match=r"labels \['gamma'\] that are not among"):
        load_table(topic_csv, label_names=["alpha", "beta"])


def test_few_shot_larger_than_a_class_is_an_error(topic_csv):
    with pytest.raises(ValueError, match="few-shot needs 50 examples of class 'alpha'"):
        few_shot(load_table(topic_csv), 50)
