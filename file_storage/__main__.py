"""``python -m file_storage``: the ``file-storage`` command line."""

from file_storage.cli import main

if __name__ == "__main__":
    main()
