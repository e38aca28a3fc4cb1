"""Data sources: where samples come from (see ``evalkit.data.sources``).

The source types register themselves in ``evalkit.data.sources.sources``: the generic ones
(``wds``, ``folder``, ``hf``, ``any``) and the dataset layouts of the EVA-CLIP-18B benchmarks,
imported on the registry's first lookup (so a command that needs no data, such as
``evalkit list tasks``, imports none of them). Source types of other packages (the demo's
``shapeworld``) come through the ``evalkit.sources`` entry-point group, loaded when a task first
names one; evalkit.data imports nothing above it (tasks, the demo). ``evalkit.data.check``
checks one source spec on disk (found / missing / sample count).
"""
