import json

import pytest
from hypothesis import given, settings, strategies as st

from latentforge.config import load_config_file, make_config, parse_set_items
from latentforge.errors import ConfigError
from latentforge.models import get_model_class, make_model_config
from latentforge.models.dense_ae import StackedAEConfig


def test_defaults_are_the_chapters():
    c = make_model_config("stacked-ae")
    assert (c.hidden_sizes, c.coding_size, c.activation, c.init) == ([100], 30, "selu", "lecun_normal")
    assert (c.output_activation, c.loss, c.optimizer, c.lr, c.batch_size, c.epochs) == ("sigmoid", "bce", "sgd", 1.5, 32, 20)
    lin = make_model_config("linear-ae")
    assert (lin.coding_size, lin.activation, lin.loss, lin.lr) == (2, "linear", "mse", 1.0)


def test_set_values_are_coerced():
    values = parse_set_items(["hidden_sizes=200,50", "lr=0.1", "optimizer=adam", "coding-size=8", "normalize=false"])
    c = make_config(StackedAEConfig, values)
    assert c.hidden_sizes == [200, 50] and c.lr == 0.1 and c.coding_size == 8 and c.normalize is False
    assert make_config(StackedAEConfig, {"hidden_sizes": "[]"}).hidden_sizes == []


@pytest.mark.parametrize("values,needle", [
    ({"nope": 1}, "unknown config key 'nope'"),
    ({"lr": "-1"}, "'lr'"),
    ({"lr": "abc"}, "'lr': expected a number"),
    ({"epochs": "0"}, "'epochs'"),
    ({"epochs": "1.5"}, "'epochs': expected an integer"),
    ({"batch_size": "0"}, "'batch_size'"),
    ({"optimizer": "lbfgs"}, "'optimizer'"),
    ({"activation": "swishy"}, "'activation'"),
    ({"loss": "bce", "output_activation": "linear"}, "loss"),
    ({"hidden_sizes": "10,-3"}, "'hidden_sizes'"),
    ({"normalize": "maybe"}, "'normalize'"),
    ({"lr": "inf"}, "'lr'"),
])
def test_bad_values_name_the_field(values, needle):
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace("(", r"\(")):
        make_config(StackedAEConfig, values)


def test_set_needs_key_value():
    with pytest.raises(ConfigError, match="key=value"):
        parse_set_items(["lr"])


@pytest.mark.parametrize("suffix,text", [
    (".toml", 'lr = 0.5\nhidden_sizes = [64]\n'),
    (".json", json.dumps({"lr": 0.5, "hidden_sizes": [64]})),
    (".yaml", "lr: 0.5\nhidden_sizes: [64]\n"),
])
def test_config_files(tmp_path, suffix, text):
    p = tmp_path / f"c{suffix}"
    p.write_text(text)
    c = make_config(StackedAEConfig, load_config_file(p))
    assert c.lr == 0.5 and c.hidden_sizes == [64]


@pytest.mark.parametrize("name,text,needle", [
    ("c.toml", "lr = = 1", "cannot parse"),
    ("c.ini", "lr=1", "unknown config format"),
    ("c.json", "[1, 2]", "mapping"),
    ("missing.json", None, "cannot read"),
])
def test_bad_config_files(tmp_path, name, text, needle):
    p = tmp_path / name
    if text is not None:
        p.write_text(text)
    with pytest.raises(ConfigError, match=needle):
        load_config_file(p)


def test_unknown_model():
    with pytest.raises(ConfigError, match="unknown model 'nope'; available: .*stacked-ae"):
        get_model_class("nope")


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["lr", "epochs", "hidden_sizes", "activation", "normalize", "bogus", "seed"]),
                       st.one_of(st.text(max_size=12), st.integers(-5, 5), st.floats(allow_nan=True), st.booleans(),
                                 st.lists(st.integers(-3, 300), max_size=3), st.none())))
def test_config_parser_fuzz(values):
    """Any input either builds a valid config or raises ConfigError: nothing else comes out."""
    try:
        c = make_config(StackedAEConfig, values)
    except ConfigError:
        return
    c.validate()
