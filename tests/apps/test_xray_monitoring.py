"""The X-ray app under monitoring: its declared image summary, the decision record of each assessed image,
the simulated radiologist reads that bring the truth later, and the scanner change that makes the model drift.

Fast by design (small images, a few hundred of them, one small model fitted here): the pipeline and demo tests
cover the running platform."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from kawa.apps.xray.events import image_entity
from kawa.apps.xray.features import (
    EMBEDDING_DIM,
    FEATURES,
    HIST_BINS,
    SNAPSHOT,
    projection,
    summarize,
    summarize_input,
)
from kawa.apps.xray.generator import Generator, Upload
from kawa.apps.xray.imaging import decode, downsample, model_input, redact_text
from kawa.apps.xray.pipeline import FUNCTION, build_app
from kawa.apps.xray.reads import RadiologistReads, Read, due, outcome_of, plan_read, plan_reads, refs_from_results
from kawa.apps.xray.settings import SCANNER_B, ScannerProfile, XraySettings
from kawa.apps.xray.synth import RadiographGenerator
from kawa.apps.xray.train import fit, generated_data, reference_profile, reference_sample, train, window_data
from kawa.errors import KawaError
from kawa.events import EventRef
from kawa.log.memory import MemoryLog
from kawa.monitor.drift import compare
from kawa.monitor.join import JoinConfig, JoinState, step
from kawa.monitor.performance import auroc
from kawa.monitor.records import DECISIONS_TOPIC, OUTCOMES_TOPIC, DecisionRecord, OutcomeEvent
from kawa.monitor.records import decode as decode_record
from kawa.monitor.sketch import Profile, numeric_reference
from kawa.store.memory import MemoryStore
from kawa.testing import invoke, s3_created

SIZE = 128  # generated image side: a quarter of the default's pixels, the same 32² model input


# --- the image summary ---------------------------------------------------------------------------------


def test_summary_of_a_two_tone_image_is_exact() -> None:
    image = np.zeros((64, 96), dtype=np.float32)
    image[:, :48] = 0.1
    image[:, 48:] = 0.9
    s = summarize(image, 32)
    assert (s.width, s.height) == (96, 64)
    assert s.histogram == pytest.approx((0.5, 0, 0, 0, 0, 0, 0, 0.5))
    assert s.mean == pytest.approx(0.5) and s.std == pytest.approx(0.4)
    assert (s.p5, s.p95, s.contrast) == pytest.approx((0.1, 0.9, 0.8))
    features = s.features()
    assert tuple(features) == FEATURES and features["contrast"] == pytest.approx(0.8)


def test_summary_matches_numpy_on_generated_images() -> None:
    gen = RadiographGenerator(4, size=SIZE)
    for _ in range(5):
        pixels = redact_text(gen.generate().pixels)
        small = downsample(pixels, 32).astype(np.float64).ravel()
        s = summarize(pixels, 32)
        counts, _ = np.histogram(small, bins=HIST_BINS, range=(0.0, 1.0))
        np.testing.assert_allclose(s.histogram, counts / small.size)
        assert sum(s.histogram) == pytest.approx(1.0)
        assert s.mean == pytest.approx(small.mean()) and s.std == pytest.approx(small.std())
        assert (s.p5, s.p95) == pytest.approx(tuple(np.quantile(small, [0.05, 0.95])))
        # The embedding projects exactly what the model reads (model_input's standardized vector).
        np.testing.assert_allclose(s.embedding, projection(32 * 32) @ model_input(pixels, 32), atol=1e-5)
        assert len(s.embedding) == EMBEDDING_DIM
    # The projection is fixed: rebuilt from its seed in a fresh process it is the same matrix.
    fresh = np.random.default_rng(20261202).standard_normal((EMBEDDING_DIM, 1024)) / 32.0
    np.testing.assert_array_equal(projection(1024), fresh)


def test_summary_is_taken_at_the_input_size_and_insensitive_to_the_text() -> None:
    image = RadiographGenerator(9, size=SIZE).generate().pixels
    assert summarize_input(downsample(image, 32), SIZE, SIZE) == summarize(image, 32)
    with pytest.raises(ValueError):
        summarize_input(np.zeros(0), 1, 1)
    for n in (1, 2, 3, 7):  # the quantiles of tiny inputs too (numpy's linear interpolation)
        values = np.random.default_rng(n).random(n)
        tiny = summarize_input(values, n, 1)
        assert (tiny.p5, tiny.p95) == pytest.approx(tuple(np.quantile(values, [0.05, 0.95])))


def test_the_snapshot_spec_records_every_summary_feature_and_nothing_else() -> None:
    assert SNAPSHOT.recorded == FEATURES and SNAPSHOT.excluded == () and SNAPSHOT.categorical == ()
    assert len(FEATURES) == 7 + HIST_BINS + EMBEDDING_DIM
    summary = summarize(RadiographGenerator(2, size=SIZE).generate().pixels, 32).features()
    kept = SNAPSHOT.snapshot({**summary, "patient_name": "ABERNATHY^CORDELIA"})
    assert kept == summary  # an input the app did not declare is never recorded


# --- the decision record of an assessed image ----------------------------------------------------------


class Risk:
    """A fake model: the risk is a fixed function of the model input (so it differs between images)."""

    name, version = "pneumonia", 3

    def predict(self, x: Any) -> Any:
        return 1.0 / (1.0 + np.exp(-np.asarray(x)[:, :64].mean(axis=1)))


def _assess(settings: XraySettings, tmp_path: Path, body: bytes, key: str = "scans/a.png") -> Any:
    app = build_app(settings, results_db=f"sqlite:///{tmp_path / 'results.db'}")
    event = s3_created(settings.incoming_bucket, key, body, content_type="image/png")
    return event, invoke(app.get(FUNCTION), event, models={settings.model_ref: Risk()}, buckets=settings.buckets())


def test_assess_records_one_decision_with_the_summary_linked_to_its_event(tmp_path: Path) -> None:
    settings = XraySettings(image_size=SIZE)
    png = RadiographGenerator(6, size=SIZE).generate(pneumonia=True).png()
    event, out = _assess(settings, tmp_path, png)
    assert out.outcome == "ok", out.reason
    (reply,) = out.replies
    result = reply.get_data()
    assert isinstance(result, dict) and out.store.head(settings.processed_bucket, "scans/a.png").size > 0

    (raw,) = out.emitted_to(DECISIONS_TOPIC)
    decision = decode_record(raw)
    assert isinstance(decision, DecisionRecord)
    assert decision.ref == EventRef.of(event) == EventRef.from_json(result["event"])
    assert decision.entity == image_entity(settings.incoming_bucket, "scans/a.png")
    assert (decision.model, decision.version) == ("pneumonia", 3)
    assert decision.score == pytest.approx(result["risk"]) and decision.action == result["label"]
    expected = summarize(redact_text(decode(png), settings.redact_margin_px), settings.model_input_size).features()
    assert set(decision.features) == set(FEATURES)
    assert decision.features == pytest.approx(expected)
    assert [topic for topic, _ in out.emitted] == [DECISIONS_TOPIC]  # and the reply goes to the results topic


def test_decisions_can_be_turned_off(tmp_path: Path) -> None:
    settings = XraySettings(image_size=SIZE, record_decisions=False)
    _, out = _assess(settings, tmp_path, RadiographGenerator(6, size=SIZE).generate().png())
    assert out.outcome == "ok" and len(out.replies) == 1 and out.emitted_to(DECISIONS_TOPIC) == []


# --- radiologist reads ---------------------------------------------------------------------------------


def _uploads(n: int, *, corrupt_every: int = 0) -> list[Upload]:
    rng = np.random.default_rng(1)
    return [
        Upload(
            f"scans/{i:06d}.png", "png", bool(rng.random() < 0.3), (), 1, 1_000.0 + i,
            corrupt=bool(corrupt_every and i % corrupt_every == 0), bucket="xray-images",
        )
        for i in range(n)
    ]  # fmt: skip


def test_reads_cover_the_configured_share_after_the_configured_delay() -> None:
    settings = XraySettings(reads_delay_s=120.0, reads_jitter=0.5, reads_coverage=0.7, seed=3)
    uploads = _uploads(4000)
    reads = plan_reads(uploads, settings)
    # Coverage: a binomial share (scipy's exact test), and each read names its image's truth.
    assert stats.binomtest(len(reads), len(uploads), 0.7).pvalue > 0.01
    truth = {image_entity("xray-images", u.key): int(u.pneumonia) for u in uploads}
    assert all(r.label == truth[r.entity] for r in reads)
    # Delays: uniform on 120 * (1 ± 0.5) (scipy's KS test).
    delays = np.array([r.delay for r in reads])
    assert delays.min() >= 60.0 and delays.max() <= 180.0
    assert stats.kstest(delays, stats.uniform(loc=60.0, scale=120.0).cdf).pvalue > 0.01
    # The draw is per image: the same reads in any order, and a different seed reads other images.
    assert sorted(plan_reads(uploads[::-1], settings), key=lambda r: r.entity) == sorted(reads, key=lambda r: r.entity)
    other = {r.entity for r in plan_reads(uploads, settings, seed=4)}
    assert other != {r.entity for r in reads}


def test_damaged_uploads_are_never_read_and_coverage_bounds_hold() -> None:
    uploads = _uploads(200, corrupt_every=4)
    assert all(plan_read(u, delay_s=1.0, coverage=1.0) is None for u in uploads if u.corrupt)
    assert len([r for u in uploads if (r := plan_read(u, delay_s=1.0, coverage=1.0))]) == 150
    assert [r for u in uploads if (r := plan_read(u, delay_s=1.0, coverage=0.0))] == []
    fixed = [r for u in uploads if (r := plan_read(u, delay_s=5.0, coverage=1.0, jitter=0.0))]
    assert {r.delay for r in fixed} == {5.0}


def test_due_splits_reads_by_time() -> None:
    reads = [Read("b", 1, 0.0, 30.0), Read("a", 0, 0.0, 10.0), Read("c", 0, 0.0, 50.0)]
    ready, waiting = due(reads, 30.0)
    assert [r.entity for r in ready] == ["a", "b"] and [r.entity for r in waiting] == ["c"]
    assert outcome_of(reads[0]).entity == "b" and outcome_of(reads[0]).time == 30.0
    ref = EventRef("kawa:s3..xray-images", "abc")
    by_ref = outcome_of(reads[0], ref)
    assert by_ref.ref == ref and by_ref.entity is None and by_ref.key == outcome_of(reads[0]).key  # one read, one id


def test_the_reads_service_publishes_each_read_once_when_due() -> None:
    from tests.apps.xray_checks import read_topic

    log = MemoryLog()
    settings = XraySettings(reads_delay_s=10.0, reads_jitter=0.0, reads_coverage=1.0)
    now = [1_000.0]
    service = RadiologistReads(log, settings, clock=lambda: now[0])
    uploads = _uploads(3)  # uploaded at 1000, 1001, 1002: due at 1010, 1011, 1012
    for u in uploads:
        service.add(u)
    ref = EventRef("kawa:s3..xray-images", "n-2")
    service.link({image_entity("xray-images", uploads[2].key): ref})
    now[0] = 1_011.0
    assert [o.entity for o in service.tick()] == [image_entity("xray-images", u.key) for u in uploads[:2]]
    assert service.tick() == [] and service.waiting == 1
    (last,) = service.tick(now=1_012.0)
    assert last.ref == ref and service.published == 3 and service.waiting == 0
    service.close()
    records = read_topic(log, OUTCOMES_TOPIC, 3, timeout=5.0)
    outcomes = [decode_record(r) for r in records]
    assert all(isinstance(o, OutcomeEvent) for o in outcomes) and len(outcomes) == 3
    assert sorted(o.observed_at for o in outcomes if isinstance(o, OutcomeEvent)) == [1010.0, 1011.0, 1012.0]


# --- decisions, reads and the join, end to end through the function ------------------------------------


def test_reads_join_the_decisions_of_the_assessed_images(tmp_path: Path) -> None:
    settings = XraySettings(
        image_size=SIZE, pneumonia_fraction=0.5, dicom_fraction=0.0, reads_delay_s=30.0, reads_coverage=0.6, seed=8
    )
    store = MemoryStore()
    for bucket in settings.buckets():
        store.create_bucket(bucket, exist_ok=True)
    generator = Generator(settings, store=store)
    app = build_app(settings, results_db=f"sqlite:///{tmp_path / 'results.db'}")
    decisions: list[DecisionRecord] = []
    replies = []
    for _ in range(30):
        upload = generator.upload()
        out = invoke(app.get(FUNCTION), s3_created(settings.incoming_bucket, upload.key), store=store,
                     models={settings.model_ref: Risk()})  # fmt: skip
        assert out.outcome == "ok", out.reason
        replies += out.replies
        decisions += [d for d in map(decode_record, out.emitted_to(DECISIONS_TOPIC)) if isinstance(d, DecisionRecord)]
    reads = plan_reads(generator.uploads, settings)
    assert len(decisions) == 30 and 0 < len(reads) < 30
    truth = {image_entity(settings.incoming_bucket, u.key): int(u.pneumonia) for u in generator.uploads}
    end = max(r.due_at for r in reads) + 100.0

    # By entity (the reads do not know the events): a horizon that covers the longest delay.
    by_entity = JoinState(JoinConfig(horizon=settings.reads_delay_s * (1 + settings.reads_jitter) + 5, by="entity",
                                     missing="exclude"))  # fmt: skip
    matured = step(by_entity, decisions, [outcome_of(r) for r in reads], end).matured
    # By EventRef, recovered from the result events.
    refs = refs_from_results(replies)
    by_ref = JoinState(JoinConfig(horizon=100.0, by="ref", missing="exclude"))
    matured_ref = step(by_ref, decisions, [outcome_of(r, refs[r.entity]) for r in reads], end).matured
    for result in (matured, matured_ref):
        assert len(result) == len(reads) and all(m.observed for m in result)
        assert all(m.label == truth[m.decision.entity] for m in result)
    assert by_entity.counts().excluded == 30 - len(reads) and by_entity.counts().joined == len(reads)
    y = [m.label for m in matured]
    s = [m.decision.score for m in matured]
    assert auroc(y, s) == pytest.approx(roc_auc_score(y, s))


# --- the scanner change --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shift:
    """Images of one seeded run: ``n`` from the old scanner, then ``n`` from the new one."""

    y: np.ndarray
    x: np.ndarray
    contrast: np.ndarray
    after: np.ndarray  # True for images from the new scanner
    summaries: list[dict[str, float]]


@pytest.fixture(scope="module")
def model() -> Any:
    gen = RadiographGenerator(3, size=SIZE)
    images = [gen.generate(pneumonia=bool(i % 2)) for i in range(300)]
    x = np.stack([model_input(redact_text(im.pixels), 32) for im in images])
    return fit(x, np.array([im.label for im in images]))


@pytest.fixture(scope="module")
def shift() -> Shift:
    gen, n = RadiographGenerator(21, size=SIZE), 200
    ys, xs, summaries, after = [], [], [], []
    for i in range(2 * n):
        if i == n:
            gen.switch_scanner(SCANNER_B)
        pixels = redact_text((im := gen.generate(pneumonia=bool(i % 2))).pixels)
        ys.append(im.label)
        xs.append(model_input(pixels, 32))
        summaries.append(summarize(pixels, 32).features())
        after.append(i >= n)
    contrast = np.array([s["contrast"] for s in summaries])
    return Shift(np.array(ys), np.stack(xs), contrast, np.array(after), summaries)


def test_the_new_scanner_shifts_the_contrast_feature(shift: Shift) -> None:
    before, after = shift.contrast[~shift.after], shift.contrast[shift.after]
    reference = numeric_reference(before[:100])
    same = compare(reference, reference.empty().add(before[100:]))
    drifted = compare(reference, reference.empty().add(after))
    assert drifted.psi > 1.0 and drifted.ks is not None and drifted.ks > 0.5
    assert drifted.ks_p is not None and drifted.ks_p < 1e-9
    assert same.psi < 0.25 and same.ks_p is not None and same.ks_p > 0.01
    # The binned KS statistic agrees with scipy's on the raw values to within a bin's share.
    raw = stats.ks_2samp(before[:100], after).statistic
    assert drifted.ks == pytest.approx(raw, abs=0.1)


def test_the_new_scanner_lowers_the_models_auroc(model: Any, shift: Shift) -> None:
    risk = model.predict_proba(shift.x)[:, 1]
    b, a = ~shift.after, shift.after
    before, after = auroc(shift.y[b], risk[b]), auroc(shift.y[a], risk[a])
    assert before == pytest.approx(roc_auc_score(shift.y[b], risk[b]))
    assert after == pytest.approx(roc_auc_score(shift.y[a], risk[a]))
    assert before > 0.9 and before - after >= 0.1, (before, after)


def test_a_model_retrained_on_the_labelled_window_gets_accuracy_back(model: Any, shift: Shift) -> None:
    # The new scanner's uploads, their radiologist reads, and the images read back from the store.
    settings = XraySettings(image_size=SIZE, scanner=SCANNER_B, pneumonia_fraction=0.5, reads_coverage=0.8, seed=12)
    store = MemoryStore()
    store.create_bucket(settings.incoming_bucket)
    generator = Generator(settings, store=store)
    for _ in range(200):
        generator.upload()
    labels = {r.entity: r.label for r in plan_reads(generator.uploads, settings)}
    labels["xray-images/scans/gone.png"] = 1  # deleted since: skipped
    window = window_data(settings, store, labels)
    assert len(window.y) == len(labels) - 1 and len(window.summaries) == len(window.y)
    assert window.trained_on == "the recent labelled window"
    retrained = fit(window.x, window.y)
    a = shift.after
    old_auc = auroc(shift.y[a], model.predict_proba(shift.x[a])[:, 1])
    new_auc = auroc(shift.y[a], retrained.predict_proba(shift.x[a])[:, 1])
    assert new_auc - old_auc >= 0.05, (old_auc, new_auc)
    with pytest.raises(KawaError, match="one class"):
        window_data(settings, store, {e: 0 for e in list(labels)[:5] if labels[e] == 0})
    generated = generated_data(XraySettings(image_size=64), 4, seed=5, scanner=SCANNER_B)
    assert generated.trained_on == "generated images (scanner-b)" and "scanner=scanner-b" in generated.source


def test_the_reference_profile_of_a_version_sees_the_new_scanner(model: Any, shift: Shift) -> None:
    risk = model.predict_proba(shift.x)[:, 1]
    old = [i for i in range(len(shift.y)) if not shift.after[i]]
    new = [i for i in range(len(shift.y)) if shift.after[i]]
    reference = reference_profile([shift.summaries[i] for i in old[:100]], risk[old[:100]])
    assert set(reference.features) == set(FEATURES) and reference.n == 100
    assert Profile.from_json(reference.to_json()) == reference

    def window(idx: list[int]) -> Profile:
        columns = {name: [shift.summaries[i][name] for i in idx] for name in FEATURES}
        return reference.empty().add(columns, risk[idx])

    same, drifted = window(old[100:]), window(new)
    for name in ("contrast", "mean", "p95"):
        assert compare(reference.features[name], drifted.features[name]).psi > 1.0
        assert compare(reference.features[name], same.features[name]).psi < 0.5
    assert reference.score is not None and same.score is not None and drifted.score is not None
    assert compare(reference.score, drifted.score).psi > compare(reference.score, same.score).psi


def test_training_builds_the_reference_profile_in_the_live_mix(tmp_path: Path) -> None:
    (tmp_path / "xray.yaml").write_text("xray:\n  image_size: 64\n")
    result = train(images=100, reference_images=40, settings_file=str(tmp_path / "xray.yaml"), register=False,
                   progress=None)  # fmt: skip
    assert result["reference_records"] == 40 and result["auc"] > 0.7
    settings = XraySettings(image_size=SIZE, pneumonia_fraction=0.2)
    x, summaries = reference_sample(settings, 50, seed=1)
    assert x.shape == (50, 32 * 32) and len(summaries) == 50 and set(summaries[0]) == set(FEATURES)


def test_the_generator_switches_scanner_after_the_configured_uploads() -> None:
    settings = XraySettings(image_size=64, scanner_shift_after=3, dicom_fraction=0.0)
    generator = Generator(settings, store=MemoryStore(), pool=2)
    generator.store.create_bucket(settings.incoming_bucket)
    scanners = [generator.upload().scanner for _ in range(6)]
    assert scanners == ["scanner-a"] * 3 + ["scanner-b"] * 3 and generator.switched_at == 3
    assert generator.scanner == settings.shifted_scanner


def test_the_default_scanner_changes_no_pixel_and_a_switch_keeps_the_anatomy() -> None:
    plain, explicit = RadiographGenerator(5, size=64), RadiographGenerator(5, size=64, profile=ScannerProfile())
    switched = RadiographGenerator(5, size=64)
    switched.switch_scanner(SCANNER_B)
    for _ in range(3):
        a, b, c = plain.generate(), explicit.generate(), switched.generate()
        np.testing.assert_array_equal(a.pixels, b.pixels)
        assert (a.pneumonia, a.patient) == (c.pneumonia, c.patient)  # same case, another scanner
        assert not np.array_equal(a.pixels, c.pixels)
    assert ScannerProfile().identity and not SCANNER_B.identity
