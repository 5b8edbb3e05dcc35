"""Attacks with hyperparameters as text (``ifgsm(eps=4/255,iters=20)``): parsing, types, errors, ids."""

from __future__ import annotations

import pytest

from iqa_robustness.attacks import AttackSpec, AttackSpecError, UnknownAttackError, parse_attack_specs
from iqa_robustness.attacks.spec import parse_value
from iqa_robustness.runner.grid import CaseSpec, build_grid


def one(text: str) -> AttackSpec:
    (spec,) = parse_attack_specs(text)
    return spec


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("4/255", 4 / 255),
        (" 1/2 ", 0.5),
        ("2.5/10", 0.25),
        ("20", 20),
        ("-3", -3),
        ("0.005", 0.005),
        ("1e-3", 0.001),
        ("true", True),
        ("False", False),
        ("niqe", "niqe"),
        ("'niqe'", "niqe"),
        ('"a b"', "a b"),
    ],
)
def test_values_read_as_ints_floats_fractions_bools_and_strings(text, value):
    parsed = parse_value(text)
    assert parsed == value
    assert type(parsed) is type(value)


def test_a_fraction_is_the_same_float_as_python_division():
    assert one("ifgsm(eps=4/255)").create().eps == 4 / 255


def test_a_fraction_over_zero_is_refused():
    with pytest.raises(AttackSpecError, match="divides by zero"):
        one("ifgsm(eps=1/0)")


# --------------------------------------------------------------------------- fields and their types


def test_values_are_converted_to_the_declared_field_types():
    attack = one("ifgsm(eps=4/255,iters=20,alpha=1)").create()
    assert (attack.eps, attack.iters, attack.alpha) == (4 / 255, 20, 1.0)
    assert type(attack.iters) is int
    assert type(attack.alpha) is float


def test_bools_and_literal_strings_reach_their_fields():
    assert one("generative-uap(clip_noise=false)").create().clip_noise is False
    assert one("amifgsm(bound=niqe)").create().bound == "niqe"
    assert one("amifgsm(bound='niqe')") == one("amifgsm(bound=niqe)")
    assert one('korhonen(sobel="text")').create().sobel == "text"


def test_field_names_take_dashes_for_underscores():
    assert one("uap(batch-size=2)") == one("uap(batch_size=2)")
    assert one("uap(batch-size=2)").create().batch_size == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ifgsm(iters=4/255)", "iters takes an integer, got 4/255"),
        ("ifgsm(iters=2.0)", "iters takes an integer, got 2.0"),
        ("ifgsm(eps=true)", r"eps takes a number \(int, float or a/b\), got true"),
        ("ifgsm(eps=big)", "eps takes a number"),
        ("generative-uap(clip_noise=1)", "clip_noise takes true or false, got 1"),
        ("amifgsm(bound=brisque)", "bound takes one of 'none', 'niqe', got brisque"),
        ("cnn(test_time=3)", "test_time takes a string, got 3"),
    ],
)
def test_a_value_of_the_wrong_type_is_a_clear_error(text, message):
    with pytest.raises(AttackSpecError, match=message):
        one(text)


def test_an_unknown_field_suggests_the_closest_and_lists_every_field_with_its_default():
    with pytest.raises(AttackSpecError) as info:
        one("ifgsm(epz=2/255)")
    message = str(info.value)
    assert "attack 'ifgsm' has no hyperparameter 'epz'; did you mean 'eps'?" in message
    assert "eps=0.0392157, alpha=0.00392157, iters=10" in message


def test_the_attacks_own_checks_still_apply():
    with pytest.raises(AttackSpecError, match="pull_step must lie in"):
        one("madc(pull_step=0.5)").create()


@pytest.mark.parametrize("text", ["ifgsm(eps)", "ifgsm(=1)", "ifgsm(eps=)", "ifgsm(eps=1,eps=2)", "ifgsm(eps=1"])
def test_a_malformed_spec_is_refused(text):
    with pytest.raises(AttackSpecError):
        parse_attack_specs(text)


# --------------------------------------------------------------------------- selections


def test_commas_inside_parentheses_belong_to_their_attack():
    specs = parse_attack_specs("ifgsm(eps=4/255,iters=20),mifgsm")
    assert [s.name for s in specs] == ["ifgsm", "mifgsm"]
    assert specs[0].kwargs == {"eps": 4 / 255, "iters": 20}
    assert specs[1].kwargs == {}


def test_globs_and_all_still_select_by_name():
    assert [s.label for s in parse_attack_specs("*fgsm")] == ["amifgsm", "fgsm", "ifgsm", "mifgsm"]
    assert [s.label for s in parse_attack_specs("*fgsm,ifgsm(eps=2/255)")] == [
        "amifgsm",
        "fgsm",
        "ifgsm",
        "ifgsm(eps=0.007843)",
        "mifgsm",
    ]
    assert len(parse_attack_specs("all")) == len(parse_attack_specs(None)) >= 10


def test_a_glob_cannot_take_values():
    with pytest.raises(AttackSpecError, match="glob"):
        parse_attack_specs("*fgsm(eps=2/255)")


def test_an_unknown_attack_in_a_spec_suggests_the_closest_name():
    with pytest.raises(UnknownAttackError, match="did you mean 'ifgsm'"):
        parse_attack_specs("ifgsn(eps=2/255)")


def test_values_equal_to_the_defaults_give_the_default_spec_once():
    assert parse_attack_specs("ifgsm,ifgsm(eps=10/255),IFGSM") == [AttackSpec("ifgsm")]


def test_two_specs_that_would_share_a_case_id_are_refused():
    with pytest.raises(AttackSpecError, match="would share the case id"):
        parse_attack_specs("ifgsm(eps=0.100001),ifgsm(eps=0.1000002)")


# --------------------------------------------------------------------------- labels, text, ids


def test_the_label_is_the_name_for_defaults_and_safe_for_file_names_with_values():
    assert one("ifgsm").label == "ifgsm"
    assert one("ifgsm(iters=20,eps=2/255)").label == "ifgsm(eps=0.007843,iters=20)"
    label = one("uap(batch_size=2,eps=1/255)").label
    assert label == "uap(batch-size=2,eps=0.003922)"
    assert "/" not in label
    assert "_" not in label  # MSU result files are <attack>_<metric>_test.csv


def test_the_exact_text_parses_back_to_the_same_spec():
    for text in ("ifgsm(eps=2/255,iters=20)", "amifgsm(bound=niqe,nu=0.5)", "generative-uap(clip_noise=false)"):
        spec = one(text)
        assert one(spec.text) == spec


def test_an_attacks_params_give_back_its_spec():
    spec = one("uap(batch_size=2,lr=1/1000)")
    assert AttackSpec.from_params(spec.create().params()) == spec


def test_case_ids_are_unchanged_for_defaults_and_carry_the_values_otherwise():
    grid = build_grid(["niqe"], ["ifgsm", "ifgsm(eps=2/255,iters=20)"], ["sample"])
    assert [case.id for case in grid] == ["ifgsm-niqe-sample", "ifgsm(eps=0.007843,iters=20)-niqe-sample"]
    assert all("/" not in case.id for case in grid)
    assert grid[1].attack_spec.create().eps == 2 / 255


def test_universal_cases_of_a_spec_get_every_amplitude():
    grid = build_grid(["niqe"], ["uap(eps=0.05)"], ["sample"], amplitudes=[0.2, 0.8])
    assert [case.id for case in grid] == [
        "uap(eps=0.05)-niqe-sample-on-sample-amp0.2",
        "uap(eps=0.05)-niqe-sample-on-sample-amp0.8",
    ]
    assert all(case.universal for case in grid)


def test_a_case_built_from_a_spec_string_parses_it():
    case = CaseSpec("niqe", "ifgsm(eps=4/255)", "sample")
    assert case.attack_spec == one("ifgsm(eps=4/255)")
    assert case.attack == "ifgsm(eps=0.01569)"
