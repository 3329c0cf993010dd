// filled in by the music issue
