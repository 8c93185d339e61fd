"""Access to a real or virtual handset over ADB (adbutils), and parsers of what it prints."""
