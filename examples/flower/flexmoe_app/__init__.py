"""FLEX-MoE Flower app for a two-block MoE.

``task.py``: model, data, training; ``client_app.py``; ``server_app.py``.
"""
