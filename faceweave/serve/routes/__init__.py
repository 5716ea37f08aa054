"""One ``APIRouter`` per resource; ``serve.app.create_app`` includes them in this order (which is also the order of
the paths in ``/openapi.json``)."""
