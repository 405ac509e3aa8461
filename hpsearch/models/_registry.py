"""The model registry: ``@register_model`` entry functions and ``create_model(name, ...)``.

An entry function takes ``num_classes``, ``in_channels``, ``image_size`` and its own keyword parameters,
declared with :class:`hpsearch.params.Param` so that study files can search over them as ``<name>.<param>``.

Two prefixes reach other libraries' models: ``tv:<name>`` any torchvision classification model (e.g.
``tv:resnet18``, no tunable parameters) and ``timm:<name>`` any timm model (e.g. ``timm:efficientnet_lite0``;
timm is an optional dependency, imported only then), whose one parameter ``drop_path`` (timm's
``drop_path_rate``, for the models that take it) is searched as ``<arch>.drop_path``, e.g.
``timm:efficientnet_lite0.drop_path`` (the study file's ``[space."timm:efficientnet_lite0"]`` table). Both are
built with random weights (pretrained ones are loaded by :mod:`hpsearch.models.weights`) behind an
:class:`InputAdapter`: they take images scaled to [0, 1], one-channel images repeated to three, and normalise
them as their pretrained weights expect, so a model file needs no other preprocessing than [0, 1] scaling.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from hpsearch.errors import SpecError, first_line
from hpsearch.params import Param

ModelFn = Callable[..., nn.Module]

TV_PREFIX = "tv:"
TIMM_PREFIX = "timm:"
TIMM_EXAMPLES = ("timm:efficientnet_lite0", "timm:resnet18", "timm:convnext_atto", "timm:mobilenetv3_small_100")
TIMM_INSTALL = 'timm models need: pip install "hpsearch[timm]"'
# the input normalisation of ImageNet-pretrained weights, when a model's config names none (torchvision's transforms)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# Smallest input side (px) of the torchvision models that need more than the registry's 28 px, by name prefix,
# first match wins. Measured with a batch-1 forward pass under torchvision 0.29; build_tv_model repeats that
# pass, so a model this table gets wrong fails at creation with a clear error rather than during training.
TV_MIN_SIZES = (
    ("alexnet", 63),
    ("convnext_", 32),
    ("densenet", 29),
    ("inception_v3", 75),
    ("maxvit_", 221),  # and only 221-224, 445-448, ...: its feature maps must split into 7x7 windows
    ("vgg", 32),
    ("vit_h_", 28),  # ViTs are built for the image size, which must be a multiple of the patch size
    ("vit_", 32),
)
TV_EXAMPLES = ("tv:resnet18", "tv:mobilenet_v3_small", "tv:efficientnet_b0", "tv:convnext_tiny")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    fn: ModelFn
    params: dict[str, Param] = field(default_factory=dict)
    min_size: int = 28  # smallest input side (px) the network accepts
    doc: str = ""


_MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, params: dict[str, Param] | None = None, min_size: int = 28):
    """Decorator that registers ``fn`` under ``name`` with its tunable ``params``."""

    def wrap(fn: ModelFn) -> ModelFn:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        _MODELS[name] = ModelEntry(name, fn, dict(params or {}), min_size, doc)
        return fn

    return wrap


def list_models() -> list[str]:
    """The registered architectures; torchvision's ``tv:<name>`` models are not listed."""
    return sorted(_MODELS)


def is_known_model(name: str) -> bool:
    """Whether ``name`` is a registered architecture, ``tv:`` and a torchvision classification model, or
    ``timm:`` and a timm model (False when timm is not installed)."""
    if name.startswith((TV_PREFIX, TIMM_PREFIX)):
        try:
            get_model_entry(name)
        except SpecError:
            return False
        return True
    return name in _MODELS


def is_external(name: str) -> bool:
    """Whether ``name`` names another library's model (``tv:``, ``timm:``): one that can load pretrained weights."""
    return name.startswith((TV_PREFIX, TIMM_PREFIX))


def fusable(name: str) -> bool:
    """Whether a trial pack of ``name`` models can train as one fused model (hpsearch.training.fused). Other
    libraries' models are not all made of layers it can batch (in-place views, custom autograd, timm's
    activation and attention layers): their members train one after another instead."""
    return not is_external(name)


def get_model_entry(name: str) -> ModelEntry:
    if name.startswith(TV_PREFIX):
        return tv_model_entry(name)
    if name.startswith(TIMM_PREFIX):
        return timm_model_entry(name)
    try:
        return _MODELS[name]
    except KeyError:
        raise SpecError(
            f"unknown architecture {name!r}; registered: {', '.join(list_models())}, "
            f"or {TV_PREFIX}<name> for a torchvision model (e.g. {TV_EXAMPLES[0]}), or {TIMM_PREFIX}<name> for a "
            f"timm model (e.g. {TIMM_EXAMPLES[0]})"
        ) from None


def create_model(name: str, num_classes: int, in_channels: int, image_size: int = 32, **params) -> nn.Module:
    """Builds the registered model ``name``; missing parameters take their declared defaults."""
    entry = get_model_entry(name)
    unknown = sorted(set(params) - set(entry.params))
    if unknown:
        raise SpecError(f"{name} has no parameter {unknown[0]!r}; it takes: {', '.join(sorted(entry.params))}")
    if image_size < entry.min_size:
        raise SpecError(f"images are {image_size} px, but {name} needs at least {entry.min_size} px")
    kwargs = {k: p.default for k, p in entry.params.items()} | params
    for key, value in kwargs.items():
        problem = entry.params[key].check(f"{name}.{key}", value)
        if problem:
            raise SpecError(problem)
    return entry.fn(num_classes=num_classes, in_channels=in_channels, image_size=image_size, **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# Other libraries' models behind an input adapter


class InputAdapter(nn.Module):
    """Turns images scaled to [0, 1] into what a pretrained network expects: a one-channel image repeated to
    three channels, then normalised with the weights' mean and std (buffers, not saved: create_model sets them)."""

    def __init__(self, in_channels: int, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.repeat = in_channels == 1 and len(mean) == 3
        if in_channels not in (1, 3):  # the network takes in_channels itself: one mean and std for every channel
            mean, std = (sum(mean) / len(mean),) * in_channels, (sum(std) / len(std),) * in_channels
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) float in [0, 1]
        if self.repeat:
            x = x.expand(-1, 3, -1, -1)
        return (x - self.mean) / self.std


class AdaptedNet(nn.Module):
    """A torchvision or timm network ``net`` behind its :class:`InputAdapter`. ``head`` names the classifier's
    modules inside ``net`` (sized for the study's classes; pretrained weights never fill them); ``arch`` and
    ``kwargs`` say how the library built ``net`` (hpsearch.models.weights builds the pretrained copy alike)."""

    def __init__(self, net: nn.Module, in_channels: int, mean: tuple[float, ...], std: tuple[float, ...],
                 head: tuple[str, ...], arch: str, kwargs: dict):
        super().__init__()
        self.adapter = InputAdapter(in_channels, mean, std)
        self.net = net
        self.head, self.arch, self.kwargs = head, arch, kwargs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.adapter(x))

    def get_classifier(self) -> nn.Module:
        """The (first) classifier module, as timm's models name it."""
        return self.net.get_submodule(self.head[0])


def takes_unit_range(model: nn.Module) -> bool:
    """Whether ``model`` normalises its input itself (an :class:`AdaptedNet`): it takes images scaled to [0, 1]."""
    return isinstance(model, AdaptedNet)


def _checked(model: AdaptedNet, name: str, in_channels: int, image_size: int) -> AdaptedNet:
    """``model`` after one batch-1 forward pass at ``image_size`` (a size the network cannot take fails here, as
    a SpecError, rather than during training), in training mode."""
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, in_channels, image_size, image_size))
    except (RuntimeError, ValueError, AssertionError) as e:  # torch._assert raises AssertionError
        reason = first_line(e, type(e).__name__)
        raise SpecError(f"images are {image_size} px, but {name} cannot take them: {reason}") from None
    return model.train()


# ---------------------------------------------------------------------------------------------------------------
# torchvision models as tv:<name>


@functools.cache
def tv_model_names() -> frozenset[str]:
    """torchvision's classification models (imported on first use: torchvision takes a while to load)."""
    from torchvision import models

    return frozenset(models.list_models(module=models))


def tv_model_entry(name: str) -> ModelEntry:
    """The entry for ``tv:<model>``; an unknown model raises :class:`SpecError` naming a few that exist."""
    tv_name = name.removeprefix(TV_PREFIX)
    if tv_name not in tv_model_names():
        close = difflib.get_close_matches(tv_name, sorted(tv_model_names()), n=4)
        examples = [TV_PREFIX + n for n in close] or list(TV_EXAMPLES)
        raise SpecError(
            f"unknown torchvision model {name!r}; valid names include {', '.join(examples)} "
            "(all of them: torchvision.models.list_models(module=torchvision.models))"
        )
    min_size = next((size for prefix, size in TV_MIN_SIZES if tv_name.startswith(prefix)), 28)
    fn = functools.partial(build_tv_model, tv_name)
    return ModelEntry(name, fn, {}, min_size, f"torchvision {tv_name}")


def tv_input_stats(tv_name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean and std of the images ``tv_name``'s default pretrained weights were trained on (from their
    ``transforms()``); ImageNet's when it has none."""
    from torchvision import models

    try:
        transforms = models.get_model_weights(tv_name).DEFAULT.transforms()
    except (ValueError, AttributeError, KeyError):
        return IMAGENET_MEAN, IMAGENET_STD
    return tuple(transforms.mean), tuple(transforms.std)


def tv_head(net: nn.Module, num_classes: int) -> tuple[str, ...]:
    """The classifier of a torchvision network: its last Linear (or, in SqueezeNet, Conv2d) with ``num_classes``
    outputs."""
    names = [n for n, m in net.named_modules()
             if (isinstance(m, nn.Linear) and m.out_features == num_classes)
             or (isinstance(m, nn.Conv2d) and m.out_channels == num_classes)]
    return (names[-1],) if names else ()


def build_tv_model(tv_name: str, num_classes: int, in_channels: int, image_size: int) -> AdaptedNet:
    """torchvision's ``tv_name`` with random weights (never downloaded) behind its input adapter, checked by one
    forward pass."""
    from torchvision import models

    kwargs: dict = {}
    if tv_name in ("googlenet", "inception_v3"):
        # Without the auxiliary heads the model returns plain logits in training mode too.
        kwargs |= {"aux_logits": False, "init_weights": True}
    elif tv_name.startswith("vit_"):
        kwargs["image_size"] = image_size  # sizes the position embedding
    elif tv_name.startswith("maxvit_"):
        kwargs["input_size"] = (image_size, image_size)
    try:
        net = models.get_model(tv_name, weights=None, num_classes=num_classes, **kwargs)
    except (RuntimeError, ValueError, AssertionError) as e:
        raise SpecError(f"images are {image_size} px, but {TV_PREFIX}{tv_name} cannot take them: "
                        f"{first_line(e, type(e).__name__)}") from None
    if in_channels not in (1, 3):  # one channel is repeated to three by the adapter (pretrained stems take three)
        replace_first_conv(net, in_channels)
    mean, std = tv_input_stats(tv_name)
    model = AdaptedNet(net, in_channels, mean, std, tv_head(net, num_classes), TV_PREFIX + tv_name, kwargs)
    return _checked(model, TV_PREFIX + tv_name, in_channels, image_size)


def replace_first_conv(model: nn.Module, in_channels: int) -> None:
    """Swaps the model's first ``Conv2d`` (its input layer) for a fresh one taking ``in_channels``."""
    path, conv = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    )
    parent, _, attr = path.rpartition(".")
    setattr(model.get_submodule(parent), attr, new)


# ---------------------------------------------------------------------------------------------------------------
# timm models as timm:<name>

TIMM_PARAMS = {"drop_path": Param("float", 0.0, low=0.0, high=0.9, help="stochastic depth rate (timm's drop_path_rate)")}


def import_timm():
    """timm, or one SpecError line saying how to install it (it is an optional dependency)."""
    try:
        import timm
    except ImportError:
        raise SpecError(TIMM_INSTALL) from None
    return timm


@functools.cache
def timm_model_entry(name: str) -> ModelEntry:
    """The entry for ``timm:<model>`` (a name timm.create_model takes, pretrained tag included, e.g.
    ``timm:resnet18.a1_in1k``); its parameters are those of its model class that hpsearch knows (``drop_path``).
    An unknown model raises :class:`SpecError` naming the closest that exist."""
    timm = import_timm()
    timm_name = name.removeprefix(TIMM_PREFIX)
    arch, _, tag = timm_name.partition(".")
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=4)
        examples = [TIMM_PREFIX + n for n in close] or list(TIMM_EXAMPLES)
        raise SpecError(f"unknown timm model {name!r}; close matches: {', '.join(examples)} "
                        "(all of them: timm.list_models())")
    if tag:
        tags = [n.partition(".")[2] for n in timm.list_pretrained(f"{arch}.*")]
        if tag not in tags:
            raise SpecError(f"timm model {arch!r} has no pretrained tag {tag!r}; it has: "
                            f"{', '.join(tags) or 'none'}")
    takes = timm_model_args(arch)
    params = {k: p for k, p in TIMM_PARAMS.items() if "drop_path_rate" in takes}
    fn = functools.partial(build_timm_model, timm_name, "img_size" in takes)
    return ModelEntry(name, fn, params, 28, f"timm {timm_name}")


@functools.cache
def timm_model_args(arch: str) -> frozenset[str]:
    """The keyword arguments of the class timm builds ``arch`` from (every timm entry point names its class as
    its return annotation)."""
    import inspect

    from timm.models import model_entrypoint

    cls = inspect.signature(model_entrypoint(arch)).return_annotation
    if not isinstance(cls, type):
        return frozenset()
    return frozenset(inspect.signature(cls.__init__).parameters)


def timm_kwargs(num_classes: int, in_channels: int, image_size: int, sized: bool,
                drop_path: float | None = None) -> dict:
    """The arguments of timm.create_model for this study's model (also those the pretrained copy is built with
    by hpsearch.models.weights, but for num_classes)."""
    kwargs: dict = {"num_classes": num_classes, "in_chans": 3 if in_channels in (1, 3) else in_channels}
    if sized:
        kwargs["img_size"] = image_size  # sizes a ViT's position embedding
    if drop_path is not None:
        kwargs["drop_path_rate"] = drop_path
    return kwargs


def build_timm_model(timm_name: str, sized: bool, num_classes: int, in_channels: int, image_size: int,
                     drop_path: float | None = None) -> AdaptedNet:
    """timm's ``timm_name`` with random weights behind its input adapter (the mean and std of its pretrained
    config), checked by one forward pass."""
    timm = import_timm()
    kwargs = timm_kwargs(num_classes, in_channels, image_size, sized, drop_path)
    try:
        net = timm.create_model(timm_name, pretrained=False, **kwargs)
    except (RuntimeError, ValueError, AssertionError, TypeError) as e:
        raise SpecError(f"images are {image_size} px, but {TIMM_PREFIX}{timm_name} cannot take them: "
                        f"{first_line(e, type(e).__name__)}") from None
    cfg = net.pretrained_cfg or {}
    head = cfg.get("classifier") or ()
    model = AdaptedNet(net, in_channels, tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD)),
                       (head,) if isinstance(head, str) else tuple(head), TIMM_PREFIX + timm_name, kwargs)
    return _checked(model, TIMM_PREFIX + timm_name, in_channels, image_size)
