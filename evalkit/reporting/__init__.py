"""Reading results: claims, the report, charts, export and ``evalkit check``."""
