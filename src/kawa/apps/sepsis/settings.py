"""The simulated hospital's settings: census, case mix, measurement schedule, the disease, the clinicians,
the treatment effect and the epidemic scenario.

Frozen pydantic models (``extra="forbid"``), so a typo in ``kawa.yaml`` is an error naming the field; nothing
here reads the environment. Times are hours from the simulation's epoch (t = 0 is the start of the
simulated window, midnight).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Epidemic(BaseModel):
    """A respiratory epidemic: from ``start_h`` (ramping up over ``ramp_h``) a share of the non-septic
    patients breathe faster and saturate lower, and admissions after the start have a different case mix."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    start_h: float = Field(12.0, description="when it starts (hours from the epoch)")
    ramp_h: float = Field(12.0, gt=0, description="hours to reach full intensity")
    affected_share: float = Field(0.35, ge=0, le=1, description="share of non-septic patients affected")
    rr_rise: float = Field(5.0, ge=0, description="breaths/min added at full intensity")
    spo2_drop: float = Field(3.5, ge=0, description="SpO2 points removed at full intensity")
    infection_multiplier: float = Field(1.6, ge=0, description="suspected-infection share x this after the start")
    frailty_shift: float = Field(0.3, description="mean frailty of admissions after the start (z units)")


class SimSettings(BaseModel):
    """Everything the simulator lets you change. Defaults are calibrated (docs/sepsis.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = 16
    patients: int = Field(30_000, ge=1, description="distinct patients (census: monitored in the window)")
    mode: Literal["census", "cohort"] = Field(
        "census",
        description="census: patients whose stay overlaps [0, hours), observed only in that window; "
        "cohort: patients admitted in [0, hours), observed over their whole stay",
    )
    hours: float = Field(24.0, gt=0, description="length of the simulated window")

    icu_share: float = Field(0.10, ge=0, le=1)
    los_median_h: float = Field(96.0, gt=0, description="median length of stay (log-normal)")
    los_sigma: float = Field(0.6, gt=0)
    vitals_every_min: tuple[float, float] = Field((15.0, 60.0), description="ward interval range; ICU: the low end")
    temp_share: float = Field(0.5, ge=0, le=1, description="share of vital sets with a temperature")
    gcs_share: float = Field(0.5, ge=0, le=1, description="share of vital sets with a GCS")
    missing_share: float = Field(0.03, ge=0, le=1, description="share of other vitals not recorded")
    labs_every_h: float = Field(12.0, gt=0, description="routine lab draws (jittered)")
    lactate_share: float = Field(0.3, ge=0, le=1, description="routine draws that include lactate")

    infection_share: float = Field(0.25, ge=0, le=1, description="admissions with suspected infection")
    sepsis_share: float = Field(0.072, ge=0, le=1, description="admissions that develop sepsis (⊂ infection)")

    screen_every_h: float = Field(12.0, gt=0, description="shift-change screening period")
    screen_first_h: float = Field(7.0, ge=0, description="first screening (07:00, then 19:00, ...)")
    screen_gain: float = Field(0.55, gt=0, description="P(screen detects) = min(0.95, gain x deterioration)")
    screen_delay_h: float = Field(1.5, ge=0, description="median hours from a positive screen to antibiotics")
    alert_delay_h: float = Field(1.0, ge=0, description="median hours from an alert to antibiotics")

    death_log_odds_per_h: float = Field(
        0.06, ge=0, description="the true effect: log-odds of death per hour of antibiotic delay after onset"
    )
    max_delay_h: float = Field(48.0, gt=0, description="delays beyond this add no further risk")

    epidemic: Epidemic | None = None

    @model_validator(mode="after")
    def _check(self) -> SimSettings:
        lo, hi = self.vitals_every_min
        if not 0 < lo <= hi:
            raise ValueError("vitals_every_min must be (low, high) minutes with 0 < low <= high, e.g. (15, 60)")
        if self.sepsis_share > self.infection_share:
            raise ValueError("sepsis_share must be <= infection_share (sepsis needs a suspected infection)")
        return self
