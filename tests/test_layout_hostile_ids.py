"""A reply parameter whose expert id is a non-ASCII digit (issue 21, item 7).

``"\u00b2".isdigit()`` is True but ``int("\u00b2")`` raises a bare ``ValueError`` that
``accept_replies`` did not catch: one hostile reply crashed a Flower round under a
custom layout. The layout now raises :class:`LayoutError`, which the reply check turns
into a dropped (and logged) reply.
"""

from __future__ import annotations

import numpy as np
import pytest

from flexassign.alignment import Feedback
from flexassign.integrations.layout import ExpertLayout, LayoutError

LAYOUT = ExpertLayout(expert=r"^experts\.([^.]+)\.")
GLOBAL = {
    "body.w": np.zeros(2, dtype=np.float32),
    "experts.0.0.w": np.zeros(2, dtype=np.float32),
    "experts.1.0.w": np.zeros(2, dtype=np.float32),
}


@pytest.mark.parametrize("gid", ["\u00b2", "\u0663", "\uff11", "1" * 5000])
def test_non_ascii_or_huge_expert_ids_raise_layout_error(gid: str) -> None:
    with pytest.raises(LayoutError, match=r"`layout.expert` matched"):
        LAYOUT.role(f"experts.{gid}.0.w")


def test_check_update_rejects_the_hostile_name_with_layout_error() -> None:
    arrays = {"body.w": GLOBAL["body.w"], "experts.\u00b2.0.w": GLOBAL["experts.0.0.w"]}
    with pytest.raises(LayoutError):
        LAYOUT.check_update(arrays, GLOBAL, [0, 1])


def test_the_reply_check_reports_it_as_an_error_accept_replies_catches() -> None:
    pytest.importorskip("flwr")
    from flexassign.integrations.flower.messages import TrainReply
    from flexassign.integrations.flower.replies import check_reply

    reply = TrainReply(
        {"body.w": GLOBAL["body.w"], "experts.\u00b2.0.w": GLOBAL["experts.0.0.w"]},
        10,
        {},
        Feedback(experts=[0], counts=[10]),
    )
    # accept_replies drops a reply on MessageFormatError, AggregationError or LayoutError
    with pytest.raises(LayoutError):
        check_reply(reply, GLOBAL, [0, 1], layout=LAYOUT)
