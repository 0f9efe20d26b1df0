"""The entry file: per-cell run records (the evidence) plus the aggregates recomputed from them.

An entry is `leaderboard/entries/<track>__<name>.json`, checked by `Entry` (pydantic, strict: a
wrong type is an error, not coerced). Its `cells` are copied from the run records
(`record.json`) of the sweep's cells; every number above them (per-order statistics, the score
and its interval, the protocol) is derived from the cells and re-derived by `leaderboard check`
(`orbitbench.leaderboard.integrity`), every other field is compared with the cells, the sweep
file and the model registry (`orbitbench.leaderboard.crosscheck`). Only `FREE_TEXT` is free: one
plain line without format or control characters, escaped for Markdown and HTML when rendered.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer, model_validator

from orbitbench.run.record import DataSettings, Metrics, ModelSettings
from orbitbench.stats import mean_std
from orbitbench.sweep.spec import MAX_NAME_LENGTH, NAME_PATTERN, TRACK_PATTERN

# Refused in free text: line breaks and control characters (a new Markdown line: a heading, a
# table row), `|` (a table cell) and `<`, `>` (HTML). The rest of Markdown's punctuation is
# escaped when rendered (`render.md_text`).
_CONTROL = re.compile(r"[|<>\x00-\x1f\x7f]")
# Unicode categories refused anywhere in free text: control, format (bidi overrides, zero-width
# joiners), line and paragraph separators: they reorder or hide what a reader sees.
_REFUSED_CATEGORIES = {"Cc", "Cf", "Zl", "Zp"}
# The fields a submitter writes freely (everything else is derived or cross-checked): validated by
# `plain_line` and escaped for Markdown (`render.md_text`) and HTML (Jinja2 autoescape).
FREE_TEXT = ("authors", "notes", "paper", "code")
SHA256_PATTERN = r"^[0-9a-f]{64}$"
COMMIT_PATTERN = r"^[0-9a-f]{40}(\+dirty)?$"
METHOD_PATTERN = r"^[a-z0-9_]+$"
INVARIANCE_PATTERN = r"^(none|built-in:[a-z0-9_-]+)$"
URL_PATTERN = r"^https?://[^\s<>\"'|`\[\]()]+$"


def plain_line(text: str) -> str:
    """Refuse text that would be read as Markdown or HTML structure (one line, no control characters)."""
    found = _CONTROL.search(text)
    if found:
        raise ValueError(f"must be one plain line without line breaks, control characters, | < or >; found {found.group()!r}")
    hidden = next((ch for ch in text if unicodedata.category(ch) in _REFUSED_CATEGORIES), None)
    if hidden is not None:
        raise ValueError(f"must be plain text without invisible format or control characters; found U+{ord(hidden):04X}")
    return text


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Stat(_Strict):
    """An accuracy over the cells of one group order: mean, population std and how many cells."""

    mean: float = Field(ge=0.0, le=1.0)
    std: float = Field(ge=0.0, le=0.5)  # a [0, 1] quantity cannot spread more than 0.5
    n: int = Field(ge=1)


class KappaStat(_Strict):
    """Cohen's kappa over the cells of one group order (in [-1, 1]): mean, population std, cells."""

    mean: float = Field(ge=-1.0, le=1.0)
    std: float = Field(ge=0.0, le=1.0)
    n: int = Field(ge=1)


def summarize(values: list[float], kind: type[Stat] | type[KappaStat] = Stat) -> Stat | KappaStat:
    """The statistic an entry stores for some cells' values (mean and population std, rounded)."""
    mean, std, n = mean_std(values)
    return kind(mean=round(mean, 6), std=round(std, 6), n=n)


class Interval(_Strict):
    """A mean with its 95% t-interval over units (leave-out class x seed); n = number of units."""

    mean: float
    low: float
    high: float
    n: int = Field(ge=1)


def _without_empty_at_scale(data: dict[str, Any]) -> dict[str, Any]:
    """Entries written before the at-scale regression keep their bytes, so their digests hold."""
    if not data.get("at_scale"):
        data.pop("at_scale", None)
    return data


class ScaleStat(_Strict):
    """One predictor's kernel regression at the network's scale over the cells of one group order
    (docs/THEORY.md §10): predicted out-test and kappa against the network, and the smallest m."""

    out_test: Stat
    in_test: Stat
    kappa: KappaStat | None = None
    m: int = Field(ge=1)  # the smallest regression sample among the cells


class PoseResult(_Strict):
    """The results at one group order (one x value of Fig. 1C)."""

    n_poses: int = Field(ge=1)
    train: Stat | None = None
    in_test: Stat
    out_test: Stat
    predicted: dict[str, Stat] = {}  # predictor name -> spectral-predicted out-test accuracy
    kappa: dict[str, KappaStat] = {}  # predictor name -> Cohen's kappa of that prediction vs the network, per cell
    at_scale: dict[str, ScaleStat] = {}  # predictor name -> regression at scale, when every cell has it

    @model_serializer(mode="wrap")
    def _serialize(self, handler: Any) -> dict[str, Any]:
        return _without_empty_at_scale(handler(self))


class Protocol(_Strict):
    """What a track fixes: which images (every DataModule setting but the order and the class),
    which group orders, which leave-out classes and which training seeds."""

    datamodule: str
    n_poses: list[int] = Field(min_length=1)
    leave_out_classes: list[int] = Field(min_length=1)
    seeds: list[int] = Field(min_length=1)
    data: dict[str, Any] = {}


class ScalePrediction(_Strict):
    """One predictor's kernel regression at the network's scale in one cell (docs/THEORY.md §10),
    as the run record wrote it: regression on m points of the network's own training split."""

    out_test: float = Field(ge=0.0, le=1.0)
    in_test: float = Field(ge=0.0, le=1.0)
    kappa: float | None = Field(default=None, ge=-1.0, le=1.0)  # per out-test digit, vs the network
    kappa_ci: list[float] | None = Field(default=None, min_length=2, max_length=2)  # bootstrap 95%
    m: int = Field(ge=1)

    @model_validator(mode="after")
    def _an_interval(self) -> "ScalePrediction":
        # a percentile bootstrap need not hold the point estimate; it is ordered, within [-1, 1]
        # (bootstrap noise around a constant prediction's 0 aside), and comes with a kappa
        if self.kappa_ci is not None and not (self.kappa is not None and -1.0 - 1e-9 <= self.kappa_ci[0]
                                              <= self.kappa_ci[1] <= 1.0 + 1e-9):  # fmt: skip
            raise ValueError(f"kappa_ci {self.kappa_ci} is not an interval in [-1, 1] beside a kappa")
        return self


class EntryCell(BaseModel):
    """One finished cell, as its run record wrote it (data block, model, metrics, provenance)."""

    model_config = ConfigDict(extra="forbid")

    cell: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")  # sweep cell id (`model+method-n4-c3-s0`)
    seed: int
    model: ModelSettings
    data: DataSettings
    metrics: Metrics
    predicted: dict[str, float] = {}  # predictor -> spectral-predicted out-test accuracy
    kappa: dict[str, float] = {}  # predictor -> Cohen's kappa, spectral rule vs network, on the out-test digits
    at_scale: dict[str, ScalePrediction] = {}  # predictor -> regression at scale (absent before it existed)
    epochs: int = Field(ge=0)
    global_step: int = Field(ge=0)
    wall_time_s: float = Field(ge=0)
    git_commit: str | None = Field(pattern=COMMIT_PATTERN)
    versions: dict[str, str]
    finished: dt.datetime

    @model_serializer(mode="wrap")
    def _serialize(self, handler: Any) -> dict[str, Any]:
        return _without_empty_at_scale(handler(self))

    @property
    def leave_out_class(self) -> int:
        return int(self.data.hparams.get("leave_out_class", -1))

    @property
    def n_poses(self) -> int:
        return int(self.data.n_poses or 0)


class Verified(_Strict):
    """A re-run of randomly chosen cells by `leaderboard verify`: how far its numbers were off.

    `digest` is the sha256 of the cells it re-ran and of the fields above (`crosscheck.verification_digest`):
    an edit of those cells, or of this block, after the re-run makes `check` fail."""

    date: dt.date
    cells: list[str] = Field(min_length=1)
    max_abs_diff: float = Field(ge=0)
    tolerance: float = Field(ge=0, le=0.01)  # a looser re-run vouches for nothing worth a badge
    commit: str | None = Field(pattern=COMMIT_PATTERN)
    digest: str = Field(pattern=SHA256_PATTERN)


class Provenance(_Strict):
    """What produced the cells: orbitbench's version and commit, key package versions."""

    orbitbench: str
    git_commit: str | None = Field(pattern=COMMIT_PATTERN)  # None: the cells ran at several commits
    versions: dict[str, str]


class Entry(_Strict):
    """One leaderboard entry: a model's complete sweep on one track."""

    schema_version: Literal[4] = 4
    name: str = Field(pattern=NAME_PATTERN, max_length=MAX_NAME_LENGTH)
    model: str = Field(pattern=r"^[A-Za-z0-9_.:()-]+$", max_length=200)  # the registry's canonical name
    builder: str = Field(pattern=r"^[\w.]+:[\w.]+$")  # module:function
    config: dict[str, Any]
    param_count: int = Field(ge=1)
    track: str = Field(pattern=TRACK_PATTERN, max_length=MAX_NAME_LENGTH)
    method: str = Field(default="supervised", pattern=METHOD_PATTERN, max_length=80)
    invariance: str = Field(default="none", pattern=INVARIANCE_PATTERN)
    authors: list[str] = []
    paper: str | None = Field(default=None, pattern=URL_PATTERN)
    code: str | None = Field(default=None, pattern=URL_PATTERN)
    notes: str = Field(default="", max_length=300)
    protocol: Protocol
    score: Interval  # mean over group orders of out-test, per unit; its mean and 95% interval
    results: list[PoseResult] = Field(min_length=1)
    provenance: Provenance
    sweep: str = Field(pattern=NAME_PATTERN, max_length=MAX_NAME_LENGTH)  # a sweeps/*.yaml's name
    date: dt.date
    verified: Verified | None = None
    cells_digest: str = Field(pattern=SHA256_PATTERN)  # sha256 of the cells (`crosscheck.cells_digest`)
    cells: list[EntryCell] = Field(min_length=1)

    @field_validator("notes")
    @classmethod
    def _one_plain_line(cls, text: str) -> str:
        return plain_line(text)

    @field_validator("authors")
    @classmethod
    def _authors(cls, names: list[str]) -> list[str]:
        for name in names:
            if not name.strip() or len(name) > 80:
                raise ValueError(f"each author is a non-empty name of at most 80 characters, got {name!r}")
            plain_line(name)
        return names

    @property
    def file_name(self) -> str:
        return f"{self.track}__{self.name}.json"

    @property
    def mean_in_test(self) -> float:
        return sum(r.in_test.mean for r in self.results) / len(self.results)

    def mean_predicted(self, predictor: str) -> float | None:
        """Predicted out-test averaged over group orders; None unless every order has it."""
        values = [r.predicted[predictor].mean for r in self.results if predictor in r.predicted]
        return sum(values) / len(values) if len(values) == len(self.results) else None

    def mean_at_scale(self, predictor: str) -> tuple[float, float | None, int] | None:
        """(predicted out-test, kappa, smallest m) of the regression at scale, averaged over group
        orders; None unless every order has it (kappa None unless every order has one)."""
        found = [r.at_scale[predictor] for r in self.results if predictor in r.at_scale]
        if len(found) != len(self.results):
            return None
        kappas = [s.kappa.mean for s in found if s.kappa is not None]
        kappa = sum(kappas) / len(kappas) if len(kappas) == len(found) else None
        return sum(s.out_test.mean for s in found) / len(found), kappa, min(s.m for s in found)

    def mean_kappa(self, predictor: str) -> float | None:
        """The prediction's per-cell Cohen's kappa vs the network, averaged; None unless every order has it."""
        values = [r.kappa[predictor].mean for r in self.results if predictor in r.kappa]
        return sum(values) / len(values) if len(values) == len(self.results) else None
