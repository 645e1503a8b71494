"""FLEX-MoE Flower app: a ServerApp and a ClientApp around flexassign's Flower integration."""
