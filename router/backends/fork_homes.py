"""Where the samples of one request (``n`` > 1, one fork group) go: all to the worker the
first of them was routed to, so its engine computes their shared prompt once
(``engine.fork``). A sample routed while that worker is unhealthy or excluded (a retry)
is routed by the policy as any request is."""
from __future__ import annotations

from collections.abc import Callable

from router.policies import WorkerView


class ForkHomes:
    def __init__(self) -> None:
        self._homes: dict[tuple[str, str], list] = {}     # (role, group) -> [worker name, users]

    def pick(self, role: str, group: str, candidates: list[WorkerView],
             choose: Callable[[list[WorkerView]], WorkerView]) -> WorkerView:
        """The group's worker for ``role`` if it is among ``candidates``, else ``choose``'s
        pick (which becomes the group's worker). Each pick is ended by ``release``."""
        home = self._homes.get((role, group))
        if home is not None:
            home[1] += 1
            for worker in candidates:
                if worker.name == home[0]:
                    return worker
            chosen = choose(candidates)
            home[0] = chosen.name
            return chosen
        worker = choose(candidates)
        self._homes[(role, group)] = [worker.name, 1]
        return worker

    def release(self, role: str, group: str) -> None:
        home = self._homes.get((role, group))
        if home is not None:
            home[1] -= 1
            if home[1] <= 0:
                del self._homes[(role, group)]
