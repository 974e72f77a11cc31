"""What the audit reports: one finding per inconsistency, in words a person
understands, naming the container where there is one, with the repair
`check --repair` makes or the command the user should run."""

from dataclasses import dataclass
from collections.abc import Callable


class RepairRefused(Exception):
    """What a repair found, looking again just before it writes, that makes
    it unsafe now (the message says what)."""


@dataclass
class Finding:
    kind: str  # a stable name for scripts, e.g. "endpoint-missing"
    message: str  # what is wrong, naming the container
    container: str | None = None
    repair: str | None = None  # what --repair does; None: nothing it can prove safe
    act: Callable[[], None] | None = None  # the repair, each step replay-safe
    advice: str | None = None  # what the user should do when --repair cannot
    repaired: bool = False
    error: str | None = None  # why the repair failed

    def line(self) -> str:
        if self.repaired:
            return f"repaired: {self.message}: {self.repair}"
        if self.error:
            return f"{self.message}: repair failed ({self.error})" + \
                (f"; {self.advice}" if self.advice else "")
        then = [f"--repair {self.repair}"] if self.repair else []
        then += [self.advice] if self.advice else []
        return f"{self.message}" + (f": {'; '.join(then)}" if then else "")

    def to_dict(self) -> dict:
        return {"kind": self.kind, "message": self.message, "container": self.container,
                "repair": self.repair, "advice": self.advice, "repaired": self.repaired,
                "error": self.error}


def fixable(kind, message, repair, act, container=None, advice=None) -> Finding:
    return Finding(kind, message, container, repair, act, advice)


def advised(kind, message, advice, container=None) -> Finding:
    return Finding(kind, message, container, advice=advice)
