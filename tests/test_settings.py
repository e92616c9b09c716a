"""One definition per setting: validation and the command line both come from the field."""
from dataclasses import dataclass, fields

import pytest

from cxr_workbench.method.invert import InvertConfig
from cxr_workbench.method.optimize import LOConfig
from cxr_workbench.model.oracle import OracleConfig
from cxr_workbench.model.train import TrainConfig
from cxr_workbench.settings import setting, validate_settings
from cxr_workbench.studies.classify import CPU_SCALE, ProtocolConfig
from cxr_workbench.ui.cli import build_parser, settings_overrides

CONFIGS = (LOConfig, TrainConfig, InvertConfig, OracleConfig, ProtocolConfig)


@dataclass
class Toy:
    n: int = setting(3, "count", low=1, high=10)
    rate: float = setting(0.5, "rate", low=0, high=1, open_low=True)
    kind: str = setting("a", "kind", choices=("a", "b"))
    sizes: tuple[int, ...] = setting((1, 2), "sizes", low=1)
    even: int = setting(2, "an even number", low=0, rule=lambda v: v % 2 == 0, expected="an even number")

    validate = validate_settings


@pytest.mark.parametrize("change, message", [
    (dict(n=0), r"n=0; expected an integer in \[1, 10\] \(count\)"),
    (dict(n=2.0), r"n=2.0; expected an integer"),
    (dict(n=True), r"n=True; expected an integer"),
    (dict(rate=0.0), r"rate=0.0; expected a finite number in \(0, 1\]"),
    (dict(rate=float("nan")), r"rate=nan"),
    (dict(kind="c"), r"kind='c'; expected one of \('a', 'b'\)"),
    (dict(sizes=()), r"sizes=\(\); expected at least one value"),
    (dict(sizes=(1, 0)), r"sizes=\(1, 0\); expected integers in \[1, inf\]"),
    (dict(even=3), r"even=3; expected an even number"),
])
def test_validation_names_the_field_the_value_and_the_range(change, message):
    Toy().validate()
    with pytest.raises(ValueError, match=message):
        Toy(**change).validate()


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.__name__)
def test_every_config_validates_its_defaults_and_every_field_is_defined_once(config):
    config().validate()
    for f in fields(config):
        assert f.metadata["help"], f"{config.__name__}.{f.name} has no meaning"


@pytest.mark.parametrize("command, config", [("edit", LOConfig), ("augment", LOConfig), ("train", TrainConfig),
                                             ("invert", InvertConfig), ("oracle", OracleConfig),
                                             ("classify", ProtocolConfig)])
def test_the_command_line_offers_every_setting(command, config):
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices[command]
    options = {o for a in sub._actions for o in a.option_strings}
    wanted = {"--" + f.name.replace("_", "-") for f in fields(config) if f.metadata["cli"]}
    assert wanted <= options, wanted - options


def test_options_override_only_what_was_given_and_are_checked_as_read(capsys):
    parser = build_parser()
    args = parser.parse_args(["classify", "--sets", "s", "--out", "o", "--n-disease", "4", "8", "--seeds", "3"])
    assert settings_overrides(args, ProtocolConfig) == dict(n_disease=(4, 8), seeds=(0, 1, 2))
    args = parser.parse_args(["train", "--run-dir", "r", "--kimg", "5"])
    assert settings_overrides(args, TrainConfig) == dict(kimg=5.0)
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--run-dir", "r", "--batch", "0"])
    err = capsys.readouterr().err
    assert "--batch" in err and "batch=0; expected an integer in [1, 4096]" in err and err.count("\n") == 1
    assert CPU_SCALE.validate().n_normal == 200
