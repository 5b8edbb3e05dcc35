"""The image-specific attacks of the MSU benchmark: mechanics on a tiny fixed network, then real metrics."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from iqa_robustness.attacks import (
    Attack,
    Budget,
    BudgetExceededError,
    NotDifferentiableError,
    UnknownAttackError,
    attack_class,
    create_attack,
    list_attacks,
    parse_attack_specs,
    register_attack,
    unregister_attack,
)
from iqa_robustness.attacks.amifgsm import niqe_radius
from iqa_robustness.attacks.korhonen import spatial_activity_map
from iqa_robustness.attacks.madc import project_out, rmse
from iqa_robustness.metrics.base import Metric, MetricSpec
from iqa_robustness.metrics.registry import UnknownMetricError, create_metric, get_spec

torch.set_num_threads(min(2, torch.get_num_threads()))

IMAGE_ATTACKS = ("fgsm", "ifgsm", "mifgsm", "amifgsm", "korhonen", "madc")
LINF_BOUNDED = ("fgsm", "ifgsm", "mifgsm", "amifgsm")
MSU_DEFAULTS = {
    "fgsm": {"eps": 10 / 255},
    "ifgsm": {"eps": 10 / 255, "alpha": 1 / 255, "iters": 10},
    "mifgsm": {"eps": 10 / 255, "alpha": 1 / 255, "iters": 10, "nu": 1.0},
    "amifgsm": {"eps": 10 / 255, "iters": 10, "nu": 1.0, "bound": "none"},
    "korhonen": {"lr": 0.005, "iters": 10, "sobel": "code"},
    "madc": {"iters": 8, "step": 0.001, "eps": 10 / 255, "pull_step": 0.0005},
}


class TinyNet(Metric):
    """A fixed two-layer conv net with per-image scores in (-1, 1): a real gradient, no batch coupling."""

    def __init__(self, lower_better: bool = False, differentiable: bool = True) -> None:
        spec = MetricSpec(
            name="tiny-test-net", lower_better=lower_better, bounds=(-1.0, 1.0), differentiable=differentiable
        )
        super().__init__(spec)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, 1, 3, padding=1))
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(0.5 * torch.randn(p.shape, generator=generator))
        self.freeze()

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.body(x)).mean(dim=(1, 2, 3))


@pytest.fixture(scope="module")
def tiny() -> TinyNet:
    return TinyNet()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """Three smooth random 32x32 images, away from 0 and 1."""
    generator = torch.Generator().manual_seed(1)
    return F.avg_pool2d(torch.rand(3, 3, 36, 36, generator=generator), 5, stride=1)


@pytest.fixture(params=IMAGE_ATTACKS)
def attack_name(request: pytest.FixtureRequest) -> str:
    return request.param


# --- registry and hyperparameters ----------------------------------------------------------


def test_every_image_attack_is_registered_in_its_family() -> None:
    assert set(IMAGE_ATTACKS) <= set(list_attacks())
    families = {name: attack_class(name).family for name in IMAGE_ATTACKS}
    assert families == {
        "fgsm": "iterative",
        "ifgsm": "iterative",
        "mifgsm": "iterative",
        "amifgsm": "iterative",
        "korhonen": "perceptual",
        "madc": "perceptual",
    }


def test_params_hold_the_msu_code_defaults(attack_name: str) -> None:
    assert create_attack(attack_name).params() == {"attack": attack_name, **MSU_DEFAULTS[attack_name]}


def test_hyperparameters_can_be_overridden_and_show_in_params() -> None:
    assert create_attack("ifgsm", eps=4 / 255).params()["eps"] == pytest.approx(4 / 255)


@pytest.mark.parametrize(
    ("name", "bad"),
    [("amifgsm", {"bound": "brisque"}), ("korhonen", {"sobel": "prewitt"}), ("madc", {"pull_step": 0.1})],
)
def test_invalid_options_are_refused_with_the_choices(name: str, bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=name):
        create_attack(name, **bad)


# --- mechanics on the tiny net ---------------------------------------------------------------


def test_attack_returns_a_detached_batch_in_the_unit_range(
    attack_name: str, tiny: TinyNet, images: torch.Tensor
) -> None:
    adv = create_attack(attack_name)(tiny, images)
    assert adv.shape == images.shape
    assert adv.dtype == images.dtype
    assert not adv.requires_grad
    assert adv.min() >= 0.0
    assert adv.max() <= 1.0
    assert not torch.equal(adv, images)


def test_attack_leaves_its_input_untouched(attack_name: str, tiny: TinyNet, images: torch.Tensor) -> None:
    before = images.clone()
    create_attack(attack_name)(tiny, images)
    assert torch.equal(images, before)


def test_a_batch_gives_the_same_images_as_one_at_a_time(attack_name: str, tiny: TinyNet, images: torch.Tensor) -> None:
    attack = create_attack(attack_name)
    together = attack(tiny, images)
    alone = torch.cat([attack(tiny, images[i : i + 1]) for i in range(len(images))])
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-5)


def test_attack_refuses_a_non_differentiable_metric(attack_name: str, images: torch.Tensor) -> None:
    with pytest.raises(NotDifferentiableError, match="non-differentiable"):
        create_attack(attack_name)(TinyNet(differentiable=False), images)


@pytest.mark.parametrize("lower_better", [False, True], ids=["higher-better", "lower-better"])
def test_attack_raises_quality_whatever_the_orientation(
    attack_name: str, lower_better: bool, images: torch.Tensor
) -> None:
    metric = TinyNet(lower_better=lower_better)
    adv = create_attack(attack_name)(metric, images)
    raw_change = metric(adv) - metric(images)
    assert torch.all(metric.quality(adv) > metric.quality(images))
    assert torch.all(raw_change < 0) if lower_better else torch.all(raw_change > 0)


@pytest.mark.parametrize("name", LINF_BOUNDED)
def test_fgsm_family_stays_inside_the_linf_ball(name: str, tiny: TinyNet, images: torch.Tensor) -> None:
    eps = 10 / 255
    adv = create_attack(name)(tiny, images)
    assert (adv - images).abs().max() <= eps + 1e-6


@pytest.mark.parametrize("name", ["ifgsm", "mifgsm"])
def test_the_projection_binds_when_the_steps_could_leave_the_ball(
    name: str, tiny: TinyNet, images: torch.Tensor
) -> None:
    eps = 3 / 255  # 10 steps of 1/255 would reach 10/255 without the projection
    linf = (create_attack(name, eps=eps)(tiny, images) - images).abs().amax(dim=(1, 2, 3))
    torch.testing.assert_close(linf, torch.full_like(linf, eps), rtol=0, atol=1e-6)


# --- budgets declared on the class ----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Overshoot(Attack):
    """Moves every pixel by twice its budget: what the base class must refuse."""

    name = "overshoot-for-test"
    budget = Budget.linf("eps")
    iterations_attr = None
    needs_gradient = False

    eps: float = 1 / 255

    def run(self, metric: Metric, images: torch.Tensor) -> torch.Tensor:
        return images + 2 * self.eps


@pytest.fixture
def overshoot():
    """``_Overshoot`` in the registry for the test only."""
    register_attack(_Overshoot)
    yield "overshoot-for-test"
    unregister_attack("overshoot-for-test")


def test_an_attack_that_leaves_its_declared_budget_raises_with_the_numbers(overshoot, tiny, images) -> None:
    attack = create_attack(overshoot)
    with pytest.raises(BudgetExceededError) as info:
        attack(tiny, images)
    message = str(info.value)
    assert "overshoot-for-test" in message
    assert "|adv - x|_inf <= eps" in message
    found, limit = map(float, re.search(r"linf distance (\S+) > (\S+) ", message).groups())
    assert (found, limit) == (pytest.approx(2 / 255, abs=1e-6), pytest.approx(1 / 255, abs=1e-6))


def test_an_unregistered_attack_is_unknown_again(overshoot) -> None:
    assert attack_class("Overshoot_For_Test") is _Overshoot  # the registry's key rule: any case, _ for -
    unregister_attack(overshoot)
    assert overshoot not in list_attacks()
    with pytest.raises(UnknownAttackError, match="unknown attack"):
        attack_class(overshoot)
    register_attack(_Overshoot)  # for the fixture to take it away again


def test_an_rmse_budget_is_checked_per_image(tiny: TinyNet, images: torch.Tensor) -> None:
    budget = Budget.rmse("eps")
    moved = images.clone()
    moved[0] += 0.02  # image 0: RMSE 0.02; the others untouched
    attack = create_attack("madc", eps=0.03)
    assert budget.check(attack, images, moved) == pytest.approx(0.02)
    with pytest.raises(BudgetExceededError, match=r"rmse distance 0\.02 > 0\.01"):
        budget.check(create_attack("madc", eps=0.01, pull_step=0.001), images, moved)


def test_registering_an_attack_without_a_declared_budget_is_refused() -> None:
    @dataclasses.dataclass(frozen=True)
    class Undeclared(Attack):
        name = "undeclared-for-test"

    with pytest.raises(TypeError, match="must declare its budget"):
        register_attack(Undeclared)
    assert "undeclared-for-test" not in list_attacks()


def test_ifgsm_at_eps_2_of_255_stays_within_2_of_255_on_cnniqa(cnniqa: Metric, msu_small: torch.Tensor) -> None:
    (spec,) = parse_attack_specs("ifgsm(eps=2/255)")
    attack = spec.create()
    assert type(attack).budget == Budget.linf("eps")
    adv = attack(cnniqa, msu_small)
    linf = (adv - msu_small).abs().amax(dim=(1, 2, 3))
    assert torch.all(linf <= 2 / 255 + 1e-6), linf.tolist()
    assert linf.max() == pytest.approx(2 / 255, abs=1e-6)  # ten steps of 1/255: the bound binds


# --- Korhonen's spatial-activity map ---------------------------------------------------------


def test_korhonen_map_variants_differ_and_the_text_map_is_nonnegative(images: torch.Tensor) -> None:
    code = spatial_activity_map(images, "code")
    text = spatial_activity_map(images, "text")
    assert code.shape == text.shape == (3, 1, 32, 32)
    assert not torch.allclose(code, text)
    assert text.min() >= 0
    torch.testing.assert_close(text.amax(dim=(1, 2, 3)), torch.full((3,), 1 / 255))


def test_korhonen_code_map_is_signed_where_luma_falls_to_the_right() -> None:
    ramp = torch.linspace(1.0, 0.0, 16).expand(1, 3, 16, 16).contiguous()
    assert spatial_activity_map(ramp, "code")[..., 4:-4, 4:-4].max() < 0
    assert spatial_activity_map(ramp, "text")[..., 4:-4, 4:-4].min() > 0


def test_korhonen_map_is_normalised_per_image(images: torch.Tensor) -> None:
    batch = torch.cat([images[:1], 0.25 * images[:1], images[1:2]])
    maps = spatial_activity_map(batch, "text")
    torch.testing.assert_close(maps[0], maps[1])
    torch.testing.assert_close(maps[2], spatial_activity_map(images[1:2], "text")[0])


def test_korhonen_code_map_matches_the_opencv_scipy_pipeline(images: torch.Tensor) -> None:
    cv2 = pytest.importorskip("cv2")
    ndimage = pytest.importorskip("scipy.ndimage")
    rgb255 = (images[0].permute(1, 2, 0).numpy() * 255).astype(np.float32)
    luma = (cv2.cvtColor(rgb255, cv2.COLOR_RGB2YCrCb)[..., 0] * 219 + 16) / 255
    sobel = np.zeros_like(luma)
    sobel[1:-1, 1:-1] = ndimage.sobel(luma)[1:-1, 1:-1]
    disk = np.ones((5, 5), np.uint8)
    disk[[0, 0, -1, -1], [0, -1, 0, -1]] = 0
    expected = cv2.dilate(sobel / sobel.max(), disk) / 255
    np.testing.assert_allclose(spatial_activity_map(images[:1], "code")[0, 0].numpy(), expected, atol=1e-7)


def test_korhonen_leaves_flat_regions_alone(tiny: TinyNet, images: torch.Tensor) -> None:
    image = images[:1].clone()
    image[..., :, :12] = 0.5  # flat left part: zero activity more than 3 px from the texture
    adv = create_attack("korhonen")(tiny, image)
    assert torch.equal(adv[..., :, :8], image[..., :, :8])
    assert not torch.equal(adv[..., :, 14:], image[..., :, 14:])


# --- MADC -------------------------------------------------------------------------------------


def test_madc_projection_is_orthogonal_per_image() -> None:
    generator = torch.Generator().manual_seed(2)
    g, d = torch.randn(2, 3, 4, 4, generator=generator), torch.randn(2, 3, 4, 4, generator=generator)
    d[1] = 0
    projected = project_out(g, d)
    torch.testing.assert_close((projected[0] * d[0]).sum(), torch.tensor(0.0), atol=1e-5, rtol=0)
    torch.testing.assert_close(projected[1], g[1])


def test_madc_keeps_rmse_within_eps_when_the_pull_back_has_to_act(tiny: TinyNet, images: torch.Tensor) -> None:
    eps = 0.001  # below what 8 steps of 0.001 reach, so the pull-back runs
    free = create_attack("madc", eps=1.0)(tiny, images)
    held = create_attack("madc", eps=eps)(tiny, images)
    assert torch.all(rmse(free, images) > eps)
    assert torch.all(rmse(held, images) <= eps)
    assert torch.all(tiny.quality(held) > tiny.quality(images))


def test_madc_default_stays_far_below_its_budget(tiny: TinyNet, images: torch.Tensor) -> None:
    adv = create_attack("madc")(tiny, images)
    assert (adv - images).abs().max() <= 8 * 0.001 + 1e-6


# --- real metrics -----------------------------------------------------------------------------


def _load(folder: Path, size: int | None) -> torch.Tensor:
    files = sorted(folder.glob("*.png"))
    if not files:
        pytest.skip(f"no PNG images in {folder}")
    arrays = []
    for f in files:
        image = Image.open(f).convert("RGB")
        if size is not None:
            image = image.resize((size, size), Image.Resampling.BICUBIC)
        arrays.append(np.asarray(image, dtype=np.float32) / 255)
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def _require_metric(name: str) -> None:
    try:
        get_spec(name)
    except UnknownMetricError:
        pytest.skip(f"metric {name!r} is not registered in this checkout")


@pytest.fixture(scope="module")
def msu_small(msu_test_images: Path) -> torch.Tensor:
    """The five MSU test images at 128x128 (CPU-friendly)."""
    return _load(msu_test_images, 128)


@pytest.fixture(scope="module")
def msu_96(msu_test_images: Path) -> torch.Tensor:
    """The first two MSU test images at 96x96, NIQE's smallest input (its gradient is slow on CPU)."""
    return _load(msu_test_images, 96)[:2]


@pytest.fixture(scope="module")
def cnniqa(original_weights: Path) -> Metric:
    _require_metric("cnniqa-live")
    if not (original_weights / "CNNIQA-LIVE.pth").is_file():
        pytest.skip(f"CNNIQA-LIVE.pth not found in {original_weights}")
    return create_metric("cnniqa-live", weights=original_weights)


@pytest.fixture(scope="module")
def niqe(pyiqa_weights: Path) -> Metric:
    _require_metric("niqe")
    return create_metric("niqe")


@pytest.fixture(scope="module")
def cnniqa_results(cnniqa: Metric, msu_small: torch.Tensor) -> dict[str, torch.Tensor]:
    return {name: create_attack(name)(cnniqa, msu_small) for name in IMAGE_ATTACKS}


def test_every_attack_runs_on_cnniqa_within_budget_and_range(
    attack_name: str, cnniqa_results: dict[str, torch.Tensor], msu_small: torch.Tensor
) -> None:
    adv = cnniqa_results[attack_name]
    assert adv.shape == msu_small.shape
    assert adv.min() >= 0.0
    assert adv.max() <= 1.0
    assert torch.isfinite(adv).all()
    if attack_name in LINF_BOUNDED:
        assert (adv - msu_small).abs().max() <= 10 / 255 + 1e-6
    elif attack_name == "madc":
        assert torch.all(rmse(adv, msu_small) <= 10 / 255)
    else:  # korhonen has no eps-ball: ten Adam steps of lr 0.005 keep it a small perturbation
        psnr = -10 * torch.log10((adv - msu_small).square().mean(dim=(1, 2, 3)))
        assert torch.all(psnr > 30), f"PSNR {psnr.tolist()}"


@pytest.mark.parametrize("name", ["ifgsm", "mifgsm"])
def test_iterative_attacks_lower_cnniqa_dmos_on_every_image(
    name: str, cnniqa: Metric, cnniqa_results: dict[str, torch.Tensor], msu_small: torch.Tensor
) -> None:
    with torch.no_grad():
        clean, attacked = cnniqa(msu_small), cnniqa(cnniqa_results[name])
    assert cnniqa.lower_better
    assert torch.all(attacked < clean), f"DMOS clean {clean.tolist()} attacked {attacked.tolist()}"


def test_every_attack_runs_on_niqe_and_reports(
    attack_name: str, niqe: Metric, msu_96: torch.Tensor, record_property: pytest.RecordProperty
) -> None:
    """NIQE resists sign attacks; the test records the score change rather than demanding a gain."""
    clean = msu_96[:1]
    adv = create_attack(attack_name)(niqe, clean)
    with torch.no_grad():
        before, after = niqe(clean), niqe(adv)
    assert adv.min() >= 0.0
    assert adv.max() <= 1.0
    assert torch.isfinite(after).all()
    assert not torch.equal(adv, clean)
    record_property("niqe_clean", before.tolist())
    record_property("niqe_attacked", after.tolist())


def test_amifgsm_niqe_bound_caps_each_image_at_one_over_its_niqe(
    niqe: Metric, tiny: TinyNet, msu_96: torch.Tensor
) -> None:
    clean = msu_96
    with torch.no_grad():
        radius = 1.0 / niqe(clean)
    torch.testing.assert_close(niqe_radius(clean).flatten(), radius)
    adv = create_attack("amifgsm", eps=1.0, bound="niqe")(tiny, clean)  # steps of 0.1 would overshoot
    linf = (adv - clean).abs().amax(dim=(1, 2, 3))
    assert torch.all(linf <= radius + 1e-6)
    torch.testing.assert_close(linf, radius, rtol=0, atol=1e-5)
