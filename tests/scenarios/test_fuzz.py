"""Fuzzing what a user types: study files and command-line option values.

Generated study files (random TOML documents, and valid studies with one field mutated: wrong type, out of
range, unknown key, huge numbers, NaN/inf, empty strings, unicode, deep nesting) either load or raise
SpecError with a one-line message naming the key; nothing else escapes the spec loader. Through the real
CLI, bad files and bad option values exit 2 with one line on stderr and no traceback.

CLI cases run in batches: one Python process calls the console entry point (``hpsearch.cli.main``) once
per case, so dozens of cases cost one interpreter start; a few cases also run as separate ``hpsearch``
processes to prove the real executable behaves the same.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import tomllib
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpsearch.errors import SpecError
from hpsearch.models import get_model_entry, list_models
from hpsearch.spec import global_params, load_spec, parse_spec
from hpsearch.spec.reader import PRUNER_OPTIONS, SAMPLER_OPTIONS, SECTIONS
from studies import PRUNED, study_doc, to_toml

# ---------------------------------------------------------------------------------------------------------
# Strategies

TEXT = st.characters(blacklist_categories=("Cs",))  # no lone surrogates: a study file is UTF-8
texts = st.text(TEXT, max_size=12)
huge_ints = st.one_of(st.integers(-(2**70), 2**70), st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1,
                                                                    2**200, 10**30]))
odd_floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                       st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324, -0.0]))
datetimes = st.one_of(st.datetimes(min_value=dt.datetime(1000, 1, 1)), st.dates(min_value=dt.date(1000, 1, 1)),
                      st.times())
scalars = st.one_of(huge_ints, odd_floats, texts, st.booleans(), datetimes,
                    st.sampled_from(["", " ", "lenet", "résnet", "🙂", "tv:alexnet", "cuda:0\n", "../x"]))
values = st.recursive(scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(texts, c, max_size=3),
                      max_leaves=12)


def nested(depth: int, leaf: Any = 1, kind: str = "table") -> Any:
    for _ in range(depth):
        leaf = {"a": leaf} if kind == "table" else [leaf]
    return leaf


deep = st.builds(nested, st.integers(2, 40), scalars, st.sampled_from(["table", "list"]))
hostile = st.one_of(scalars, values, deep, st.just({}), st.just([]))

# every key the spec knows, so random documents reach the section parsers
VOCAB = sorted({*SECTIONS, "name", "seed", "n_trials", "timeout", "dataset", "root", "val_fraction", "val_size",
                "classes", "fraction", "image_size", "channels", "num_classes", "n_images", "max_epochs",
                "eval_every", "device", "precision", "schedule", "warmup", "eval_batch_size", "max_trial_seconds",
                "pack", "patience", "min_delta", "target",
                "low", "high", "log", "step", *global_params(), *list_models(),
                *(k for o in (*SAMPLER_OPTIONS.values(), *PRUNER_OPTIONS.values()) for k in o),
                "depth", "width", "stages", "hidden", "dropout"})
# ... and the dotted names of architecture parameters, which an [[enqueue]] table may also spell as one key
KNOWN = {*VOCAB, *(f"{m}.{p}" for m in list_models() for p in get_model_entry(m).params)}
vocab_keys = st.one_of(st.sampled_from(VOCAB), texts)
spec_like = st.recursive(scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(vocab_keys, c, max_size=5),
                         max_leaves=25)
documents = st.one_of(st.dictionaries(texts, values, max_size=5),
                      st.dictionaries(st.sampled_from(SECTIONS), st.dictionaries(vocab_keys, spec_like, max_size=6),
                                      max_size=7))

BASES = {
    "quickstart": tomllib.loads((ROOT / "studies" / "quickstart.toml").read_text()),
    "synthetic": study_doc(PRUNED, name="s", n_trials=4, space={"lr": {"low": 1e-4, "high": 0.05}},
                           enqueue=[{"arch": "lenet"}]),
}


def paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path of a document (tables and leaves); list items as integer steps."""
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += paths(v, (*prefix, i))
    return out


def dotted(path: tuple) -> str:
    s = ""
    for p in path:
        s += f"[{p}]" if isinstance(p, int) else (f".{p}" if s else p)
    return s


def _deepcopy(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _deepcopy(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_deepcopy(x) for x in v]
    return v


def _parent(doc: Any, path: tuple) -> Any:
    for p in path[:-1]:
        doc = doc[p]
    return doc


def kind(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, dt.date | dt.time):
        return "datetime"
    return {str: "str", list: "list", dict: "table"}[type(v)]


@st.composite
def mutations(draw) -> tuple[dict, str, tuple, Any, str | None]:
    """(document, how, path, new value, kind of the old value): a valid study with exactly one change."""
    doc = _deepcopy(BASES[draw(st.sampled_from(sorted(BASES)))])
    how = draw(st.sampled_from(["replace", "replace", "number", "unknown_key", "delete"]))
    if how == "unknown_key":
        tables = [()] + [p for p in paths(doc) if isinstance(_get(doc, p), dict)]
        path = draw(st.sampled_from(tables))
        key = draw(st.text(TEXT, max_size=10).filter(lambda k: k not in KNOWN))
        new = draw(hostile)
        _get(doc, path)[key] = new
        return doc, how, (*path, key), new, None
    all_paths = paths(doc)
    if how == "number":
        all_paths = [p for p in all_paths if kind(_get(doc, p)) == "number"]
    path = draw(st.sampled_from(all_paths))
    was = kind(_get(doc, path))
    if how == "delete":
        del _parent(doc, path)[path[-1]]
        return doc, how, path, None, was
    new = draw(st.one_of(huge_ints, odd_floats) if how == "number" else hostile)
    _parent(doc, path)[path[-1]] = new
    return doc, how, path, new, was


def _get(doc: Any, path: tuple) -> Any:
    for p in path:
        doc = doc[p]
    return doc


# ---------------------------------------------------------------------------------------------------------
# Checks

KEY_IN_MESSAGE = re.compile(r"`([^`]+)`|unknown key '")


def check_message(e: SpecError) -> str:
    msg = str(e)
    assert "\n" not in msg and "\r" not in msg, f"the message is one line: {msg!r}"
    assert KEY_IN_MESSAGE.search(msg) or "invalid TOML" in msg, f"the message names a key: {msg!r}"
    return msg


def related(named: str, path: str) -> bool:
    """``named`` is the mutated key, one of its parents (a list holding it) or one of its children."""
    return named == path or path.startswith((named + ".", named + "[")) or named.startswith((path + ".", path + "["))


def load_file(path: str | Path) -> tuple[Any, str | None]:
    """Loads a study file: (spec, None) or (None, the SpecError's message)."""
    try:
        return load_spec(path), None
    except SpecError as e:  # anything else fails the test with its traceback
        return None, check_message(e)


def load_text(text: str) -> tuple[Any, str | None]:
    """Writes ``text`` to a study file and loads it."""
    with tempfile.NamedTemporaryFile("w", suffix=".toml", encoding="utf-8", delete=False) as f:
        f.write(text)
    try:
        return load_file(f.name)
    finally:
        os.unlink(f.name)


def names_the_unknown_key(path: tuple, msg: str | None) -> bool:
    """Whether ``msg`` names the key added at ``path``, or a key inside its value (a deeper problem, or an
    [[enqueue]] table read as dotted names): in backquotes, or repr'd when a key on the way is blank or
    unprintable."""
    if msg is None:
        return False
    where, quoted = dotted(path), repr(dotted(path))
    # (repr quotes a name that holds a ' with ": "0.'x" names key 0)
    return any(s in msg for s in (f"`{where}`", f"`{where}.", f"`{where}[", quoted, quoted[:-1] + ".",
                                  quoted[:-1] + "[", f'"{where}.', f'"{where}['))


# ---------------------------------------------------------------------------------------------------------
# The spec loader


@given(documents)
@settings(max_examples=150, deadline=None)
def test_toml_writer_round_trips(doc):
    text = to_toml(doc)
    if "nan" not in text:  # nan != nan
        assert tomllib.loads(text) == doc


@given(documents)
@settings(max_examples=200, deadline=None)
def test_random_documents_load_or_name_the_key(doc):
    load_text(to_toml(doc))


@given(mutations())
@settings(max_examples=400, deadline=None)
def test_one_mutated_field_loads_or_names_it(m):
    doc, how, path, new, was = m
    spec, msg = load_text(to_toml(doc))
    where = dotted(path)
    if how == "unknown_key":
        assert names_the_unknown_key(path, msg), (where, msg)
        return
    wrong_type = how == "replace" and _wrong_type(path, was, new)
    assert msg is not None or not wrong_type, f"`{where}` = {new!r} (a type it never takes) was accepted"
    if msg is None:  # a number in range, a value of the right type, a key with a default deleted
        return
    named = [m.group(1) for m in KEY_IN_MESSAGE.finditer(msg) if m.group(1)]
    # A number out of range, or a value of a type the key never takes, is reported at that key (or its
    # parent, or a key inside it). Other changes may surface at a neighbour: dataset = "imagefolder" then
    # needs data.root; check_message has already checked that some key is named.
    if how == "number" or wrong_type:
        assert any(related(n, where) for n in named) or repr(where)[1:-1] in msg, (where, new, msg)


def _wrong_type(path: tuple, was: str, new: Any) -> bool:
    """Whether ``new`` has a type the key never takes: datetimes anywhere; booleans where the study had no
    boolean; any other change of type outside [space] (where a number may stand for a list or a range)."""
    now = kind(new)
    if now == "datetime":
        return True
    if now == "bool":
        return was != "bool"
    return now != was and path[0] != "space"


@pytest.mark.parametrize("text,needle", [
    ("[study\nname = 'x'", "line 1"),
    ("[study]\nname = 'x'\nname = 'y'\n", "line 3"),
    ('[study]\nname = "unterminated\n', "line 2"),
    ("a = " + "[" * 3000 + "]" * 3000, "nested too deeply"),
    ("a = " + "{b = " * 3000 + "1" + "}" * 3000, "nested too deeply"),
    ("a = " + "9" * 5000, "invalid TOML"),
    ("a = 1\x00", "line 1"),
])
def test_invalid_toml_names_the_file_and_the_line(text, needle, tmp_path):
    p = tmp_path / "broken.toml"
    p.write_text(text)
    with pytest.raises(SpecError) as e:
        load_spec(p)
    msg = str(e.value)
    assert str(p) in msg and needle in msg and "\n" not in msg, msg


@pytest.mark.parametrize("change,key", [
    ({"study": {"name": "s", "timeout": 2**200}}, "`study.timeout`"),  # float() of it would overflow
    ({"space": {"lr": 10**400}}, "`space.lr`"),
    ({"space": {"batch_size": {"low": 1, "high": 64, "step": 2**64}}}, "`space.batch_size.step`"),
    ({"sampler": {"name": "random", "seed": 2**40}}, "`sampler.seed`"),  # numpy takes seeds < 2**32
    ({"study": {"name": "s\n"}}, "`study.name`"),  # "$" matched before a trailing newline
    ({"train": {"device": "cpu\n"}}, "`train.device`"),
    ({"train": {"device": "cuda:\u0663"}}, "`train.device`"),  # an Arabic-Indic digit matched \d
    ({"space": {"a\nb": 1}}, "'space.a\\nb'"),
    ({"enqueue": [nested(3000)]}, "`enqueue[0].a.a.a.a.a.a.a`"),  # dotted keys nest without a TOML limit
    ({"data": {"dataset": "synthetic", "image_size": 16}}, "`data.image_size` is 16 px"),
    ({"space": {"arch": ["lenet", "tv:alexnet"]}}, "'tv:alexnet' needs at least 63 px"),
    ({"space": {"image_size": {"low": 0, "high": 64}}}, "`space.image_size` allows 1 px"),
])
def test_fuzzing_findings_are_spec_errors(change, key):
    raw = {"study": {"name": "s"}, "data": {"dataset": "synthetic"}} | change
    with pytest.raises(SpecError) as e:
        parse_spec(raw)
    assert key in check_message(e.value), str(e.value)


def test_image_size_check_passes_when_resized_up():
    spec = parse_spec({"study": {"name": "s"}, "data": {"dataset": "cifar10"},
                       "space": {"arch": "tv:alexnet", "image_size": 64}})
    assert spec.dimension("image_size").value == 64


# ---------------------------------------------------------------------------------------------------------
# The real CLI

BATCH = textwrap.dedent("""
    import contextlib, io, json, sys
    from hpsearch.cli import main
    out = []
    for argv in json.loads(sys.argv[1]):
        err, code = io.StringIO(), 0
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                main(argv)
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
        out.append({"argv": argv, "code": code, "stderr": err.getvalue()})
    print(json.dumps(out))
""")


def run_batch(argvs: list[list[str]], cwd: Path) -> list[dict]:
    """Runs ``hpsearch.cli.main(argv)`` for each argv in one fresh process; an exception that escapes main
    fails here with its traceback."""
    env = os.environ | {"PYTHONWARNINGS": "ignore", "HPSEARCH_CONNECT_RETRY_S": "0"}
    env.pop("HPSEARCH_STORAGE", None)
    r = subprocess.run([sys.executable, "-c", BATCH, json.dumps(argvs)], cwd=cwd, env=env, text=True,
                       capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def assert_one_line(result: dict, code: int = 2) -> None:
    lines = [ln for ln in result["stderr"].splitlines() if ln.strip()]
    assert result["code"] == code, result
    assert len(lines) == 1 and "Traceback" not in result["stderr"], result


@settings(max_examples=1, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(mutations().filter(lambda m: m[1] in ("unknown_key", "number")), min_size=8, max_size=8),
       st.lists(documents, min_size=4, max_size=4))
def test_validate_exits_2_with_one_line(tmp_path_factory, muts, docs):
    """`hpsearch validate` agrees with the spec loader on every file: exit 0 where it loads, else exit 2 with
    the loader's message as the one line; every unknown key is refused by name."""
    d = tmp_path_factory.mktemp("validate")
    files, expected = [], []
    for i, text in enumerate([to_toml(m[0]) for m in muts] + [to_toml(doc) for doc in docs]):
        (d / f"{i}.toml").write_text(text, encoding="utf-8")
        files.append(str(d / f"{i}.toml"))
        expected.append(load_file(files[-1])[1])
    for (_, how, path, _, _), msg in zip(muts, expected[:len(muts)], strict=True):
        if how == "unknown_key":
            assert names_the_unknown_key(path, msg), (dotted(path), msg)
    for r, msg in zip(run_batch([["validate", f] for f in files], d), expected, strict=True):
        if msg is None:  # a number mutation may stay in range, a random document may be a valid study
            assert r["code"] == 0, r
        else:
            assert_one_line(r)
            assert msg in r["stderr"], (msg, r)


HOSTILE_FILES = {
    "unknown key": '[study]\nname = "s"\nbogus = 1\n[data]\ndataset = "synthetic"\n',
    "huge integer": '[study]\nname = "s"\ntimeout = 99999999999999999999999\n[data]\ndataset = "synthetic"\n',
    "nan": '[study]\nname = "s"\n[data]\ndataset = "synthetic"\n[space]\nlr = nan\n',
    "deep nesting": "a = " + "[" * 3000 + "]" * 3000 + "\n",
    "control key": '[study]\nname = "s"\n"x\\ny" = 1\n[data]\ndataset = "synthetic"\n',
    "not utf-8": b"\xff\xfe[study]\n",
}


def option_cases(spec: str, db: str) -> list[tuple[list[str], int]]:
    """(argv, exit code): bad option values for run, worker, status, best, report and export."""
    bad_urls = ["foo://x", "", "://", "postgresql+psycopg://u@127.0.0.1:notaport/db", "redis://:notaport",
                "grpc://host:port", "journal://", "http://example.com"]
    cases: list[tuple[list[str], int]] = []
    for opt, value in [("--n-trials", "-1"), ("--n-trials", "ten"), ("--timeout", "0"), ("--timeout", "-5"),
                       ("--timeout", "nan"), ("--timeout", "inf"), ("--device", "tpu"), ("--device", "cuda:x"),
                       ("--device", "cpu\n"), ("--device", ""), ("--workers", "0"), ("--seed", "-1"),
                       ("--heartbeat-interval", "0"), ("--grace-period", "1"), ("--keep-best", "-1")]:
        cases.append((["run", spec, "--storage", db, opt, value], 2))
    cases += [(["run", spec, "--storage", url], 2) for url in bad_urls[:4]]
    for opt, value in [("--n-trials", "0"), ("--timeout", "nan"), ("--device", "gpu"), ("--storage", "foo://x"),
                       ("--storage", "")]:
        cases.append((["worker", "--study", "s", "--storage", db, opt, value], 2))
    cases.append((["worker", "--storage", db], 2))  # --study is required
    cases += [(["status", "--storage", url], 2) for url in bad_urls]
    cases += [(["best", "--study", "s", "--storage", "foo://x"], 2),
              (["report", "--study", "s", "--storage", "mysql+pymysql://u@h:notaport/db"], 2),
              (["export", "--study", "s", "--storage", "", "-o", "x.csv"], 2),
              (["export", "--study", "s", "--storage", db], 2)]  # -o is required
    # well-formed, but the folder does not exist: a runtime failure (exit 1), still one line
    cases.append((["status", "--storage", "sqlite:////nonexistent/dir/x.db"], 1))
    return cases


def test_bad_files_and_option_values_exit_2_with_one_line(tmp_path, synthetic_spec):
    spec = str(synthetic_spec(n_trials=1))
    db = f"sqlite:///{tmp_path}/ok.db"
    cases = option_cases(spec, db)
    for i, body in enumerate(HOSTILE_FILES.values()):
        p = tmp_path / f"hostile{i}.toml"
        p.write_bytes(body if isinstance(body, bytes) else body.encode())
        cases.append((["validate", str(p)], 2))
    assert len(cases) > 40
    results = run_batch([argv for argv, _ in cases], tmp_path)
    for (_argv, code), r in zip(cases, results, strict=True):
        assert_one_line(r, code)
    assert not (tmp_path / "ok.db").exists(), "every case stopped before opening the storage"


@pytest.mark.parametrize("argv", [
    ["validate", "{huge}"],
    ["run", "{spec}", "--timeout", "nan"],
    ["run", "{spec}", "--storage", ""],
], ids=["validate-huge-integer", "run-timeout-nan", "run-empty-storage"])
def test_hpsearch_process_exits_2_with_one_line(argv, tmp_path, synthetic_spec):
    spec = str(synthetic_spec(n_trials=1))
    huge = tmp_path / "huge.toml"
    huge.write_text(HOSTILE_FILES["huge integer"])
    argv = [a.replace("{spec}", spec).replace("{huge}", str(huge)) for a in argv]
    r = run_cli(*argv, cwd=tmp_path, env={"HPSEARCH_CONNECT_RETRY_S": "0"})
    assert_one_line({"code": r.returncode, "stderr": r.stderr})
    assert not (tmp_path / "hpsearch.db").exists(), "nothing ran against the default storage"
