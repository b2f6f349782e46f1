"""Storage backends. Import a backend from its module, or everything from ``file_storage``."""
