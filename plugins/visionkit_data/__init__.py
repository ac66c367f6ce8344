"""Built-in plugin visionkit_data: ``visionkit data check`` and ``data convert``, for any layout.

Neither command knows a layout: the dataset plugin that claims a folder (``visionkit_claim_data``)
checks it with the check it registered, or converts it with its datamodule's ``convert``. The
commands come through ``visionkit_add_commands``; nothing heavy is imported until one runs.
"""
