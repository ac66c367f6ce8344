"""The core proper: the plugin contract (hookspecs, task/data contract), names, registry, plugin manager."""
