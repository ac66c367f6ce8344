"""Built-in plugin visionkit_export: ``visionkit export`` (ONNX, TorchScript, OpenVINO, INT8, ``--check``).

The command comes through ``visionkit_add_commands``; nothing heavy (torch, onnx, openvino) is
imported until it runs. Install the exporters with ``pip install "visionkit[export]"``. What a
task exports is its :class:`~visionkit_core.plugin.contract.ExportSpec`; the exported files are run
back with :mod:`visionkit_core.kit.exported`.
"""
