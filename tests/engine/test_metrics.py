"""Paper metrics against examples computed by hand (derivations in the comments)."""

from __future__ import annotations

import math

import pytest

from engine.errors import InputError, WeightsNotFoundError
from engine.metrics import (
    BERTSCORE_MISSING,
    bertscore_f1,
    bertscore_from_embeddings,
    bleu1,
    box_iou,
    caption_scores,
    classification_accuracy,
    format_table,
    grounding_scores,
    meteor,
    meteor_variant,
    normalize_answer,
    rouge1_f,
    rsvqa_area_bucket,
    rsvqa_count_bucket,
    vqa_accuracy,
)
from engine.parsing import match_label
from engine.types import BoxPx


@pytest.mark.parametrize(
    "text, qtype, expected",
    [
        ("Yes.", "presence", "yes"),
        ("No, there is not.", "comp", "no"),
        ("YES", None, "yes"),
        ("twenty-one", "count", "21"),
        ("There are 4 buildings.", "count", "4"),
        ("none", "count", "0"),
        ("4.0", "count", "4"),
        ("a hundred and five", "count", "105"),
        ("Between 10 and 100", "count", "between 10 and 100"),
        ("6,500 square meters", "area", "6500m2"),
        ("6500 m²", "area", "6500m2"),
        ("0", "area", "0m2"),
        ("between 10m2 and 100m2", "area", "between 10m2 and 100m2"),
        ("It is an urban area.", "rural_urban", "urban"),
        ("Rural", "rural_urban", "rural"),
    ],
)
def test_normalize_answer(text, qtype, expected):
    assert normalize_answer(text, qtype) == expected


def test_rsvqa_buckets_follow_the_reference_code():
    assert [
        rsvqa_count_bucket(a) for a in ("0", "1", "10", "11", "100", "442", "1000", "1001")
    ] == [
        "0",
        "between 0 and 10",
        "between 0 and 10",
        "between 10 and 100",
        "between 10 and 100",
        "between 100 and 1000",
        "between 100 and 1000",
        "more than 1000",
    ]
    assert [rsvqa_area_bucket(a) for a in ("0m2", "10m2", "68m2", "859m2", "6500m2", "yes")] == [
        "0m2",
        "between 0m2 and 10m2",
        "between 10m2 and 100m2",
        "between 100m2 and 1000m2",
        "more than 1000m2",
        "yes",
    ]


def test_vqa_accuracy_per_type_and_average():
    preds = ["Yes.", "no", "4 buildings", "between 10 and 100", "Urban", "6,500 m²"]
    golds = ["yes", "yes", "four", "69", "urban", "6500m2"]
    types = ["presence", "presence", "count", "count", "rural_urban", "area"]
    r = vqa_accuracy(preds, golds, types)
    # hits: 1 0 1 0 1 1 -> presence 1/2, count 1/2, rural_urban 1, area 1
    assert r.per_group == {"area": 1.0, "count": 0.5, "presence": 0.5, "rural_urban": 1.0}
    assert r.average == pytest.approx(0.75) and r.overall == pytest.approx(4 / 6) and r.n == 6
    assert r.correct == (True, False, True, False, True, True)
    bucketed = vqa_accuracy(preds, golds, types, count_buckets=True)  # 69 -> "between 10 and 100"
    assert bucketed.per_group["count"] == 1.0
    assert vqa_accuracy(
        preds, golds, types, average_over=("presence", "rural_urban")
    ).average == pytest.approx(0.75)
    with pytest.raises(InputError, match="no samples.*comp"):
        vqa_accuracy(preds, golds, types, average_over=("presence", "comp"))
    with pytest.raises(InputError, match="differ in length"):
        vqa_accuracy(preds, golds[:2], types)


def test_paper_average_is_mean_of_presence_and_compare():
    # RSVQA-LR "Ours": presence 90.2, compare 90.4 -> Avg. 90.3 in the paper's Table IV
    preds = (
        ["yes"] * 902
        + ["no"] * 98
        + ["yes"] * 904
        + ["no"] * 96
        + ["rural"] * 900
        + ["urban"] * 100
    )
    golds = ["yes"] * 1000 + ["yes"] * 1000 + ["rural"] * 1000
    types = ["presence"] * 1000 + ["comp"] * 1000 + ["rural_urban"] * 1000
    r = vqa_accuracy(preds, golds, types, average_over=("presence", "comp"))
    assert round(100 * r.average, 1) == 90.3


def test_classification_accuracy_and_label_matching():
    labels = ["rural", "urban", "industrial"]
    assert match_label("Urban area.", labels) == "urban"
    assert match_label("golf field", ["golffield", "field"]) == "golffield"
    assert match_label("a forest", labels) is None
    r = classification_accuracy(
        ["urban", "rural", "urban", "forest"], ["urban", "rural", "rural", "rural"], labels
    )
    # overall 2/4; per class: urban 1/1, rural 1/3 -> mean 2/3
    assert r.overall == 0.5 and r.average == pytest.approx(2 / 3)
    assert r.per_group == {"rural": pytest.approx(1 / 3), "urban": 1.0}


def test_box_iou_axis_aligned_and_oriented():
    a = BoxPx(0, 0, 10, 10)
    assert box_iou(a, BoxPx(5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou(a, BoxPx(20, 20, 30, 30)) == 0.0
    # a square and the same square turned 45 degrees: overlap 2(sqrt2 - 1) s^2 -> IoU = sqrt(2) / 2
    turned = BoxPx(0, 0, 10, 10, angle_deg=45.0)
    assert box_iou(a, turned) == pytest.approx(math.sqrt(2) / 2, abs=1e-9)


def test_grounding_scores():
    target = BoxPx(0, 0, 10, 10)
    r = grounding_scores([BoxPx(5, 0, 15, 10), BoxPx(0, 0, 10, 8), None], [target] * 3)
    # IoUs 1/3, 0.8, 0 (missing prediction)
    assert r.acc_at_05 == pytest.approx(1 / 3)
    assert r.miou == pytest.approx((1 / 3 + 0.8) / 3)
    assert (
        grounding_scores([BoxPx(0, 0, 10, 5)], [target]).acc_at_05 == 1.0
    )  # IoU exactly 0.5 counts


def test_bleu1_is_corpus_level_with_brevity_penalty():
    preds = ["a red house", "two tanks"]
    refs = [["a red house near a road"], ["two white tanks", "tanks"]]
    # clipped unigram precision 5/5; hypothesis length 5; closest reference lengths 6 + 1
    # (for "two tanks" the lengths 3 and 1 tie; nltk takes the shorter)
    assert bleu1(preds, refs) == pytest.approx(math.exp(1 - 7 / 5))
    assert bleu1(["nothing matches"], [["a lake"]]) == 0.0


def test_rouge1_best_reference_averaged():
    preds = ["a red house", "two tanks"]
    refs = [["a red house near a road"], ["two white tanks", "tanks"]]
    # sample 1: P 3/3, R 3/6 -> F 2/3; sample 2: vs ref 1 P 1, R 2/3 -> F 0.8 (best)
    assert rouge1_f(preds, refs) == pytest.approx((2 / 3 + 0.8) / 2)


def test_meteor_hand_computed():
    # "the houses" vs "the house": exact 'the' + stem 'hous' -> P = R = 1, Fmean = 1,
    # one chunk over two matches -> penalty 0.5 * (1/2)^3 = 0.0625 -> 0.9375
    assert meteor(["the houses"], [["the house"]]) == pytest.approx(0.9375)
    # "a lake" vs "the lake near road": 1 match, P 1/2, R 1/4,
    # Fmean = PR / (0.9P + 0.1R) = 0.125 / 0.475; 1 chunk / 1 match -> penalty 0.5
    assert meteor(["a lake"], [["the lake near road"]]) == pytest.approx(0.5 * 0.125 / 0.475)
    assert meteor_variant() in ("exact+stem", "exact+stem+wordnet")


def test_bertscore_formula_on_hand_made_embeddings():
    # candidate token (1, 0); reference tokens (1, 0) and (0, 1):
    # P = max cos = 1; R = mean(1, 0) = 0.5; F = 2 * 1 * 0.5 / 1.5
    p, r, f = bertscore_from_embeddings([[1.0, 0.0]], [[1.0, 0.0], [0.0, 2.0]])
    assert (p, r, f) == pytest.approx((1.0, 0.5, 2 / 3))
    p, r, f = bertscore_from_embeddings([[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [1.0, 1.0]])
    s = math.sqrt(0.5)  # cos((0,1), (1,1)) = cos((1,0), (1,1))
    assert p == pytest.approx((1 + s) / 2) and r == pytest.approx((1 + s) / 2)
    assert bertscore_from_embeddings([], [[1.0, 0.0]]) == (0.0, 0.0, 0.0)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A random 2-layer BERT and a word-level vocabulary, saved like a real checkpoint."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_bert")
    words = [
        "a",
        "red",
        "house",
        "near",
        "road",
        "two",
        "white",
        "tanks",
        "lake",
        "field",
        "the",
        "of",
        "is",
        "green",
    ]
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(vocab))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=5 + len(words),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_bertscore_with_a_local_model(tiny_bert):
    same = bertscore_f1(["a red house near a road"], [["a red house near a road"]], tiny_bert)
    assert same == pytest.approx(1.0, abs=1e-5)
    differ = bertscore_f1(["two white tanks"], [["a red house near a road"]], tiny_bert)
    assert differ < 0.99
    best = bertscore_f1(
        ["two white tanks"], [["a red house near a road", "two white tanks"]], tiny_bert
    )
    assert best == pytest.approx(1.0, abs=1e-5)
    mixed = bertscore_f1(
        ["two white tanks", "a lake"], [["a red house near a road"], ["a lake"]], tiny_bert
    )
    assert mixed == pytest.approx((differ + 1.0) / 2, abs=1e-5)


def test_bertscore_without_model_is_none_with_message(tmp_path):
    assert bertscore_f1(["a"], [["a"]], None) is None
    with pytest.raises(WeightsNotFoundError, match="BERTScore model folder not found"):
        bertscore_f1(["a"], [["a"]], tmp_path / "missing")
    report = caption_scores(["a red house"], [["a red house near a road"]])
    assert report.bertscore_f1 is None and report.note == BERTSCORE_MISSING
    assert report.bleu1 == pytest.approx(math.exp(1 - 6 / 3)) and report.rouge1 == pytest.approx(
        2 / 3
    )


def test_caption_scores_with_model(tiny_bert):
    report = caption_scores(["a lake"], [["a lake"]], bertscore_model=tiny_bert)
    assert report.row() == pytest.approx(
        {"bleu1": 1.0, "rouge1": 1.0, "meteor": 0.9375, "bertscore_f1": 1.0}, abs=1e-5
    )
    with pytest.raises(InputError, match="one reference per sample"):
        caption_scores(["a"], [[]])


def test_format_table_paper_style():
    table = format_table(
        {
            "base": {"presence": 0.5, "comp": 0.625, "average": None},
            "ours": {"presence": 0.9, "comp": 0.85, "average": 0.875},
        },
        title="RSVQA-LR",
    )
    lines = table.splitlines()
    assert lines[0] == "**RSVQA-LR**"
    assert lines[2] == "| Method | Presence | Compare | Avg. |"
    assert lines[4] == "| base | 50.0 | 62.5 | - |"
    assert lines[5] == "| ours | 90.0 | 85.0 | 87.5 |"
    assert "| Acc@0.5 | mIoU |" in format_table({"m": {"acc@0.5": 0.7, "miou": 0.6}})
    with pytest.raises(InputError):
        format_table({})
