"""faceweave.swapper: the swappers (built-in mesh, ONNX plug-ins).

Not ``faceweave.swap``: that name is the public function, and a subpackage would replace it once imported.
"""
