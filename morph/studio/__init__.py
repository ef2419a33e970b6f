"""morph studio: a local web page (Gradio) to compose a walk as a form or as YAML, preview it in seconds, and render
it in one background worker; every config goes through the same schema as `morph run`, and every path it reads or
writes stays inside the studio's root."""
