"""The OpenAI-compatible capture gateway."""

from __future__ import annotations

from protege.gateway.app import Gateway, create_app
from protege.gateway.config import GatewayConfig

__all__ = ["Gateway", "GatewayConfig", "create_app"]
