"""``serve``: the prediction API and the web page over HTTP."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated

import typer

from melanoscan.cli._app import BackendOpt, ModelOpt, app, console, fail
from melanoscan.serving.limits import MAX_ASPECT_RATIO

if TYPE_CHECKING:
    from fastapi import FastAPI

ENV_MODEL = "MELANOSCAN_SERVE_MODEL"
ENV_BACKEND = "MELANOSCAN_SERVE_BACKEND"
ENV_LIMITS = "MELANOSCAN_SERVE_LIMITS"


@app.command()
def serve(
    model: ModelOpt = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(help="Server processes, each with its own model.")] = 1,
    backend: BackendOpt = "auto",
    max_file_mb: Annotated[float, typer.Option(help="Largest image file, in MiB.")] = 20.0,
    max_images: Annotated[int, typer.Option(help="Most images per request.")] = 32,
    max_pixels: Annotated[
        int, typer.Option(help="Largest image, width x height (checked before decoding).")
    ] = 40_000_000,
    max_side: Annotated[int, typer.Option(help="Longest image side in pixels.")] = 12_000,
    max_aspect_ratio: Annotated[
        int, typer.Option(help="Longest image side over shortest (checked before decoding).")
    ] = MAX_ASPECT_RATIO,
    max_concurrent: Annotated[
        int, typer.Option(help="Requests running inference at once, per process.")
    ] = 1,
    max_waiting: Annotated[
        int, typer.Option(help="Requests admitted beyond those running, per process (uploading "
                               "or waiting); more get 503 before their body is read.")
    ] = 48,
    max_connections: Annotated[
        int, typer.Option(help="Open connections per process; more get 503.")
    ] = 1024,
    header_timeout: Annotated[
        int, typer.Option(help="Seconds a request's line and headers may take to arrive.")
    ] = 10,
    body_timeout: Annotated[
        int, typer.Option(help="Seconds a request body may take to arrive in full.")
    ] = 120,
    keep_alive: Annotated[
        int, typer.Option(help="Seconds an idle keep-alive connection stays open.")
    ] = 5,
) -> None:
    """Serve the model: POST /v1/predict, GET /v1/model, GET /healthz, the web page at /.

    OpenAPI documentation at /docs. Exit codes: 0 stopped; 1 the server could not start
    (e.g. port in use); 2 bad option or model.
    """
    import uvicorn

    from melanoscan.bundle import BundleError
    from melanoscan.inference.predictor import Predictor
    from melanoscan.serving import ServeLimits, create_app
    from melanoscan.serving.server import uvicorn_options

    try:
        limits = ServeLimits(
            max_file_bytes=int(max_file_mb * 1024 * 1024), max_images=max_images,
            max_pixels=max_pixels, max_side=max_side, max_aspect_ratio=max_aspect_ratio,
            max_concurrent=max_concurrent, max_waiting=max_waiting,
            max_connections=max_connections, header_timeout_s=header_timeout,
            body_timeout_s=body_timeout, keep_alive_s=keep_alive,
        )
        if workers < 1:
            raise ValueError(f"--workers must be at least 1, got {workers}")
        if not 0 <= port <= 65535:
            raise ValueError(f"--port must be between 0 and 65535, got {port}")
        predictor = Predictor(model, backend=backend)  # fails here, not in a worker
    except (BundleError, ValueError) as exc:
        raise fail(str(exc)) from None
    console.print(f"[bold]{predictor.name}[/] ({predictor.backend}) on http://{host}:{port}/ "
                  f"- API docs at /docs. Research tool, not a medical device.", highlight=False)
    if workers == 1:
        uvicorn.run(create_app(predictor, limits), host=host, port=port,
                    **uvicorn_options(limits))
        return
    os.environ[ENV_MODEL] = str(predictor.path)
    os.environ[ENV_BACKEND] = backend
    os.environ[ENV_LIMITS] = limits.to_json()
    uvicorn.run("melanoscan.cli.serving:app_from_environment", factory=True, host=host,
                port=port, workers=workers, **uvicorn_options(limits))


def app_from_environment() -> FastAPI:
    """Build the app in a worker process from what :func:`serve` put in the environment."""
    from melanoscan.inference.predictor import Predictor
    from melanoscan.serving import ServeLimits, create_app

    limits = ServeLimits.from_json(os.environ[ENV_LIMITS])
    # With one request running at a time there is nothing to merge: no batcher thread hop.
    predictor = Predictor(os.environ[ENV_MODEL], os.environ[ENV_BACKEND],
                          micro_batching=limits.max_concurrent > 1)
    return create_app(predictor, limits)
