"""``python -m faceweave.serve serve|keys create`` (the same commands as ``faceweave serve`` / ``faceweave keys``)."""

from faceweave.serve.cli import serve_app

serve_app(prog_name="faceweave")
