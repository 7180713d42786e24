"""The S21/S22 matching report as a real .xlsx workbook (XlsxWriter).

Two sheets in the recipient's language, "一致"/"不一致" or "Matched"/"Unmatched":
client company → account, and client company with the reason code (the same
in every language, for programs) and the reason as a sentence in the
recipient's language (rendered from the code by the mail templates). The workbook's
creation time is the report's `finished_at`, so the same request always yields
the same bytes (a re-sent mail carries an identical attachment).
"""

from __future__ import annotations

import io
from collections.abc import Callable

import xlsxwriter

from hub_schema.events.notifications import MatchingReport, UnmatchedClient

SHEETS = {"ja": ("一致", "不一致"), "en": ("Matched", "Unmatched")}
HEADERS = {
    "ja": {
        "matched": ["クライアント会社ID", "クライアント会社名", "取引先ID", "取引先名"],
        "unmatched": ["クライアント会社ID", "クライアント会社名", "理由コード", "理由"],
    },
    "en": {
        "matched": ["Client company ID", "Client company", "Account ID", "Account"],
        "unmatched": ["Client company ID", "Client company", "Reason code", "Reason"],
    },
}
WIDTHS = {"matched": [22, 36, 22, 36], "unmatched": [22, 36, 14, 60]}


def matching_report_xlsx(report: MatchingReport, locale: str,
                         reason_text: Callable[[UnmatchedClient], str] | None = None) -> bytes:
    """The workbook; `reason_text(client)` words an unmatched client's reason in `locale` (else the producer's text)."""
    buf = io.BytesIO()
    wb = xlsxwriter.Workbook(buf, {"in_memory": True, "strings_to_formulas": False, "strings_to_urls": False})
    wb.set_properties({"title": f"Matching report {report.portal_id}", "created": report.finished_at.replace(tzinfo=None)})
    bold = wb.add_format({"bold": True, "bg_color": "#DDEBF7", "border": 1})
    headers = HEADERS.get(locale, HEADERS["en"])
    matched_sheet, unmatched_sheet = SHEETS.get(locale, SHEETS["en"])

    def sheet(name: str, key: str, rows: list[list[str]]) -> None:
        ws = wb.add_worksheet(name)
        ws.write_row(0, 0, headers[key], bold)
        for col, width in enumerate(WIDTHS[key]):
            ws.set_column(col, col, width)
        for r, row in enumerate(rows, start=1):
            for c, value in enumerate(row):
                ws.write_string(r, c, value)
        ws.freeze_panes(1, 0)
        ws.autofilter(0, 0, max(len(rows), 1), len(headers[key]) - 1)

    sheet(matched_sheet, "matched", [[m.client_company_id, m.client_name, m.account_id, m.account_name] for m in report.matched])
    sheet(unmatched_sheet, "unmatched", [[u.client_company_id, u.client_name, u.reason_code,
                                          reason_text(u) if reason_text else u.reason] for u in report.unmatched])
    wb.close()
    return buf.getvalue()
