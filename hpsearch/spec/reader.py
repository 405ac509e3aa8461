"""The study file: TOML parsed into a frozen, validated :class:`~hpsearch.spec.schema.Spec`.

All validation lives here. Every problem raises :class:`~hpsearch.errors.SpecError` with one line that
names the key (``train.max_epochs``), the value seen and what is allowed. The raw TOML document is kept
(``Spec.raw``) so a study can store its spec as JSON and a worker can rebuild the same spec from it.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any

from hpsearch.errors import SpecError, not_one_of
from hpsearch.models import get_model_entry, is_external, is_known_model, list_models
from hpsearch.params import Param
from hpsearch.spec.schema import (
    DATASETS,
    DEVICE_RE,
    INT64,
    MAX_DEPTH,
    PRECISIONS,
    SCHEDULES,
    STUDY_NAME_RE,
    DataSpec,
    Dimension,
    PrunerSpec,
    SamplerSpec,
    Spec,
    StudySpec,
    TrainSpec,
    global_params,
)

# ----------------------------------------------------------------------------------------------------------
# Parsing helpers


class _Table:
    """Pops typed keys from one TOML table; ``done()`` rejects whatever is left."""

    def __init__(self, data: Any, path: str):
        if not isinstance(data, dict):
            raise SpecError(f"`{path}` must be a table, got {_tname(data)}")
        self.data, self.path = dict(data), path

    def key(self, k: str) -> str:
        return f"{self.path}.{k}" if self.path else k

    def get(self, k: str, types: type | tuple[type, ...], default: Any = None, required: bool = False) -> Any:
        if k not in self.data:
            if required:
                raise SpecError(f"`{self.key(k)}` is missing")
            return default
        v = self.data.pop(k)
        if isinstance(v, bool) and bool not in _as_tuple(types):
            raise SpecError(f"`{self.key(k)}` is {v!r}, but must be {_names(types)}")
        if not isinstance(v, types):
            raise SpecError(f"`{self.key(k)}` is {v!r} ({_tname(v)}), but must be {_names(types)}")
        if isinstance(v, float) and not math.isfinite(v):
            raise SpecError(f"`{self.key(k)}` is {v!r}, but must be finite")
        return v

    def number(self, k: str, default: Any, low: float | None = None, high: float | None = None,
               integer: bool = False, low_open: bool = False) -> Any:
        v = self.get(k, int if integer else (int, float), default)
        if v is None:
            return v
        if low is not None and (v <= low if low_open else v < low):
            raise SpecError(f"`{self.key(k)}` is {v!r}, but must be {'>' if low_open else '≥'} {low}")
        if high is not None and v > high:
            raise SpecError(f"`{self.key(k)}` is {v!r}, but must be ≤ {high}")
        return v

    def choice(self, k: str, allowed: tuple[str, ...], default: str) -> str:
        v = self.get(k, str, default)
        if v not in allowed:
            raise SpecError(not_one_of(self.key(k), v, allowed))
        return v

    def done(self) -> None:
        if self.data:
            k = sorted(self.data)[0]
            raise SpecError(f"unknown key `{self.key(k)}`")


def _as_tuple(t: type | tuple[type, ...]) -> tuple[type, ...]:
    return t if isinstance(t, tuple) else (t,)


def _names(t: type | tuple[type, ...]) -> str:
    words = {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "a table",
             list: "a list"}
    return " or ".join(words.get(x, x.__name__) for x in _as_tuple(t) if not (x is int and float in _as_tuple(t)))


def _tname(v: Any) -> str:
    return {dict: "table", list: "list", str: "string", bool: "boolean", int: "integer", float: "float"}.get(
        type(v), type(v).__name__
    )


# ----------------------------------------------------------------------------------------------------------
# Sections

_SEED = (int, 0, 2**32 - 1)  # numpy's RandomState takes no larger seed
SAMPLER_OPTIONS: dict[str, dict[str, tuple]] = {
    # option: (type, low, high)
    "tpe": {"seed": _SEED, "n_startup_trials": (int, 0, None), "multivariate": (bool,),
            "group": (bool,), "constant_liar": (bool,)},
    "random": {"seed": _SEED},
    "cmaes": {"seed": _SEED, "n_startup_trials": (int, 0, None)},
    "gp": {"seed": _SEED, "n_startup_trials": (int, 0, None)},
    "qmc": {"seed": _SEED, "qmc_type": (str, ("sobol", "halton")), "scramble": (bool,)},
}
_STEPS = {"n_startup_trials": (int, 0, None), "n_warmup_steps": (int, 0, None), "interval_steps": (int, 1, None)}
PRUNER_OPTIONS: dict[str, dict[str, tuple]] = {
    "median": dict(_STEPS),
    "percentile": {"percentile": (float, 0.0, 100.0), **_STEPS},
    "successive_halving": {"min_resource": (int, 1, None), "reduction_factor": (int, 2, None),
                           "min_early_stopping_rate": (int, 0, None)},
    "hyperband": {"min_resource": (int, 1, None), "max_resource": (int, 1, None),
                  "reduction_factor": (int, 2, None)},
    # promotion-based successive halving (hpsearch.search.asha): min_resource is the first rung's eval point
    "asha": {"min_resource": (int, 1, None), "reduction_factor": (int, 2, None), "n_rungs": (int, 1, None),
             "eager": ((bool, str), (True, False, "upper"))},
    "patient": {"patience": (int, 0, None), "min_delta": (float, 0.0, None),
                "wrapped": (str, ("median", "percentile", "none")), **_STEPS, "percentile": (float, 0.0, 100.0)},
    "none": {},
}
REQUIRED_PRUNER_OPTIONS = {"percentile": ("percentile",), "patient": ("patience",)}


def _options(t: _Table, schema: dict[str, tuple]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k in sorted(set(t.data) & set(schema)):
        typ, *rest = schema[k]
        v = t.get(k, (int, float)) if typ is float else t.get(k, typ)
        if rest and isinstance(rest[0], tuple):
            if v not in rest[0]:
                raise SpecError(not_one_of(t.key(k), v, rest[0]))
        elif rest:
            low, high = rest
            if low is not None and v < low:
                raise SpecError(f"`{t.key(k)}` is {v!r}, but must be ≥ {low}")
            if high is not None and v > high:
                raise SpecError(f"`{t.key(k)}` is {v!r}, but must be ≤ {high}")
        out[k] = v
    if t.data:
        k = sorted(t.data)[0]
        raise SpecError(f"unknown key `{t.key(k)}`; {t.path} takes: {', '.join(['name', *sorted(schema)])}")
    return out


def _parse_study(raw: Any) -> StudySpec:
    t = _Table(raw, "study")
    name = t.get("name", str, required=True)
    if not STUDY_NAME_RE.match(name):
        raise SpecError(f"`study.name` is {name!r}, but must be 1-128 characters of letters, digits, _ . -"
                        " (starting with a letter or digit)")
    seed = t.number("seed", 0, low=0, high=2**31 - 1, integer=True)
    n_trials = t.number("n_trials", 20, low=1, high=1_000_000, integer=True)
    timeout = t.number("timeout", None, low=0, low_open=True)
    patience = t.number("patience", None, low=1, high=1_000_000, integer=True)
    min_delta = float(t.number("min_delta", 0.0, low=0, high=100))
    target = t.number("target", None, low=0, high=100)
    t.done()
    return StudySpec(name, seed, n_trials, None if timeout is None else float(timeout), patience, min_delta,
                     None if target is None else float(target))


def _parse_data(raw: Any) -> DataSpec:
    t = _Table(raw, "data")
    dataset = t.choice("dataset", DATASETS, None) if "dataset" in t.data else None
    if dataset is None:
        raise SpecError(f"`data.dataset` is missing; allowed: {list(DATASETS)}")
    root = t.get("root", str)
    val_fraction = t.number("val_fraction", 1 / 6, low=0, high=0.9, low_open=True)
    val_size = t.number("val_size", None, low=1, integer=True)
    kw: dict[str, Any] = {}
    if dataset == "imagefolder":
        if root is None:
            raise SpecError("`data.root` is missing; imagefolder needs the folder holding train/ (or a cache made "
                            "by `hpsearch data prepare`)")
        classes = t.get("classes", (int, list))
        if isinstance(classes, int) and classes < 1:
            raise SpecError(f"`data.classes` is {classes}, but must be ≥ 1 (a count) or a list of folder names")
        if isinstance(classes, list):
            if not classes or not all(isinstance(c, str) and c for c in classes):
                raise SpecError("`data.classes` must be a count or a non-empty list of folder names")
            classes = tuple(classes)
        kw["classes"] = classes
        kw["fraction"] = float(t.number("fraction", 1.0, low=0, high=1, low_open=True))
        kw["image_size"] = t.number("image_size", 64, low=8, high=1024, integer=True)
    if dataset == "synthetic":
        kw["image_size"] = t.number("image_size", 32, low=8, high=1024, integer=True)
        kw["channels"] = t.number("channels", 3, low=1, high=4, integer=True)
        kw["num_classes"] = t.number("num_classes", 10, low=2, high=1000, integer=True)
        kw["n_images"] = t.number("n_images", 2000, low=4, high=10_000_000, integer=True)
    t.done()
    return DataSpec(dataset, root, float(val_fraction), val_size, **kw)


def _parse_train(raw: Any) -> TrainSpec:
    t = _Table(raw, "train")
    max_epochs = t.number("max_epochs", 5, low=1, high=10_000, integer=True)
    eval_every = float(t.number("eval_every", 0.5, low=0, high=max_epochs, low_open=True))
    device = t.get("device", str, "auto")
    if not DEVICE_RE.match(device):
        raise SpecError(f"`train.device` is {device!r}, but must be auto, cpu, cuda, cuda:N or mps")
    precision = t.choice("precision", PRECISIONS, "auto")
    schedule = t.choice("schedule", SCHEDULES, "onecycle")
    warmup = float(t.number("warmup", 0.2, low=0, high=0.9))
    eval_batch_size = t.number("eval_batch_size", 1024, low=1, high=65536, integer=True)
    max_trial_seconds = t.number("max_trial_seconds", None, low=0, high=365 * 86400, low_open=True)
    pack = parse_pack(t.get("pack", (int, str), "auto"), "train.pack")
    pretrained = t.get("pretrained", bool, False)
    weights_dir = t.get("weights_dir", str)
    if weights_dir is not None and not weights_dir.strip():
        raise SpecError("`train.weights_dir` is empty; give a folder, or leave the key out")
    t.done()
    return TrainSpec(max_epochs, eval_every, device, precision, schedule, warmup, eval_batch_size,
                     None if max_trial_seconds is None else float(max_trial_seconds), pack, pretrained, weights_dir)


def _check_pretrained(train: TrainSpec, space: tuple[Dimension, ...]) -> None:
    """Pretrained weights exist for other libraries' models only: every architecture the space can pick must be
    one (whether its weights can be found is checked before a study is created: hpsearch.training.setup)."""
    if not train.pretrained:
        return
    arch = {x.name: x for x in space}["arch"]
    for a in arch.choices if arch.choices is not None else (arch.value,):
        if not is_external(a):
            raise SpecError(f"`train.pretrained` is true, but `space.arch` allows {a!r}, which has no pretrained "
                            "weights; pretrained needs timm:<name> or tv:<name> architectures")


MAX_PACK = 64


def parse_pack(value: int | str, where: str) -> int | str:
    """``"auto"`` or a pack size 1..MAX_PACK (also ``--pack``'s check)."""
    if value == "auto":
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PACK:
        raise SpecError(f"`{where}` is {value!r}, but must be \"auto\" or a pack size from 1 to {MAX_PACK}")
    return value


def _parse_named(raw: Any, path: str, default: str, schemas: dict[str, dict[str, tuple]]):
    t = _Table(raw, path)
    name = t.choice("name", tuple(schemas), default)
    options = _options(t, schemas[name])
    return name, options


def _parse_range(v: dict, name: str, p: Param, path: str) -> dict[str, Any]:
    t = _Table(v, path)
    if p.kind == "str":
        raise SpecError(f"`{path}` is a range, but `{name}` is categorical: give a list such as "
                        f"{list(p.choices or ())}")
    if p.choices is not None:
        raise SpecError(f"`{path}` is a range, but `{name}` takes only {list(p.choices)}: give a list")
    low = t.get("low", (int, float), required=True)
    high = t.get("high", (int, float), required=True)
    log = t.get("log", bool, False)
    step = t.get("step", (int, float))
    t.done()
    for bound, val in (("low", low), ("high", high)):
        problem = p.check(name, val)
        if problem:
            raise SpecError(f"`{path}.{bound}`: {problem}")
    if low > high:
        raise SpecError(f"`{path}` has low {low} > high {high}")
    if low == high:
        raise SpecError(f"`{path}` is an empty range (low = high = {low}); give a fixed value instead")
    if log and low <= 0:
        raise SpecError(f"`{path}` is a log range, but low is {low}; log ranges need low > 0")
    if step is not None:
        if step <= 0:
            raise SpecError(f"`{path}.step` is {step}, but must be > 0")
        if log:
            raise SpecError(f"`{path}` sets both log and step; Optuna allows only one")
        if p.kind == "int" and not float(step).is_integer():
            raise SpecError(f"`{path}.step` is {step}, but `{name}` is an integer parameter")
    if p.kind == "int":
        return {"low": int(low), "high": int(high), "log": log, "step": int(step) if step else None}
    return {"low": float(low), "high": float(high), "log": log, "step": float(step) if step else None}


def _dimension(name: str, p: Param, v: Any, path: str, arch: str | None = None) -> Dimension:
    if isinstance(v, dict):
        return Dimension(name, p, arch=arch, **_parse_range(v, name, p, path))
    if isinstance(v, list):
        if not v:
            raise SpecError(f"`{path}` is an empty list; give at least one value")
        for item in v:
            problem = p.check(name, item)
            if problem:
                raise SpecError(f"`{path}`: {problem}")
        items = tuple(int(x) if p.kind == "int" else x for x in v)
        if len(set(items)) != len(items):
            raise SpecError(f"`{path}` lists a value twice: {list(v)}")
        if len(items) == 1:
            return Dimension(name, p, value=items[0], arch=arch)
        return Dimension(name, p, choices=items, arch=arch)
    problem = p.check(name, v)
    if problem:
        raise SpecError(f"`{path}`: {problem}")
    return Dimension(name, p, value=int(v) if p.kind == "int" else v, arch=arch)


def _parse_space(raw: Any) -> tuple[Dimension, ...]:
    t = _Table(raw if raw is not None else {}, "space")
    gp = global_params()
    dims = {k: _dimension(k, p, t.data.pop(k), f"space.{k}") if k in t.data else Dimension(k, p, value=p.default)
            for k, p in gp.items()}
    arch_dim = dims["arch"]
    archs = arch_dim.choices if arch_dim.choices is not None else (arch_dim.value,)
    for a in archs:
        if is_external(a):
            get_model_entry(a)  # an unknown tv: or timm: name lists close matches (or says how to install timm)
        elif not is_known_model(a):
            raise SpecError(f"`space.arch`: {a!r} is not an architecture; registered: {', '.join(list_models())}, "
                            "or tv:<name> for a torchvision model (e.g. tv:resnet18), or timm:<name> for a timm "
                            "model (e.g. timm:efficientnet_lite0)")
    out = list(dims.values())
    for k in sorted(t.data):
        if k in list_models() or is_external(k):
            if k not in archs:
                raise SpecError(f"`space.{k}` is given, but `space.arch` does not include {k!r}")
            continue
        raise SpecError(f"unknown key `space.{k}`; the space takes: {', '.join([*gp, *list_models()])}, or a "
                        "table of a timm:<name> architecture's parameters")
    for arch in archs:
        entry = get_model_entry(arch)
        sub = _Table(t.data.get(arch, {}), f"space.{arch}")
        for pname, p in entry.params.items():
            full = f"{arch}.{pname}"
            out.append(_dimension(full, p, sub.data.pop(pname), f"space.{full}", arch) if pname in sub.data
                       else Dimension(full, p, value=p.default, arch=arch))
        if sub.data:
            k = sorted(sub.data)[0]
            raise SpecError(f"unknown key `space.{arch}.{k}`; {arch} takes: {', '.join(entry.params)}")
    return tuple(out)


def _has_value(v: Any) -> bool:
    return not isinstance(v, dict) or any(_has_value(x) for x in v.values())


def _flatten(d: dict[str, Any], path: str, prefix: str = "") -> dict[str, Any]:
    """``{"vgg": {"width": 16}}`` → ``{"vgg.width": 16}``; a table that holds no value is refused (it would
    add no parameter name, and its key would never be checked)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            if not _has_value(v):
                raise SpecError(f"`{path}.{prefix}{k}` is a table with no value in it; give a parameter value "
                                "such as lr = 0.05, or a table of an architecture's parameters (vgg = { width = 16 })")
            out |= _flatten(v, path, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def _parse_enqueue(raw: Any, space: tuple[Dimension, ...]) -> tuple[dict[str, Any], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise SpecError("`enqueue` must be an array of tables ([[enqueue]])")
    dims = {d.name: d for d in space}
    out = []
    for i, item in enumerate(raw):
        path = f"enqueue[{i}]"
        if not isinstance(item, dict):
            raise SpecError(f"`{path}` must be a table")
        flat = _flatten(item, path)
        arch = flat.get("arch", dims["arch"].value)
        params: dict[str, Any] = {}
        for k, v in flat.items():
            if k not in dims:
                raise SpecError(f"unknown key `{path}.{k}`; allowed: {', '.join(dims)}")
            d = dims[k]
            if d.arch is not None and d.arch != arch:
                chosen = f"arch is {arch!r}" if arch is not None else "arch is not given (it is searched)"
                raise SpecError(f"`{path}.{k}` is a {d.arch} parameter, but this trial's {chosen}")
            problem = d.param.check(k, v)
            if problem:
                raise SpecError(f"`{path}`: {problem}")
            if not d.contains(v):
                raise SpecError(f"`{path}.{k}` is {v!r}, outside the space: {d.describe()}")
            if not d.fixed:
                params[k] = int(v) if d.param.kind == "int" else (float(v) if d.param.kind == "float" else v)
        out.append(params)
    return tuple(out)


# ----------------------------------------------------------------------------------------------------------
# Entry points

SECTIONS = ("study", "data", "train", "sampler", "pruner", "space", "enqueue")
NATIVE_SIZE = {"fashion-mnist": 28, "mnist": 28, "fashion-mnist-sample": 28, "cifar10": 32, "cifar100": 32}


def _check_document(raw: dict[str, Any]) -> None:
    """Refuses what no section parser should meet: integers beyond TOML's 64 bits (Python reads any size,
    and float() of them overflows), tables nested past MAX_DEPTH (deep enough to exhaust the recursion limit
    of later code such as json.dumps), and keys that are blank or hold control or invisible characters or
    backquotes (they would garble the one-line message naming them). Iterative, so any depth is safe."""
    stack: list[tuple[str, Any, int]] = [("", raw, 0)]
    while stack:
        path, value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise SpecError(f"`{path}` is nested {depth} tables or arrays deep, but a study file needs at most "
                            f"{MAX_DEPTH}")
        if isinstance(value, dict):
            for k, v in value.items():
                full = f"{path}.{k}" if path else str(k)
                if not isinstance(k, str) or not k.strip() or not k.isprintable() or "`" in k:
                    raise SpecError(f"unknown key {full!r}; keys are names such as `lr` (not empty, no control "
                                    "or invisible characters, no backquotes)")
                stack.append((full, v, depth + 1))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", v, depth + 1) for i, v in enumerate(value))
        elif isinstance(value, int) and not INT64[0] <= value <= INT64[1]:
            raise SpecError(f"`{path}` is an integer of {value.bit_length()} bits, but TOML integers must fit in "
                            "64 bits (-2^63 .. 2^63-1)")


def _check_image_sizes(data: DataSpec, space: tuple[Dimension, ...]) -> None:
    """Every image size a trial can meet must suit every architecture the space can pick (a torch shape
    error deep in a trial would say far less). The native size of an imagefolder is unknown here: a
    prepared cache at data.root sets it; create_model checks that one when the trial builds its model."""
    native = data.image_size if data.dataset == "synthetic" else NATIVE_SIZE.get(data.dataset)
    d = {x.name: x for x in space}["image_size"]
    if d.fixed:
        sizes = [d.value]
    elif d.choices is not None:
        sizes = list(d.choices)
    else:  # a range: its smallest value, and the next one when the smallest is 0 (native)
        sizes = [int(d.low)] + ([int(d.step or 1)] if d.low == 0 else [])
    resized = [n for n in sizes if n != 0]
    candidates = [(n, f"`space.image_size` allows {n} px") for n in resized]
    if 0 in sizes and native is not None:
        where = (f"`data.image_size` is {native} px" if data.dataset == "synthetic"
                 else f"{data.dataset} images are {native} px")
        candidates.append((native, where))
    if not candidates:
        return
    smallest, where = min(candidates)
    arch = {x.name: x for x in space}["arch"]
    for a in arch.choices if arch.choices is not None else (arch.value,):
        need = get_model_entry(a).min_size
        if smallest < need:
            raise SpecError(f"{where}, but `space.arch` {a!r} needs at least {need} px; set `space.image_size` "
                            f"to {need} or more (images are resized for each trial)")


def _check_rungs(opts: dict[str, Any], train: TrainSpec) -> None:
    """The asha pruner pauses at rung eval points: the first must come before the last eval point."""
    low = opts.get("min_resource", 1)
    last = math.ceil(train.max_epochs / train.eval_every - 1e-9)
    if low >= last:
        raise SpecError(f"`pruner.min_resource` is {low} eval point(s), but a trial has {last} "
                        f"(`train.max_epochs` / `train.eval_every`): the first rung of the asha pruner must come "
                        "before the last eval point")


def parse_spec(raw: dict[str, Any]) -> Spec:
    """Validates a parsed TOML (or stored JSON) document and returns the frozen spec."""
    if not isinstance(raw, dict):
        raise SpecError("the study file must be a TOML table")
    _check_document(raw)
    for k in raw:
        if k not in SECTIONS:
            raise SpecError(f"unknown key `{k}`; a study file has: {', '.join(SECTIONS)}")
    if "study" not in raw:
        raise SpecError("`study` is missing; a study file needs [study] with at least name = \"...\"")
    if "data" not in raw:
        raise SpecError(f"`data` is missing; a study file needs [data] with dataset = one of {list(DATASETS)}")
    sampler_name, sampler_opts = _parse_named(raw.get("sampler", {}), "sampler", "tpe", SAMPLER_OPTIONS)
    pruner_name, pruner_opts = _parse_named(raw.get("pruner", {}), "pruner", "median", PRUNER_OPTIONS)
    for req in REQUIRED_PRUNER_OPTIONS.get(pruner_name, ()):
        if req not in pruner_opts:
            raise SpecError(f"`pruner.{req}` is missing; the {pruner_name} pruner needs it")
    space = _parse_space(raw.get("space"))
    data = _parse_data(raw["data"])
    _check_image_sizes(data, space)
    train = _parse_train(raw.get("train", {}))
    _check_pretrained(train, space)
    if pruner_name == "asha":
        _check_rungs(pruner_opts, train)
    return Spec(
        study=_parse_study(raw["study"]),
        data=data,
        train=train,
        sampler=SamplerSpec(sampler_name, sampler_opts),
        pruner=PrunerSpec(pruner_name, pruner_opts),
        space=space,
        enqueue=_parse_enqueue(raw.get("enqueue"), space),
        raw=raw,
    )


def load_spec(path: str | Path) -> Spec:
    """Reads and validates a study file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"study file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"cannot read study file {str(path)!r}: {e}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{path}: invalid TOML: {e}") from None
    except RecursionError:  # arrays or inline tables nested a thousand deep: tomllib recurses
        raise SpecError(f"{path}: invalid TOML: arrays or inline tables are nested too deeply") from None
    except ValueError as e:  # an integer of over 4,300 digits: Python's int() refuses it
        raise SpecError(f"{path}: invalid TOML: {str(e).split(':')[0]}") from None
    return parse_spec(raw)


