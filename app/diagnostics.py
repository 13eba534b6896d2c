"""``python launch.py --check``: one screen that says whether this machine can run GeoLens, and why not.

Each check is a small function returning a :class:`Check` (``OK``, ``WARN`` or ``FAIL``, what was
found, and for WARN/FAIL the fix in words). :func:`run_checks` runs those that apply to the
launch configuration (the same flags as ``launch.py``); :func:`report` writes them, one line each;
:func:`main` is what ``launch.py --check`` calls: it never starts the app, and returns 1 when any
check FAILs (flags that do not parse are one such FAIL), else 0.

Checked: Python; torch and CUDA (device names, memory); bitsandbytes and whether its 4-bit NF4
kernels run (a tiny ``Linear4bit`` forward on the device the model would use, compared with the
dequantized weights); GDAL/rasterio and the raster drivers GeoLens needs; open_clip and faiss; the
model folder's files against what the backbone needs (the shipped demo model: its manifest's
folders); the knowledge base folder; with ``--api-base`` the endpoint's reachability and served
models, with the same messages :class:`engine.remote.RemoteEngine` gives.
"""

from __future__ import annotations

import json
import logging
import platform
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import TextIO

from app.config import LaunchConfig, ModelSpec, parse_launch_config
from app.errors import AppError

__all__ = [
    "Check",
    "Status",
    "check_bitsandbytes",
    "check_endpoint",
    "check_gdal",
    "check_knowledge_base",
    "check_model",
    "check_python",
    "check_retrieval_libs",
    "check_torch",
    "exit_status",
    "main",
    "report",
    "run_checks",
]

log = logging.getLogger(__name__)

# Raster drivers GeoLens reads (GTiff is required; the others open common delivery formats).
REQUIRED_DRIVERS = ("GTiff",)
WANTED_DRIVERS = ("COG", "JP2OpenJPEG", "PNG", "JPEG", "WEBP")
# Weights in a Hugging Face model folder: one of these (an index also needs its shards).
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
ENDPOINT_TIMEOUT_S = 10.0


class Status(str, Enum):
    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Check:
    """One line of the report: ``name`` (what was checked), ``status``, ``detail`` (what was
    found) and ``fix`` (what to do; empty for OK)."""

    name: str
    status: Status
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"[{self.status.value:<4}] {self.name}: {self.detail}"
        return text + (f"\n         fix: {self.fix}" if self.fix else "")


def _ok(name: str, detail: str) -> Check:
    return Check(name, Status.OK, detail)


# --- the environment ----------------------------------------------------------------------------
def check_python() -> Check:
    """The interpreter (pyproject's requires-python keeps older ones from installing GeoLens)."""
    return _ok("python", f"Python {platform.python_version()} ({sys.executable})")


def check_torch(device: str = "auto") -> Check:
    """torch's version and the CUDA devices it sees (name, free/total memory)."""
    try:
        import torch
    except ImportError as exc:
        return Check("torch", Status.FAIL, f"not importable ({exc})",
                     "pip install -r requirements.txt (a CUDA build of torch for a GPU)")
    if not torch.cuda.is_available():
        detail = f"torch {torch.__version__}, no CUDA GPU (built for CUDA {torch.version.cuda or 'none'})"
        if device == "cuda":
            return Check("torch", Status.FAIL, detail,
                         "--device cuda needs a GPU torch can see: check nvidia-smi and install a torch "
                         "build matching the driver's CUDA (pytorch.org), or use --device cpu")
        return _ok("torch", detail + ": models run on the CPU (fine for the demo model, slow for 7B+)")
    gpus = []
    for i in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(i)
        gpus.append(f"cuda:{i} {torch.cuda.get_device_name(i)} "
                    f"({free / 2**30:.1f} of {total / 2**30:.1f} GiB free)")
    return _ok("torch", f"torch {torch.__version__}, CUDA {torch.version.cuda}: " + "; ".join(gpus))


def _model_device(device: str) -> str:
    """The device the model would run on for ``--device``."""
    if device != "auto":
        return device
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


def check_bitsandbytes(device: str = "cpu", required: bool = False) -> Check:
    """bitsandbytes' version and whether an NF4 ``Linear4bit`` forward runs on ``device`` and
    equals the matmul with its dequantized weights. ``required``: the model would load in NF4."""
    bad = Status.FAIL if required else Status.WARN
    try:
        import bitsandbytes as bnb
        import torch
    except ImportError as exc:
        return Check("bitsandbytes", bad, f"not importable ({exc})",
                     "pip install -r requirements.txt (bitsandbytes >= 0.45 for 4-bit NF4)")
    try:
        torch.manual_seed(0)
        dense = torch.nn.Linear(64, 32, bias=False)
        layer = bnb.nn.Linear4bit(64, 32, bias=False, compute_dtype=torch.float32, quant_type="nf4")
        layer.weight = bnb.nn.Params4bit(dense.weight.data.clone(), requires_grad=False,
                                         quant_type="nf4")
        layer = layer.to(device)
        x = torch.randn(2, 64, device=device)
        y = layer(x).float()
        w = bnb.functional.dequantize_4bit(layer.weight.data, layer.weight.quant_state).float()
        want = x @ w.t()
        err = (y - want).abs().max().item() / max(want.abs().max().item(), 1e-6)
    except Exception as exc:  # noqa: BLE001 - any kernel failure is the finding
        return Check("bitsandbytes", bad,
                     f"bitsandbytes {bnb.__version__}: a 4-bit NF4 forward on {device} failed "
                     f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})",
                     "install a bitsandbytes build for this device (pip install -U bitsandbytes; "
                     "CUDA needs a matching driver), or run unquantized (on the CPU NF4 is not used)")
    if not err < 1e-2:
        return Check("bitsandbytes", bad,
                     f"bitsandbytes {bnb.__version__}: the NF4 forward on {device} is wrong "
                     f"(relative error {err:.2g} against its dequantized weights)",
                     "reinstall bitsandbytes for this CUDA/CPU (pip install --force-reinstall bitsandbytes)")
    return _ok("bitsandbytes", f"bitsandbytes {bnb.__version__}: 4-bit NF4 kernels run on {device}")


def check_gdal() -> Check:
    """rasterio and GDAL versions and the raster drivers GeoLens needs."""
    try:
        import rasterio
    except ImportError as exc:
        return Check("GDAL", Status.FAIL, f"rasterio not importable ({exc})",
                     "pip install -r requirements.txt (the rasterio wheels bundle GDAL)")
    with rasterio.Env() as env:
        drivers = env.drivers()
    missing_required = [d for d in REQUIRED_DRIVERS if d not in drivers]
    missing = [d for d in WANTED_DRIVERS if d not in drivers]
    detail = f"rasterio {rasterio.__version__}, GDAL {rasterio.__gdal_version__}"
    have = [d for d in (*REQUIRED_DRIVERS, *WANTED_DRIVERS) if d in drivers]
    detail += f"; drivers: {', '.join(have) or 'none'}"
    if missing_required or missing:
        detail += f"; missing: {', '.join(missing_required + missing)}"
        fix = ("install the rasterio wheels from PyPI (pip install --force-reinstall rasterio), which "
               "bundle GDAL with these drivers, or a GDAL build that has them")
        if missing_required:
            return Check("GDAL", Status.FAIL, detail, fix)
        return Check("GDAL", Status.WARN, detail + " (rasters in those formats will not open)", fix)
    return _ok("GDAL", detail)


def check_retrieval_libs(required: bool = False) -> Check:
    """open_clip and faiss (retrieval); ``required``: a knowledge base is configured."""
    found, broken = [], []
    for module in ("open_clip", "faiss"):
        try:
            mod = __import__(module)
            found.append(f"{module} {getattr(mod, '__version__', '?')}")
        except ImportError as exc:
            broken.append(f"{module} ({exc})")
    if broken:
        return Check("retrieval libraries", Status.FAIL if required else Status.WARN,
                     "not importable: " + "; ".join(broken),
                     "pip install open_clip_torch faiss-cpu (both are in requirements.txt); "
                     "without them the knowledge base is not searched")
    return _ok("retrieval libraries", ", ".join(found))


# --- the model's files ------------------------------------------------------------------------------
def _missing_hf_files(folder: Path, tokenizer: bool, processor: bool) -> list[str]:
    """The files a Hugging Face model folder lacks: config, weights (and shards), tokenizer,
    image processor."""
    missing = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    weights = [name for name in WEIGHT_FILES if (folder / name).is_file()]
    if not weights:
        missing.append("weights (model.safetensors or model.safetensors.index.json + shards)")
    for index in (w for w in weights if w.endswith(".index.json")):
        try:
            shards = set(json.loads((folder / index).read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            missing.append(f"a readable {index} ({exc})")
            continue
        missing.extend(sorted(s for s in shards if not (folder / s).is_file()))
    if tokenizer and not ((folder / "tokenizer.json").is_file()
                          or ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file())):
        missing.append("tokenizer.json (or vocab.json + merges.txt)")
    if processor and not (folder / "preprocessor_config.json").is_file():
        missing.append("preprocessor_config.json")
    return missing


def _folder_check(name: str, folder: Path, missing: list[str], how: str) -> Check:
    if missing:
        return Check(name, Status.FAIL, f"{folder} lacks {', '.join(missing)}",
                     f"copy the complete model folder there ({how})")
    return _ok(name, f"{folder}: all files present")


def _download_hint(hub_name: str) -> str:
    return (f"on a machine with internet: huggingface-cli download {hub_name} --local-dir DIR, "
            "then --model DIR")


def check_model_folder(folder: Path, backbone: str) -> list[Check]:
    """A local model folder against what ``backbone`` loads: for ``paper`` ``llm/`` (Qwen2.5 LLM +
    tokenizer) and ``vision/`` (SigLIP + image processor); for the Qwen-VL families one folder
    with config, weights, tokenizer and image processor."""
    name = f"model ({backbone})"
    if not folder.is_dir():
        return [Check(name, Status.FAIL, f"{folder} is not a folder",
                      "pass the model directory with --model DIR (or a hub name in the local cache)")]
    if backbone == "paper":
        checks = []
        for part, tok, proc, hub in (("llm", True, False, "Qwen/Qwen2.5-7B-Instruct"),
                                     ("vision", False, True, "google/siglip2-so400m-patch14-384")):
            missing = _missing_hf_files(folder / part, tokenizer=tok, processor=proc)
            if not (folder / part).is_dir():
                missing = [f"the {part}/ folder"]
            checks.append(_folder_check(f"{name} {part}", folder / part, missing, _download_hint(hub)))
        return checks
    from engine.config import DEFAULT_MODEL_PATHS

    hub = DEFAULT_MODEL_PATHS[backbone][0]
    return [_folder_check(name, folder, _missing_hf_files(folder, tokenizer=True, processor=True),
                          _download_hint(hub))]


def check_hub_model(name: str, backbone: str) -> Check:
    """A hub name: resolvable only when its files are in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    label = f"model ({backbone})"
    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return _ok(label, f"{name} is in the Hugging Face cache")
    return Check(label, Status.FAIL, f"{name!r} is neither a folder nor in the Hugging Face cache",
                 _download_hint(name))


def check_adapter(folder: Path) -> Check:
    missing = [f for f in ("adapter_config.json", "adapter.safetensors") if not (folder / f).is_file()]
    if not folder.is_dir():
        missing = ["the folder itself"]
    if missing:
        return Check("adapter", Status.FAIL, f"{folder} lacks {', '.join(missing)}",
                     "pass the folder engine.train wrote (--adapter DIR), or leave --adapter out")
    return _ok("adapter", f"{folder}: all files present")


def check_knowledge_base(folder: Path, embedder_dir: Path | None = None) -> Check:
    """A knowledge base folder (``engine.retrieval`` build): manifest, index, texts; and the
    embedder it was built with, when that is a saved folder."""
    if not folder.is_dir():
        return Check("knowledge base", Status.FAIL, f"{folder} is not a folder",
                     "pass the folder python -m engine.retrieval build wrote (--kb DIR), or leave --kb out")
    missing = [f for f in ("manifest.json", "index.faiss", "texts.jsonl") if not (folder / f).is_file()]
    if missing:
        return Check("knowledge base", Status.FAIL, f"{folder} lacks {', '.join(missing)}",
                     "rebuild it with python -m engine.retrieval build, or fix --kb")
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        count, dim = manifest["count"], manifest["dim"]
        embedder = manifest.get("embedder") or {}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return Check("knowledge base", Status.FAIL, f"{folder}/manifest.json is unreadable ({exc!r})",
                     "rebuild it with python -m engine.retrieval build")
    detail = f"{folder}: {count} descriptions, {dim}-d embeddings"
    if embedder_dir is not None:
        missing = [f for f in ("open_clip_config.json", "open_clip_model.safetensors")
                   if not (embedder_dir / f).is_file()]
        if missing:
            return Check("knowledge base", Status.FAIL, f"its CLIP folder {embedder_dir} lacks "
                         f"{', '.join(missing)}", "rebuild the demo: python assets/build_demo.py")
        return _ok("knowledge base", detail + f", CLIP {embedder_dir}")
    if embedder.get("kind") == "saved" and not Path(embedder.get("path", "")).is_dir():
        return Check("knowledge base", Status.WARN,
                     detail + f"; the CLIP it was built with ({embedder.get('path')}) is not here",
                     "copy that saved ClipEmbedder folder to the recorded path, or rebuild the knowledge "
                     "base with an embedder this machine has")
    return _ok("knowledge base", detail)


def check_demo(manifest_path: Path) -> list[Check]:
    """The shipped demo model: its manifest, model, adapter, CLIP and knowledge base folders."""
    from engine.demo.manifest import read_demo_manifest
    from engine.errors import EngineError

    try:
        demo = read_demo_manifest(manifest_path)
    except EngineError as exc:
        return [Check("demo model", Status.FAIL, str(exc), "rebuild it: python assets/build_demo.py")]
    checks = [_ok("demo model", f"{demo.path}: {demo.label}")]
    checks += check_model_folder(demo.model_dir, "paper")
    checks.append(check_adapter(demo.adapter_dir))
    if demo.kb_dir is not None:
        checks.append(check_knowledge_base(demo.kb_dir, embedder_dir=demo.embedder_dir))
    return checks


def check_model(spec: ModelSpec) -> list[Check]:
    """The model of the launch flags (local only: a served model is :func:`check_endpoint`'s)."""
    if spec.remote is not None:
        return []
    if spec.model is None:
        return [Check("model", Status.WARN, "no model named and no demo model built: asking is off",
                      "start with --model DIR, or build the demo: python assets/build_demo.py")]
    if spec.is_demo:
        return check_demo(Path(spec.model))
    folder = Path(spec.model).expanduser()
    if folder.exists() or spec.backbone == "paper":
        checks = check_model_folder(folder, spec.backbone)
    else:
        checks = [check_hub_model(spec.model, spec.backbone)]
    if spec.adapter is not None:
        checks.append(check_adapter(spec.adapter))
    return checks


# --- the endpoint -----------------------------------------------------------------------------------
def check_endpoint(config) -> Check:
    """An ``engine.remote.RemoteConfig``'s endpoint: reachable, and serving ``api_model``
    (one try, at most ``ENDPOINT_TIMEOUT_S``; failures read as :class:`RemoteEngine`'s)."""
    from engine.errors import EngineError
    from engine.remote import RemoteEngine

    probe = replace(config, max_retries=0, timeout_s=min(config.timeout_s, ENDPOINT_TIMEOUT_S),
                    retrieval=None)
    name = f"endpoint {config.api_base}"
    try:
        engine = RemoteEngine.connect(probe)
        served = engine.served_models()
    except EngineError as exc:
        return Check(name, Status.FAIL, str(exc),
                     "start the server (README, 'Models') or fix --api-base / --api-model / --api-key-env")
    kind = "engine.serve" if engine.geolens else "OpenAI-compatible server"
    return _ok(name, f"{kind} serving {', '.join(served)}; using {config.api_model!r} "
                     f"with {config.box_format} boxes")


# --- the report -------------------------------------------------------------------------------------
def run_checks(launch: LaunchConfig) -> list[Check]:
    """Every check that applies to ``launch``, in report order."""
    spec = launch.model
    local = spec.remote is None and spec.model is not None
    device = _model_device(spec.device) if local else "cpu"
    quant_auto_nf4 = local and device == "cuda"
    uses_kb = spec.kb is not None or (local and spec.is_demo)
    checks: list[Check] = [check_python(), check_torch(spec.device if local else "auto"),
                           check_bitsandbytes(device, required=quant_auto_nf4), check_gdal(),
                           check_retrieval_libs(required=uses_kb)]
    checks += _guarded("model", lambda: check_model(spec))
    if spec.kb is not None:
        checks += _guarded("knowledge base",
                           lambda: [check_knowledge_base(spec.kb, _demo_embedder_for(spec.kb))])
    if spec.remote is not None:
        checks += _guarded("endpoint", lambda: [check_endpoint(spec.remote)])
    return checks


def _demo_embedder_for(kb: Path) -> Path | None:
    """The demo's CLIP folder when ``kb`` is the shipped demo knowledge base (which records its
    build-time embedder path; the engine loads it with the demo CLIP), else None."""
    from engine.demo.manifest import DEMO_MANIFEST, read_demo_manifest

    if not DEMO_MANIFEST.is_file():
        return None
    demo = read_demo_manifest(DEMO_MANIFEST)
    same = demo.kb_dir is not None and kb.resolve() == demo.kb_dir.resolve()
    return demo.embedder_dir if same else None


def _guarded(name: str, run: Callable[[], list[Check]]) -> list[Check]:
    """A check that itself breaks is reported, not raised: the report must always print."""
    try:
        return run()
    except Exception as exc:
        log.debug("check %s failed", name, exc_info=True)
        return [Check(name, Status.FAIL, f"the check itself failed: {type(exc).__name__}: {exc}",
                      "report this with the full output of python launch.py --check")]


def exit_status(checks: Sequence[Check]) -> int:
    """1 if any check FAILs, else 0."""
    return int(any(c.status is Status.FAIL for c in checks))


def report(checks: Sequence[Check], out: TextIO) -> None:
    """One line per check (and its fix), then a summary line."""
    out.writelines(check.line() + "\n" for check in checks)
    fails = sum(c.status is Status.FAIL for c in checks)
    warns = sum(c.status is Status.WARN for c in checks)
    verdict = "GeoLens can start" if not fails else "fix the FAIL lines above before starting GeoLens"
    out.write(f"{len(checks)} checks: {fails} FAIL, {warns} WARN: {verdict}\n")


def main(argv: Sequence[str] | None, environ: Mapping[str, str], demo_manifest: Path | None,
         out: TextIO | None = None) -> int:
    """``launch.py --check``: parse the same flags, run the checks, write the report to ``out``
    (stdout). Flags that do not parse are a FAIL line, and the environment is still checked."""
    out = sys.stdout if out is None else out
    for name in ("faiss.loader", "httpx", "httpx2"):  # import and request chatter is no finding
        logging.getLogger(name).setLevel(logging.WARNING)
    out.write("GeoLens diagnostics (python launch.py --check)\n")
    try:
        launch = parse_launch_config(argv, environ, demo_manifest=demo_manifest)
    except AppError as exc:
        checks = [Check("flags", Status.FAIL, str(exc), "fix the flag or GEOLENS_* variable named"),
                  check_python(), check_torch(), check_bitsandbytes(_model_device("auto")),
                  check_gdal(), check_retrieval_libs()]
        report(checks, out)
        return exit_status(checks)
    checks = run_checks(launch)
    report(checks, out)
    return exit_status(checks)
