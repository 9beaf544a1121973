"""The conformance suite (cirbench.testing): every reference plugin passes it, an external
plugin passes it from the command line, and deliberately broken composers and datasets fail
the right check with a message that says what is wrong."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from cirbench import ComposerSpec, DatasetSpec, Query, Triplet
from cirbench.cli import main
from cirbench.plugins import UnknownNameError, load_registry
from cirbench.testing import (
    COMPOSER_CHECKS,
    DATASET_CHECKS,
    CheckContext,
    CheckFailed,
    ConformanceError,
    RandomDataset,
    check_composer,
    check_dataset,
    parametrize_with_checks,
    run_check,
    run_checks,
)
from tests.fixtures.external_plugin import EXTERNAL_PLUGIN, install_fake_distribution

# tiny tensors: one torch thread is as fast on a quiet machine and much faster on a busy one
pytestmark = pytest.mark.usefixtures("one_torch_thread")

REGISTRY = load_registry()


#: One context for the whole module: the registry is loaded and each dataset built once.
CONTEXT = CheckContext(registry=REGISTRY)


# --- every reference plugin conforms ------------------------------------------------------------
#: Datasets read from a local folder are checked on fixtures in their canonical layout
#: (tests/test_local_data*.py); here only the embedded ones, which every machine has.
EMBEDDED = sorted(name for name, spec in REGISTRY.datasets.items() if spec.layout is None)


@parametrize_with_checks(composers=sorted(REGISTRY.composers), datasets=EMBEDDED, context=CONTEXT)
def test_reference_plugins_conform(name, check):
    check(name)


# --- the example external plugin, from the command line -----------------------------------------
def test_external_plugin_passes_cirbench_check(external_plugin, capsys):
    assert main(["check", "pixel-mean"]) == 0
    out = capsys.readouterr().out
    assert "cirbench-pixel-mean" in out  # the provider
    for check in COMPOSER_CHECKS:
        assert check.__name__ in out
    lines = [line for line in out.splitlines() if line.split()[:2] == ["composer", "pixel-mean"] and "check_" in line]
    assert len(lines) == len(COMPOSER_CHECKS)
    assert all(" passed " in line or " skipped " in line for line in lines), out
    if not torch.cuda.is_available():
        assert "CUDA not available" in out
    assert " 0 failed" in out


def test_cli_check_failing_plugin_exits_1(tmp_path, monkeypatch, capsys):
    src = EXTERNAL_PLUGIN.replace(
        "return self._pixels(images) + self.words(",
        "images.mul_(0.5)\n        return self._pixels(images) + self.words(",
    ).replace('ComposerSpec("pixel-mean"', 'ComposerSpec("mutator"')
    root = install_fake_distribution(tmp_path / "site", "cirbench-mutator", "cirbench_mutator", src)
    monkeypatch.syspath_prepend(str(root))
    assert main(["check", "mutator"]) == 1
    captured = capsys.readouterr()
    assert "FAILED" in captured.out and "check_inputs_not_mutated" in captured.out
    assert "FAILED composer mutator check_inputs_not_mutated: compose modified its images" in captured.err


@pytest.mark.parametrize(
    "argv,expected",
    [
        (["check", "nope"], "unknown composer or dataset 'nope'; valid composers: "),
        (["check"], "give a composer or dataset NAME"),
        (["check", "tirg", "--all"], "not both"),
        (["check", "tirg", "--protocol", "nope"], "unknown protocol 'nope'"),
    ],
)
def test_cli_check_user_errors(argv, expected, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    if "nope'; valid" in expected:
        assert "tirg" in err and "valid datasets: " in err and "css-synth" in err


def test_cli_check_dataset(capsys):
    assert main(["check", "css-synth"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.split()[:2] == ["dataset", "css-synth"] and "check_" in line]
    assert len(rows) == len(DATASET_CHECKS) and all(" passed " in row for row in rows)
    assert "check_query_targets_in_gallery" in out


# --- broken composers fail the right check ------------------------------------------------------
_ns: dict = {}
exec(compile(EXTERNAL_PLUGIN, "<pixel-mean plugin>", "exec"), _ns)
PixelMean = _ns["PixelMean"]


class MutatesInput(PixelMean):
    def compose(self, images, texts):
        images.mul_(0.5)
        return super().compose(images, texts)


class UnusedParameter(PixelMean):
    def __init__(self, ctx):
        super().__init__(ctx)
        self.unused = nn.Linear(4, 4)


class DeclaredUnused(UnusedParameter):
    conformance_no_gradient = ("unused.*",)


class DeclaredExpectedFailure(UnusedParameter):
    conformance_expected_failures = {"check_gradients": "the unused head is kept on purpose"}


class WronglyDeclared(PixelMean):
    conformance_expected_failures = {"check_gradients": "no reason"}


class NaNLossPart(PixelMean):
    def training_loss(self, batch):
        return {**super().training_loss(batch), "aux": torch.tensor(float("nan"))}


class UnnamedLossPart(PixelMean):
    def training_loss(self, batch):
        return {"": super().training_loss(batch)["base"]}


class NoisyInEval(PixelMean):
    def compose(self, images, texts):
        return super().compose(images, texts) + 0.01 * torch.randn(len(texts), self.ctx.protocol.embed_dim)


class WrongSize(PixelMean):
    def embed_target(self, images):
        return torch.cat([super().embed_target(images)] * 2, dim=1)


class OptimiserMissesParameters(PixelMean):
    def configure_optimizers(self):
        return [torch.optim.SGD(self.image.parameters(), lr=0.01)]


class MiscountsParameters(PixelMean):
    def parameter_counts(self):
        counts = super().parameter_counts()
        return {**counts, "total": counts["total"] + 1}


class UnseededInit(PixelMean):
    def __init__(self, ctx):
        super().__init__(ctx)
        gen = torch.Generator().manual_seed(int.from_bytes(os.urandom(4), "little"))
        with torch.no_grad():
            self.image.weight.copy_(torch.randn(self.image.weight.shape, generator=gen))


class StateNotSaved(PixelMean):
    """Keeps a learned offset as a plain attribute, outside state_dict."""

    def __init__(self, ctx):
        super().__init__(ctx)
        self.offset = torch.randn(ctx.protocol.embed_dim)

    def embed_target(self, images):
        return super().embed_target(images) + self.offset


class AttendsWithText(PixelMean):
    """Attention over the 4x4 pooled pixels scored by the text's word vector (depends on the
    text), plus a second level over a 1x1 map that ``TextBlindAttention`` keeps."""

    def _scores(self, images, texts):
        pix = nn.functional.adaptive_avg_pool2d(images, 4).mean(1)  # [B, 4, 4]
        words = self.compose(torch.zeros_like(images), texts)[:, :16].view(-1, 4, 4)
        return pix + words

    def attention_maps(self, images, texts):
        s = self._scores(images, texts)
        return {"grid": torch.softmax(s.flatten(1), 1).view_as(s)}


class TextBlindAttention(AttendsWithText):
    """Level ``grid`` as above; level ``point`` a softmax over one position (always 1)."""

    def attention_maps(self, images, texts):
        maps = super().attention_maps(images, texts)
        one = self._scores(images, texts).mean(dim=(1, 2))[:, None, None]
        return {**maps, "point": torch.softmax(one.flatten(1), 1).view(-1, 1, 1)}


class Crashes(PixelMean):
    def embed_target(self, images):
        raise RuntimeError("boom in embed_target")


class Manual(PixelMean):
    """automatic_optimization = False: one SGD step in training_step."""

    automatic_optimization = False

    def training_step(self, batch, optimizers, step):
        parts = self.training_loss(batch)
        for opt in optimizers:
            opt.zero_grad()
        sum(parts.values()).backward()
        for opt in optimizers:
            opt.step()
        return {k: v.detach() for k, v in parts.items()}


class ManualForgetsParameters(Manual):
    def training_step(self, batch, optimizers, step):
        parts = super().training_step(batch, optimizers, step)
        with torch.no_grad():  # "undo" the step of the text embedding
            self.words.weight.copy_(self._frozen_words)
        return parts

    def configure_optimizers(self):
        self._frozen_words = self.words.weight.detach().clone()
        return super().configure_optimizers()


def _run(cls, checks=None, **kwargs):
    spec = ComposerSpec(f"broken-{cls.__name__.lower()}", cls)
    return {r.check: r for r in run_checks("composer", spec, context=CONTEXT, checks=checks, **kwargs)}


@pytest.mark.parametrize(
    "cls,check,fragments",
    [
        (MutatesInput, "check_inputs_not_mutated", ["compose modified its images in place"]),
        (UnusedParameter, "check_gradients", ["got no gradient", "unused.weight", "unused.bias",
                                              "conformance_no_gradient"]),
        (NaNLossPart, "check_loss_parts", ["part 'aux' is not finite"]),
        (UnnamedLossPart, "check_loss_parts", ["named ''", "non-empty str"]),
        (NoisyInEval, "check_eval_determinism", ["compose gives different outputs on two calls"]),
        (WrongSize, "check_embedding_size", ["compose gives D=32 but embed_target gives D=64"]),
        (OptimiserMissesParameters, "check_optimizers", ["are in no optimiser", "words.weight"]),
        (MiscountsParameters, "check_parameter_counts", ["reports total="]),
        (UnseededInit, "check_seeded_determinism", ["image.weight", "seeded generator"]),
        (StateNotSaved, "check_state_dict_round_trip", ["embed_target gives different outputs",
                                                        "not in state_dict"]),
        (Crashes, "check_output_shapes", ["RuntimeError: boom in embed_target", "test_conformance.py:"]),
        (ManualForgetsParameters, "check_gradients", ["did not change in one training_step",
                                                      "words.weight"]),
        (TextBlindAttention, "check_attention_depends_on_text",
         ["does not depend on the text at level(s) point (1x1 map, max difference 0)"]),
    ],
)
def test_broken_composer_fails_the_right_check(cls, check, fragments):
    result = _run(cls, checks=[check])[check]
    assert result.status == "failed", result
    for fragment in fragments:
        assert fragment in result.message, result.message


def test_attention_check_passes_text_dependent_maps_and_skips_composers_without():
    assert _run(AttendsWithText, checks=["check_attention_depends_on_text"])[
        "check_attention_depends_on_text"].status == "passed"
    r = _run(PixelMean, checks=["check_attention_depends_on_text"])["check_attention_depends_on_text"]
    assert r.status == "skipped" and "no attention_maps" in r.message


def test_a_broken_composer_fails_only_its_check():
    results = _run(UnusedParameter)
    assert [r.check for r in results.values()] == [c.__name__ for c in COMPOSER_CHECKS]
    assert {name for name, r in results.items() if r.failed} == {"check_gradients"}


def test_manual_optimisation_composer_conforms():
    results = _run(Manual)
    assert not [r for r in results.values() if r.failed], results


def test_declared_exceptions_and_expected_failures():
    assert _run(DeclaredUnused, checks=["check_gradients"])["check_gradients"].status == "passed"
    r = _run(DeclaredExpectedFailure, checks=["check_gradients"])["check_gradients"]
    assert r.status == "xfailed" and not r.failed
    assert "the unused head is kept on purpose" in r.message and "unused.weight" in r.message
    r = _run(WronglyDeclared, checks=["check_gradients"])["check_gradients"]
    assert r.status == "xpassed" and r.failed and "remove the declaration" in r.message
    # expected failures given by the caller: by check name, or by (name, check)
    r = _run(NoisyInEval, checks=["check_eval_determinism"],
             expected_failures={"check_eval_determinism": "noise on purpose"})["check_eval_determinism"]
    assert r.status == "xfailed" and "noise on purpose" in r.message
    r = _run(PixelMean, checks=["check_cpu"],
             expected_failures={("broken-pixelmean", "check_cpu"): "why"})["check_cpu"]
    assert r.status == "xpassed"
    with pytest.raises(ValueError, match="check_gradient.*names no composer check"):
        _run(PixelMean, checks=["check_cpu"], expected_failures={"check_gradient": "typo"})


def test_check_composer_raises_listing_failures():
    with pytest.raises(ConformanceError) as err:
        check_composer(ComposerSpec("noisy", NoisyInEval), context=CONTEXT,
                       checks=["check_eval_determinism", "check_cpu"])
    assert "noisy" in str(err.value) and "check_eval_determinism" in str(err.value)
    assert [r.status for r in err.value.results] == ["failed", "passed"]
    ok = check_composer(ComposerSpec("fine", PixelMean), context=CONTEXT, checks=["check_cpu"])
    assert ok[0].status == "passed"


def test_build_returning_something_else_fails_every_check():
    results = run_checks("composer", ComposerSpec("not-a-composer", lambda ctx: nn.Linear(2, 2)),
                         context=CONTEXT, checks=["check_output_shapes", "check_gradients"])
    for r in results:
        assert r.status == "failed" and "expected a cirbench.Composer" in r.message


def test_dataset_build_returning_something_else_fails_its_checks(tmp_path):
    from cirbench.data.contract import DatasetTypeError

    spec = DatasetSpec("not-a-dataset", lambda ctx: {"images": []})
    with pytest.raises(DatasetTypeError, match=r"dataset 'not-a-dataset': build\(ctx\) returned dict"):
        spec.create(CONTEXT.protocol, tmp_path)
    results = run_checks("dataset", spec, context=CONTEXT)
    assert results and all(r.status == "failed" and "expected a cirbench.CIRDataset" in r.message
                           for r in results)


def test_cuda_check_skips_with_reason_without_cuda():
    r = run_check("composer", ComposerSpec("fine", PixelMean), "check_cuda", CONTEXT)
    if torch.cuda.is_available():
        assert r.status == "passed", r
    else:
        assert (r.status, r.message) == ("skipped", "CUDA not available")


def test_unknown_names_are_the_callers_error():
    with pytest.raises(UnknownNameError, match="valid composers: "):
        run_checks("composer", "no-such-composer", context=CONTEXT)
    with pytest.raises(ValueError, match="unknown kind"):
        run_checks("model", "tirg", context=CONTEXT)


def test_checks_leave_global_random_state_alone():
    torch.manual_seed(123)
    np.random.seed(123)
    expected = (torch.rand(3), np.random.rand(3))
    torch.manual_seed(123)
    np.random.seed(123)
    run_check("composer", ComposerSpec("fine", PixelMean), "check_seeded_determinism", CONTEXT)
    assert torch.equal(torch.rand(3), expected[0]) and np.array_equal(np.random.rand(3), expected[1])


# --- broken datasets fail the right check -------------------------------------------------------
class TargetOutsideGallery(RandomDataset):
    def queries(self):
        qs = list(super().queries())
        qs[2] = Query(qs[2].reference, qs[2].text, (0,), qs[2].group)  # 0 is a training image
        return qs


class OverlappingSplits(RandomDataset):
    def train_triplets(self):
        return [*super().train_triplets(), Triplet(0, "add a cube", int(self.test_ids[0]))]


class DeclaresOverlap(OverlappingSplits):
    conformance_expected_failures = {"check_splits_disjoint": "test images double as training targets"}


class WrongImageSize(RandomDataset):
    def images(self, ids):
        return super().images(ids)[:, :, :16, :16]


class FloatImages(RandomDataset):
    def images(self, ids):
        return super().images(ids).float() / 255


class UnseededSampler(RandomDataset):
    def sample_triplets(self, rng, n):
        return super().sample_triplets(np.random.default_rng(), n)


class EmptyText(RandomDataset):
    def queries(self):
        qs = list(super().queries())
        qs[0] = Query(qs[0].reference, "  ", qs[0].targets, qs[0].group)
        return qs


class DuplicateGallery(RandomDataset):
    def gallery(self, group=None):
        g = super().gallery(group)
        return np.concatenate([g, g[:1]])


class BadReference(RandomDataset):
    def queries(self):
        qs = list(super().queries())
        qs[1] = Query(10_000, qs[1].text, qs[1].targets, qs[1].group)
        return qs


def _dataset_spec(cls):
    return DatasetSpec(f"broken-{cls.__name__.lower()}", lambda ctx: cls(ctx.protocol.image_size))


def _run_dataset(cls, **kwargs):
    return {r.check: r for r in run_checks("dataset", _dataset_spec(cls), context=CONTEXT, **kwargs)}


def test_random_dataset_conforms():
    results = _run_dataset(RandomDataset)
    assert [r.check for r in results.values()] == [c.__name__ for c in DATASET_CHECKS]
    assert all(r.status == "passed" for r in results.values()), results


@pytest.mark.parametrize(
    "cls,check,fragments",
    [
        (TargetOutsideGallery, "check_query_targets_in_gallery",
         ["query 2", "target(s) 0 are not in the gallery", "can never be answered"]),
        (OverlappingSplits, "check_splits_disjoint", ["used by training triplets and by the test split"]),
        (WrongImageSize, "check_images", ["shape (1, 3, 16, 16), expected (1, 3, 64, 64)"]),
        (FloatImages, "check_images", ["dtype torch.float32, expected torch.uint8"]),
        (UnseededSampler, "check_sample_triplets", ["seeded alike"]),
        (EmptyText, "check_texts", ["query 0 has text '  '"]),
        (DuplicateGallery, "check_image_ids", ["gallery() lists ids more than once"]),
        (BadReference, "check_references_valid", ["query 1", "invalid image ids 10000"]),
    ],
)
def test_broken_dataset_fails_the_right_check(cls, check, fragments):
    results = _run_dataset(cls)
    failed = {name for name, r in results.items() if r.failed}
    assert check in failed, results
    for fragment in fragments:
        assert fragment in results[check].message, results[check].message
    if cls is TargetOutsideGallery:
        assert failed == {check, "check_splits_disjoint"}  # its target is a training image


def test_dataset_expected_failures():
    r = _run_dataset(DeclaresOverlap)["check_splits_disjoint"]
    assert r.status == "xfailed" and "test images double as training targets" in r.message
    r = _run_dataset(OverlappingSplits, expected_failures={"check_splits_disjoint": "by design"})
    assert r["check_splits_disjoint"].status == "xfailed"
    with pytest.raises(ConformanceError, match="check_query_targets_in_gallery"):
        check_dataset(_dataset_spec(TargetOutsideGallery), context=CONTEXT)


# --- pytest integration -------------------------------------------------------------------------
def test_parametrize_with_checks_ids_and_marks():
    mark = parametrize_with_checks(
        composers=["tirg"], datasets=["css-synth"],
        expected_failures={("tirg", "check_cuda"): "no GPU here"}, context=CONTEXT,
    )
    argnames, params = mark.args
    assert argnames == "name, check"
    ids = [p.id for p in params]
    assert ids == [f"tirg-{c.__name__}" for c in COMPOSER_CHECKS] + [
        f"css-synth-{c.__name__}" for c in DATASET_CHECKS
    ]
    cuda = params[ids.index("tirg-check_cuda")]
    (xfail,) = cuda.marks
    assert xfail.name == "xfail" and xfail.kwargs == {"reason": "no GPU here", "strict": True}
    assert all(not p.marks for p in params if p is not cuda)
    assert params[0].values[0] == "tirg" and params[0].values[1].__name__ == "check_output_shapes"
    with pytest.raises(ValueError, match="not a \\(name, check name\\) pair"):
        parametrize_with_checks(composers=["tirg"], expected_failures={("tirg", "check_typo"): "x"})


def test_bound_checks_turn_results_into_pytest_outcomes():
    def bound(cls, check):
        mark = parametrize_with_checks(composers=[ComposerSpec("x", cls)], context=CONTEXT)
        return next(p.values for p in mark.args[1] if p.id == f"x-{check}")

    spec, check = bound(PixelMean, "check_cpu")
    assert check(spec) is None
    spec, check = bound(NoisyInEval, "check_eval_determinism")
    with pytest.raises(CheckFailed, match="composer 'x' fails check_eval_determinism: compose gives"):
        check(spec)
    spec, check = bound(DeclaredExpectedFailure, "check_gradients")
    with pytest.raises(pytest.xfail.Exception, match="the unused head is kept on purpose"):
        check(spec)
    if not torch.cuda.is_available():
        spec, check = bound(PixelMean, "check_cuda")
        with pytest.raises(pytest.skip.Exception, match="CUDA not available"):
            check(spec)


INNER_TEST = """
import torch
from cirbench import ComposerSpec
from cirbench.testing import parametrize_with_checks

{plugin}

class Noisy(PixelMean):
    def compose(self, images, texts):
        return super().compose(images, texts) + torch.randn(len(texts), self.ctx.protocol.embed_dim)


@parametrize_with_checks(
    composers=[ComposerSpec("pm", PixelMean), ComposerSpec("noisy", Noisy)],
    expected_failures={{("pm", "check_cpu"): "claims to fail but passes",
                       ("noisy", "check_eval_determinism"): "noise on purpose"}},
)
def test_conformance(name, check):
    check(name)
"""


def test_parametrize_with_checks_in_a_pytest_run(tmp_path):
    """End to end in a separate pytest run: ids, strict xfail (an expected failure that passes
    fails the run), skips with their reason."""
    (tmp_path / "test_inner.py").write_text(INNER_TEST.format(plugin=EXTERNAL_PLUGIN))
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "test_inner.py",
         "-k", "check_cpu or check_eval_determinism or check_cuda"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    report = out.stdout
    assert "FAILED test_inner.py::test_conformance[pm-check_cpu]" in report, report
    assert "[XPASS(strict)] claims to fail but passes" in report, report
    assert "XFAIL test_inner.py::test_conformance[noisy-check_eval_determinism]" in report, report
    assert "PASSED test_inner.py::test_conformance[pm-check_eval_determinism]" in report, report
    assert "PASSED test_inner.py::test_conformance[noisy-check_cpu]" in report, report
    if not torch.cuda.is_available():
        assert "SKIPPED [2]" in report and "CUDA not available" in report, report
    assert out.returncode == 1


def test_cirbench_testing_does_not_import_pytest():
    code = "import sys, cirbench.testing; sys.exit('pytest' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0
