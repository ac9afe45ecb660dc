"""Conductor's HTTP gateway: an OpenAI-compatible API (``/v1/chat/completions``,
``/v1/models``) plus Conductor's own chat and status endpoints, over one shared
`conductor_core.Conductor`.

    uvicorn gateway.main:app          # or: python -m gateway

Build an app around a Conductor of your own (tests, embedding) with
`gateway.main.create_app(conductor)`.
"""

__all__ = ["create_app"]


def __getattr__(name: str):  # keeps `import gateway` light: FastAPI loads on first use
    if name == "create_app":
        from .main import create_app

        return create_app
    raise AttributeError(name)
