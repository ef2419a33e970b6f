"""What the frames say: change metrics, the storm map and its figures, contact sheets, and spacing: even, which
renders samples and places frames at equal steps of change."""
