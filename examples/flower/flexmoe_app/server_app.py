"""ServerApp: FLEX-MoE planning, expert-subset dispatch and usage-weighted aggregation."""

from __future__ import annotations

from flexassign.integrations.flower import make_server_app

app = make_server_app()
