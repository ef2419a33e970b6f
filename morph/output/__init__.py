"""What a run delivers beyond its frames: platform files, the manifest and report.html."""
