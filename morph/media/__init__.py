"""The files morph reads and writes through ffmpeg and PIL: PNG frames, the streamed MP4, music and its onsets."""
