"""The one model loop (:mod:`~evalkit.features.embed`), its batch sizing (``batching``), the
feature cache (``cache``) and the ranks of a launched job (``distributed``)."""
