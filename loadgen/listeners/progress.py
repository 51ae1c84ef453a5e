"""The progress bar on stderr (tqdm), one step per record."""

from __future__ import annotations

import sys

from loadgen.records import RequestRecord


class ProgressBar:
    def __init__(self, desc: str, total: int | None, multi_turn: bool, quiet: bool):
        self.desc, self.total, self.unit, self.quiet = desc, total, "req", quiet
        if multi_turn:
            # --num-requests counts conversations but the bar advances per turn, and how many turns a conversation
            # has is known only as it runs (it ends at a failed turn or at the context): count turns, total unknown
            if total is not None:
                self.desc += f", {total} conversations"
            self.total, self.unit = None, "turn"
        self.bar = None

    def started(self) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=self.total, unit=self.unit, disable=self.quiet, file=sys.stderr, dynamic_ncols=True,
                        desc=self.desc)

    def record(self, record: RequestRecord) -> None:
        self.bar.update(1)

    def stopped(self, outcome) -> None:
        if self.bar is not None:
            self.bar.close()
