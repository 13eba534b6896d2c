"""Words for synthetic scenes: object phrases, captions and knowledge-base descriptions.

Everything here is templated from the ground truth (never from pixels), with a seeded random
generator choosing among equivalent wordings so the text varies but always stays true.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from lab.synthetic.scene import SceneObject

__all__ = [
    "COUNT_QUESTIONS",
    "KIND_PLURALS",
    "PRESENCE_QUESTIONS",
    "REGION_QUESTIONS",
    "SCENE_NAMES",
    "noun",
    "object_caption",
    "object_description",
    "object_phrase",
    "scene_caption",
    "with_article",
]

SCENE_NAMES = {
    "rural": ("a rural area", "farmland", "an agricultural landscape", "a rural landscape"),
    "urban": (
        "an urban area",
        "a residential neighbourhood",
        "a town district",
        "a built-up urban area",
    ),
    "industrial": (
        "an industrial area",
        "an industrial zone",
        "an industrial estate",
        "a factory district",
    ),
}
KIND_PLURALS = {
    "building": "buildings",
    "water": "water bodies",
    "road": "roads",
    "field": "fields",
    "forest": "forests",
    "vehicle": "vehicles",
    "storage_tank": "storage tanks",
}
PRESENCE_QUESTIONS = {
    "building": (
        "Is there a building?",
        "Are there any buildings in the image?",
        "Is a building present?",
    ),
    "water": (
        "Is there a water body?",
        "Is there any water in the image?",
        "Is a water body present?",
    ),
    "road": ("Is there a road?", "Are there any roads in the image?", "Is a road present?"),
    "field": (
        "Is there a crop field?",
        "Are there any agricultural fields?",
        "Is a cultivated field present?",
    ),
    "forest": (
        "Is there a forest?",
        "Is there a wooded area in the image?",
        "Is a forest present?",
    ),
    "storage_tank": (
        "Is there a storage tank?",
        "Are there any storage tanks?",
        "Is a storage tank present?",
    ),
}
COUNT_QUESTIONS = {
    "building": (
        "How many buildings are there?",
        "What is the number of buildings?",
        "How many buildings can you see?",
    ),
    "storage_tank": (
        "How many storage tanks are there?",
        "What is the number of storage tanks?",
        "How many storage tanks can you see?",
    ),
}
REGION_QUESTIONS = (
    "What is in this box?",
    "What is inside the marked region?",
    "What does the box contain?",
)


def _choice(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def noun(kind: str, subtype: str | None = None) -> str:
    """Bare noun of an object kind (water uses its subtype: lake, river, pond)."""
    if kind == "water":
        return subtype or "water body"
    return {"storage_tank": "storage tank", "vehicle": subtype or "vehicle"}.get(kind, kind)


def object_phrase(
    kind: str, colour: str | None = None, subtype: str | None = None, variant: int = 0
) -> str:
    """Noun phrase without article: ``building with a red roof``, ``white storage tank``."""
    base = noun(kind, subtype)
    if colour is None or kind in ("water", "forest", "road"):
        return base
    if kind == "building":
        return (
            f"building with {with_article(colour)} roof"
            if variant % 2 == 0
            else f"{colour}-roofed building"
        )
    return f"{colour} {base}"


def with_article(phrase: str) -> str:
    """``a red roof`` / ``an orange roof``."""
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _size_word(obj: SceneObject) -> str:
    area = obj.area_m2
    small, large = {"building": (150, 600), "storage_tank": (250, 450), "water": (800, 3000)}.get(
        obj.kind, (0, 1e12)
    )
    return "small " if area < small else "large " if area > large else ""


def object_caption(obj: SceneObject, rng: np.random.Generator) -> str:
    """One-sentence object-level caption (``A large house with a red roof.``)."""
    if obj.kind == "building":
        kind_word = obj.subtype or "building"
        text = f"{with_article(_size_word(obj) + kind_word)} with {with_article(obj.colour)} roof"
        text += _choice(rng, ("", " casting a shadow", " and its shadow"))
    elif obj.kind == "storage_tank":
        text = with_article(f"{_size_word(obj)}round {obj.colour} storage tank")
    elif obj.kind == "water":
        text = with_article(_size_word(obj) + noun("water", obj.subtype)) + _choice(
            rng, ("", " with dark water")
        )
    elif obj.kind == "vehicle":
        text = with_article(f"{obj.colour} {obj.subtype or 'vehicle'}")
    elif obj.kind == "field":
        text = with_article(f"{obj.colour} crop field") + _choice(
            rng, (" with visible crop rows", "")
        )
    else:
        text = with_article(noun(obj.kind, obj.subtype))
    return text[0].upper() + text[1:] + "."


def object_description(obj: SceneObject, scene_class: str) -> str:
    """Knowledge-base sentence for one object, with its real size."""
    what = object_caption(obj, np.random.default_rng(obj.id))[:-1]
    where = {
        "rural": "in farmland",
        "urban": "in a residential area",
        "industrial": "in an industrial area",
    }[scene_class]
    extra = ""
    if obj.kind in ("building", "storage_tank", "water", "field", "forest"):
        extra = f", about {obj.area_m2:,.0f} square metres"
    if obj.height_m is not None and obj.kind in ("building", "storage_tank"):
        extra += f", about {obj.height_m:.0f} m high"
    return f"{what} {where}{extra}."


def _count_phrase(n: int, singular: str, plural: str) -> str:
    words = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
    word = words[n] if n < len(words) else str(n)
    return f"{word} {singular if n == 1 else plural}"


def _colours(objs: list[SceneObject]) -> str:
    top = [c for c, _ in Counter(o.colour for o in objs if o.colour).most_common(2)]
    return " and ".join(top)


def _amount(n: int | None, shown: int, singular: str, plural: str) -> str:
    """Exact number words when the count is certain, else a vague quantity."""
    if n is not None:
        return _count_phrase(n, singular, plural)
    return f"{'many' if shown >= 6 else 'several' if shown >= 2 else 'some'} {plural}"


def scene_caption(
    scene_class: str,
    objs: Sequence[SceneObject],
    rng: np.random.Generator,
    counts: dict[str, int | None] | None = None,
) -> str:
    """Scene-level caption from the objects shown in an image. ``counts`` gives the certain
    number of buildings / storage tanks (None: uncertain, say "several"); without it the
    objects in ``objs`` are counted."""
    counts = counts or {}
    by_kind: dict[str, list[SceneObject]] = {}
    for obj in objs:
        by_kind.setdefault(obj.kind, []).append(obj)
    clauses = []
    if "building" in by_kind:
        b = by_kind["building"]
        n = counts.get("building", len(b))
        roofs = f"with {with_article(_colours(b))} roof" if n == 1 else f"with {_colours(b)} roofs"
        clauses.append(f"{_amount(n, len(b), 'building', 'buildings')} {roofs}")
    if "storage_tank" in by_kind:
        tanks = by_kind["storage_tank"]
        clauses.append(
            _amount(
                counts.get("storage_tank", len(tanks)), len(tanks), "storage tank", "storage tanks"
            )
        )
    if "field" in by_kind:
        clauses.append(f"{_colours(by_kind['field'])} crop fields")
    if "forest" in by_kind:
        clauses.append(_choice(rng, ("a patch of forest", "some woodland", "a dense forest")))
    for water in by_kind.get("water", [])[:1]:
        clauses.append(with_article(noun("water", water.subtype)))
    if "road" in by_kind:
        clauses.append(_choice(rng, ("a road", "roads")) if scene_class == "rural" else "streets")
    if "vehicle" in by_kind:
        clauses.append(_choice(rng, ("some vehicles", "a few vehicles")))
    rng.shuffle(clauses)
    head = _choice(rng, SCENE_NAMES[scene_class])
    text = (
        head
        if not clauses
        else f"{head} with "
        + (clauses[0] if len(clauses) == 1 else ", ".join(clauses[:-1]) + " and " + clauses[-1])
    )
    return text[0].upper() + text[1:] + "."
