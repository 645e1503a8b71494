"""The Flower strategy's view of nodes: waiting for them, profiling, sampling.

:func:`wait_for_nodes` blocks until enough nodes are connected, :func:`query_profiles`
asks new nodes for their profile, :func:`to_client_profile` turns reported profile
fields into a :class:`~flexassign.alignment.ClientProfile`, and :func:`sample_clients`
picks the round's clients; :class:`NodeDirectory` remembers which node is which
client; :func:`match_replies` tells which client a reply is from.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.common import log
from flwr.serverapp import Grid

from .messages import PROFILE_KEY, MessageFormatError, decode_profile

__all__ = [
    "NodeDirectory",
    "match_replies",
    "query_profiles",
    "sample_clients",
    "to_client_profile",
    "wait_for_nodes",
]


def wait_for_nodes(
    grid: Grid,
    *,
    min_available: int,
    wait_timeout: float,
    progress_interval: float,
    settle_time: float = 0.0,
) -> list[int]:
    """Block until ``min_available`` nodes are connected; return their ids, sorted.

    Progress is logged every ``progress_interval`` seconds. With ``settle_time > 0``,
    also wait until the number of connected nodes has not changed for that long.

    Raises
    ------
    TimeoutError
        If fewer than ``min_available`` nodes connect within ``wait_timeout`` seconds.
    """
    start = time.monotonic()
    deadline = start + wait_timeout
    next_log = start
    while len(nodes := sorted(grid.get_node_ids())) < min_available:
        now = time.monotonic()
        if now >= deadline:
            raise TimeoutError(
                f"only {len(nodes)} of the required {min_available} nodes "
                f"(`min-available-nodes`) connected within {wait_timeout:g}s "
                "(`wait-timeout`); start more SuperNodes or lower `min-available-nodes`"
            )
        if now >= next_log:
            log(INFO, "Waiting for nodes to connect: %d connected (minimum required: %d; "
                "giving up in %.0fs)", len(nodes), min_available, deadline - now)
            next_log = now + progress_interval
        time.sleep(min(0.5, max(deadline - now, 0.01)))
    if settle_time > 0:
        stable_since, count = time.monotonic(), len(nodes)
        while time.monotonic() - stable_since < settle_time:
            time.sleep(min(0.2, settle_time))
            if len(nodes := sorted(grid.get_node_ids())) != count:
                stable_since, count = time.monotonic(), len(nodes)
    return nodes


def to_client_profile(fields: Mapping[str, Any]) -> Any:
    """Turn reported profile fields (hyphenated) into a ``ClientProfile``.

    A bare ``device-class`` naming a preset gives that preset; other fields override.
    """
    from flexassign.alignment import ClientProfile

    kw = {k.replace("-", "_"): v for k, v in fields.items()}
    device = kw.get("device_class")
    if device is not None and not {"compute", "memory", "downlink", "uplink"} <= set(kw):
        rest = {k: v for k, v in kw.items() if k != "device_class"}
        return ClientProfile.preset(str(device), **rest)
    return ClientProfile(**kw)


def query_profiles(
    grid: Grid, node_ids: Iterable[int], *, server_round: int, timeout: float
) -> dict[int, dict[str, Any]]:
    """Ask ``node_ids`` for their profile (a ``query`` message); ``{node: profile}``.

    Nodes that reply with an error, with no or an undecodable profile, or not within
    ``timeout`` seconds are logged and left out.
    """
    unknown = list(node_ids)
    if not unknown:
        return {}
    msgs = [
        Message(RecordDict({"config": ConfigRecord({"server-round": server_round})}),
                dst_node_id=n, message_type=MessageType.QUERY,
                group_id=f"profile-{server_round}")
        for n in unknown
    ]
    answered = set()
    profiles: dict[int, dict[str, Any]] = {}
    for reply in grid.send_and_receive(msgs, timeout=timeout):
        node = reply.metadata.src_node_id
        answered.add(node)
        if reply.has_error():
            log(WARNING, "Node %d sent no profile (error: %s); not planned this round",
                node, reply.error.reason)
            continue
        try:
            if PROFILE_KEY not in reply.content.config_records:
                raise MessageFormatError(f"reply lacks the `{PROFILE_KEY}` ConfigRecord")
            profiles[node] = dict(decode_profile(reply.content.config_records[PROFILE_KEY]))
        except (ValueError, TypeError) as exc:
            log(WARNING, "Node %d sent an unusable profile (%s); not planned this round",
                node, exc)
    for node in unknown:
        if node not in answered:
            log(WARNING, "Node %d did not answer the profile query within %.0fs", node,
                timeout)
    return profiles


def sample_clients(
    server_round: int,
    clients: Sequence[Any],
    *,
    fraction: float,
    min_nodes: int,
    seed: int,
    sampler: Callable[[int, Sequence[Any]], Sequence[Any]] | None = None,
) -> list[Any]:
    """The round's clients: ``sampler``'s choice, or a seeded ``fraction`` of ``clients``.

    Clients are sorted (ints before strings) first. Without ``sampler``,
    ``max(floor(fraction * n), min_nodes)`` clients (at most all) are drawn with
    ``numpy.random.default_rng([seed, server_round])`` and returned in sorted order.

    Raises
    ------
    ValueError
        If ``sampler`` returns a client not in ``clients`` or one twice.

    Examples
    --------
    >>> sample_clients(1, ["b", "a", "c"], fraction=1.0, min_nodes=1, seed=0)
    ['a', 'b', 'c']
    >>> len(sample_clients(1, list(range(10)), fraction=0.3, min_nodes=1, seed=0))
    3
    """
    ordered = sorted(clients, key=lambda c: (isinstance(c, str), c))
    if sampler is not None:
        chosen = list(sampler(server_round, ordered))
        unknown = [c for c in chosen if c not in set(ordered)]
        if unknown or len(set(chosen)) != len(chosen):
            raise ValueError(f"`sampler` returned unknown or repeated clients: {chosen}")
        return chosen
    k = max(int(len(ordered) * fraction), min_nodes)
    k = min(k, len(ordered))
    if k == len(ordered):
        return ordered
    rng = np.random.default_rng([seed, server_round])
    idx = np.sort(rng.choice(len(ordered), size=k, replace=False))
    return [ordered[i] for i in idx]


def match_replies(
    replies: Iterable[Message],
    *,
    node_of: Mapping[Any, int],
    sent: Iterable[tuple[Message, Any]],
    server_round: int,
) -> Iterator[tuple[Any, Message]]:
    """``(client id, reply)`` for the first reply from each client sent a message.

    A reply is matched by its source node (``node_of``: client -> node) or, for the
    error replies Flower makes for a node that went away, by the id of the message it
    answers (``sent``: ``(message, client)`` pairs; grids set a message's id when they
    push it). Replies from nodes not sent a message and second replies are logged and
    skipped.
    """
    client_of = {n: c for c, n in node_of.items()}
    by_message = {m.metadata.message_id: c for m, c in sent if m.metadata.message_id}
    seen: set[Any] = set()
    for msg in replies:
        node = msg.metadata.src_node_id
        c = client_of.get(node)
        if c is None:
            c = by_message.get(msg.metadata.reply_to_message_id)
        if c is None:
            log(WARNING, "Round %d: ignoring a reply from node %d, which was not sent "
                "a train message", server_round, node)
            continue
        if c in seen:
            log(WARNING, "Round %d: ignoring a second reply from node %d (client %s)",
                server_round, node, c)
            continue
        seen.add(c)
        yield c, msg


class NodeDirectory:
    """Which Flower node is which client, and what each client last declared.

    Node ids are per run (a restarted SuperNode gets a new one); client ids are the
    stable ``client-id`` of the profile.

    Attributes
    ----------
    profiles : dict
        ``{client id: profile fields}`` as last registered with the planner.
    declared_examples : dict
        ``{client id: num-examples}`` the client declared (its dataset size).
    client_of_node : dict
        ``{node id: client id}``.
    """

    def __init__(self) -> None:
        self.profiles: dict[Any, dict[str, Any]] = {}
        self.declared_examples: dict[Any, int] = {}
        self.client_of_node: dict[int, Any] = {}

    def unknown(self, node_ids: Iterable[int]) -> list[int]:
        """The nodes without a registered profile."""
        return [n for n in node_ids if n not in self.client_of_node]

    def connected(self, node_ids: Iterable[int]) -> dict[Any, int]:
        """``{client id: node id}`` for the profiled nodes among ``node_ids``."""
        return {self.client_of_node[n]: n for n in node_ids if n in self.client_of_node}

    def node_of(self, client_id: Any) -> int | None:
        """The node registered for ``client_id``, or ``None``."""
        for n, c in self.client_of_node.items():
            if c == client_id:
                return n
        return None

    def register(self, node_id: int, profile: Mapping[str, Any], planner: Any) -> None:
        """Record ``node_id``'s profile; tell ``planner`` when the client's profile changed.

        An explicit ``capacity`` goes to ``planner.set_capacity``, other fields to
        ``planner.register`` as a :class:`~flexassign.alignment.ClientProfile`;
        ``num-examples`` is kept as the client's declared dataset size.

        Raises
        ------
        MessageFormatError
            If another node already uses the profile's ``client-id``.
        ValueError or TypeError
            If the planner rejects the profile.
        """
        prof = dict(profile)
        client_id = prof.pop("client-id")
        declared = prof.pop("num-examples", None)
        other = self.node_of(client_id)
        if other not in (None, node_id):
            raise MessageFormatError(f"client id {client_id!r} is already used by node {other}")
        if self.profiles.get(client_id) != prof:
            if "capacity" in prof:
                planner.set_capacity(client_id, int(prof["capacity"]))
            else:
                planner.register(client_id, profile=to_client_profile(prof))
            self.profiles[client_id] = prof
        self.client_of_node[node_id] = client_id
        if declared is not None:
            self.declared_examples[client_id] = int(declared)

    def forget_nodes(self) -> None:
        """Forget node ids and profiles (after a restore: nodes are profiled again)."""
        self.profiles = {}
        self.client_of_node = {}
