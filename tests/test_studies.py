"""The tests' study-file builder (tests/studies.py): its TOML reads back through tomllib as the document it
was built from, the document is a valid study, and overrides change exactly what they name."""

from __future__ import annotations

import datetime as dt
import math
import tomllib

from hypothesis import given, settings
from hypothesis import strategies as st

from hpsearch.spec import parse_spec
from studies import DEFAULTS, PRUNED, study_doc, study_text, to_toml, write_study


def test_the_default_study_is_the_tiny_one():
    text = study_text()
    assert tomllib.loads(text) == DEFAULTS
    spec = parse_spec(tomllib.loads(text))
    assert (spec.data.dataset, spec.data.num_classes, spec.data.n_images, spec.data.image_size) == (
        "synthetic", 2, 200, 28)
    assert (spec.train.max_epochs, spec.train.device) == (1, "cpu")
    assert (spec.sampler.name, spec.pruner.name) == ("random", "none")
    assert spec.dimension("arch").value == "lenet" and spec.dimension("batch_size").value == 32
    lr = spec.dimension("lr")
    assert (lr.low, lr.high, lr.log) == (1e-3, 0.01, True)


def test_overrides_merge_key_by_key_and_none_removes():
    doc = study_doc(name="x", n_trials=4, data={"n_images": 600, "channels": None}, train={"max_epochs": 2},
                    space={"lr": 0.003})
    assert doc["study"] == {"name": "x", "seed": 0, "n_trials": 4}
    assert doc["data"] == {"dataset": "synthetic", "image_size": 28, "num_classes": 2, "n_images": 600}
    assert doc["train"] == {"max_epochs": 2, "eval_every": 0.5, "device": "cpu"}
    assert doc["space"]["lr"] == 0.003 and doc["space"]["batch_size"] == 32, "the other space keys stay"
    assert "sampler" not in study_doc(sampler=None), "a section set to None is left out"
    assert DEFAULTS["data"]["channels"] == 1, "the defaults themselves are never changed"


def test_a_new_pruner_sampler_or_dataset_starts_its_section_afresh():
    doc = study_doc(PRUNED, pruner={"name": "none"}, data={"dataset": "imagefolder", "root": "/x"})
    assert doc["pruner"] == {"name": "none"}, "median's options do not stay behind"
    assert doc["data"] == {"dataset": "imagefolder", "root": "/x"}
    assert study_doc(PRUNED, pruner={"n_startup_trials": 5})["pruner"] == {
        "name": "median", "n_startup_trials": 5, "n_warmup_steps": 0}, "the same pruner keeps its options"


def test_presets_then_keywords_then_name():
    doc = study_doc(PRUNED, {"space": {"batch_size": 16}}, name="y", study={"name": "z", "seed": 3},
                    space={"optimizer": "sgd"})
    assert doc["study"] == {"name": "y", "seed": 3, "n_trials": 2}, "name= wins over study.name"
    assert doc["space"]["batch_size"] == 16 and doc["space"]["optimizer"] == "sgd"
    assert doc["pruner"]["name"] == "median"
    spec = parse_spec(doc)
    assert spec.pruner.options == {"n_startup_trials": 2, "n_warmup_steps": 0}
    assert (spec.data.num_classes, spec.data.n_images, spec.train.max_epochs) == (4, 600, 2)


def test_sub_tables_and_enqueue_are_written_as_tables(tmp_path):
    vgg = {"stages": {"low": 1, "high": 3}, "width": 16}
    path = write_study(tmp_path / "s.toml", space={"arch": ["lenet", "vgg"], "vgg": vgg},
                       enqueue=[{"arch": "vgg", "vgg": {"stages": 2}}, {"arch": "lenet"}])
    text = path.read_text()
    assert "\n[space.vgg]\nstages = { low = 1, high = 3 }\nwidth = 16\n" in text
    assert text.count("[[enqueue]]") == 2 and "\n[enqueue.vgg]\nstages = 2\n" in text
    assert 'lr = { low = 0.001, high = 0.01, log = true }' in text, "a range stays inline"
    spec = parse_spec(tomllib.loads(text))
    assert spec.dimension("vgg.stages").low == 1 and spec.dimension("vgg.width").value == 16
    assert spec.enqueue == ({"arch": "vgg", "vgg.stages": 2}, {"arch": "lenet"})


# ---------------------------------------------------------------------------------------------------------
# The writer on any document

keys = st.text(st.characters(blacklist_categories=("Cs",)), max_size=6)  # no lone surrogates: TOML is UTF-8
scalars = st.one_of(st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False), st.text(max_size=8),
                    st.booleans(), st.datetimes(min_value=dt.datetime(1000, 1, 1)),
                    st.dates(min_value=dt.date(1000, 1, 1)), st.times())
documents = st.dictionaries(keys, st.recursive(
    scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(keys, c, max_size=3)
    | st.lists(st.dictionaries(keys, c, max_size=3), min_size=1, max_size=2), max_leaves=15), max_size=5)


@given(documents)
@settings(max_examples=300, deadline=None)
def test_any_document_reads_back_as_itself(doc):
    assert tomllib.loads(to_toml(doc)) == doc


def test_special_floats_and_strings():
    doc = {"a": {"inf": math.inf, "neg": -math.inf, "zero": -0.0, "tiny": 5e-324, "s": 'q"\\\n\x7f é'}}
    assert tomllib.loads(to_toml(doc)) == doc
    assert math.isnan(tomllib.loads(to_toml({"x": math.nan}))["x"])
