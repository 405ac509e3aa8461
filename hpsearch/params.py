"""Declarations of tunable parameters: their kind, default and allowed values.

Both the global training parameters (``lr``, ``batch_size``, ...) and each architecture's own parameters
(``resnet.depth``) are declared with :class:`Param`, so the spec parser can check a study file's search
space against one source of truth and :mod:`hpsearch.space` knows which ``suggest_*`` to call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["int", "float", "str"]


@dataclass(frozen=True)
class Param:
    """One tunable parameter.

    ``low``/``high`` bound numeric values (inclusive); ``choices`` lists the allowed values of a ``str``
    parameter or, for an ``int`` parameter, the only allowed values (e.g. ResNet depths ``6n+2``).
    """

    kind: Kind
    default: Any
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] | None = None
    help: str = ""

    def check(self, name: str, value: Any) -> str | None:
        """Returns why ``value`` is not allowed for parameter ``name``, or None when it is."""
        if self.kind == "str":
            if not isinstance(value, str):
                return f"`{name}` is {value!r}, but must be a string, one of {list(self.choices or ())}"
            if self.choices is not None and value not in self.choices:
                return f"`{name}` is {value!r}, but must be one of {list(self.choices)}"
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"`{name}` is {value!r}, but must be a number ({self.kind})"
        if self.kind == "int" and not (isinstance(value, int) or float(value).is_integer()):
            return f"`{name}` is {value!r}, but must be an integer"
        if isinstance(value, float) and not math.isfinite(value):  # (math.isfinite of a huge int overflows)
            return f"`{name}` is {value!r}, but must be finite"
        if self.choices is not None and value not in self.choices:
            return f"`{name}` is {value!r}, but must be one of {list(self.choices)}"
        if self.low is not None and value < self.low:
            return f"`{name}` is {value!r}, but must be ≥ {self.low}"
        if self.high is not None and value > self.high:
            return f"`{name}` is {value!r}, but must be ≤ {self.high}"
        return None
