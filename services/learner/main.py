"""`eureka learner run`: check the inputs, then start this node's processes or, inside one, train.

The loop itself is `loop.run`; `launch` starts the processes (one node or several).
"""

from __future__ import annotations

import json
import os
import sys

from services.learner.config import LearnerConfig
from services.learner.launch import SETTINGS_ENV
from services.learner.preflight import refusal
from shared.logs import get_logger, setup_logging

log = get_logger("learner")
MULTI_NODE_VARS = ("NNODES", "LWS_GROUP_SIZE", "MASTER_ADDR", "LWS_LEADER_ADDRESS")


def main(settings: LearnerConfig) -> int:
    setup_logging("learner")
    problem = refusal(settings)
    if problem:
        log.error("refusing to start", reason=problem)
        print(f"eureka learner run: {problem}", file=sys.stderr)
        return 2
    inside = "LOCAL_RANK" in os.environ  # a process torchrun or the local launcher started
    if not inside and (settings.world_size > 1 or any(os.environ.get(v) for v in MULTI_NODE_VARS)):
        from services.learner.launch import launch

        try:
            return launch(settings)
        except ValueError as e:
            print(f"eureka learner run: {e}", file=sys.stderr)
            return 2
    from services.learner.loop import run

    return run(settings)


def _child() -> int:
    """Entry of each learner process: the settings come from its environment."""
    settings = LearnerConfig(**json.loads(os.environ[SETTINGS_ENV]))
    setup_logging("learner")
    from services.learner.loop import run

    return run(settings)


if __name__ == "__main__":
    sys.exit(_child())
