"""The sepsis app's functions: FHIR R4 in, streaming features and scores, decision records, alerts out.

::

    topic sepsis.observations ──▶ ingest   FHIR Observation or Bundle → validated rows, per patient
        malformed ─▶ sepsis.observations.dlq (the reason in Kawa's words: element paths, codes; no patient)
        └─▶ topic sepsis.charted (keyed by pseudonym) ──▶ score   (ordered per patient)
              features (kawa.apps.sepsis.features) → qSOFA, SIRS, NEWS2 → score (NEWS2, or ctx.model)
              → alert policy (kawa.apps.sepsis.alerts) → ctx.decide(entity=pseudonym, ...)
              ├─▶ decisions        kawa.monitor.decision (features snapshot, no identifier)
              ├─▶ sepsis.scores    dev.kawa.sepsis.scored
              ├─▶ sepsis.alerts    dev.kawa.sepsis.alert
              └─▶ sepsis.census    dev.kawa.sepsis.admitted (first time a patient is seen)

Both functions run in order per record key: a patient's messages must reach ``score`` in time order (an
older row than the chart is not applied), so FHIR messages keyed by patient (any stable key without PHI) are
ingested in parallel across patients and unkeyed ones one at a time per partition. Only ``ingest`` sees
patient references; from there on a patient is its pseudonym
(:func:`kawa.apps.sepsis.events.pseudonym`). The per-patient state (features, last alert) and the alert
budget live **in this process** (:class:`Ward`): a restart begins from empty states, and two processes would
keep two budgets. Rebuilding them from the charted topic (a compacted state topic) is the next step.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from kawa.apps.sepsis import fhir
from kawa.apps.sepsis.alerts import AlertPolicy, Verdict, decide
from kawa.apps.sepsis.app_settings import DEMO_KEY, SepsisSettings
from kawa.apps.sepsis.codes import Code
from kawa.apps.sepsis.events import (
    ADMITTED_TYPE,
    ALERT_TYPE,
    CHARTED_TYPE,
    SCORED_TYPE,
    Admitted,
    Charted,
    Scored,
    SepsisAlert,
    pseudonym,
)
from kawa.apps.sepsis.features import N_STATS, NAMES, FeatureState, features, update_rows
from kawa.apps.sepsis.outcomes import epoch_s
from kawa.apps.sepsis.scores import news2, qsofa, sirs
from kawa.apps.sepsis.sim import Observation
from kawa.events import CloudEvent
from kawa.events.ref import EventRef
from kawa.functions import App, Context, PermanentError
from kawa.functions.batch import BatchContext, predict_each
from kawa.monitor.records import SnapshotSpec

__all__ = [
    "INGEST", "SCORE", "SNAPSHOT", "Rule", "Ward", "build_app", "epoch_s", "handle", "score_columns", "scores_of",
]

log = logging.getLogger("kawa.apps.sepsis")
INGEST = "ingest"
SCORE = "score"
SCORE_NAMES = ("news2", "qsofa", "sirs")
BATCH = 256
"""Messages per call of the two functions (the most; fewer when fewer wait)."""
SNAPSHOT = SnapshotSpec.of(numeric=(*NAMES, *SCORE_NAMES))
"""What a decision record keeps: the 105 features and the three bedside scores (none of them PHI)."""


@dataclass(frozen=True)
class Rule:
    """A bedside score as the model of a decision record (``news2``, version 2 for NEWS2): it predicts
    nothing itself, the function computes the score."""

    name: str
    version: int

    @property
    def ref(self) -> str:
        return f"{self.name}/{self.version}"

    @property
    def tags(self) -> Mapping[str, str]:
        return {}

    def predict(self, inputs: Any, /) -> np.ndarray[Any, np.dtype[Any]]:
        raise NotImplementedError("a bedside rule is computed by the scoring function, not predicted")


NEWS2_RULE = Rule("news2", 2)


def score_columns(x: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.int64], ...]:
    """NEWS2, qSOFA and SIRS of each row of a feature matrix (rows x :data:`NAMES`), from its last values:
    what the chart shows at that moment (a code never measured scores nothing; GCS unknown counts as 15)."""

    def last(code: Code) -> npt.NDArray[np.float64]:
        return x[:, int(code) * N_STATS]

    acvpu = np.nan_to_num(last(Code.ACVPU))
    n = news2(last(Code.RR), last(Code.SPO2), np.nan_to_num(last(Code.O2_FLOW)), last(Code.SBP), last(Code.HR),
              acvpu, last(Code.TEMP))  # fmt: skip
    gcs = last(Code.GCS)
    q = qsofa(last(Code.RR), last(Code.SBP), np.where(np.isnan(gcs), 15.0, gcs), acvpu)
    s = sirs(last(Code.TEMP), last(Code.HR), last(Code.RR), last(Code.WBC))
    return n, q, s


def scores_of(f: tuple[float, ...]) -> tuple[int, int, int]:
    """NEWS2, qSOFA and SIRS from one feature vector (see :func:`score_columns`)."""
    n, q, s = score_columns(np.array([f], dtype=np.float64))
    return int(n[0]), int(q[0]), int(s[0])


def band(news2_score: int) -> str:
    """NEWS2 clinical risk: low (0-4), medium (5-6), high (7+)."""
    return "high" if news2_score >= 7 else "medium" if news2_score >= 5 else "low"


@dataclass
class Ward:
    """The app's in-process state: per pseudonym the feature state and the last alert time; the alert times of
    the last hour (the budget); patient references interned for the FHIR decoder."""

    policy: AlertPolicy
    states: dict[str, FeatureState] = field(default_factory=dict)
    last_alert: dict[str, float] = field(default_factory=dict)
    recent: tuple[float, ...] = ()
    last_event: dict[str, tuple[str, FeatureState | None, Verdict]] = field(default_factory=dict)
    references: dict[str, int] = field(default_factory=dict)
    by_number: list[str] = field(default_factory=list)
    aliases: dict[int, tuple[bytes, str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def resolve(self, reference: str) -> int:
        """A number for a ``Patient/<id>`` reference (the decoder's patient column); ValueError otherwise."""
        kind, _, ident = reference.partition("/")
        if kind != "Patient" or not ident:
            raise ValueError("not a Patient reference")
        with self.lock:
            number = self.references.get(reference)
            if number is None:
                number = self.references[reference] = len(self.by_number)
                self.by_number.append(reference)
            return number

    def reference(self, number: int) -> str:
        with self.lock:
            return self.by_number[number]

    def alias(self, number: int, key: bytes) -> str:
        """The pseudonym of patient ``number`` under ``key`` (computed once per patient)."""
        with self.lock:
            cached = self.aliases.get(number)
        if cached is None or cached[0] != key:
            cached = (key, pseudonym(self.reference(number), key))
            with self.lock:
                self.aliases[number] = cached
        return cached[1]

    def begin(self, patient: str, key: str) -> tuple[FeatureState | None, Verdict | None]:
        """The patient's state before the event ``key``, and the verdict already given on it when it was
        handled before (a redelivery: the same outputs are emitted again, nothing is applied twice)."""
        with self.lock:
            done = self.last_event.get(patient)
            if done is not None and done[0] == key:
                return done[1], done[2]
            return self.states.get(patient), None

    def commit(self, patient: str, key: str, before: FeatureState | None, state: FeatureState, score: float) -> Verdict:
        """Ask the alert policy about ``score`` and store the patient's new state, in one step."""
        with self.lock:
            done = self.last_event.get(patient)
            if done is not None and done[0] == key:
                return done[2]
            verdict = decide(self.policy, self.last_alert.get(patient), self.recent, state.now, score)
            self.recent = verdict.recent
            if verdict.alert:
                self.last_alert[patient] = state.now
            self.states[patient] = state
            self.last_event[patient] = (key, before, verdict)
            return verdict


def _resources(event: CloudEvent) -> Any:
    data = event.get_data()
    if isinstance(data, bytes | str):
        try:
            return json.loads(data)
        except ValueError:
            raise PermanentError(
                "the message is not JSON; send a FHIR R4 Observation or Bundle as application/fhir+json"
            ) from None
    return data


def _rows(res: Any, ward: Ward, validate: bool) -> list[Observation]:
    """The observations of a FHIR message, or :class:`PermanentError` with the reason (no identifier)."""
    try:
        if isinstance(res, Mapping) and res.get("resourceType") == "Bundle":
            good, bad = fhir.decode_bundle(res, resolve=ward.resolve)
            if bad:
                shown = "; ".join(f"entry {i}: {why.split(';')[0]}" for i, why in bad[:5])
                more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
                raise PermanentError(
                    f"Bundle has {len(bad)} invalid Observation entr{'y' if len(bad) == 1 else 'ies'}: {shown}{more}; "
                    "fix or drop them and send the Bundle again (no entry of it was charted)"
                )
        else:
            good = [fhir.decode(res, resolve=ward.resolve)]
        if validate:
            fhir.validate(res)
    except fhir.InvalidObservation as exc:
        raise PermanentError(str(exc)) from None
    return good


def build_app(settings: SepsisSettings | None = None, *, ward: Ward | None = None, validate: bool | None = None) -> App:
    """The sepsis app's two functions with ``settings``; ``ward`` shares the in-process state (tests);
    ``validate``: also check every message against ``fhir.resources``' R4 models (default: ``fhir_validate``)."""
    s = settings or SepsisSettings()
    validate = s.fhir_validate if validate is None else validate
    w = ward or Ward(AlertPolicy(s.alert_threshold, s.suppress_h, s.budget_per_h))
    key = s.key()
    if s.pseudonym_key.get_secret_value() == DEMO_KEY:
        log.warning("the sepsis app pseudonymises patients with the demo key; set apps.sepsis.pseudonym_key")
    app = App("sepsis")

    # Batched (kawa.functions.batch): one handler call for up to BATCH messages of distinct patients (per-key
    # order holds), one model call and one vectorised score for them; each message is still committed,
    # deduplicated and dead-lettered on its own. One thread: the work holds the GIL, more threads only contend.
    @app.function(
        name=INGEST, topic=s.observations_topic, dead_letter_topic=s.dead_letter_topic, outputs=(s.charted_topic,),
        ordered_by_key=True, concurrency=1, min_scale=1, max_scale=1, retries=1, backoff_s=0.05, batch=BATCH,
    )  # fmt: skip
    def ingest(events: list[CloudEvent], ctx: BatchContext) -> None:
        for i, event in enumerate(events):
            try:
                rows = _rows(_resources(event), w, validate)
            except PermanentError as exc:
                ctx.reject(i, exc)
                continue
            sent = event.get_time()
            received = sent.timestamp() if sent is not None else time.time()
            by_patient: dict[int, list[tuple[float, int, float]]] = {}
            for o in sorted(rows, key=lambda o: (o.patient, o.time_h, o.code)):
                by_patient.setdefault(o.patient, []).append((o.time_h, o.code, o.value))
            one = ctx[i]
            for number, chart in by_patient.items():
                alias = w.alias(number, key)
                data = Charted(patient=alias, rows=chart, received_at=received).data()
                one.emit(s.charted_topic, one.new_event(CHARTED_TYPE, data, subject=alias), key=alias.encode())

    outputs = (s.scores_topic, s.alerts_topic, s.census_topic, s.decisions_topic)

    @app.function(
        name=SCORE, topic=s.charted_topic, dead_letter_topic=s.dead_letter_topic, outputs=outputs,
        ordered_by_key=True, concurrency=1, min_scale=1, max_scale=1, retries=2, backoff_s=0.05, batch=BATCH,
    )  # fmt: skip
    def score(events: list[CloudEvent], ctx: BatchContext) -> None:
        items: list[tuple[Charted, CloudEvent, Context]] = []
        for i, event in enumerate(events):
            try:
                items.append((Charted.model_validate(_resources(event)), event, ctx[i]))
            except (ValidationError, PermanentError) as exc:
                ctx.reject(i, exc)
        score_all(items, s, w)

    return app


def handle(charted: Charted, event: CloudEvent, ctx: Context, s: SepsisSettings, w: Ward) -> None:
    """:func:`score_all` of one message."""
    score_all([(charted, event, ctx)], s, w)


def score_all(items: Sequence[tuple[Charted, CloudEvent, Context]], s: SepsisSettings, w: Ward) -> None:
    """Chart each message's observations, score, decide, emit: features per patient, the bedside scores and
    the model for all of them at once. A patient's messages are taken in order, one per round. The policy's
    verdict and the new state are stored together once everything that can fail has run (so a failed attempt
    leaves no trace), and a redelivered event gets the verdict it got before (so a retry neither loses an
    alert to suppression nor charts a row twice)."""
    rounds: list[list[tuple[Charted, CloudEvent, Context]]] = []
    seen: dict[str, int] = {}
    for item in items:
        n = seen[item[0].patient] = seen.get(item[0].patient, -1) + 1
        if n == len(rounds):
            rounds.append([])
        rounds[n].append(item)
    for chunk in rounds:
        _score_round(chunk, s, w)


def _score_round(items: Sequence[tuple[Charted, CloudEvent, Context]], s: SepsisSettings, w: Ward) -> None:
    """:func:`score_all` of messages of distinct patients."""
    if not items:
        return
    prepared = []
    for charted, event, _ctx in items:
        event_ref = EventRef.of(event)
        before, given = w.begin(charted.patient, event_ref.key())
        state = update_rows(before or FeatureState(), charted.rows)  # an older row than the chart is not applied
        prepared.append((event_ref, before, given, state, features(state)))
    x = np.array([p[4] for p in prepared], dtype=np.float64)
    n2s, qs, sis = (c.tolist() for c in score_columns(x))
    models, values = _values(items, x, n2s, s)
    for k, (charted, _event, ctx) in enumerate(items):
        event_ref, before, given, state, f = prepared[k]
        _act(charted, ctx, s, w, event_ref, before, given, state, f, (n2s[k], qs[k], sis[k]), models[k], values[k])


def _values(
    items: Sequence[tuple[Charted, CloudEvent, Context]], x: npt.NDArray[np.float64], n2s: list[int], s: SepsisSettings
) -> tuple[list[Any], list[float]]:
    """Each message's model (NEWS2, or the predictor its patient gets) and score: one model call per
    predictor for all its messages."""
    if s.model_ref is None:
        return [NEWS2_RULE] * len(items), [float(n) for n in n2s]
    ref = s.model_ref
    if s.experiment:
        models: list[Any] = [ctx.model(ref, experiment=s.experiment, unit=c.patient) for c, _e, ctx in items]
    else:
        first = items[0][2].model(ref)  # one version for the whole batch
        models = [first] * len(items)
    values = [0.0] * len(items)
    groups: dict[int, list[int]] = {}
    for k, m in enumerate(models):
        groups.setdefault(id(m), []).append(k)
    for ks in groups.values():
        out = predict_each(models[ks[0]], [x[k : k + 1] for k in ks], [EventRef.of(items[k][1]) for k in ks])
        for k, y in zip(ks, out, strict=True):
            values[k] = float(np.asarray(y).ravel()[0])
    return models, values


def _act(
    charted: Charted, ctx: Context, s: SepsisSettings, w: Ward, event_ref: EventRef, before: FeatureState | None,
    given: Verdict | None, state: FeatureState, f: tuple[float, ...], scores: tuple[int, int, int], model: Any,
    value: float,
) -> None:  # fmt: skip
    """Decide on one patient's score and emit what follows (decision record, score, census, alert)."""
    patient = charted.patient
    n2, q, si = scores
    named = dict(zip(NAMES, f, strict=True)) | {"news2": n2, "qsofa": q, "sirs": si}
    verdict = given or w.commit(patient, event_ref.key(), before, state, value)
    shown = verdict.alert and bool(getattr(model, "acts", True))  # a silent arm computes its alerts, shows none
    why = "silent" if verdict.alert and not shown else verdict.why
    at = epoch_s(state.now)
    now = time.time()
    latency_ms = round(max(0.0, now - charted.received_at) * 1000.0, 3)
    ctx.decide(
        patient, model=model, score=value, action="alert" if verdict.alert else "none", features=named,
        snapshot=SNAPSHOT, topic=s.decisions_topic, decided_at=at,  # the chart's time: outcomes mature in it
    )  # fmt: skip
    scored = Scored(
        event=event_ref, patient=patient, time=at, news2=n2, qsofa=q, sirs=si, score=value, model=model.name,
        model_version=int(model.version), band=band(n2), verdict=why, latency_ms=latency_ms,
    )  # fmt: skip
    ctx.emit(s.scores_topic, ctx.new_event(SCORED_TYPE, scored.data(), subject=patient), key=patient.encode())
    if before is None:
        seen = Admitted(patient=patient, time=epoch_s(charted.rows[0][0]) if charted.rows else at)
        ctx.emit(s.census_topic, ctx.new_event(ADMITTED_TYPE, seen.data(), subject=patient), key=patient.encode())
    if shown:
        alert = SepsisAlert(
            event=event_ref, patient=patient, time=at, news2=n2, qsofa=q, sirs=si, score=value,
            threshold=s.alert_threshold, model=model.name, model_version=int(model.version), decided_at=now,
            latency_ms=latency_ms,
        )  # fmt: skip
        ctx.emit(s.alerts_topic, ctx.new_event(ALERT_TYPE, alert.data(), subject=patient), key=patient.encode())
        ctx.metrics.incr("alerts")


def __getattr__(name: str) -> Any:
    """``app``: the app with default settings (``kawa worker --app kawa.apps.sepsis.pipeline:app``), built on
    first use so that importing this module builds nothing. Each worker process keeps its own per-patient
    state and budget (see the module doc)."""
    if name == "app":
        built = globals()["app"] = build_app()
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
