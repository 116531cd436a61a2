"""`tinyggml-cli serve`: an OpenAI-compatible HTTP server with continuous batching and prefix
reuse (engine.py: the batching thread; api.py: the endpoints). Needs the `server` extra:
pip install 'tinyggml[server]'."""
from __future__ import annotations

from dataclasses import dataclass

NEEDS = ("starlette", "uvicorn", "sse_starlette", "pydantic", "prometheus_client")


def missing() -> list:
    """The server's packages that are not installed."""
    import importlib.util
    return [n for n in NEEDS if importlib.util.find_spec(n) is None]


@dataclass
class Metrics:
    """Prometheus counters and gauges, in a registry of their own (one per server)."""
    registry: object
    requests: object
    tokens_prompt: object
    tokens_cached: object
    tokens_generated: object
    queue_depth: object
    active_sequences: object

    @classmethod
    def create(cls) -> "Metrics":
        from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics
        disable_created_metrics()          # no *_created series: counters only
        r = CollectorRegistry()
        return cls(
            registry=r,
            requests=Counter("tinyggml_requests", "HTTP requests by endpoint and status",
                             ["endpoint", "status"], registry=r),
            tokens_prompt=Counter("tinyggml_prompt_tokens", "prompt tokens received", registry=r),
            tokens_cached=Counter("tinyggml_prompt_tokens_cached",
                                  "prompt tokens served from the prefix cache", registry=r),
            tokens_generated=Counter("tinyggml_generated_tokens", "tokens generated", registry=r),
            queue_depth=Gauge("tinyggml_queue_depth", "requests waiting for a sequence", registry=r),
            active_sequences=Gauge("tinyggml_active_sequences", "sequences being evaluated",
                                   registry=r))


def build(model, *, parallel: int = 4, cache_mib: int = 1024, chat_template: str | None = None,
          model_id: str | None = None, ctx_size: int = 8192, max_tokens: int = 1024,
          api_key: str | None = None, max_queue: int = 64, prefill_chunk: int = 256):
    """The ASGI app serving `model` (a Model built with n_seq_max >= parallel), its engine
    started. Returns (app, engine)."""
    import os
    from ..chat import ChatTemplate
    from ..prefix_cache import PrefixCache
    from .api import Server, ServerConfig, create_app
    from .engine import Engine
    if model.prefix_cache is None:
        model.prefix_cache = PrefixCache(max_bytes=cache_mib << 20)
    metrics = Metrics.create()
    engine = Engine(model, parallel, prefill_chunk=prefill_chunk, max_queue=max_queue,
                    metrics=metrics)
    template = ChatTemplate.for_model(model, chat_template)
    name = model_id or os.path.splitext(os.path.basename(model.path))[0]
    cfg = ServerConfig(model_id=name, ctx_size=ctx_size, max_tokens=max_tokens, api_key=api_key,
                       max_n=parallel)
    app = create_app(Server(engine, template, cfg, metrics), on_shutdown=engine.shutdown)
    engine.start()
    return app, engine
