"""Built-in plugin visionkit_serve: ``visionkit serve``, an HTTP inference server on LitServe.

The command comes through ``visionkit_add_commands``; nothing heavy (torch, litserve) is
imported until it runs. Install its packages with ``pip install "visionkit[serve]"``.
"""
