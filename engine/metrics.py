"""The seed paper's evaluation metrics (section IV-A2), checked against hand-computed examples.

- Classification and VQA: accuracy after answer normalisation, per question type / class and
  averaged (:func:`vqa_accuracy`, :func:`classification_accuracy`). RSVQA answers are compared
  after :func:`normalize_answer` (case, punctuation, yes/no prefixes, number words -> digits,
  area units -> ``m2``). Optional RSVQA bucketing, as in the dataset authors' reference code:
  RSVQA-LR counts -> ``0 / between 0 and 10 / between 10 and 100 / between 100 and 1000 /
  more than 1000``; RSVQA-HR areas -> the same ranges with ``m2``. The shared RSVQA files hold
  raw numbers (``"69"``, ``"6500m2"``); without bucketing the match is exact.
  The paper's "Avg." for RSVQA is the mean over the presence and comparison subsets (e.g.
  (90.2 + 90.4) / 2 = 90.3 for RSVQA-LR): pass ``average_over=("presence", "comp")``.
- Grounding: Acc@0.5 = share of samples whose predicted box has IoU >= 0.5 with the reference
  (a missing prediction counts as IoU 0), and mean IoU. Oriented boxes use polygon IoU (shapely).
- Captions: BLEU-1 is *corpus-level* (nltk ``corpus_bleu``, unigram weights, brevity penalty),
  as in the paper's tables; ROUGE-1 F (rouge-score, max over references, averaged over samples);
  METEOR (nltk ``meteor_score``, max over references, averaged). nltk's WordNet synonym stage
  is used when the WordNet corpus is installed; otherwise METEOR runs with exact + Porter-stem
  matching only (``CaptionReport.meteor_variant`` says which). BERTScore-F1 follows the
  bert-score formula (greedy cosine matching of contextual token embeddings, no idf, no
  baseline rescaling, special tokens excluded, max over references) with any local HF encoder;
  without one it is ``None`` and the report says how to enable it.

- Change (two dates): change/no-change accuracy (:func:`change_detection_accuracy`): a caption
  says "no change" when :func:`says_no_change` finds a no-change phrase ("no change(s)", "no
  difference", "nothing changed", "unchanged", "the same as before", "identical", ...), anything
  else claims a change; a ``change_ground`` answer claims a change when it has a box. Change
  grounding (:func:`change_grounding_scores`): predicted and reference boxes of a pair are
  matched one to one (greedily by IoU); Acc@0.5 = share of reference change boxes matched at
  IoU >= 0.5 (recall), precision@0.5 = share of predicted boxes matched, mIoU = mean IoU of each
  reference box's match (0 when unmatched).

All scores are fractions in [0, 1]; :func:`format_table` prints them x100 like the paper.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import InputError, MissingDependencyError, WeightsNotFoundError
from engine.parsing import match_label, normalise_label
from engine.types import BoxPx

__all__ = [
    "BERTSCORE_MISSING",
    "AccuracyReport",
    "CaptionReport",
    "ChangeDetectionReport",
    "ChangeGroundingReport",
    "GroundingReport",
    "bertscore_f1",
    "bertscore_from_embeddings",
    "bleu1",
    "box_iou",
    "caption_scores",
    "change_detection_accuracy",
    "change_grounding_scores",
    "classification_accuracy",
    "format_table",
    "grounding_scores",
    "meteor",
    "meteor_variant",
    "normalize_answer",
    "rouge1_f",
    "rsvqa_area_bucket",
    "rsvqa_count_bucket",
    "says_no_change",
    "tokenize_caption",
    "vqa_accuracy",
]

log = logging.getLogger(__name__)

BERTSCORE_MISSING = "BERTScore needs a local model; pass --bertscore-model PATH"


def _check_lengths(**seqs: Sequence) -> int:
    lengths = {name: len(s) for name, s in seqs.items()}
    if len(set(lengths.values())) != 1:
        raise InputError(f"metric inputs differ in length: {lengths}; pass one entry per sample")
    return next(iter(lengths.values()))


# ------------------------------------------------------------------ answer normalisation

_UNITS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = {
    w: 10 * i
    for i, w in enumerate(
        ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
    )
    if i > 1
}
_NUMBER_WORDS = {w: i for i, w in enumerate(_UNITS)} | _TENS
_SCALES = {"hundred": 100, "thousand": 1000}


def _parse_number(tokens: list[str], i: int) -> tuple[int, int] | None:
    """``(value, next index)`` for English number words starting at ``tokens[i]``, else None."""
    total, current, seen, j = 0, 0, False, i
    while j < len(tokens):
        tok, nxt = tokens[j], tokens[j + 1] if j + 1 < len(tokens) else ""
        if tok in _NUMBER_WORDS:
            current, seen = current + _NUMBER_WORDS[tok], True
        elif tok in _SCALES and (seen or j > i):
            if _SCALES[tok] == 1000:
                total, current = total + max(current, 1) * 1000, 0
            else:
                current = max(current, 1) * 100
            seen = True
        elif tok == "a" and not seen and nxt in _SCALES:
            pass  # "a hundred"
        elif tok == "and" and seen and nxt in _NUMBER_WORDS:
            pass  # "one hundred and five"
        else:
            break
        j += 1
    return (total + current, j) if seen else None


def _words_to_digits(tokens: list[str]) -> list[str]:
    """Replace runs of English number words ("twenty one", "a hundred") with digits."""
    out, i = [], 0
    while i < len(tokens):
        parsed = _parse_number(tokens, i)
        if parsed is None:
            out.append(tokens[i])
            i += 1
        else:
            out.append(str(parsed[0]))
            i = parsed[1]
    return out


def _clean(text: str) -> list[str]:
    t = text.strip().lower().replace("²", "2")
    t = re.sub(r"\b(square\s+met(er|re)s?|sq\.?\s*m)\b", "m2", t)
    t = re.sub(r"(?<=\d),(?=\d{3}\b)", "", t)  # 1,000 -> 1000
    t = re.sub(r"(?<!\d)\.|\.(?!\d)", " ", t)  # dots that are not decimal points
    t = re.sub(r"[^\w\s.]", " ", t.replace("-", " "))
    tokens = _words_to_digits(t.split())
    tokens = [str(int(float(x))) if re.fullmatch(r"\d+\.0+", x) else x for x in tokens]
    return re.sub(r"(\d)\s+m2\b", r"\1m2", " ".join(tokens)).split()


def normalize_answer(text: str, question_type: str | None = None) -> str:
    """Canonical answer string for exact-match accuracy.

    Lower case, punctuation removed, number words -> digits, ``"6500 m²"`` -> ``"6500m2"``.
    A leading yes/no wins (``"Yes, there is."`` -> ``"yes"``). Per RSVQA type: ``rural_urban``
    keeps the one of rural/urban mentioned; ``count`` keeps the first number (``"none"`` and a
    leading ``"no"`` -> ``"0"``; a range such as ``"between 0 and 10"`` stays whole);
    ``area`` adds ``m2`` to a bare number.
    """
    tokens = _clean(text)
    if not tokens:
        return ""
    if question_type == "count":
        if tokens[0] in ("between", "more", "less"):
            return " ".join(tokens)  # already an RSVQA range
        if tokens[0] in ("no", "none", "zero"):
            return "0"
        numbers = [t for t in tokens if t.isdigit()]
        return numbers[0] if numbers else " ".join(tokens)
    if tokens[0] in ("yes", "no"):
        return tokens[0]
    if question_type == "rural_urban":
        found = {t for t in tokens if t in ("rural", "urban")}
        if len(found) == 1:
            return found.pop()
    if question_type == "area" and len(tokens) == 1 and tokens[0].isdigit():
        return tokens[0] + "m2"
    return " ".join(tokens)


def _bucket(value: float, unit: str) -> str:
    if value <= 0:
        return f"0{unit}"
    for upper in (10, 100, 1000):
        if value <= upper:
            return f"between {upper // 10 if upper > 10 else 0}{unit} and {upper}{unit}"
    return f"more than 1000{unit}"


def rsvqa_count_bucket(answer: str) -> str:
    """RSVQA-LR count range of a normalised count answer (``"69"`` -> ``"between 10 and 100"``).

    Answers that are not a plain number (already a range, or not numeric) are returned as is.
    """
    return _bucket(int(answer), "") if answer.isdigit() else answer


def rsvqa_area_bucket(answer: str) -> str:
    """RSVQA-HR area range of a normalised area answer (``"6500m2"`` -> ``"more than 1000m2"``)."""
    match = re.fullmatch(r"(\d+)m2", answer)
    return _bucket(int(match.group(1)), "m2") if match else answer


# ------------------------------------------------------------------ accuracy


@dataclass(frozen=True)
class AccuracyReport:
    """Accuracy per group (question type or class), their macro average and the overall rate."""

    per_group: Mapping[str, float]
    counts: Mapping[str, int]
    average: float  # mean of per-group accuracies (over `average_over` when given)
    overall: float  # correct / all samples
    n: int
    correct: tuple[bool, ...] = field(default=(), repr=False)  # per sample, for prediction logs

    def row(self) -> dict[str, float | None]:
        return {**self.per_group, "average": self.average}


def _report(
    hits: Sequence[bool], groups: Sequence[str], average_over: Sequence[str] | None
) -> AccuracyReport:
    by_group: dict[str, list[bool]] = defaultdict(list)
    for hit, group in zip(hits, groups):
        by_group[group].append(hit)
    per_group = {g: sum(v) / len(v) for g, v in sorted(by_group.items())}
    chosen = list(average_over) if average_over is not None else list(per_group)
    missing = [g for g in chosen if g not in per_group]
    if missing:
        raise InputError(
            f"average_over names groups with no samples: {missing}; present: {list(per_group)}"
        )
    average = sum(per_group[g] for g in chosen) / len(chosen) if chosen else math.nan
    overall = sum(hits) / len(hits) if hits else math.nan
    return AccuracyReport(
        per_group,
        {g: len(v) for g, v in by_group.items()},
        average,
        overall,
        len(hits),
        tuple(hits),
    )


def vqa_accuracy(
    predictions: Sequence[str],
    answers: Sequence[str],
    question_types: Sequence[str | None],
    count_buckets: bool = False,
    area_buckets: bool = False,
    average_over: Sequence[str] | None = None,
) -> AccuracyReport:
    """VQA accuracy per question type after :func:`normalize_answer`.

    ``count_buckets`` (RSVQA-LR) / ``area_buckets`` (RSVQA-HR) compare the RSVQA ranges instead
    of exact numbers. ``average_over`` picks the types of the "Avg." column (default: all).
    """
    _check_lengths(predictions=predictions, answers=answers, question_types=question_types)
    hits = []
    for pred, gold, qtype in zip(predictions, answers, question_types):
        p, g = normalize_answer(pred, qtype), normalize_answer(gold, qtype)
        if count_buckets and qtype == "count":
            p, g = rsvqa_count_bucket(p), rsvqa_count_bucket(g)
        if area_buckets and qtype == "area":
            p, g = rsvqa_area_bucket(p), rsvqa_area_bucket(g)
        hits.append(p == g and g != "")
    return _report(hits, [q or "all" for q in question_types], average_over)


def _same_label(a: str, b: str) -> bool:
    return normalise_label(a).replace(" ", "") == normalise_label(b).replace(" ", "")


def classification_accuracy(
    predictions: Sequence[str], targets: Sequence[str], labels: Sequence[str] | None = None
) -> AccuracyReport:
    """Scene-classification accuracy: ``overall`` (the paper's tables) and per-class mean
    (``average``, the paper's Table VII for NWPU). With ``labels``, free text is first mapped
    to a label by :func:`engine.parsing.match_label`, the rule the engine gives its answers'
    labels by (so evaluation counts what the app shows)."""
    _check_lengths(predictions=predictions, targets=targets)
    hits = []
    for pred, gold in zip(predictions, targets):
        chosen = match_label(pred, labels) if labels is not None else pred
        hits.append(chosen is not None and _same_label(chosen, gold))
    return _report(hits, list(targets), None)


# ------------------------------------------------------------------ grounding


def box_iou(a: BoxPx, b: BoxPx) -> float:
    """IoU of two boxes in the same pixel space; polygon IoU when either is oriented."""
    if a.angle_deg or b.angle_deg:
        return _polygon_iou(a, b)
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / (a.area + b.area - inter)


def _polygon_iou(a: BoxPx, b: BoxPx) -> float:
    try:
        from shapely.geometry import Polygon
    except ImportError as exc:
        raise MissingDependencyError("oriented-box IoU needs shapely: pip install shapely") from exc
    from engine.data.boxes import box_corners_px

    pa, pb = Polygon(box_corners_px(a)), Polygon(box_corners_px(b))
    inter = pa.intersection(pb).area
    union = pa.area + pb.area - inter
    return inter / union if union > 0 else 0.0


@dataclass(frozen=True)
class GroundingReport:
    acc_at_05: float  # share of samples with IoU >= 0.5
    miou: float
    n: int
    ious: tuple[float, ...] = field(default=(), repr=False)

    def row(self) -> dict[str, float | None]:
        return {"acc@0.5": self.acc_at_05, "miou": self.miou}


def grounding_scores(
    predictions: Sequence[BoxPx | None], targets: Sequence[BoxPx], threshold: float = 0.5
) -> GroundingReport:
    """Acc@threshold and mean IoU, one predicted box (or ``None``) per reference box."""
    n = _check_lengths(predictions=predictions, targets=targets)
    ious = tuple(0.0 if p is None else box_iou(p, t) for p, t in zip(predictions, targets))
    if n == 0:
        return GroundingReport(math.nan, math.nan, 0)
    return GroundingReport(sum(i >= threshold for i in ious) / n, sum(ious) / n, n, ious)


# ------------------------------------------------------------------ captions


def tokenize_caption(text: str) -> list[str]:
    """Lower-case word tokens, punctuation dropped (``"A lake ."`` -> ``["a", "lake"]``)."""
    return re.findall(r"[a-z0-9]+", text.lower())


def bleu1(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Corpus-level BLEU-1 (clipped unigram precision x brevity penalty over the corpus)."""
    from nltk.translate.bleu_score import corpus_bleu

    _check_lengths(predictions=predictions, references=references)
    hyps = [tokenize_caption(p) for p in predictions]
    refs = [[tokenize_caption(r) for r in rs] for rs in references]
    if not any(hyps):
        return 0.0
    return float(corpus_bleu(refs, hyps, weights=(1.0,)))


def rouge1_f(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """ROUGE-1 F-measure (rouge-score, no stemming), best reference per sample, averaged."""
    from rouge_score import rouge_scorer

    n = _check_lengths(predictions=predictions, references=references)
    scorer = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=False)
    return (
        sum(
            scorer.score_multi(list(r), p)["rouge1"].fmeasure
            for p, r in zip(predictions, references)
        )
        / n
    )


class _NoWordNet:
    """An empty synonym source for nltk's METEOR: its WordNet stage then matches nothing."""

    def synsets(self, word: str) -> list:
        return []


def _wordnet():
    from nltk.corpus import wordnet

    try:
        wordnet.synsets("lake")
    except LookupError:
        return None
    return wordnet


def meteor_variant() -> str:
    """``"exact+stem+wordnet"`` when nltk's WordNet corpus is installed, else ``"exact+stem"``."""
    return "exact+stem+wordnet" if _wordnet() is not None else "exact+stem"


def meteor(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """METEOR (nltk, alpha 0.9, beta 3, gamma 0.5), best reference per sample, averaged."""
    from nltk.translate.meteor_score import meteor_score

    n = _check_lengths(predictions=predictions, references=references)
    wordnet = _wordnet() or _NoWordNet()
    total = 0.0
    for pred, refs in zip(predictions, references):
        ref_tokens = [tokenize_caption(r) for r in refs]
        total += meteor_score(ref_tokens, tokenize_caption(pred), wordnet=wordnet)
    return total / n


def bertscore_from_embeddings(candidate, reference) -> tuple[float, float, float]:
    """(P, R, F1) of greedy cosine matching between token embeddings (m, d) and (n, d)."""
    import torch

    c = torch.nn.functional.normalize(torch.as_tensor(candidate, dtype=torch.float32), dim=-1)
    r = torch.nn.functional.normalize(torch.as_tensor(reference, dtype=torch.float32), dim=-1)
    if c.shape[0] == 0 or r.shape[0] == 0:
        return 0.0, 0.0, 0.0
    sim = c @ r.T  # (m, n) cosine similarities
    precision = sim.max(dim=1).values.mean().item()  # each candidate token -> best reference token
    recall = sim.max(dim=0).values.mean().item()  # each reference token -> best candidate token
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return precision, recall, f1


def _token_embeddings(texts: list[str], tokenizer, model, layer: int, batch_size: int) -> list:
    import torch

    out = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            texts[start : start + batch_size],
            padding=True,
            truncation=True,
            return_tensors="pt",
            return_special_tokens_mask=True,
        )
        special = batch.pop("special_tokens_mask").bool()
        with torch.inference_mode():
            hidden = model(**batch, output_hidden_states=True).hidden_states[layer]  # (B, T, D)
        keep = batch["attention_mask"].bool() & ~special  # drop padding, [CLS], [SEP]
        out.extend(hidden[i][keep[i]] for i in range(hidden.shape[0]))
    return out


def bertscore_f1(
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    model_path: str | Path | None,
    layer: int = -1,
    batch_size: int = 16,
) -> float | None:
    """Mean BERTScore-F1 with the encoder at ``model_path`` (hidden layer ``layer``); ``None``
    when no model is given (see :data:`BERTSCORE_MISSING`). Runs on CPU."""
    if model_path is None:
        log.info(BERTSCORE_MISSING)
        return None
    n = _check_lengths(predictions=predictions, references=references)
    if not Path(model_path).is_dir():
        raise WeightsNotFoundError(
            f"BERTScore model folder not found: {str(model_path)!r}; "
            "pass a local Hugging Face encoder directory (e.g. roberta-large)"
        )
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    model = AutoModel.from_pretrained(str(model_path)).eval()
    flat_refs = [r for rs in references for r in rs]
    cand_emb = _token_embeddings(list(predictions), tokenizer, model, layer, batch_size)
    ref_emb = _token_embeddings(flat_refs, tokenizer, model, layer, batch_size)
    total, start = 0.0, 0
    for cand, refs in zip(cand_emb, references):
        own = ref_emb[start : start + len(refs)]  # this sample's references
        start += len(refs)
        total += max(bertscore_from_embeddings(cand, ref)[2] for ref in own)
    return total / n


@dataclass(frozen=True)
class CaptionReport:
    bleu1: float
    rouge1: float
    meteor: float
    bertscore_f1: float | None
    n: int
    meteor_variant: str
    note: str = ""  # e.g. why BERTScore is missing

    def row(self) -> dict[str, float | None]:
        return {
            "bleu1": self.bleu1,
            "rouge1": self.rouge1,
            "meteor": self.meteor,
            "bertscore_f1": self.bertscore_f1,
        }


def caption_scores(
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    bertscore_model: str | Path | None = None,
) -> CaptionReport:
    """BLEU-1, ROUGE-1, METEOR and (with a local model) BERTScore-F1 for captions."""
    n = _check_lengths(predictions=predictions, references=references)
    if n == 0 or any(len(r) == 0 for r in references):
        raise InputError("caption metrics need at least one sample and one reference per sample")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        b1 = bleu1(predictions, references)
    bert = bertscore_f1(predictions, references, bertscore_model)
    return CaptionReport(
        bleu1=b1,
        rouge1=rouge1_f(predictions, references),
        meteor=meteor(predictions, references),
        bertscore_f1=bert,
        n=n,
        meteor_variant=meteor_variant(),
        note="" if bert is not None else BERTSCORE_MISSING,
    )


# ------------------------------------------------------------------ change (two dates)

_NO_CHANGE = re.compile(
    r"\b(?:"
    r"no (?:\w+ )?(?:changes?|differences?)"  # no change(s), no visible change, no difference
    r"|nothing (?:has |have |was |is )?(?:changed|different|new)"
    r"|not? (?:changed|different)"
    r"|unchanged|identical"
    r"|(?:is|are|remains?|looks?|seems?|stays?) (?:\w+ )?(?:the )?same"  # is the same (as before)
    r"|same as before"
    r")\b",
    re.IGNORECASE,
)


_BUT = re.compile(r"\b(?:but|except|whereas|while|although|however)\b", re.IGNORECASE)


def says_no_change(text: str) -> bool:
    """True when ``text`` says nothing changed ("no change", "the scene is the same as before",
    "there is no difference", "nothing has changed", "unchanged", "identical", ...) and does not
    go on to name a change ("the road is unchanged but a house appeared": a change)."""
    text = " ".join(text.split())
    return _NO_CHANGE.search(text) is not None and _BUT.search(text) is None


@dataclass(frozen=True)
class ChangeDetectionReport:
    """Change/no-change accuracy, and precision/recall of the "changed" answers."""

    accuracy: float
    precision: float  # of the pairs called changed, the share that changed
    recall: float  # of the pairs that changed, the share called changed
    n: int
    correct: tuple[bool, ...] = field(default=(), repr=False)

    def row(self) -> dict[str, float | None]:
        return {
            "change_acc": self.accuracy,
            "change_precision": self.precision,
            "change_recall": self.recall,
        }


def change_detection_accuracy(
    predicted_changed: Sequence[bool], truth_changed: Sequence[bool]
) -> ChangeDetectionReport:
    """Accuracy of change/no-change calls (one bool per pair: True = changed)."""
    n = _check_lengths(predicted_changed=predicted_changed, truth_changed=truth_changed)
    hits = tuple(bool(p) == bool(t) for p, t in zip(predicted_changed, truth_changed))
    called = [t for p, t in zip(predicted_changed, truth_changed) if p]
    changed = [p for p, t in zip(predicted_changed, truth_changed) if t]
    ratio = lambda v: sum(map(bool, v)) / len(v) if v else math.nan
    return ChangeDetectionReport(ratio(hits), ratio(called), ratio(changed), n, hits)


def match_boxes(
    predictions: Sequence[BoxPx], targets: Sequence[BoxPx], threshold: float = 0.5
) -> list[tuple[int, int, float]]:
    """One-to-one matches ``(prediction, target, iou)`` with IoU >= ``threshold``, taken greedily
    from the highest IoU down."""
    pairs = sorted(
        ((box_iou(p, t), i, j) for i, p in enumerate(predictions) for j, t in enumerate(targets)),
        reverse=True,
    )
    used_p, used_t, out = set(), set(), []
    for iou, i, j in pairs:
        if iou < threshold:
            break
        if i not in used_p and j not in used_t:
            used_p.add(i)
            used_t.add(j)
            out.append((i, j, iou))
    return out


@dataclass(frozen=True)
class ChangeGroundingReport:
    """Change grounding over pairs; see the module docstring."""

    acc_at_05: float  # reference change boxes matched at IoU >= 0.5 / all reference boxes
    precision_at_05: float  # predicted boxes matched / all predicted boxes
    miou: float  # mean over reference boxes of the IoU of their match (0 when unmatched)
    n: int  # pairs
    n_boxes: int  # reference change boxes
    per_sample: tuple[float, ...] = field(default=(), repr=False)  # share of a pair's boxes found

    def row(self) -> dict[str, float | None]:
        return {"acc@0.5": self.acc_at_05, "precision@0.5": self.precision_at_05, "miou": self.miou}


def change_grounding_scores(
    predictions: Sequence[Sequence[BoxPx]],
    targets: Sequence[Sequence[BoxPx]],
    threshold: float = 0.5,
) -> ChangeGroundingReport:
    """Scores of predicted change boxes against reference change boxes, per pair (a pair
    without change has no reference boxes; its per-sample score is 1 when nothing is predicted)."""
    n = _check_lengths(predictions=predictions, targets=targets)
    found = predicted = total = 0
    iou_sum = 0.0
    per_sample = []
    for preds, refs in zip(predictions, targets):
        loose = match_boxes(preds, refs, 0.0)  # best one-to-one overlap, for mIoU
        hits = sum(iou >= threshold for _, _, iou in loose)
        found += hits
        predicted += len(preds)
        total += len(refs)
        iou_sum += sum(iou for _, _, iou in loose)
        per_sample.append(hits / len(refs) if refs else float(not preds))
    ratio = lambda a, b: a / b if b else math.nan
    return ChangeGroundingReport(
        ratio(found, total),
        ratio(found, predicted),
        ratio(iou_sum, total),
        n,
        total,
        tuple(per_sample),
    )


# ------------------------------------------------------------------ tables

_COLUMN_NAMES = {
    "rural_urban": "Rural/Urban",
    "presence": "Presence",
    "comp": "Compare",
    "count": "Count",
    "area": "Area",
    "average": "Avg.",
    "overall": "Overall",
    "acc@0.5": "Acc@0.5",
    "precision@0.5": "Prec@0.5",
    "change_acc": "Change acc.",
    "change_precision": "Change prec.",
    "change_recall": "Change rec.",
    "miou": "mIoU",
    "bleu1": "BLEU-1",
    "rouge1": "ROUGE-1",
    "meteor": "METEOR",
    "bertscore_f1": "BERT",
}


def format_table(
    rows: Mapping[str, Mapping[str, float | None]],
    columns: Sequence[str] | None = None,
    title: str = "",
    first_column: str = "Method",
) -> str:
    """Markdown table in the paper's style: one row per method, values x100 with one decimal,
    ``-`` where a value is missing or not a number. ``columns`` default to the first row's keys."""
    if not rows:
        raise InputError("format_table needs at least one row")
    columns = list(columns) if columns is not None else list(next(iter(rows.values())))
    head = [first_column] + [_COLUMN_NAMES.get(c, c) for c in columns]
    lines = [f"**{title}**", ""] if title else []
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for name, values in rows.items():
        cells = [_cell(values.get(c)) for c in columns]
        lines.append("| " + " | ".join([name] + cells) + " |")
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{100 * value:.1f}"
