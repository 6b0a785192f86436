"""Training tools: ``dpengine train``, ``dpengine freeze`` and ``dpengine test``.

Modules: :mod:`.data` (deepmd/npy systems), :mod:`.stats` (davg/dstd, energy bias,
neighbour statistics), :mod:`.config` (the training TOML), :mod:`.features` (per-frame
geometry cached from the Taichi kernels), :mod:`.fastpath` (energies and forces of a batch
with explicit second-order structure), :mod:`.trainer`, :mod:`.checkpoint`,
:mod:`.freeze`, :mod:`.test`, and the subcommand modules ``cli_*``.
"""
