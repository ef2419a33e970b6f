"""The models: loading a diffusers pipeline (built-in, folder, hub id or single file), the files a config names
checked from their headers, families, LoRAs and textual inversion, the tiny and toy models, acceleration."""
