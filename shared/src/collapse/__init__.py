"""collapse-lab contract library: contracts, the data policy, the shard store, the modality
interface, the ``collapse`` CLI and the report. Depends on pydantic/numpy (+ matplotlib)."""

__version__ = "0.1.0"
