"""Semantic knowledge database and CLIP retriever (seed paper section III-A1).

Descriptions (captions, reports, an analyst's notes; each with a source and an optional level
tag ``scene``/``object``) are embedded by an open_clip *text* tower into a faiss index stored
beside a ``texts.jsonl`` and a ``manifest.json``. An image crop is embedded by the same model's
*image* tower and the top-k descriptions by cosine similarity come back as
:class:`engine.types.Evidence`.

Typical use::

    from engine.retrieval import ClipEmbedder, KnowledgeBase, Retriever, read_corpus

    embedder = ClipEmbedder.from_pretrained("ViT-B-32", "checkpoints/RemoteCLIP-ViT-B-32.pt")
    kb = KnowledgeBase.build(read_corpus(["notes.txt", "captions/rsicd"]), embedder, Path("kb"))
    kb = KnowledgeBase.load(Path("kb"), embedder)           # later, in another process
    evidence = Retriever(kb, embedder).retrieve_for_image(crop_rgb_uint8, k=5)

Command line: ``python -m engine.retrieval build|query|info --help``.

Submodules: ``corpus`` (formats), ``embedder`` (open_clip; RemoteCLIP / GeoRSCLIP usage),
``index`` (faiss kinds, parameters, tuning), ``ingest`` (dedup + embed + index), ``texts`` /
``manifest`` (storage), ``knowledge_base``, ``retriever``, ``cli``. Importing this
package loads numpy only; faiss, torch and open_clip load on first use.
"""

from engine.retrieval.corpus import (
    CORPUS_FORMATS,
    Description,
    iter_corpus,
    normalise_text,
    read_corpus,
)
from engine.retrieval.embedder import ClipEmbedder
from engine.retrieval.index import FLAT_MAX_VECTORS, INDEX_KINDS, IndexSpec, choose_spec
from engine.retrieval.knowledge_base import KnowledgeBase
from engine.retrieval.manifest import Manifest, read_manifest
from engine.retrieval.retriever import Retriever

__all__ = [
    "CORPUS_FORMATS",
    "FLAT_MAX_VECTORS",
    "INDEX_KINDS",
    "ClipEmbedder",
    "Description",
    "IndexSpec",
    "KnowledgeBase",
    "Manifest",
    "Retriever",
    "choose_spec",
    "iter_corpus",
    "normalise_text",
    "read_corpus",
    "read_manifest",
]
