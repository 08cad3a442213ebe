"""Typed, frozen view of ``params.yaml``.

Every stage loads the whole file through :func:`load_params` before doing any work, so a typo
anywhere fails fast. The dataclasses below mirror the YAML one to one: an unknown key, a missing
key, a value of the wrong type or out of range raises :class:`ParamsError` whose message names
the file, the dotted key (``data.load_size``), the bad value and what would be accepted.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal, get_args, get_origin, get_type_hints

import yaml

from i2i.errors import I2IError


class ParamsError(I2IError, ValueError):
    """A params file that cannot drive a stage."""


def bounded(
    default: Any = dataclasses.MISSING,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
) -> Any:
    """A dataclass field with an inclusive/exclusive numeric range checked at load time, and
    optionally a default (a key with a default may be left out of params.yaml)."""
    return field(default=default, metadata={"ge": ge, "gt": gt, "le": le})


@dataclass(frozen=True)
class ShapesConfig:
    """The built-in synthetic dataset (an edges2shoes analogue), see ``i2i.data.shapes``."""

    image_size: int = bounded(ge=16, le=1024)
    num_train: int = bounded(ge=1)
    num_test: int = bounded(ge=1)
    num_modes: int = bounded(ge=1, le=8)
    max_shapes: int = bounded(ge=1, le=8)


@dataclass(frozen=True)
class DataConfig:
    dataset: str  # checked against i2i.data.registry by the params stage and download
    path: str
    mirror: str
    seed: int = bounded(ge=0)
    load_size: int = bounded(ge=8)
    crop_size: int = bounded(ge=8)
    flip: bool
    num_workers: int = bounded(ge=0)
    shapes: ShapesConfig

    def checks(self) -> Iterator[tuple[str, Any, str]]:
        if self.dataset == "folder" and not self.path:
            yield (
                "path",
                self.path,
                "dataset 'folder' needs the folder holding trainA/ trainB/ testA/ testB/",
            )
        if self.crop_size > self.load_size:
            yield "crop_size", self.crop_size, f"must be <= data.load_size ({self.load_size})"
        yield from _check_url("mirror", self.mirror)


def _check_url(key: str, url: str) -> Iterator[tuple[str, Any, str]]:
    if url and not url.startswith(("http://", "https://", "file://")):
        yield (
            key,
            url,
            ("expected an http://, https:// or file:// base URL, or '' for the official host"),
        )
    yield from _no_credentials(key, url)


def _no_credentials(key: str, url: str) -> Iterator[tuple[str, Any, str]]:
    """params.yaml is committed, and DVC copies its values into dvc.lock: a password in a URL
    there would travel with every push. The value is not repeated in the error."""
    if "@" in url.partition("://")[2].partition("/")[0]:
        scheme = url.partition("://")[0]
        yield (
            key,
            f"{scheme}://<user-info>@...",
            "a URL with credentials; params.yaml and dvc.lock are committed. Give the URL "
            "without them, and the credentials in the environment (MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD, or a MLFLOW_TRACKING_URI that holds them)",
        )


Init = Literal["normal", "xavier", "kaiming", "orthogonal"]


@dataclass(frozen=True, eq=False)
class ModelConfig:
    """``model``: which model (a name in :data:`i2i.model_registry.MODELS`) and its section.

    params.yaml may hold a section for every model (``model.cyclegan``, ``model.cut``, ...). A
    section's keys and types belong to its model's module, so loading keeps the sections as
    written and :func:`i2i.model_registry.resolve` checks them where a model is used (the
    ``params`` stage, which runs before every other, checks them all). A missing section, or a
    key missing from one, takes the model's reference default. So a stage that never touches a
    model, such as ``download``, does not import the models' code, and a change to it does not
    re-run that stage.
    """

    name: str
    raw: dict = field(default_factory=dict, repr=False)  # the sections as params.yaml has them
    source: str = field(default="<params>", repr=False)
    prefix: str = field(default="model.", repr=False)
    resolved: Any = field(default=None, repr=False)  # the selected section, typed (resolve())

    @property
    def section(self) -> Any:
        """The selected model's section, typed and validated."""
        if self.resolved is None:
            raise RuntimeError(
                f"{self.source}: {self.prefix}{self.name} is read through "
                "i2i.model_registry.resolve(), which checks it against the model's dataclass"
            )
        return self.resolved

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ModelConfig):
            return NotImplemented
        if self.resolved is not None and other.resolved is not None:
            return (self.name, self.resolved) == (other.name, other.resolved)
        return (self.name, self.raw, self.resolved) == (other.name, other.raw, other.resolved)

    def __hash__(self) -> int:
        return hash(self.name)

    def __getattr__(self, key: str) -> Any:  # cfg.model.cyclegan: the selected model's section
        if key == self.__dict__.get("name"):
            return self.section
        raise AttributeError(key)


@dataclass(frozen=True)
class LossConfig:
    gan_mode: Literal["lsgan", "vanilla", "wgangp", "hinge", "logistic"]
    gan_w: float = bounded(ge=0)
    gp_w: float = bounded(ge=0)
    r1_gamma: float = bounded(ge=0)
    r1_every: int = bounded(ge=1)
    lambda_a: float = bounded(ge=0)
    lambda_b: float = bounded(ge=0)
    identity_w: float = bounded(ge=0)
    pool_size: int = bounded(ge=0)
    recon_x_w: float = bounded(ge=0)
    recon_s_w: float = bounded(ge=0)
    recon_c_w: float = bounded(ge=0)
    recon_x_cyc_w: float = bounded(ge=0)
    vgg_w: float = bounded(ge=0)


@dataclass(frozen=True)
class TrainConfig:
    seed: int = bounded(ge=0)
    iterations: int = bounded(ge=1)
    batch_size: int = bounded(ge=1)
    lr: float = bounded(gt=0)
    beta1: float = bounded(ge=0, le=1)
    beta2: float = bounded(ge=0, le=1)
    weight_decay: float = bounded(ge=0)
    schedule: Literal["linear", "step", "cosine", "constant"]
    decay_start: float = bounded(ge=0, le=1)
    step_size: int = bounded(ge=1)
    gamma: float = bounded(gt=0, le=1)
    device: Literal["auto", "cpu", "cuda"]
    precision: Literal["fp32", "bf16", "fp16"]
    channels_last: bool
    compile: bool
    ema_images: float = bounded(ge=0)
    ema_rampup: float = bounded(ge=0, le=1)
    checkpoint_every: int = bounded(ge=1)
    keep_checkpoints: int = bounded(ge=1)
    log_every: int = bounded(ge=1)
    sample_every: int = bounded(ge=1)
    num_samples: int = bounded(ge=1, le=64)
    validation: float = bounded(ge=0)
    validation_seed: int = bounded(ge=0)
    validation_every: int = bounded(ge=1)
    validation_metric: Literal["content_iou"]


@dataclass(frozen=True)
class SampleConfig:
    num_styles: int = bounded(ge=1)
    num_examples: int = bounded(ge=0)
    gallery_inputs: int = bounded(ge=1)
    seed: int = bounded(ge=0)
    batch_size: int = bounded(ge=1)
    device: Literal["auto", "cpu", "cuda"]


@dataclass(frozen=True)
class EvaluateConfig:
    metrics: tuple[str, ...]
    lpips_net: Literal["alex", "vgg", "squeeze"]
    classifier: Literal["inception", "domain"]
    inception: Literal["fid", "torchvision"]
    lpips_inputs: int = bounded(ge=1)
    lpips_pairs: int = bounded(ge=1)
    cis_inputs: int = bounded(ge=1)
    cis_samples: int = bounded(ge=1)
    classifier_steps: int = bounded(ge=1)
    batch_size: int = bounded(ge=1)
    seed: int = bounded(ge=0)
    device: Literal["auto", "cpu", "cuda"]
    best_on_validation: bool  # the names in ``metrics`` are checked where they are used


@dataclass(frozen=True)
class BackbonesConfig:
    """The pretrained ImageNet networks (VGG16 for loss.vgg_w, LPIPS's and Inception's for the
    scores): how to get them, and what to do when they cannot be had (``i2i.weights``)."""

    policy: Literal["fallback", "strict", "random"]
    mirror: str
    timeout: float = bounded(gt=0, le=600)

    def checks(self) -> Iterator[tuple[str, Any, str]]:
        yield from _check_url("mirror", self.mirror)


@dataclass(frozen=True)
class TrackingConfig:
    uri: str
    experiment: str

    def checks(self) -> Iterator[tuple[str, Any, str]]:
        yield from _no_credentials("uri", self.uri)


@dataclass(frozen=True)
class ClusterConfig:
    """The SLURM jobs of ``i2i sweep`` (:mod:`i2i.sweep`): where their workspaces live and what
    each job asks of the scheduler. The section may be left out: every key has a default."""

    root: str = "../i2i-sweeps"  # relative to the repository; must be shared by every node
    remote: str = "origin"  # the git remote a job pushes its experiment to
    partition: str = ""
    account: str = ""
    time: str = "24:00:00"
    gres: str = "gpu:1"
    cpus_per_task: int = bounded(8, ge=1)
    mem: str = ""
    signal_before: int = bounded(300, ge=0)
    sbatch: tuple[str, ...] = ()
    setup: str = ""

    def checks(self) -> Iterator[tuple[str, Any, str]]:
        if not self.root:
            yield "root", self.root, "expected a folder on storage every node sees"
        if not self.remote:
            yield "remote", self.remote, "expected the name of a git remote, e.g. origin"
        for key in ("partition", "account", "time", "gres", "mem"):
            value = getattr(self, key)
            if any(c in value for c in "\n\r\0 "):
                yield key, value, "expected one sbatch value: no spaces or line breaks"
        for i, option in enumerate(self.sbatch):
            if not option.startswith("-") or any(c in option for c in "\n\r\0"):
                yield f"sbatch[{i}]", option, "expected one sbatch option, e.g. --qos=high"


@dataclass(frozen=True)
class Params:
    data: DataConfig
    model: ModelConfig
    loss: LossConfig
    train: TrainConfig
    sample: SampleConfig
    evaluate: EvaluateConfig
    backbones: BackbonesConfig
    tracking: TrackingConfig
    cluster: ClusterConfig = field(default_factory=ClusterConfig)


# Keys of earlier versions, and what replaced them.
MOVED = {
    "data.weights_mirror": "now backbones.mirror",
    "loss.vgg_pretrained": "now backbones.policy: random for a random VGG16, else fallback or "
    "strict",
    "evaluate.pretrained": "now backbones.policy: random for random backbones, else fallback or "
    "strict",
    "train.winograd": "removed: speed comes from train.compile, channels_last and precision",
}

# Keys that older params files lack: what to add.
ADDED = {
    "sample.device": "add `device: auto` (auto | cpu | cuda); the sample stage used train.device",
    "sample.batch_size": "add `batch_size: 100`; the sample stage used evaluate.batch_size",
    "evaluate.device": "add `device: auto` (auto | cpu | cuda); classify, real_features and "
    "evaluate used train.device",
    "train.ema_images": "add `ema_images: 0`: the generators' moving average, off",
    "train.ema_rampup": "add `ema_rampup: 0.05`",
    "train.validation": "add `validation: 0` (images per domain held out of training; 0 = off)",
    "train.validation_seed": "add `validation_seed: 0`",
    "train.validation_every": "add `validation_every: 100`",
    "train.validation_metric": "add `validation_metric: content_iou`",
    "evaluate.best_on_validation": "add `best_on_validation: false`",
}


class _Loader(yaml.SafeLoader):
    """YAML as DVC writes it: ``dvc exp run -S train.lr=1e-4`` may store ``1e-04``, which PyYAML's
    YAML 1.1 rules read as a string; YAML 1.2 (DVC's ruamel) reads any exponent form as a float.
    And DVC may drop the quotes of ``time: "20:00"``, which YAML 1.1 reads as the base-60 number
    1200; YAML 1.2 has no base-60 numbers and reads a string."""


_INT = "tag:yaml.org,2002:int"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _INT]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _INT,
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def read_yaml(text: str) -> Any:
    """YAML text as DVC means it (YAML 1.2 numbers, see :class:`_Loader`)."""
    return yaml.load(text, Loader=_Loader)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate a params file; raise :class:`ParamsError` on the first problem."""
    path = Path(path)
    try:
        raw = read_yaml(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: params file not found") from None
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {e}") from None
    return params_from_dict(raw, source=str(path))


def params_from_dict(raw: Any, source: str = "<params>") -> Params:
    if raw is None:
        sections = ", ".join(f.name for f in dataclasses.fields(Params))
        raise ParamsError(
            f"{source}: the file is empty; expected the sections {sections} "
            f"(params.yaml of the repository has them all)"
        )
    return _build(Params, raw, "", source)


def model_from_dict(raw: Any, source: str = "<model config>") -> "ModelConfig":
    """The ``model`` section alone (an exported generator carries only this); its model's
    section is checked by :func:`i2i.model_registry.resolve`."""
    return _build(ModelConfig, raw, "model.", source)


def _build_model(raw: Any, prefix: str, source: str) -> ModelConfig:
    """``model``: ``name`` and the sections as written (:func:`i2i.model_registry.resolve`
    checks the name and the sections)."""
    where = prefix.rstrip(".")
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: {where} must be a mapping of keys, got {raw!r}")
    if "name" not in raw:
        raise ParamsError(f"{source}: missing key '{prefix}name'")
    if not isinstance(raw["name"], str):
        raise _fail(source, f"{prefix}name", raw["name"], "expected a model's name")
    sections = {k: v for k, v in raw.items() if k != "name"}
    return ModelConfig(raw["name"], sections, source, prefix)


def section_from_dict(cls: type, raw: Any, prefix: str, source: str) -> Any:
    """A dataclass ``cls`` from ``raw``, checked as every params section is (a model's section:
    :func:`i2i.model_registry.resolve`)."""
    return _build(cls, raw, prefix, source)


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain nested dict of a config (tuples become lists), the inverse of params_from_dict.
    A resolved ``model`` (:func:`i2i.model_registry.resolve`) holds the selected model's section
    only, with every default; an unresolved one holds its sections as loaded."""

    def plain(v: Any) -> Any:
        if isinstance(v, ModelConfig):
            if v.resolved is None:
                return {"name": v.name, **plain(v.raw)}
            return {"name": v.name, v.name: plain(v.section)}
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(obj)


def _fail(source: str, key: str, value: Any, what: str) -> ParamsError:
    return ParamsError(f"{source}: {key} = {value!r}: {what}")


def _build(cls: type, raw: Any, prefix: str, source: str) -> Any:
    if cls is ModelConfig:
        return _build_model(raw, prefix, source)
    where = prefix.rstrip(".") or "the top level"
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: {where} must be a mapping of keys, got {raw!r}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            if f"{prefix}{key}" in MOVED:
                hint = f" ({MOVED[f'{prefix}{key}']})"
            raise ParamsError(
                f"{source}: unknown key '{prefix}{key}'{hint}; "
                f"keys allowed in {where}: {', '.join(fields)}"
            )
    values = {}
    for name, f in fields.items():
        key = prefix + name
        if name not in raw and f.default is not dataclasses.MISSING:
            values[name] = f.default
            continue
        if name not in raw and f.default_factory is not dataclasses.MISSING:
            values[name] = f.default_factory()
            continue
        if name not in raw:
            hint = f" ({ADDED[key]})" if key in ADDED else ""
            raise ParamsError(f"{source}: missing key '{key}'{hint}")
        value = _convert(hints[name], raw[name], key, source)
        _check_range(f, value, key, source)
        values[name] = value
    obj = cls(**values)
    if hasattr(obj, "checks"):
        for sub, value, what in obj.checks():
            raise _fail(source, prefix + sub, value, what)
    return obj


def _convert(tp: Any, value: Any, key: str, source: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key + ".", source)
    origin = get_origin(tp)
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices or type(value) is not type(choices[0]):
            raise _fail(source, key, value, f"expected one of {', '.join(map(str, choices))}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise _fail(source, key, value, "expected a list")
        (item_tp, _ellipsis) = get_args(tp)
        return tuple(_convert(item_tp, v, f"{key}[{i}]", source) for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise _fail(source, key, value, "expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(source, key, value, "expected an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(source, key, value, "expected a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _fail(source, key, value, "expected a string")
        return value
    raise TypeError(f"config type {tp!r} of {key} is not supported")  # a bug in this module


def _check_range(f: dataclasses.Field, value: Any, key: str, source: str) -> None:
    ge, gt, le = (f.metadata.get(k) for k in ("ge", "gt", "le"))
    if ge is not None and value < ge:
        raise _fail(source, key, value, f"must be >= {ge}")
    if gt is not None and value <= gt:
        raise _fail(source, key, value, f"must be > {gt}")
    if le is not None and value > le:
        raise _fail(source, key, value, f"must be <= {le}")
