"""Every attack method in the one loop: numpy references of NI/VMI, the bound, the plan on a fake clock,
and every method through a real (toy, linear) two-network ensemble."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from attack_fakes import CountingModel, FakeClock, write_inputs
from click.testing import CliRunner

from nips_adv.attacks.directory import attack_directory
from nips_adv.attacks.plan import (
    MAX_COPIES,
    NON_TARGETED_FAMILY,
    SKIP_GRADIENT,
    TARGETED_METHOD,
    choose_plan,
    cost_per_image,
)
from nips_adv.attacks.sign_gradient import METHODS, SignGradientConfig, chunked_gradient, method_config, sign_gradient_attack
from nips_adv.cli.attack import attack_command, targeted_attack_command
from nips_adv.contract.csv_files import write_label_file
from nips_adv.contract.epsilon import max_perturbation
from nips_adv.contract.images import read_png
from nips_adv.jobs.time_budget import TimeBudget


class QuadraticModel:
    """Loss of image i: -0.5 * ||x_i - centre_i||^2, so the gradient at x is centre - x (numpy, exact)."""

    def __init__(self, centre: np.ndarray) -> None:
        self.centre = centre.astype(np.float32)
        self.points: list[np.ndarray] = []

    def logits(self, pixels):
        logits = np.zeros((len(pixels), 1000), np.float32)
        logits[:, 4] = 1.0
        return logits

    def gradient_function(self, loss, transform=None, *, backward=None):
        def gradient_of(pixels, labels, weights=None):
            self.points.append(np.array(pixels))
            return self.centre[: len(pixels)] - pixels if len(pixels) == len(self.centre) else self._rows(pixels)

        return gradient_of

    def _rows(self, pixels):
        raise AssertionError("the loop split a batch it should not have split")


def _reference(clean, centre, eps, *, iterations, decay, nesterov, samples=0, beta=1.5, seed=0, targeted=False):
    """NI-FGSM / VMI / VNI from the papers' equations (Lin et al. 2020 eq. 6-8; Wang & He 2021 alg. 1), in
    numpy float32 like the loop (the iterate oscillates around the centre, where float64 would flip signs)."""
    f32 = np.float32
    rng = np.random.default_rng(seed)
    x = clean.astype(f32)
    lower, upper = np.maximum(clean.astype(f32) - eps, 0), np.minimum(clean.astype(f32) + eps, 255)
    alpha = eps / iterations
    sign = -1.0 if targeted else 1.0
    g = np.zeros_like(x)
    v = np.zeros_like(x)
    def gradient_at(points):
        return centre.astype(f32) - points
    for _ in range(iterations):
        point = (x + f32(sign * alpha * decay) * g).astype(f32) if nesterov else x
        current = gradient_at(point)
        tuned = current + v
        g = (decay * g + tuned / np.mean(np.abs(tuned), axis=(1, 2, 3), keepdims=True)).astype(f32)
        if samples:
            total = np.zeros(x.shape, np.float64)
            for _ in range(samples):
                total += gradient_at((x + rng.uniform(-beta * eps, beta * eps, size=x.shape)).astype(f32))
            v = (total / samples - current).astype(f32)
        x = np.clip(x + f32(sign * alpha) * np.sign(g), lower, upper)
    return np.clip(np.rint(x), lower, upper).astype(np.uint8)


@pytest.mark.parametrize(
    ("method", "samples", "targeted"),
    [("ni-fgsm", 0, False), ("ni-fgsm", 0, True), ("vmi-fgsm", 3, False), ("vni-fgsm", 3, False), ("vni-fgsm", 2, True)],
)
def test_nesterov_and_variance_tuning_match_a_numpy_reference(method: str, samples: int, targeted: bool) -> None:
    rng = np.random.default_rng(4)
    clean = rng.integers(0, 256, size=(2, 5, 4, 3), dtype=np.uint8)
    centre = rng.uniform(0, 255, size=clean.shape)
    config = method_config(method, iterations=4, variance_samples=samples or None)
    if targeted:
        config = replace(config, step_scale=1.0)
    adversarial = sign_gradient_attack(QuadraticModel(centre), clean, 6, labels=np.array([1, 2]), targeted=targeted,
                                       config=config, seed=11)
    expected = _reference(clean, centre, 6, iterations=4, decay=1.0, nesterov=config.nesterov, samples=samples, seed=11,
                          targeted=targeted)
    assert np.array_equal(adversarial, expected)


def test_nesterov_takes_the_gradient_ahead_of_the_iterate() -> None:
    clean = np.full((1, 3, 3, 3), 100, np.uint8)
    model = QuadraticModel(np.full(clean.shape, 200.0))
    sign_gradient_attack(model, clean, 8, labels=np.array([1]), targeted=False, config=method_config("ni-fgsm", iterations=2))
    # Step 1 at the clean image (no momentum yet); step 2 at x1 + alpha * mu * g1, g1 = 1 everywhere: 104 + 4.
    assert np.allclose(model.points[0], 100.0) and np.allclose(model.points[1], 108.0)


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("eps", [0, 0.5, 1, 2.5, 4, 16, 37.3, 128, 255])
def test_every_method_keeps_every_eps_bound(method: str, eps: float) -> None:
    rng = np.random.default_rng(int(eps * 10) + len(method))
    clean = rng.integers(0, 256, size=(2, 6, 5, 3), dtype=np.uint8)
    clean[0, 0, 0] = (0, 255, 128)
    model = QuadraticModel(rng.uniform(-300, 600, size=clean.shape))
    config = method_config(method, iterations=min(METHODS[method].iterations, 3), variance_samples=2 if METHODS[method].variance_samples else None)
    for targeted in (False, True):
        adversarial = sign_gradient_attack(model, clean, eps, labels=np.array([3, 4]), targeted=targeted, config=config)
        assert adversarial.dtype == np.uint8 and adversarial.shape == clean.shape
        assert max_perturbation(clean, adversarial) <= eps


def test_copies_bound_the_images_per_session_run() -> None:
    calls: list[int] = []

    def gradient_of(pixels, labels, weights):
        calls.append(len(pixels))
        return pixels * labels[:, :1, None, None] + weights[:, :1, None, None]

    pixels = np.random.default_rng(0).normal(size=(7, 2, 2, 3)).astype(np.float32)
    labels = np.arange(1, 8)[:, None]
    weights = np.linspace(0, 1, 7, dtype=np.float32)[:, None]
    whole = gradient_of(pixels, labels, weights)
    calls.clear()
    assert np.array_equal(chunked_gradient(gradient_of, labels, weights, 3)(pixels), whole)
    assert calls == [3, 3, 1]
    # BSR's 20 copies with chunks of 64 image-copies: 3 images per run.
    config = method_config("bsr")
    assert config.copies_per_gradient == 20 and config.chunk_images // config.copies_per_gradient == 3


def test_copy_transforms_and_their_copies() -> None:
    assert method_config("si-ni-fgsm").copies_per_gradient == 5
    assert method_config("si-ni-fgsm", copies=3).copies_per_gradient == 3
    assert method_config("admix").copies_per_gradient == 15 and method_config("admix", copies=2).copies_per_gradient == 10
    assert method_config("sia", copies=4).copies_per_gradient == 4
    assert method_config("si-ni-ti-di-fgsm").transform.name == "si+di"
    assert method_config("vmi-fgsm").gradients_per_iteration == 21
    assert cost_per_image(method_config("bsr", copies=5, iterations=10)) == 50
    for bad, message in [({"copies": 0}, "copies must be at least 1"), ({"copy_transform": "zoom"}, "unknown copy transform")]:
        with pytest.raises(ValueError, match=message):
            SignGradientConfig(copy_transform="bsr", **bad) if "copies" in bad else SignGradientConfig(**bad)
    with pytest.raises(ValueError, match="copies need a copy transform"):
        method_config("mi-fgsm", copies=2)


def test_the_logit_preset_keeps_its_long_run_when_targeted() -> None:
    config = method_config("logit-ti-di-mi-fgsm", targeted=True)
    assert (config.iterations, config.loss, config.step_for(16)) == (300, "logit", 2.0)
    assert method_config("logit-ti-di-mi-fgsm", targeted=True, iterations=40).step_for(16) == 2.0


# --- the plan -------------------------------------------------------------------------------------


def test_the_plan_spends_what_fits_and_degrades_gracefully() -> None:
    assert choose_plan(targeted=False, gradients_per_image=0.7).config is None
    small = choose_plan(targeted=False, gradients_per_image=6.5).config
    assert small.iterations == 6 and small.copies_per_gradient == 1
    family = METHODS[NON_TARGETED_FAMILY]
    for budget in (10, 37, 55, 10_000):
        config = choose_plan(targeted=False, gradients_per_image=budget).config
        assert cost_per_image(config) <= budget
    cap = MAX_COPIES[family.copy_transform.split("+")[0]]
    roomy = choose_plan(targeted=False, gradients_per_image=10_000).config
    assert roomy.copies == cap and roomy.variance_samples == 20  # then variance tuning takes the rest
    assert choose_plan(targeted=False, gradients_per_image=cap * 10 * 3 + 5).config.variance_samples == 2
    for budget in (6.5, 12, 37, 10_000):  # SGM on every plan: a backward rule, no extra gradient
        for targeted_plan in (False, True):
            assert choose_plan(targeted=targeted_plan, gradients_per_image=budget).config.skip_gradient == SKIP_GRADIENT < 1
    targeted = choose_plan(targeted=True, gradients_per_image=80.9).config
    assert (targeted.iterations, targeted.loss) == (80, "logit")
    assert choose_plan(targeted=True, gradients_per_image=10_000).config.iterations == METHODS[TARGETED_METHOD].iterations
    few = choose_plan(targeted=True, gradients_per_image=12).config
    assert (few.iterations, few.loss, few.step_for(16)) == (12, "cross-entropy", 2.5 * 16 / 12)


@pytest.mark.parametrize("seconds", [3.0, 9.0, 40.0, 150.0, 2000.0])
@pytest.mark.parametrize("targeted", [False, True])
def test_the_planned_run_never_exceeds_its_budget_nor_drops_an_image(tmp_path: Path, seconds: float, targeted: bool) -> None:
    clean = write_inputs(tmp_path / "in", 10)
    if targeted:
        write_label_file(tmp_path / "in" / "target_class.csv", {name: 7 for name in clean})
    clock = FakeClock()
    model = CountingModel(clock, seconds_per_image=lambda call: 0.1)  # 0.1 s per image-copy gradient
    report = attack_directory(tmp_path / "in", tmp_path / "out", 8, model=model, config=None, targeted=targeted,
                              batch_size=3, progress=False, time_budget=TimeBudget.starting_now(seconds, clock=clock))
    assert report.ok and report.images_done == 10
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == sorted(clean)
    first_pass = 1.0  # 10 images x one gradient
    assert clock.now - 1000.0 <= max(seconds, first_pass)
    for name, pixels in clean.items():
        assert max_perturbation(pixels, read_png(tmp_path / "out" / name)) <= 8
    if seconds >= 2000 and not targeted:  # (targeted stops at the paper's 300 iterations: 300 s here)
        assert clock.now - 1000.0 > 0.5 * seconds  # a roomy budget is spent, not left unused


def test_a_planned_run_with_no_time_left_keeps_the_one_step_images_and_warns(tmp_path: Path) -> None:
    clean = write_inputs(tmp_path / "in", 4)
    clock = FakeClock()
    model = CountingModel(clock)  # 1 s per image-gradient: the 4 s first pass eats the 3 s budget
    report = attack_directory(tmp_path / "in", tmp_path / "out", 8, model=model, config=None, batch_size=2,
                              progress=False, time_budget=TimeBudget.starting_now(3.0, clock=clock))
    assert report.images_done == 4 and len(model.call_sizes) == 2
    assert any("keep their one-step version" in warning for warning in report.warnings)
    for name, pixels in clean.items():  # the fake gradient is all ones: one step of eps up
        assert np.array_equal(read_png(tmp_path / "out" / name).astype(int), np.clip(pixels.astype(int) + 8, 0, 255))


# --- the tools: bad input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "options", "message"),
    [
        (attack_command, ["--method", "pgd"], "--method 'pgd': unknown method 'pgd'"),
        (targeted_attack_command, ["--method", "mi-fgsm:own_classes=3"], "own_classes is for non-targeted attacks"),
    ],
)
def test_bad_options_stop_with_one_line_and_exit_2(tmp_path: Path, command, options: list[str], message: str) -> None:
    (tmp_path / "in").mkdir()
    result = CliRunner().invoke(command, [str(tmp_path / "in"), str(tmp_path / "out"), "8", *options])
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


# --- every method through a real two-network ensemble (toy pooled-linear networks, 16x16 images) ---


@pytest.fixture(scope="module")
def toy_ensemble(tmp_path_factory: pytest.TempPathFactory):
    from nips_adv.models.classifier import Classifier, Network
    from nips_adv.models.networks import Architecture
    from nips_adv.models.tf_compat import tf, tf1

    side, folder = 16, tmp_path_factory.mktemp("toy_ensemble")

    # Global-average-pooled colour -> logits: unchanged by shuffling, flipping or shifting blocks, so every
    # transform's gradient still points the white-box way (on a plain linear map BSR's need not).
    def build_logits(images, scope):
        with tf1.variable_scope(scope):
            weights = tf1.get_variable("weights", [3, 1000])
        return tf.matmul(tf.reduce_mean(images, axis=[1, 2]), weights)

    toy = Architecture("toy", "linear", "Toy", 1000, side, lambda pixels: pixels / 127.5 - 1.0, build_logits)
    rng = np.random.default_rng(8)
    networks = []
    for index, weight in enumerate((1.0, 0.5)):
        graph = tf.Graph()
        with graph.as_default():
            variable = tf1.get_variable("Toy/weights", initializer=rng.normal(0, 1.0, size=(3, 1000)).astype(np.float32))
            with tf1.Session(graph=graph) as session:
                session.run(variable.initializer)
                prefix = tf1.train.Saver([variable]).save(session, str(folder / f"toy{index}.ckpt"), write_meta_graph=False)
        networks.append(Network(f"toy{index}", toy, Path(prefix), "Toy", weight))
    with Classifier(networks, seed=1) as classifier:
        yield classifier


def _log_probability(classifier, pixels: np.ndarray, labels: np.ndarray) -> np.ndarray:
    logits = classifier.logits(pixels).astype(np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return log_p[np.arange(len(labels)), labels - 1]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_runs_on_an_ensemble_and_moves_the_right_way(toy_ensemble, method: str) -> None:
    clean = np.random.default_rng(2).integers(0, 256, size=(3, 16, 16, 3), dtype=np.uint8)
    preset = METHODS[method]
    small = dict(iterations=min(preset.iterations, 3), copies=2 if preset.copy_transform else None,
                 variance_samples=2 if preset.variance_samples else None)
    predicted = np.argmax(toy_ensemble.logits(clean), axis=1) + 1
    away = sign_gradient_attack(toy_ensemble, clean, 8, labels=predicted, targeted=False, config=method_config(method, **small))
    assert max_perturbation(clean, away) <= 8
    assert np.all(_log_probability(toy_ensemble, away, predicted) < _log_probability(toy_ensemble, clean, predicted))
    targets = np.array([10, 500, 999])
    toward = sign_gradient_attack(toy_ensemble, clean, 8, labels=targets, targeted=True,
                                  config=method_config(method, targeted=True, **small))
    assert max_perturbation(clean, toward) <= 8
    assert np.all(_log_probability(toy_ensemble, toward, targets) > _log_probability(toy_ensemble, clean, targets))


def test_the_plan_is_revised_from_the_refinement_s_own_speed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_inputs(tmp_path / "in", 12)
    clock = FakeClock()
    # The first pass (4 calls) costs 0.5 s per image-gradient, the refinement 0.1 s: the first plan is too cautious.
    model = CountingModel(clock, seconds_per_image=lambda call: 0.5 if call < 4 else 0.1)
    with caplog.at_level("INFO", logger="nips_adv"):
        report = attack_directory(tmp_path / "in", tmp_path / "out", 8, model=model, config=None, batch_size=3,
                                  progress=False, time_budget=TimeBudget.starting_now(200.0, clock=clock))
    assert report.ok and report.images_done == 12
    plans = [record.getMessage() for record in caplog.records if record.getMessage().startswith("plan")]
    assert len(plans) >= 2 and plans[1].startswith("plan from 003.png on")
    assert clock.now - 1000.0 <= 200.0


def test_the_time_line_accounts_for_every_second_and_gradient_of_a_planned_run(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The fake clock moves only in the model's gradients: the line's attack seconds and gradient counts are all of it."""
    import re

    write_inputs(tmp_path / "in", 12)
    clock = FakeClock()
    model = CountingModel(clock, seconds_per_image=lambda call: 0.5 if call < 4 else 0.1)
    with caplog.at_level("DEBUG", logger="nips_adv"):
        attack_directory(tmp_path / "in", tmp_path / "out", 8, model=model, config=None, batch_size=3,
                         progress=False, time_budget=TimeBudget.starting_now(200.0, clock=clock))
    lines = [record.getMessage() for record in caplog.records if record.getMessage().startswith("time: ")]
    assert len(lines) == 1, lines
    passes = re.findall(r"(first pass|refinement) ([\d.]+) s for (\d+) images \(attack ([\d.]+) s: (\d+) image-gradients"
                        r"(?: at ([\d.]+)/s)?, reading and writing ([\d.]+) s\)", lines[0])
    assert [name for name, *_ in passes] == ["first pass", "refinement"], lines[0]
    (_, first_total, first_images, first_attack, first_gradients, _, first_io) = passes[0]
    (_, refine_total, refine_images, refine_attack, refine_gradients, refine_rate, refine_io) = passes[1]
    assert (int(first_images), int(first_gradients), float(first_attack), float(first_io)) == (12, 12, 6.0, 0.0)
    spent = clock.now - 1000.0 - 6.0
    assert int(refine_images) == 12 and float(refine_attack) == pytest.approx(spent, abs=0.06)
    assert int(refine_gradients) == pytest.approx(spent / 0.1, abs=1)
    assert float(refine_rate) == pytest.approx(10.0, rel=0.01) and float(refine_io) == 0.0


def test_method_specs_parse_their_overrides_and_name_bad_ones() -> None:
    from nips_adv.attacks import method_spec_config, parse_method_spec

    assert parse_method_spec("bsr") == ("bsr", {})
    assert parse_method_spec("bsr:copies=5,iterations=20,nesterov=true,step_scale=2.5") == (
        "bsr", {"copies": 5, "iterations": 20, "nesterov": True, "step_scale": 2.5})
    config = method_spec_config("bsr:copies=5")
    assert (config.copy_transform, config.copies, config.iterations) == ("bsr", 5, 10)
    assert method_spec_config("mi-fgsm", targeted=True) == method_config("mi-fgsm", targeted=True)
    for spec, named in (("nope:copies=2", "'nope'"), ("bsr:colours=3", "'colours'")):
        with pytest.raises(ValueError, match=named) as caught:
            parse_method_spec(spec)
        assert spec in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("targeted", [False, True])
def test_a_plan_past_its_deadline_says_nothing_fits_without_a_negative_count(targeted: bool) -> None:
    plan = choose_plan(targeted=targeted, gradients_per_image=-0.4)
    assert plan.config is None and plan.reason.startswith("0 image-gradients per image fit")


def test_copies_past_one_run_through_the_networks_are_refused_with_the_largest_that_fits() -> None:
    from nips_adv.attacks.sign_gradient import images_per_run

    with pytest.raises(ValueError, match="copies 100000: .* the largest that fits is 64"):
        method_config("bsr", copies=100000)
    assert method_config("bsr", copies=64).copies == 64
    assert images_per_run(method_config("bsr", copies=20), (299, 299)) == 3
    assert images_per_run(method_config("mi-fgsm"), (299, 299)) == 64
    assert images_per_run(method_config("mi-fgsm"), (4096, 4096)) == 1  # alone, never none
    assert images_per_run(method_config("mi-fgsm"), (598, 598)) == 16


def test_the_docs_tables_are_the_registries() -> None:
    from nips_adv.attacks.sign_gradient import METHOD_REGISTRY, method_table
    from nips_adv.attacks.transforms import COPY_TRANSFORMS, copy_transform_table

    docs = (Path(__file__).resolve().parents[1] / "docs" / "attacks.md").read_text()
    assert method_table() in docs and copy_transform_table() in docs
    assert list(METHODS) == list(METHOD_REGISTRY) and all(method.paper and method.summary for method in METHOD_REGISTRY.values())
    assert MAX_COPIES == {name: entry.plan_copies for name, entry in COPY_TRANSFORMS.items()}
    for name, entry in COPY_TRANSFORMS.items():
        made = SignGradientConfig(copy_transform=name, copies=3).transform
        assert isinstance(made, entry.kind) and made.copies == (3 * 5 if name == "admix" else 3)  # Admix: 5 scales per mix


class TwoPrecisionModel(CountingModel):
    """A CountingModel whose image-gradient costs ``seconds[precision]``; ``reopen`` switches, as Classifier's does."""

    def __init__(self, clock: FakeClock, seconds: dict[str, float]) -> None:
        super().__init__(clock, seconds_per_image=lambda call: seconds[self.precision])
        self.precision = "float32"
        self.reopened: list[str] = []

    def reopen(self, precision: str) -> None:
        self.precision = precision
        self.reopened.append(precision)


@pytest.mark.parametrize("bfloat16_seconds, kept", [(0.05, "bfloat16"), (0.09, "float32"), (0.2, "float32")])
def test_precision_auto_times_bfloat16_on_the_first_pass_and_keeps_the_faster(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, bfloat16_seconds: float, kept: str
) -> None:
    clean = write_inputs(tmp_path / "in", 8)
    clock = FakeClock()
    model = TwoPrecisionModel(clock, {"float32": 0.1, "bfloat16": bfloat16_seconds})
    with caplog.at_level("INFO", logger="nips_adv"):
        report = attack_directory(tmp_path / "in", tmp_path / "out", 8, model=model, config=None, batch_size=4, progress=False,
                                  time_budget=TimeBudget.starting_now(200.0, clock=clock), compare_precisions=True)
    assert report.ok and report.images_done == len(clean) and clock.now - 1000.0 <= 200.0
    assert model.precision == kept and model.reopened == (["bfloat16"] if kept == "bfloat16" else ["bfloat16", "float32"])
    line = next(record.getMessage() for record in caplog.records if record.getMessage().startswith("precision:"))
    assert line.startswith(f"precision: {kept} ({bfloat16_seconds:.3f} s per image-gradient in bfloat16, 0.100 in float32")
    plan = next(record.getMessage() for record in caplog.records if record.getMessage().startswith("plan:"))
    kept_seconds = bfloat16_seconds if kept == "bfloat16" else 0.1  # bfloat16 must be 1.2x faster to be kept
    assert f"({kept_seconds:.3f} s per image-gradient measured on the first pass" in plan


def test_without_a_roomy_budget_or_reopen_no_precision_is_timed(tmp_path: Path) -> None:
    write_inputs(tmp_path / "in", 4)
    clock = FakeClock()
    model = TwoPrecisionModel(clock, {"float32": 0.1, "bfloat16": 0.05})
    attack_directory(tmp_path / "in", tmp_path / "out", 8, model=model, config=None, batch_size=2, progress=False,
                     time_budget=TimeBudget.starting_now(30.0, clock=clock), compare_precisions=True)
    assert model.reopened == []  # 30 s: under the trial's minimum
