"""Format detection: which family (unpaired, paired, ranking) each row is parsed as.

Per file (the most common family among the first rows) with a per-row fallback; see formats.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prospect.data.formats_base import FAMILIES, FORMAT_FAMILY
from prospect.data.text import FieldError, show
from prospect.errors import KTODataError

if TYPE_CHECKING:
    from prospect.data.formats import RowParser


class FormatResolver:
    """Decides each row's family: the configured format, else per file with per-row fallback."""

    def __init__(self, cfg: Any, parser: RowParser, source_name: str) -> None:
        self.parser = parser
        self.source_name = source_name
        self.forced = None if cfg.format == "auto" else FORMAT_FAMILY[cfg.format]
        self.file_family: str | None = self.forced

    def observe(self, sample: list[tuple[int, dict[str, Any]]]) -> None:
        """Pick the file's family from the first rows (row number, row); raise if they are all ambiguous."""
        if self.forced:
            return
        counts = {f: 0 for f in FAMILIES}
        ambiguous: tuple[int, dict[str, Any], list[str]] | None = None
        for n, row in sample:
            fams = self.parser.families(row)
            if len(fams) == 1:
                counts[fams[0]] += 1
            elif len(fams) > 1 and ambiguous is None:
                ambiguous = (n, row, fams)
        if any(counts.values()):
            self.file_family = max(FAMILIES, key=lambda f: counts[f])
        elif ambiguous is not None:
            n, row, fams = ambiguous
            raise KTODataError(
                f"{self.source_name}:{n}: cannot tell the data format: the row fits {' and '.join(fams)} "
                f"(columns: {_columns(row)}). Set it explicitly: data.format: {fams[0]} in the config "
                f"(or --format {fams[0]}; one of: unpaired, paired, ranking, conversation, hh)."
            )

    def family(self, row: dict[str, Any]) -> str:
        """The family to parse `row` as, or FieldError when it fits none (or is ambiguous)."""
        if self.forced:
            return self.forced
        fams = self.parser.families(row)
        if len(fams) == 1:
            return fams[0]
        if not fams and self.file_family is not None and self.parser.partly_fits(row, self.file_family):
            # A row of the file's own format with a column missing: parsing names it ("label: missing").
            return self.file_family
        if not fams:
            raise FieldError(
                "row",
                "unknown_format",
                f"cannot tell the row's format from its columns ({_columns(row)}): expected prompt+completion+label "
                "(unpaired), prompt+chosen+rejected (paired) or prompt+responses+rankings (ranking); "
                "column names can be set with data.prompt_column, data.response_column, data.label_column, ...",
            )
        if self.file_family in fams:
            return self.file_family
        raise FieldError("row", "ambiguous_format", f"fits {' and '.join(fams)}; set data.format to one of them")


def _columns(row: dict[str, Any]) -> str:
    keys = [show(str(k)) for k in list(row)[:10]]
    more = f", ... ({len(row)} columns)" if len(row) > 10 else ""
    return ", ".join(keys) + more if keys else "none"
