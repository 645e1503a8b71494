"""ClientApp: trains only the experts it receives, keeps its router in node state."""

from __future__ import annotations

from flexassign.integrations.flower import make_client_app

app = make_client_app()
