"""In-process Flower Grids and the ServerApp identity, shared by the strategy tests.

A Grid here answers each message by calling Python code (no Ray, no SuperLink):
subclasses define :meth:`InProcessGrid.reply`. Importing this module needs Flower; the
test modules importorskip it first.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from flwr.app import Error, Message, RecordDict
from flwr.serverapp import Grid


@pytest.fixture(autouse=True)
def task_identity() -> Iterator[None]:
    """Flower's runtime sets the ServerApp's identity before messages are built."""
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


class InProcessGrid(Grid):
    """A Grid whose nodes are Python code; every message sent is kept in :attr:`sent`.

    :meth:`reply` answers one message (``None``: the reply is lost); an exception it
    raises becomes the Error reply Flower sends for a crashing ClientApp.
    """

    def __init__(self, node_ids: Iterable[int]) -> None:
        self.node_ids = list(node_ids)
        self.sent: list[Message] = []

    def reply(self, msg: Message) -> Message | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def set_run(self, run: Any) -> None:  # pragma: no cover - unused
        pass

    @property
    def run(self) -> Any:  # pragma: no cover - unused
        raise NotImplementedError

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int,
                       group_id: str, ttl: float | None = None) -> Message:
        return Message(content, dst_node_id=dst_node_id, message_type=message_type,
                       group_id=group_id)  # pragma: no cover - unused

    def get_node_ids(self) -> Iterable[int]:
        return list(self.node_ids)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise NotImplementedError  # pragma: no cover

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise NotImplementedError  # pragma: no cover

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        out = []
        for msg in messages:
            self.sent.append(msg)
            try:
                reply = self.reply(msg)
            except Exception as exc:  # what Flower does with a crashing ClientApp
                reply = Message(Error(code=1, reason=repr(exc)), reply_to=msg)
            if reply is not None:
                out.append(reply)
        return out
