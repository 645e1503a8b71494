"""The min-cost flow family: the count-based exact backends and their machinery.

``cold`` is the ``flow`` backend (the full or candidate-arc network solved by
OR-Tools, :mod:`.network`), ``warm`` the ``flow-warm`` backend (warm-started from
expert prices and certified by complementary slackness: its problem view in
:mod:`.warm_data`, the compiled repair engine in :mod:`.warm_ssp` with its numba
kernels in :mod:`.ssp_kernel`, the OR-Tools engine in :mod:`.warm_network`, the
cold start's sample levels in :mod:`.warm_levels`);
:mod:`.prices` guesses and refines expert prices for both, :mod:`.residual` prices
swaps on the residual graph.
"""
