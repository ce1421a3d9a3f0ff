"""gluonface's own CPU kernels as MXNet custom operators, with the pure-MXNet formulation as fallback.

(Findings below filled in from the feasibility probe.)
"""
from gluonface.ops.library import isa, native_active, set_enabled, set_isa, status, supported_isas

__all__ = ["isa", "native_active", "set_enabled", "set_isa", "status", "supported_isas"]
