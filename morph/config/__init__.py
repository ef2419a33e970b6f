"""A job's config: the declared schema and its sections, the prompt expressions, the platform presets, and reading
a YAML file into a checked config. No torch."""
