"""A source's counts: one Counter that every step adds to, and what build.json and the card report.

Keys are tuples naming what was counted:
    ("rows", "read"), ("rows", "used")      input rows (prepare)
    ("rejected", reason)                    rows rejected, by reason (readers and prepare)
    ("pairs", "formed")                     candidate pairs the used rows gave (the source modules)
    ("filtered", rule)                      pairs dropped by a rule (source modules and decide)
    ("note", name)                          per-row facts worth counting (e.g. unrated completions)
    ("duplicates", source)                  pairs dropped as copies of a pair kept from `source` (decide)
    ("conflicts", source)                   of those, the copies whose label disagrees with the kept one's
    ("kept", split, answer)                 pairs kept (decide)
    ("kept_by_origin", origin)              kept pairs by the dataset a re-judged pair comes from
Every input row ends in exactly one place (used or rejected); every formed pair in one
(kept, filtered by a rule, or a duplicate).
"""

from __future__ import annotations

from collections import Counter

SPLITS = ("train", "test")


class SourceCounts(Counter):
    def total(self, kind: str) -> int:
        return sum(n for key, n in self.items() if key[0] == kind)

    def by(self, kind: str) -> dict:
        return dict(sorted((key[1], n) for key, n in self.items() if key[0] == kind))

    def to_manifest(self) -> dict:
        labels = {split: dict(sorted((key[2], n) for key, n in self.items() if key[:2] == ("kept", split)))
                  for split in SPLITS}
        return {
            "counts": {
                "rows_read": self["rows", "read"],
                "rows_used": self["rows", "used"],
                "rows_rejected": self.total("rejected"),
                "pairs_formed": self["pairs", "formed"],
                "pairs_filtered": self.by("filtered"),
                "duplicates_dropped": self.total("duplicates"),
                "pairs_kept": self.total("kept"),
            },
            "duplicates_of": self.by("duplicates"),
            "conflicting_duplicates_of": self.by("conflicts"),
            "rejects_by_reason": self.by("rejected"),
            "notes": self.by("note"),
            "label_balance": labels,
            **({"kept_by_origin": self.by("kept_by_origin")} if self.total("kept_by_origin") else {}),
        }
