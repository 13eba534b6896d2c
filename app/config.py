"""Launch configuration: command-line flags with ``GEOLENS_*`` environment fallbacks.

Parsed once, at the edge (``launch.py``), into frozen dataclasses; nothing inside the app reads
the environment. Precedence: flag, then environment variable, then default.

=====================  ======================  =============================================
flag                   environment             meaning
=====================  ======================  =============================================
--raster PATH (rep.)   GEOLENS_RASTER          rasters to open (env: separated by ``os.pathsep``)
--model PATH_OR_NAME   GEOLENS_MODEL           model directory or hub name
--backbone NAME        GEOLENS_BACKBONE        ``paper``, ``qwen2.5-vl`` or ``qwen3-vl``
--adapter PATH         GEOLENS_ADAPTER         trained adapter (prompter, experts, LoRA)
--kb DIR               GEOLENS_KB              semantic knowledge base folder
--workspace DIR        GEOLENS_WORKSPACE       results, uploads, caches (default ./workspace)
--host HOST            GEOLENS_HOST            bind address (default 127.0.0.1)
--port N               GEOLENS_PORT            port (default 7860)
--device D             GEOLENS_DEVICE          ``auto``, ``cuda`` or ``cpu``
--auth USER:PASS       GEOLENS_AUTH            one login (visible in ``ps``: prefer the env var or a file)
--auth-file FILE       GEOLENS_AUTH_FILE       logins, one USER:PASS per line (several analysts)
--data-dir DIR (rep.)  GEOLENS_DATA_DIR        folders open-by-path may read (required off loopback)
--trusted-dir DIR      GEOLENS_TRUSTED_DIR     folders whose rasters may use any GDAL driver (VRT)
--allowed-host NAME    GEOLENS_ALLOWED_HOST    extra Host names the server answers to (rebinding guard)
--allow-network-rasters GEOLENS_ALLOW_NETWORK  let GDAL read URLs (/vsicurl, http://) of trusted rasters
--max-upload-mb N      GEOLENS_MAX_UPLOAD_MB   largest upload (default 4096)
--max-question-chars N GEOLENS_MAX_QUESTION_CHARS longest question (default 2000)
--max-answer-tokens N  GEOLENS_MAX_ANSWER_TOKENS  longest answer in tokens (default: the model's, 256)
--point-size-m M       GEOLENS_POINT_SIZE_M    ground size a clicked point asks about (demo model: 64 m)
--max-crop-px N        GEOLENS_MAX_CROP_PX     longest side of the image handed to the model
--no-basemaps          GEOLENS_BASEMAPS=0      hide the optional online basemaps entirely
--api-base URL         GEOLENS_API_BASE        an OpenAI-compatible endpoint (``.../v1``) instead of --model
--api-model NAME       GEOLENS_API_MODEL       the model name that endpoint serves (required with --api-base)
--api-key-env VAR      GEOLENS_API_KEY_ENV     environment variable holding the endpoint's API key
--box-format FAMILY    GEOLENS_BOX_FORMAT      box convention of the remote model (``engine.boxes``)
--check                (none)                  print the diagnostics report (``app.diagnostics``), then exit
=====================  ======================  =============================================
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from app.errors import AppConfigError
from engine.boxes import BOX_CONVENTIONS
from engine.config import BACKBONE_NAMES, EngineConfig, RetrievalConfig
from engine.config import DEVICES as ENGINE_DEVICES
from engine.errors import EngineError
from engine.net import is_loopback
from engine.remote import RemoteConfig

__all__ = [
    "BACKBONES",
    "DEVICES",
    "ENV_PREFIX",
    "AppConfig",
    "Auth",
    "LaunchConfig",
    "ModelSpec",
    "build_arg_parser",
    "engine_config_for",
    "is_loopback",
    "parse_launch_config",
    "read_logins",
]

log = logging.getLogger(__name__)

ENV_PREFIX = "GEOLENS_"
BACKBONES = BACKBONE_NAMES
DEVICES = ENGINE_DEVICES
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
REMOTE_BOX_FORMATS = (*BOX_CONVENTIONS, "qwen3.5", "glm-v")  # names and aliases (engine.boxes)


@dataclass(frozen=True)
class Auth:
    """One login for the app (HTTP basic auth); the password never appears in ``repr``."""

    username: str
    password: str = field(repr=False)

    def __post_init__(self) -> None:
        if not self.username or not self.password:
            raise AppConfigError("--auth needs a non-empty user and password, as USER:PASS")

    @classmethod
    def parse(cls, text: str) -> Auth:
        """``Auth`` from ``"USER:PASS"`` (the password may itself contain ``:``)."""
        user, sep, password = text.partition(":")
        if not sep:
            raise AppConfigError("--auth must look like USER:PASS (no ':' found); e.g. --auth analyst:s3cret")
        return cls(user, password)


def read_logins(path: Path) -> tuple[Auth, ...]:
    """Logins from a file with one ``USER:PASS`` per line (``#`` comments and blank lines skipped)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AppConfigError(f"cannot read the login file {str(path)!r}: {exc}") from None
    logins = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            logins.append(Auth.parse(line))
        except AppConfigError as exc:
            raise AppConfigError(f"{path}, line {n}: {exc}") from None
    if not logins:
        raise AppConfigError(f"the login file {str(path)!r} holds no USER:PASS line")
    users = [a.username for a in logins]
    if len(set(users)) != len(users):
        raise AppConfigError(f"the login file {str(path)!r} names a user twice; each user needs one line")
    return tuple(logins)


@dataclass(frozen=True)
class ModelSpec:
    """The model the analyst asked for; turned into ``engine.EngineConfig`` once, at launch.

    ``model`` is None when no model was named and no demo model ships: the app then runs without
    one (map, tiles, drawing, results and export keep working). With ``is_demo`` it is the path
    of the demo's ``demo.json`` (see ``engine.demo.manifest``).
    """

    model: str | None
    backbone: str = "paper"
    adapter: Path | None = None
    kb: Path | None = None
    device: str = "auto"
    is_demo: bool = False
    remote: RemoteConfig | None = None  # --api-base: the model runs at an OpenAI-compatible endpoint

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise AppConfigError(f"unknown backbone {self.backbone!r}; use one of: {', '.join(BACKBONES)}")
        if self.device not in DEVICES:
            raise AppConfigError(f"unknown device {self.device!r}; use one of: {', '.join(DEVICES)}")


@dataclass(frozen=True)
class AppConfig:
    """Everything the app (server, UI, workspace) needs, validated once."""

    rasters: tuple[Path, ...] = ()
    workspace: Path = Path("workspace")
    host: str = "127.0.0.1"
    port: int = 7860
    logins: tuple[Auth, ...] = ()
    point_size_m: float = 100.0
    max_crop_px: int = 1024
    basemaps: bool = True
    use_demo_raster: bool = False
    data_dirs: tuple[Path, ...] = ()
    trusted_dirs: tuple[Path, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    allow_network_rasters: bool = False
    max_upload_mb: int = 4096
    max_question_chars: int = 2000
    max_answer_tokens: int | None = None

    @property
    def on_network(self) -> bool:
        """True when the server is reachable from other machines (not bound to loopback)."""
        return not is_loopback(self.host)

    @property
    def multi_user(self) -> bool:
        """True when several logins exist: answers are kept per analyst."""
        return len(self.logins) > 1

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise AppConfigError(f"--port must be 0..65535, got {self.port}")
        if not (math.isfinite(self.point_size_m) and self.point_size_m > 0):
            raise AppConfigError(f"--point-size-m must be a positive number of metres, got {self.point_size_m}")
        if self.max_crop_px < 32:
            raise AppConfigError(f"--max-crop-px must be at least 32, got {self.max_crop_px}")
        if not is_loopback(self.host) and not self.logins:
            raise AppConfigError(
                f"refusing to serve on {self.host!r} without a login: anyone on the network could "
                f"read your rasters and results. Add logins with --auth-file FILE (lines USER:PASS) "
                f"or GEOLENS_AUTH=USER:PASS (--auth USER:PASS works too but shows in `ps`), or bind "
                f"--host 127.0.0.1"
            )
        for name in ("max_upload_mb", "max_question_chars"):
            if getattr(self, name) < 1:
                raise AppConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.max_answer_tokens is not None and self.max_answer_tokens < 1:
            raise AppConfigError(f"--max-answer-tokens must be at least 1, got {self.max_answer_tokens}")
        for d in (*self.data_dirs, *self.trusted_dirs):
            if not d.is_dir():
                raise AppConfigError(f"--data-dir/--trusted-dir {str(d)!r} is not a folder; create it or fix the path")


@dataclass(frozen=True)
class LaunchConfig:
    """The result of parsing the command line once: the app's config, what the analyst asked
    for about the model, and the engine's own config (None when the app runs without a model)."""

    app: AppConfig
    model: ModelSpec
    engine: EngineConfig | RemoteConfig | None


def engine_config_for(spec: ModelSpec) -> EngineConfig | RemoteConfig | None:
    """``engine.EngineConfig`` for the requested model (``RemoteConfig`` with --api-base); None
    when no model is named."""
    if spec.remote is not None:
        return spec.remote
    if spec.model is None:
        return None
    try:
        if spec.is_demo:
            from engine.demo.manifest import demo_engine_config

            return demo_engine_config(spec.model, device=spec.device)
        return EngineConfig(
            backbone=spec.backbone,
            model_path=spec.model,
            adapter_path=spec.adapter,
            device=spec.device,
            retrieval=RetrievalConfig(kb_dir=spec.kb),
        )
    except EngineError as exc:
        raise AppConfigError(f"invalid model settings: {exc}") from exc


def build_arg_parser() -> argparse.ArgumentParser:
    """The ``launch.py`` parser; every default is None so environment fallbacks can apply."""
    p = argparse.ArgumentParser(
        prog="launch.py",
        description="GeoLens: open rasters on a map, draw a region, ask a remote-sensing VLM. "
        f"Every flag also reads an environment variable {ENV_PREFIX}<FLAG> (see app/config.py).",
    )
    p.add_argument("--raster", action="append", metavar="PATH", help="raster to open (repeatable)")
    p.add_argument("--model", metavar="PATH_OR_NAME", help="model directory or name (default: demo model)")
    p.add_argument("--backbone", choices=BACKBONES, help="model family (default: paper)")
    p.add_argument("--adapter", metavar="PATH", help="trained adapter directory")
    p.add_argument("--kb", metavar="DIR", help="semantic knowledge base directory (with --api-base too: retrieved descriptions go into the prompt)")
    p.add_argument("--workspace", metavar="DIR", help="results, uploads and caches (default: ./workspace)")
    p.add_argument("--host", help="bind address (default: 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: 7860)")
    p.add_argument("--device", choices=DEVICES, help="where the model runs (default: auto)")
    p.add_argument("--auth", metavar="USER:PASS", help="one login (shows in `ps`: prefer GEOLENS_AUTH or --auth-file)")
    p.add_argument("--auth-file", metavar="FILE", help="logins, one USER:PASS per line; required (or --auth) for a non-loopback --host")
    p.add_argument("--data-dir", action="append", metavar="DIR", help="folder that open-by-path may read (repeatable; required for open-by-path on a non-loopback --host)")
    p.add_argument("--trusted-dir", action="append", metavar="DIR", help="folder whose rasters may use any GDAL driver, VRT included (repeatable)")
    p.add_argument("--allowed-host", action="append", metavar="NAME", help="host name the server answers to besides loopback names (repeatable)")
    p.add_argument("--allow-network-rasters", action="store_true", default=None, help="let GDAL read URLs (/vsicurl/, http://) for trusted rasters")
    p.add_argument("--max-upload-mb", type=int, metavar="N", help="largest upload in MB (default: 4096)")
    p.add_argument("--max-question-chars", type=int, metavar="N", help="longest question (default: 2000)")
    p.add_argument("--max-answer-tokens", type=int, metavar="N", help="longest answer in tokens (default: the model's)")
    p.add_argument("--point-size-m", type=float, metavar="M", help="ground size asked about for a clicked point (default: 100; 64 with the demo model)")
    p.add_argument("--max-crop-px", type=int, metavar="N", help="longest side of the crop sent to the model (default: 1024)")
    p.add_argument("--no-basemaps", action="store_true", default=None, help="do not offer online basemaps at all")
    p.add_argument("--api-base", metavar="URL", help="use the model at this OpenAI-compatible endpoint (vLLM, llama.cpp, Ollama, LM Studio, python -m engine.serve), e.g. http://127.0.0.1:8000/v1, instead of loading one")
    p.add_argument("--api-model", metavar="NAME", help="the model name the --api-base endpoint serves (GET /v1/models lists them)")
    p.add_argument("--api-key-env", metavar="VAR", help="environment variable holding the --api-base endpoint's API key")
    p.add_argument("--check", action="store_true", help="print a diagnostics report (Python, torch/CUDA, bitsandbytes 4-bit kernels, GDAL drivers, retrieval libraries, the model folder's files, the knowledge base, the --api-base endpoint and its models) and exit without starting the app; exit status 1 if any line FAILs")
    p.add_argument("--box-format", choices=REMOTE_BOX_FORMATS, help="how the remote model writes boxes: qwen2.5-vl (pixels of its resized image), qwen3-vl (Qwen3-VL, Qwen3.5, GLM-V: 0-1000 relative), paper (GeoLens adapter); default qwen2.5-vl")
    return p


class _Env:
    """Typed reads of ``GEOLENS_*`` variables with messages that name the variable."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def text(self, name: str) -> str | None:
        value = self._environ.get(ENV_PREFIX + name, "").strip()
        return value or None

    def number(self, name: str, kind: type) -> int | float | None:
        value = self.text(name)
        if value is None:
            return None
        try:
            return kind(value)
        except ValueError:
            raise AppConfigError(f"{ENV_PREFIX}{name}={value!r} is not a valid {kind.__name__}") from None

    def outside(self, var: str) -> str | None:
        """A variable outside the ``GEOLENS_`` prefix that a flag names (an API key)."""
        value = self._environ.get(var, "").strip()
        return value or None

    def flag(self, name: str) -> bool | None:
        value = self.text(name)
        if value is None:
            return None
        if value.lower() in _TRUE + _FALSE:
            return value.lower() in _TRUE
        raise AppConfigError(f"{ENV_PREFIX}{name}={value!r}: use one of {', '.join(_TRUE + _FALSE)}")


def _first(*values):
    return next((v for v in values if v is not None), None)


def _remote_config(args: argparse.Namespace, env: _Env) -> RemoteConfig | None:
    """The remote model of --api-base (None without it); the API key is read here, at the edge."""
    api_base = _first(args.api_base, env.text("API_BASE"))
    if api_base is None:
        return None
    api_model = _first(args.api_model, env.text("API_MODEL"))
    if api_model is None:
        raise AppConfigError(f"--api-base {api_base} needs --api-model NAME: the model name that endpoint "
                             f"serves (GET {api_base.rstrip('/')}/models lists them)")
    key_env = _first(args.api_key_env, env.text("API_KEY_ENV"))
    key = env.outside(key_env) if key_env else None
    if key_env and key is None:
        raise AppConfigError(f"--api-key-env {key_env}: that environment variable is unset or empty; "
                             "export it with the endpoint's API key")
    kb = _first(args.kb, env.text("KB"))  # descriptions retrieved here go into the remote prompt
    try:
        return RemoteConfig(api_base=api_base.rstrip("/"), api_model=api_model, api_key_env=key_env,
                            box_format=_first(args.box_format, env.text("BOX_FORMAT"), "qwen2.5-vl"),
                            api_key=key,
                            retrieval=RetrievalConfig(kb_dir=Path(kb).expanduser()) if kb else None)
    except EngineError as exc:
        raise AppConfigError(f"invalid remote model settings: {exc}") from exc


def _model_spec(args: argparse.Namespace, env: _Env, demo_manifest: Path | None) -> ModelSpec:
    model = _first(args.model, env.text("MODEL"))
    remote = _remote_config(args, env)
    if remote is not None:
        if model is not None:
            raise AppConfigError("--model and --api-base both name a model: use --model PATH to run one "
                                 "in this process, or --api-base URL --api-model NAME for a served one")
        return ModelSpec(model=remote.api_model, device=_first(args.device, env.text("DEVICE"), "auto"),
                         kb=remote.retrieval.kb_dir if remote.retrieval else None, remote=remote)
    is_demo = model is None and demo_manifest is not None
    adapter = _first(args.adapter, env.text("ADAPTER"))
    kb = _first(args.kb, env.text("KB"))
    return ModelSpec(
        model=str(demo_manifest) if is_demo else model,
        backbone=_first(args.backbone, env.text("BACKBONE"), "paper"),
        adapter=Path(adapter).expanduser() if adapter else None,
        kb=Path(kb).expanduser() if kb else None,
        device=_first(args.device, env.text("DEVICE"), "auto"),
        is_demo=is_demo,
    )


def _default_point_size_m(spec: ModelSpec) -> float:
    """100 m, or for the demo model the ground size it was trained on (``recommended_region_m``
    in demo.json: 128 px crops at 0.5 m), so a clicked point gives it the scale it knows."""
    if spec.is_demo and spec.model is not None:
        try:
            data = json.loads(Path(spec.model).read_text(encoding="utf-8"))
            return float(data["recommended_region_m"])
        except (OSError, ValueError, KeyError, TypeError):
            pass  # a broken demo.json is reported when the model loads
    return 100.0


def parse_launch_config(
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    demo_manifest: Path | None = None,
) -> LaunchConfig:
    """Parse flags + environment into a :class:`LaunchConfig` (raises :class:`AppConfigError`).

    ``demo_manifest`` is the shipped demo's ``demo.json`` when it exists; the demo model is used
    when no model is named. Without ``--raster`` the app opens the demo raster.
    """
    environ = os.environ if environ is None else environ
    args = build_arg_parser().parse_args(argv)
    env = _Env(environ)
    raster_env = env.text("RASTER")
    rasters = args.raster or ([r for r in raster_env.split(os.pathsep) if r] if raster_env else [])
    logins = _logins(args, env)
    spec = _model_spec(args, env, demo_manifest)
    basemaps_off = args.no_basemaps or env.flag("BASEMAPS") is False
    app = AppConfig(
        rasters=tuple(Path(r).expanduser() for r in rasters),
        workspace=Path(_first(args.workspace, env.text("WORKSPACE"), "workspace")).expanduser(),
        host=_first(args.host, env.text("HOST"), "127.0.0.1"),
        port=_first(args.port, env.number("PORT", int), 7860),
        logins=logins,
        point_size_m=_first(
            args.point_size_m, env.number("POINT_SIZE_M", float), _default_point_size_m(spec)
        ),
        max_crop_px=_first(args.max_crop_px, env.number("MAX_CROP_PX", int), 1024),
        basemaps=not basemaps_off,
        use_demo_raster=not rasters,
        data_dirs=_dirs(args.data_dir, env.text("DATA_DIR")),
        trusted_dirs=_dirs(args.trusted_dir, env.text("TRUSTED_DIR")),
        allowed_hosts=tuple(h.strip().lower() for h in (args.allowed_host or (env.text("ALLOWED_HOST") or "").split(","))
                            if h.strip()),
        allow_network_rasters=bool(args.allow_network_rasters or env.flag("ALLOW_NETWORK")),
        max_upload_mb=_first(args.max_upload_mb, env.number("MAX_UPLOAD_MB", int), 4096),
        max_question_chars=_first(args.max_question_chars, env.number("MAX_QUESTION_CHARS", int), 2000),
        max_answer_tokens=_first(args.max_answer_tokens, env.number("MAX_ANSWER_TOKENS", int)),
    )
    engine = engine_config_for(spec)
    if isinstance(engine, RemoteConfig) and app.max_answer_tokens is not None:
        engine = dataclasses.replace(engine, max_tokens=app.max_answer_tokens)
        spec = dataclasses.replace(spec, remote=engine)
    if isinstance(engine, EngineConfig) and app.max_answer_tokens is not None:
        engine = dataclasses.replace(engine, generation=dataclasses.replace(
            engine.generation, max_new_tokens=app.max_answer_tokens))
    return LaunchConfig(app=app, model=spec, engine=engine)


def _dirs(flag_values: list[str] | None, env_value: str | None) -> tuple[Path, ...]:
    values = flag_values or ([v for v in env_value.split(os.pathsep) if v] if env_value else [])
    return tuple(Path(v).expanduser().resolve() for v in values)


def _logins(args: argparse.Namespace, env: _Env) -> tuple[Auth, ...]:
    """Logins from --auth-file / GEOLENS_AUTH_FILE, else --auth / GEOLENS_AUTH."""
    path = _first(args.auth_file, env.text("AUTH_FILE"))
    if path is not None:
        return read_logins(Path(path).expanduser())
    if args.auth:
        log.warning("--auth puts the password on the command line, where `ps` shows it to every "
                    "user of this machine; use GEOLENS_AUTH=USER:PASS or --auth-file FILE instead")
    text = _first(args.auth, env.text("AUTH"))
    return (Auth.parse(text),) if text else ()
